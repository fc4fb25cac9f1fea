"""Cures for mode collapse, as options of every GAN family's config
(:class:`~gan_ext.models.gan.TrainConfig`):

    pack M                      PacGAN (Lin et al. 2018): D judges M samples at once,
                                concatenated along channels (features for vectors)
    minibatch_stddev G          ProGAN's group standard deviation as one more feature map
    minibatch_discrimination    Salimans et al. 2016: all-pairs L1 features of the batch
      (B, C[, "mean"])          (the fused op ``gan_ext.ops.minibatch_discrimination``)
    feature_matching            G matches the mean of D's last features on real data
    unrolled K                  Metz et al. 2017: G trained against D after K look-ahead
      (+ unrolled_first_order)  Adam steps, exactly (through the updates) or first order
    ema DECAY                   an exponential moving average of G for sampling

The D-side cures change D's architecture: :class:`CuredDiscriminator` wraps a
family's D body (its layers up to the last feature map) with the packing,
the minibatch layers and a new head. The G-side ones change the generator's
objective (:func:`generator_objective`); D's weights, buffers and optimizer
state are never touched by the look-ahead (it runs on copies, with
``torch.func.functional_call``).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..nn import minibatch_stddev
from ..nn.minibatch_discrimination import REDUCTIONS as MBD_REDUCTIONS
from ._checks import check_bool, check_int, check_real

__all__ = ["check_cures", "d_cured", "d_options", "CuredDiscriminator", "cured_head",
           "cured_logit", "pack", "generator_objective",
           "lookahead", "ema_update", "ema_decay", "EMA_RAMPUP", "EMA_SETTLED",
           "make_ema", "mbd_spec", "CURE_FIELDS"]

CURE_FIELDS = ("pack", "minibatch_stddev", "minibatch_discrimination", "feature_matching",
               "unrolled", "unrolled_first_order", "ema")


def check_cures(c) -> None:
    """Validates (and normalises) the cure fields of a TrainConfig ``c``."""
    check_int("pack", c.pack)
    if c.minibatch_stddev:
        check_int("minibatch_stddev (the group size)", c.minibatch_stddev)
    elif c.minibatch_stddev != 0:
        raise ValueError(f"minibatch_stddev must be 0 (off) or a group size >= 1, "
                         f"got {c.minibatch_stddev!r}")
    if c.minibatch_discrimination is not None:
        c.minibatch_discrimination = mbd_spec(c.minibatch_discrimination)
    check_bool("feature_matching", c.feature_matching)
    check_int("unrolled", c.unrolled, 0)
    check_bool("unrolled_first_order", c.unrolled_first_order)
    if c.unrolled_first_order and not c.unrolled:
        raise ValueError("unrolled_first_order needs unrolled K >= 1 look-ahead steps")
    if c.ema is not None:
        check_real("ema", c.ema, 0, 1, low_open=True, high_open=True)
    check_bool("joint_batch", c.joint_batch)
    if c.joint_batch:
        mixing = [name for name, on in (("minibatch_stddev", c.minibatch_stddev),
                                        ("minibatch_discrimination",
                                         c.minibatch_discrimination is not None),
                                        ("feature_matching", c.feature_matching),
                                        ("unrolled", c.unrolled)) if on]
        if mixing:
            raise ValueError(f"joint_batch cannot be combined with {', '.join(mixing)}: those "
                             f"compare samples across the batch D scores, which would mix "
                             f"real and fake samples")


def d_cured(c) -> bool:
    """Whether D needs the cured architecture (the plain one otherwise, so
    published checkpoints keep loading)."""
    return (c.pack > 1 or bool(c.minibatch_stddev) or c.minibatch_discrimination is not None
            or c.feature_matching)


def d_options(c) -> dict:
    """The CuredDiscriminator keyword arguments of config ``c``."""
    return dict(pack=c.pack, minibatch_stddev=c.minibatch_stddev,
                minibatch_discrimination=c.minibatch_discrimination)


def pack(x: Tensor, m: int) -> Tensor:
    """(B, C, ...) -> (B / m, m C, ...): samples m i .. m i + m - 1 side by
    side along channels (features), PacGAN's packing."""
    if m == 1:
        return x
    b = x.shape[0]
    if b % m:
        raise ValueError(f"pack: a batch of {b} samples does not split into packs of {m}; use "
                         f"a batch size that is a multiple of --pack {m}")
    return x.reshape(b // m, m * x.shape[1], *x.shape[2:])


class CuredDiscriminator(nn.Module):
    """x (B, *in_shape) -> logit (B / pack,): [pack] -> ``body`` -> h
    (B', *feat_shape) -> [minibatch stddev] -> [minibatch discrimination] ->
    head. The head is a conv covering the whole feature map (a linear layer
    for vector features, or after minibatch discrimination, which works on
    flat features; ``head_bias``: the conv head's bias, the linear logit
    of the reference code). ``forward(x, features=True)`` returns the body's h
    flattened, what feature matching compares."""

    def __init__(self, body: nn.Module, in_shape: Sequence[int], feat_shape: Sequence[int],
                 pack: int = 1, minibatch_stddev: int = 0,
                 minibatch_discrimination: Optional[tuple] = None,
                 head_bias: bool = False) -> None:
        super().__init__()
        self.body, self.in_shape = body, tuple(in_shape)
        self.pack, self.group = pack, minibatch_stddev
        self.mbd, self.head = cured_head(feat_shape, minibatch_stddev, minibatch_discrimination,
                                         head_bias)
        if isinstance(self.head, nn.Conv2d):
            nn.init.normal_(self.head.weight, 0.0, 0.02)   # DCGAN's init, as the body's convs

    def forward(self, x: Tensor, features: bool = False) -> Tensor:
        if x.dim() != 1 + len(self.in_shape) or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"{type(self).__name__}: x must have shape (B, "
                             f"{', '.join(map(str, self.in_shape))}), got {list(x.shape)}")
        h = self.body(pack(x, self.pack))                        # (B', *feat_shape)
        if features:
            return h.flatten(1)
        return cured_logit(h, self.group, self.mbd, self.head)  # (B',)


def cured_head(feat_shape: Sequence[int], minibatch_stddev: int = 0,
               minibatch_discrimination: Optional[tuple] = None,
               bias: bool = False) -> Tuple[Optional[nn.Module], nn.Module]:
    """(minibatch discrimination layer or None, head) for D features of
    ``feat_shape`` (C, *spatial), with one more channel under minibatch
    stddev: after minibatch discrimination a linear logit on the flat
    features and o; else a conv covering the feature map (``bias``), or a
    linear logit on vector features. Shared by :class:`CuredDiscriminator`
    and the conditional D (psi)."""
    c, *spatial = feat_shape
    c += 1 if minibatch_stddev else 0
    if minibatch_discrimination is not None:
        from ..nn import MinibatchDiscrimination
        a = c * math.prod(spatial)
        b, k = minibatch_discrimination[:2]
        reduction = minibatch_discrimination[2] if len(minibatch_discrimination) > 2 else "sum"
        return (MinibatchDiscrimination(a, b, k, reduction=reduction), nn.Linear(a + b, 1))
    if spatial:
        return None, nn.Conv2d(c, 1, tuple(spatial), bias=bias)
    return None, nn.Linear(c, 1)


def cured_logit(h: Tensor, group: int, mbd: Optional[nn.Module], head: nn.Module,
                conv_head: Optional[Callable[[nn.Module, Tensor], Tensor]] = None) -> Tensor:
    """The logit (B,) of D features ``h`` through :func:`cured_head`'s
    layers: [minibatch stddev of ``group``] -> [minibatch discrimination] ->
    head. ``conv_head(head, h)``: how the conv head runs (default ``head(h)``)."""
    if group:
        if h.shape[0] % min(group, h.shape[0] or 1):
            raise ValueError(f"--minibatch-stddev: a batch of {h.shape[0]} D inputs does not "
                             f"split into groups of {group}; use a batch size that is a "
                             f"multiple of {group}")
        h = minibatch_stddev(h, group)                           # one more channel
    if mbd is not None:
        return head(mbd(h.flatten(1))).view(-1)
    if conv_head is not None:
        return conv_head(head, h)
    return head(h).view(-1)


# ------------------------------------------------------------ G's objective
def _adam_state(opt: torch.optim.Optimizer, p: Tensor):
    """(exp_avg, exp_avg_sq, step) of ``p`` in Adam ``opt`` (zeros before its first step)."""
    st = opt.state.get(p, {})
    if "exp_avg" not in st:
        return torch.zeros_like(p), torch.zeros_like(p), 0
    return st["exp_avg"].detach(), st["exp_avg_sq"].detach(), int(st["step"])


def lookahead(D: nn.Module, opt_d: torch.optim.Optimizer, d_loss: Callable[[Tensor, Tensor], Tensor],
              real: Tensor, fake: Tensor, steps: int, exact: bool,
              score: Callable[..., Tensor]) -> Dict[str, Tensor]:
    """D's parameters (and copies of its buffers) after ``steps`` Adam updates
    on (real, fake) from its current weights and ``opt_d``'s state, without
    touching either. ``exact``: the updates stay in the graph (second
    derivatives through D, so G's gradient sees how D would react); else the
    first-order form, D's final weights as constants.
    ``score(params, x)`` runs D with the given tensors."""
    if len(opt_d.param_groups) != 1:
        raise ValueError("unrolled: D's optimizer must have one parameter group")
    group = opt_d.param_groups[0]
    extras = {k: group.get(k) for k in ("amsgrad", "weight_decay", "maximize") if group.get(k)}
    if type(opt_d) is not torch.optim.Adam or extras:
        raise ValueError(f"unrolled: the look-ahead reproduces plain Adam; D's optimizer is "
                         f"{type(opt_d).__name__} {extras or ''}".rstrip())
    lr, (b1, b2), eps = float(group["lr"]), group["betas"], float(group["eps"])
    named = list(D.named_parameters())
    plist = [p for _, p in named]
    params = {n: p.detach().requires_grad_() for n, p in named}
    buffers = {n: b.detach().clone() for n, b in D.named_buffers()}
    states = [_adam_state(opt_d, p) for p in plist]
    m = [s[0] for s in states]
    v = [s[1] for s in states]
    t0 = states[0][2] if states else 0
    x_fake = fake if exact else fake.detach()
    for k in range(steps):
        t = t0 + k + 1
        cur = {**params, **buffers}
        loss = d_loss(score(cur, real), score(cur, x_fake))
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=exact)
        new = {}
        for i, (n, p) in enumerate(params.items()):
            g = grads[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            # clamp: d sqrt(v)/dv is infinite at v = 0 (a parameter whose gradient is exactly 0).
            step = lr * m_hat / (v_hat.clamp_min(1e-30).sqrt() + eps)
            new[n] = p - step if exact else (p - step).detach().requires_grad_()
        params = new
    if not exact:
        params = {n: p.detach() for n, p in params.items()}
    return {**params, **buffers}


def generator_objective(c, loss, opt_d: torch.optim.Optimizer):
    """``objective(players, fake, y_fake, real, y_real) -> (loss_g, d_gen)``
    for the cures that change G's loss (feature matching, unrolling), or None.
    Every image D sees goes through ``players.augmented`` (DiffAugment), as
    in the plain steps.
    With unrolling, ``d_gen`` (what the run logs) is the look-ahead D's score."""
    if not (c.feature_matching or c.unrolled):
        return None

    def objective(players, fake, y_fake, real, y_real):
        D = players.D

        def score(params, x, y=None, **kw):
            args = (players.augmented(x),) if y is None else (players.augmented(x), y)
            return torch.func.functional_call(D, params, args, kw)

        if c.unrolled:
            params = lookahead(D, opt_d, loss.d_loss, real, fake, c.unrolled,
                               not c.unrolled_first_order,
                               lambda p, x: score(p, x, y_real if x is real else y_fake))
            run = lambda x, y=None, **kw: score(params, x, y, **kw)  # noqa: E731
        else:
            run = lambda x, y=None, **kw: D(*((players.augmented(x),) if y is None  # noqa: E731
                                              else (players.augmented(x), y)), **kw)
        if c.feature_matching:
            f_real = run(real, y_real, features=True).detach().float().mean(0)
            f_fake = run(fake, y_fake, features=True).float().mean(0)
            loss_g = (f_real - f_fake).square().sum()     # ||E f(x) - E f(G(z))||^2
            with torch.no_grad():
                d_gen = run(fake.detach(), y_fake)
            return loss_g, d_gen
        d_gen = run(fake, y_fake)
        return loss.g_loss(d_gen), d_gen

    return objective


# -------------------------------------------------------- minibatch discrimination
def mbd_spec(value) -> tuple:
    """Minibatch discrimination's sizes, as text (``--minibatch-discrimination
    B,C[,mean]``) or a sequence (the config's), -> (B, C), or (B, C, "mean")
    where o is averaged over the batch; B and C ints >= 1. The paper's sum is
    the 2-tuple, so one setting has one spelling in config.json."""
    text = isinstance(value, str)
    try:
        parts = [p.strip() for p in value.split(",")] if text else list(value)
    except TypeError:
        parts = []
    reduction = parts.pop() if len(parts) == 3 else "sum"
    if len(parts) == 2 and reduction in MBD_REDUCTIONS:
        # Text: decimal digits only (isdigit() admits "²", which int() refuses).
        sizes = (tuple(int(p) for p in parts if p.isdecimal()) if text
                 else (check_int("minibatch_discrimination B", parts[0]),
                       check_int("minibatch_discrimination C", parts[1])))
        if len(sizes) == 2 and min(sizes) >= 1:
            return sizes + (("mean",) if reduction == "mean" else ())
    raise ValueError(f"minibatch_discrimination must be B,C or B,C,mean, i.e. (B, C) or "
                     f"(B, C, 'mean'): num_kernels B and kernel_dim C >= 1, o summed over the "
                     f"batch (the paper's) or averaged (mean); e.g. 100,5; got {value!r}")


# ---------------------------------------------------------------------- EMA
def make_ema(G: nn.Module) -> nn.Module:
    """A frozen copy of G that :func:`ema_update` keeps as the moving average."""
    import copy
    ema = copy.deepcopy(G)
    ema.requires_grad_(False)
    return ema.eval()


# The average's half-life grows with training: at most EMA_RAMPUP times the
# steps so far (StyleGAN2-ADA's ema_rampup), until it reaches the decay's own.
EMA_RAMPUP = 0.05
# An update count past every decay's ramp (ema_decay gives ``decay`` itself):
# where a checkpoint from before the count resumes.
EMA_SETTLED = 1 << 62


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th update (1, 2, ...): ``decay``, unless
    its half-life, ln 0.5 / ln decay updates (693 at 0.999), exceeds
    EMA_RAMPUP times ``updates``; then 0.5 ** (1 / (EMA_RAMPUP * updates)).
    So a short run's average follows G rather than ~1,000 steps of a G that
    still changes fast (at 1,800 steps, the demo's length, such an average
    scored IS 5.4 where G itself scored 7.1; the plain recursion would also
    keep 0.999**1800 = 17% of G's random starting weights); the first update
    makes it G (decay ~1e-6); and at 0.999, from 13,857 updates on, it is
    the plain recursion: what went before keeps 0.999**(t - 13,857) of the
    average, 4e-6 at the 26,236 steps of dcgan's default."""
    if updates < 1:
        raise ValueError(f"updates must be >= 1, got {updates}")
    half_life = math.log(0.5) / math.log(decay)
    ramp = EMA_RAMPUP * updates
    return decay if ramp >= half_life else 0.5 ** (1.0 / ramp)


@torch.no_grad()
def ema_update(ema: nn.Module, G: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * G for the parameters and the
    floating-point buffers (batch norm's running statistics: G's own belong to
    G's current weights, so they are averaged as the weights are, as timm's
    ModelEmaV2 does); integer buffers (num_batches_tracked) copied. ``decay``:
    this update's, :func:`ema_decay`."""
    ep, gp = list(ema.parameters()), list(G.parameters())
    torch._foreach_lerp_(ep, [p.detach() for p in gp], 1.0 - decay)
    for eb, gb in zip(ema.buffers(), G.buffers()):
        if eb.is_floating_point():
            eb.lerp_(gb, 1.0 - decay)
        else:
            eb.copy_(gb)
