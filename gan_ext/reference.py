"""Pure-PyTorch twins of every gan_ext op.

Each function here has the signature and the semantics of the op of the same
name in ``torch.ops.gan_ext``. They serve twice: as the fallback when the C++
extension is not built (or ``GAN_EXT_BACKEND=reference``), and as the oracle the
tests check the kernels against. They are written for clarity, not speed, and
are differentiable with ordinary autograd.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

IDENTITY, RELU, LEAKY_RELU = 0, 1, 2
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU}
# Mirrors kMinAbsWeight in csrc/norm_act.h.
MIN_ABS_WEIGHT = 1e-5


def output_is_invertible(activation: int, negative_slope: float) -> bool:
    return activation == LEAKY_RELU and negative_slope > 0


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def effective_weight(weight: Optional[Tensor], activation: int, negative_slope: float) -> Optional[Tensor]:
    """The weight the op really multiplies by (see MIN_ABS_WEIGHT)."""
    if weight is None or not output_is_invertible(activation, negative_slope):
        return weight
    sign = torch.where(weight < 0, -1.0, 1.0).to(weight.dtype)
    return sign * weight.abs().clamp_min(MIN_ABS_WEIGHT)


def activate(z: Tensor, activation: int, negative_slope: float) -> Tensor:
    if activation == RELU:
        return torch.relu(z)
    if activation == LEAKY_RELU:
        return torch.nn.functional.leaky_relu(z, negative_slope)
    return z


def _stats(x: Tensor, instance: bool):
    """Biased mean/var over (N, H, W) per channel, or over (H, W) per (n, c)."""
    N, C = x.shape[:2]
    xs = x.to(stats_dtype(x.dtype))
    dims = (2, 3) if instance else (0, 2, 3)
    var, mean = torch.var_mean(xs, dim=dims, correction=0)
    return mean.reshape(-1), var.reshape(-1)


def _per_channel(t: Tensor, x: Tensor, instance: bool, per_sample: bool) -> Tensor:
    """Broadcast a (C,) or (N*C,) vector against x of shape (N, C, H, W)."""
    N, C = x.shape[:2]
    if instance and per_sample:
        return t.reshape(N, C, 1, 1)
    return t.reshape(1, C, 1, 1)


def check_norm_act_args(input, weight, bias, running_mean, running_var, use_input_stats,
                        instance, eps, activation) -> None:
    """The twin of check_norm_act_args in csrc/norm_act.h: both backends reject
    the same input with the same message (without it the fallback would, say,
    normalize a single value per channel to zero where the kernel raises)."""
    if input.dim() != 4:
        raise ValueError(f"input must be a 4-D (N, C, H, W) tensor, got a {input.dim()}-D tensor "
                         f"of shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError("input must be a floating point tensor (float32, float64, bfloat16 or "
                        f"float16), got {input.dtype}")
    if activation not in (IDENTITY, RELU, LEAKY_RELU):
        raise ValueError(f"activation must be 0 (identity), 1 (relu) or 2 (leaky_relu), got {activation}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if eps == 0 and use_input_stats and not instance:
        raise ValueError("eps must be positive for batch norm in training (as in torch), got 0.0")
    N, C, H, W = input.shape
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is None:
            continue
        if t.dim() != 1 or t.shape[0] != C:
            raise ValueError(f"{name} must be a 1-D tensor of size {C} (the channel count of "
                             f"input), got shape {tuple(t.shape)}")
        if t.device != input.device:
            raise ValueError(f"{name} must be on {input.device}, got {t.device}")
        mixed = t.dtype == torch.float32 and input.dtype in (torch.float16, torch.bfloat16)
        if t.dtype != input.dtype and not mixed:
            raise TypeError(f"{name} has dtype {t.dtype} but input has dtype {input.dtype}; they "
                            f"must match (float32 {name} is also accepted for float16/bfloat16 input)")
    if use_input_stats and input.numel() > 0 and (H * W if instance else N * H * W) <= 1:
        raise ValueError("Expected more than 1 value per channel when using input statistics "
                         f"(training), got input of shape {tuple(input.shape)}")


def check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                              use_input_stats, momentum) -> None:
    """The twin of check_running_update_args in csrc/norm_act.h."""
    nbt = num_batches_tracked
    if nbt is not None:
        if nbt.dtype != torch.int64 or nbt.numel() != 1:
            raise TypeError("num_batches_tracked must be a one-element int64 tensor, got dtype "
                            f"{nbt.dtype} and shape {tuple(nbt.shape)}")
        if nbt.device != input.device:
            raise ValueError(f"num_batches_tracked must be on {input.device}, got {nbt.device}")
        if not use_input_stats:
            raise ValueError("num_batches_tracked is only counted when use_input_stats is true "
                             "(training); pass None")
    if (momentum is None and use_input_stats and nbt is None
            and (running_mean is not None or running_var is not None)):
        raise ValueError("momentum=None (a cumulative average) requires num_batches_tracked")


@torch.no_grad()
def _update_running(running_mean, running_var, num_batches_tracked, momentum, mean, var,
                    input: Tensor, instance: bool) -> None:
    """In place, as the kernels do it (csrc/cpu/norm_act.cpp, update_running_stats):
    running = (1 - f) * running + f * batch in float64, the variance unbiased, the
    per-sample statistics of instance norm averaged over the batch."""
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    if input.numel() == 0:
        return
    N, C, H, W = input.shape
    # 1 / count as a tensor, not float(): no device sync, no torch.compile graph break.
    f = 1.0 / num_batches_tracked.double() if momentum is None else momentum
    count = H * W * (1 if instance else N)
    for running, stat, scale in ((running_mean, mean, 1.0), (running_var, var, count / (count - 1))):
        if running is not None:
            batch = stat.double().reshape(-1, C).mean(0) * scale
            running.copy_((1.0 - f) * running.double() + f * batch)


def norm_act(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
             running_mean: Optional[Tensor], running_var: Optional[Tensor],
             num_batches_tracked: Optional[Tensor], use_input_stats: bool, instance: bool,
             momentum: Optional[float], eps: float, activation: int, negative_slope: float):
    """Twin of ``torch.ops.gan_ext.norm_act``; returns (out, mean, invstd, var) and,
    with input statistics, updates the running statistics in place."""
    check_norm_act_args(input, weight, bias, running_mean, running_var, use_input_stats, instance,
                        eps, activation)
    check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                              use_input_stats, momentum)
    if use_input_stats is False and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are required when use_input_stats is false")
    sd = stats_dtype(input.dtype)
    if use_input_stats:
        mean, var = _stats(input, instance)
    else:
        mean, var = running_mean.to(sd), running_var.to(sd)
    invstd = torch.rsqrt(var + eps)
    per_sample = use_input_stats
    xs = input.to(sd)
    y = (xs - _per_channel(mean, input, instance, per_sample)) * _per_channel(invstd, input, instance, per_sample)
    w = effective_weight(weight, activation, negative_slope)
    if w is not None:
        y = y * w.to(sd).reshape(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.to(sd).reshape(1, -1, 1, 1)
    out = activate(y, activation, negative_slope).to(input.dtype)
    if use_input_stats:
        _update_running(running_mean, running_var, num_batches_tracked, momentum, mean, var, input,
                        instance)
    return out, mean, invstd, var


def invert_activation(y: Tensor, activation: int, negative_slope: float) -> Tensor:
    if activation == LEAKY_RELU:
        return torch.where(y >= 0, y, y / negative_slope)
    return y


def norm_act_backward(grad_out: Tensor, saved: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                      mean: Tensor, invstd: Tensor, use_input_stats: bool, instance: bool,
                      activation: int, negative_slope: float, saved_is_output: bool):
    """Twin of ``torch.ops.gan_ext.norm_act_backward``; analytic, in stats precision."""
    xhat, z, gamma, rs = _normalized(saved, weight, bias, mean, invstd, instance, use_input_stats,
                                     activation, negative_slope, saved_is_output)
    dy = grad_out.to(stats_dtype(saved.dtype))
    if activation == RELU:
        # torch.relu's backward masks where the output is <= 0, so a NaN
        # pre-activation passes the gradient (as both kernels do).
        dz = torch.where(z <= 0, torch.zeros_like(dy), dy)
    elif activation == LEAKY_RELU:
        dz = torch.where(z > 0, dy, dy * negative_slope)
    else:
        dz = dy
    grad_bias = dz.sum(dim=(0, 2, 3))
    grad_weight = (dz * xhat).sum(dim=(0, 2, 3))
    if use_input_stats:
        dims = (2, 3) if instance else (0, 2, 3)
        m = saved.shape[2] * saved.shape[3] * (1 if instance else saved.shape[0])
        sum_dz = dz.sum(dim=dims, keepdim=True)
        sum_dz_xhat = (dz * xhat).sum(dim=dims, keepdim=True)
        grad_input = gamma * rs * (dz - sum_dz / m - xhat * sum_dz_xhat / m)
    else:
        grad_input = dz * gamma * rs
    gdt = weight.dtype if weight is not None else saved.dtype
    return grad_input.to(saved.dtype), grad_weight.to(gdt), grad_bias.to(gdt)


def norm_act_backward_with_stats(grad_out: Optional[Tensor], grad_mean: Optional[Tensor],
                                 grad_invstd: Optional[Tensor], saved: Tensor,
                                 weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                                 invstd: Tensor, use_input_stats: bool, instance: bool,
                                 activation: int, negative_slope: float, saved_is_output: bool):
    """:func:`norm_act_backward` plus the input gradient that reaches the op's
    ``mean`` and ``invstd`` outputs (with input statistics they are functions
    of the input: d mean / dx = 1/M, d invstd / dx = -invstd^2 xhat / M over
    each group of M values). Such gradients only arise in a double backward,
    where the first derivative depends on mean and invstd. Differentiable in
    every argument: csrc/autograd.cpp calls it (through the op
    gan_ext::norm_act_backward_twin) when a backward runs with create_graph."""
    if grad_out is None:
        grad_out = torch.zeros_like(saved)
    gi, gw, gb = norm_act_backward(grad_out, saved, weight, bias, mean, invstd, use_input_stats,
                                   instance, activation, negative_slope, saved_is_output)
    if not use_input_stats or (grad_mean is None and grad_invstd is None):
        return gi, gw, gb
    sd = stats_dtype(saved.dtype)
    m = saved.shape[2] * saved.shape[3] * (1 if instance else saved.shape[0])
    extra = torch.zeros((), dtype=sd, device=saved.device)
    if grad_mean is not None:
        extra = extra + _per_channel(grad_mean.to(sd), saved, instance, True) / m
    if grad_invstd is not None:
        xhat, _, _, rs = _normalized(saved, weight, bias, mean, invstd, instance, True, activation,
                                     negative_slope, saved_is_output)
        extra = extra - _per_channel(grad_invstd.to(sd), saved, instance, True) * rs * rs * xhat / m
    return (gi.to(sd) + extra).to(saved.dtype), gw, gb


def _normalized(saved: Tensor, weight, bias, mean: Tensor, invstd: Tensor, instance: bool,
                per_sample: bool, activation: int, negative_slope: float, saved_is_output: bool):
    """(xhat, z, gamma, invstd) in stats precision, broadcastable against saved:
    xhat = (x - mean) * invstd and the pre-activation z = xhat * gamma + beta,
    from the saved input or (In-Place ABN) the saved output inverted."""
    sd = stats_dtype(saved.dtype)
    C = saved.shape[1]
    w = effective_weight(weight, activation, negative_slope)
    gamma = (w.to(sd) if w is not None else torch.ones(C, dtype=sd, device=saved.device)).reshape(1, C, 1, 1)
    beta = (bias.to(sd) if bias is not None else torch.zeros(C, dtype=sd, device=saved.device)).reshape(1, C, 1, 1)
    rs = _per_channel(invstd, saved, instance, per_sample)
    s = saved.to(sd)
    if saved_is_output:
        z = invert_activation(s, activation, negative_slope)
        return (z - beta) / gamma, z, gamma, rs
    xhat = (s - _per_channel(mean, saved, instance, per_sample)) * rs
    return xhat, xhat * gamma + beta, gamma, rs


# ====================================================================== losses
# Codes shared with csrc/losses.h.
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
NONE, MEAN, SUM = 0, 1, 2
GAN_MODES = {"vanilla": 0, "lsgan": 1, "hinge": 2, "minimax": 3}
VANILLA, LSGAN, HINGE, MINIMAX = 0, 1, 2, 3
_FLOAT_DTYPES = "float32, float64, bfloat16 or float16"


def _check_float(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor ({_FLOAT_DTYPES}), got {t.dtype}")


def _check_loss_reduction(reduction: int) -> None:
    if reduction not in (MEAN, SUM):
        raise ValueError(f"reduction must be 1 ('mean') or 2 ('sum'), got {reduction}")


def _check_not_empty_for_mean(t: Tensor, name: str, reduction: int) -> None:
    if t.numel() == 0 and reduction == MEAN:
        raise ValueError(f"{name} is empty: reduction='mean' of no elements is undefined (use "
                         "reduction='sum', which gives 0 for an empty tensor)")


def _check_same(a: Tensor, an: str, b: Tensor, bn: str, shape: bool = True) -> None:
    if a.device != b.device:
        raise ValueError(f"{an} is on {a.device} but {bn} is on {b.device}; they must be on the "
                         "same device")
    if shape and a.shape != b.shape:
        raise ValueError(f"{an} has shape {list(a.shape)} but {bn} has shape {list(b.shape)}; they "
                         "must match (no broadcasting)")
    if a.dtype != b.dtype:
        raise TypeError(f"{an} has dtype {a.dtype} but {bn} has dtype {b.dtype}; they must match")


def _check_label(v: float, name: str, mode: int) -> None:
    if mode in (VANILLA, MINIMAX):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1] for the BCE ('vanilla') loss, got {v}")
    elif not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")


def check_d_loss_args(real, fake, mode, real_label, fake_label, reduction) -> None:
    """Twin of check_d_loss_args in csrc/losses.h."""
    if mode not in (VANILLA, LSGAN, HINGE):
        raise ValueError(f"mode must be 0 ('vanilla'), 1 ('lsgan') or 2 ('hinge') for d_loss, got {mode}")
    _check_loss_reduction(reduction)
    _check_float(real, "real_logits")
    _check_float(fake, "fake_logits")
    if real.dtype != fake.dtype:
        raise TypeError(f"real_logits has dtype {real.dtype} but fake_logits has dtype {fake.dtype}; "
                        "they must match")
    if real.device != fake.device:
        raise ValueError(f"real_logits is on {real.device} but fake_logits is on {fake.device}; they "
                         "must be on the same device")
    _check_label(real_label, "real_label", mode)
    _check_label(fake_label, "fake_label", mode)
    _check_not_empty_for_mean(real, "real_logits", reduction)
    _check_not_empty_for_mean(fake, "fake_logits", reduction)


def check_g_loss_args(fake, mode, real_label, fake_label, reduction) -> None:
    """Twin of check_g_loss_args in csrc/losses.h."""
    if mode not in (VANILLA, LSGAN, HINGE, MINIMAX):
        raise ValueError("mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge') or 3 ('minimax') for "
                         f"g_loss, got {mode}")
    _check_loss_reduction(reduction)
    _check_float(fake, "fake_logits")
    _check_label(real_label, "real_label", mode)
    _check_label(fake_label, "fake_label", mode)
    _check_not_empty_for_mean(fake, "fake_logits", reduction)


def check_pair_args(a, an, b, bn, reduction) -> None:
    """Twin of check_pair_args in csrc/losses.h."""
    _check_loss_reduction(reduction)
    _check_float(a, an)
    _check_float(b, bn)
    _check_same(a, an, b, bn)
    _check_not_empty_for_mean(a, an, reduction)


def check_scale_loss_grads_args(grad, saved_a, saved_b) -> None:
    """Twin of check_scale_loss_grads_args in csrc/losses.h."""
    _check_float(grad, "grad")
    if grad.numel() != 1:
        raise ValueError(f"grad must hold the loss's gradient (one value), got shape {list(grad.shape)}")
    for s, name in ((saved_a, "saved_a"), (saved_b, "saved_b")):
        if s is not None:
            _check_same(s, name, grad, "grad", shape=False)


def _reduce(t: Tensor, reduction: int) -> Tensor:
    # float64 accumulation, like the kernels' cross-block sums.
    s = t.double().sum()
    return s / t.numel() if reduction == MEAN else s


def _bce(x: Tensor, y) -> Tensor:
    """softplus(x) - x*y, stable for any finite x."""
    return torch.clamp_min(x, 0) - x * y + torch.log1p(torch.exp(-x.abs()))


def _term(x: Tensor, kind: str, label: float) -> Tensor:
    xs = x.to(stats_dtype(x.dtype))
    if kind == "bce":
        return _bce(xs, label)
    if kind == "neg_bce":
        return -_bce(xs, label)
    if kind == "square":
        return (xs - label) ** 2
    if kind == "hinge_real":
        return torch.relu(1 - xs)
    if kind == "hinge_fake":
        return torch.relu(1 + xs)
    assert kind == "neg"
    return -xs


def d_loss(real_logits: Tensor, fake_logits: Tensor, mode: int, real_label: float,
           fake_label: float, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.d_loss``."""
    check_d_loss_args(real_logits, fake_logits, mode, real_label, fake_label, reduction)
    kinds = {VANILLA: ("bce", "bce"), LSGAN: ("square", "square"), HINGE: ("hinge_real", "hinge_fake")}
    kr, kf = kinds[mode]
    loss = (_reduce(_term(real_logits, kr, real_label), reduction)
            + _reduce(_term(fake_logits, kf, fake_label), reduction))
    return loss.to(real_logits.dtype)


def g_loss(fake_logits: Tensor, mode: int, real_label: float, fake_label: float,
           reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.g_loss``."""
    check_g_loss_args(fake_logits, mode, real_label, fake_label, reduction)
    kind, label = {VANILLA: ("bce", real_label), MINIMAX: ("neg_bce", fake_label),
                   LSGAN: ("square", real_label), HINGE: ("neg", 0.0)}[mode]
    return _reduce(_term(fake_logits, kind, label), reduction).to(fake_logits.dtype)


def bce_with_logits(input: Tensor, target: Tensor, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.bce_with_logits``."""
    check_pair_args(input, "input", target, "target", reduction)
    sd = stats_dtype(input.dtype)
    return _reduce(_bce(input.to(sd), target.to(sd)), reduction).to(input.dtype)


def l1_loss(input: Tensor, target: Tensor, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.l1_loss``."""
    check_pair_args(input, "input", target, "target", reduction)
    sd = stats_dtype(input.dtype)
    return _reduce((input.to(sd) - target.to(sd)).abs(), reduction).to(input.dtype)


def cycle_l1_loss(input1: Tensor, target1: Tensor, input2: Tensor, target2: Tensor,
                  weight1: float, weight2: float, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.cycle_l1_loss``."""
    check_pair_args(input1, "input1", target1, "target1", reduction)
    check_pair_args(input2, "input2", target2, "target2", reduction)
    _check_same(input1, "input1", input2, "input2", shape=False)
    sd1, sd2 = stats_dtype(input1.dtype), stats_dtype(input2.dtype)
    l1 = _reduce((input1.to(sd1) - target1.to(sd1)).abs(), reduction)
    l2 = _reduce((input2.to(sd2) - target2.to(sd2)).abs(), reduction)
    return (weight1 * l1 + weight2 * l2).to(input1.dtype)


# ===================================================== reparameterization + KL
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def philox4x32_10(counter: Tensor, key: tuple) -> Tensor:
    """Philox-4x32-10 on int64 tensors holding uint32 words: counter (n, 4) ->
    (n, 4). The same function as philox4x32_10 in csrc/philox.h."""
    c0, c1, c2, c3 = (counter[:, i].clone() for i in range(4))
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + _PHILOX_W0) & _MASK32, (k1 + _PHILOX_W1) & _MASK32
        # 32x32 -> 64-bit products, split in 16-bit halves so nothing overflows int64.
        hi0, lo0 = _mulhilo(_PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(_PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3], dim=1)


def _mulhilo(m: int, c: Tensor):
    m_lo, m_hi = m & 0xFFFF, m >> 16
    c_lo, c_hi = c & 0xFFFF, c >> 16
    ll, lh, hl, hh = c_lo * m_lo, c_lo * m_hi, c_hi * m_lo, c_hi * m_hi
    mid = (ll >> 16) + (lh & 0xFFFF) + (hl & 0xFFFF)
    lo = ((mid & 0xFFFF) << 16) | (ll & 0xFFFF)
    hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16)
    return hi & _MASK32, lo & _MASK32


def philox_counters(q: Tensor, offset: int) -> Tensor:
    """The Philox counters (n, 4) of blocks q for a call at `offset`: curand's
    layout, (lo(offset/4), hi(offset/4), lo(q), hi(q)) (why: csrc/philox.h)."""
    step = offset >> 2
    return torch.stack([torch.full_like(q, step & _MASK32), torch.full_like(q, (step >> 32) & _MASK32),
                        q & _MASK32, q >> 32], dim=1)


def generator_seed_offset(device: torch.device, generator: Optional[torch.Generator] = None):
    """(seed, offset) for one call, drawn as the kernels draw them (csrc/philox.h),
    advancing the generator the same way."""
    device = torch.device(device)
    if device.type == "cuda":
        gen = generator if generator is not None else torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()]
        seed, offset = gen.initial_seed(), gen.get_offset()
        gen.set_offset(offset + 4)
        return seed, offset
    if device.type != "cpu":
        raise ValueError(f"reparameterize: no noise generator for device type {device.type!r}")
    # Tensor.random_() on int64 draws random64() with the top bit cleared: the
    # CPU kernel uses exactly that as its seed.
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    return seed, 0


def normal_noise(numel: int, dtype: torch.dtype, device, seed: int, offset: int) -> Tensor:
    """The first `numel` normals of the (seed, offset) stream, in the op's
    compute precision (float64 for float64, else float32)."""
    double = dtype == torch.float64
    per = 2 if double else 4
    nblocks = -(-numel // per)
    q = torch.arange(nblocks, dtype=torch.int64, device=device)
    x = philox4x32_10(philox_counters(q, offset), (seed & _MASK32, (seed >> 32) & _MASK32))
    # Uniforms are exact; the transform is evaluated in float64 and rounded
    # once, so this twin gives the correctly rounded noise the kernels
    # approximate to a few ulp.
    if double:
        def u53(hi, lo):
            v = (hi << 21) ^ (lo >> 11)
            return (v.double() + 0.5) * 2.0 ** -53
        pairs = [(u53(x[:, 0], x[:, 1]), u53(x[:, 2], x[:, 3]))]
    else:
        def u23(w):
            return ((w >> 9).double() + 0.5) * 2.0 ** -23
        pairs = [(u23(x[:, 0]), u23(x[:, 1])), (u23(x[:, 2]), u23(x[:, 3]))]
    cols = []
    for u1, u2 in pairs:
        r = torch.sqrt(-2.0 * torch.log(u1))
        t = 2.0 * math.pi * u2
        cols += [r * torch.cos(t), r * torch.sin(t)]
    out_dtype = torch.float64 if double else torch.float32
    return torch.stack(cols, dim=1).reshape(-1)[:numel].to(out_dtype)


def check_reparameterize_args(mu: Tensor, logvar: Tensor, kl: bool, reduction: int) -> None:
    """Twin of check_reparameterize_args in csrc/reparam.h."""
    _check_float(mu, "mu")
    _check_same(logvar, "logvar", mu, "mu")
    if kl:
        if mu.dim() < 2:
            raise ValueError("mu must have a batch dimension and a latent dimension (B, D, ...) for "
                             f"the KL term, got shape {list(mu.shape)}")
        if reduction not in (NONE, MEAN, SUM):
            raise ValueError(f"reduction must be 0 ('none'), 1 ('mean') or 2 ('sum'), got {reduction}")
        if mu.shape[0] == 0 and reduction == MEAN:
            raise ValueError("mu has batch size 0: the mean KL over no samples is undefined (use "
                             "reduction='sum' or 'none')")


def _reparameterize(mu: Tensor, logvar: Tensor, generator) -> Tensor:
    sd = stats_dtype(mu.dtype)
    seed, offset = generator_seed_offset(mu.device, generator)
    eps = normal_noise(mu.numel(), mu.dtype, mu.device, seed, offset).reshape(mu.shape).to(sd)
    return (mu.to(sd) + torch.exp(0.5 * logvar.to(sd)) * eps).to(mu.dtype)


def reparameterize(mu: Tensor, logvar: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """Twin of ``torch.ops.gan_ext.reparameterize``: the same noise as the
    kernel for the same generator state."""
    check_reparameterize_args(mu, logvar, False, MEAN)
    return _reparameterize(mu, logvar, generator)


def kl_divergence(mu: Tensor, logvar: Tensor, reduction: int) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over all but the batch dim."""
    sd = stats_dtype(mu.dtype)
    m, lv = mu.to(sd), logvar.to(sd)
    per_sample = (-0.5 * (1 + lv - m * m - torch.exp(lv))).flatten(1).sum(1)
    if reduction == NONE:
        return per_sample.to(mu.dtype)
    s = per_sample.double().sum()
    return (s / mu.shape[0] if reduction == MEAN else s).to(mu.dtype)


def reparameterize_kl(mu: Tensor, logvar: Tensor, reduction: int, *,
                      generator: Optional[torch.Generator] = None):
    """Twin of ``torch.ops.gan_ext.reparameterize_kl``: returns (z, kl)."""
    check_reparameterize_args(mu, logvar, True, reduction)
    return _reparameterize(mu, logvar, generator), kl_divergence(mu, logvar, reduction)


def reparameterize_kl_given_noise(mu: Tensor, logvar: Tensor, eps: Tensor, with_kl: bool,
                                  reduction: int):
    """(z, kl) for a given noise eps, differentiable in mu and logvar (and eps);
    kl is an empty tensor without with_kl. What csrc/autograd.cpp
    differentiates for a double backward through reparameterize(_kl)."""
    sd = stats_dtype(mu.dtype)
    z = (mu.to(sd) + torch.exp(0.5 * logvar.to(sd)) * eps.to(sd)).to(mu.dtype)
    kl = kl_divergence(mu, logvar, reduction) if with_kl else mu.new_empty((0,))
    return z, kl


# ------------------------------------------------------ activation + dropout
def check_act_dropout_args(input: Tensor, activation: int, negative_slope: float, p: float) -> None:
    """Twin of check_act_dropout_args in csrc/dropout.h."""
    _check_float(input, "input")
    if activation not in (IDENTITY, RELU, LEAKY_RELU):
        raise ValueError(f"activation must be 0 (identity), 1 (relu) or 2 (leaky_relu), got {activation}")
    if activation == LEAKY_RELU and not (math.isfinite(negative_slope) and negative_slope >= 0):
        raise ValueError("negative_slope must be a finite number >= 0 for leaky_relu (the backward "
                         f"reads the sign of the output), got {negative_slope}")
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")


def dropout_threshold(p: float) -> int:
    t = math.ceil(p * 8388608.0 - 0.5)
    return min(max(t, 0), 8388608)


def dropout_scale(p: float) -> float:
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def dropout_keep(numel: int, p: float, device, seed: int, offset: int) -> Tensor:
    """The keep mask (bool, numel) of csrc/dropout.h for a (seed, offset):
    element 32 g + 8 k + lane is word k of Philox block 8 g + lane."""
    groups = -(-numel // 32)
    q = torch.arange(8 * groups, dtype=torch.int64, device=device)
    x = philox4x32_10(philox_counters(q, offset), (seed & _MASK32, (seed >> 32) & _MASK32))  # (8 groups, 4)
    words = x.reshape(groups, 8, 4).transpose(1, 2).reshape(-1)[:numel]
    return (words >> 9) >= dropout_threshold(p)


class _ActDropout(torch.autograd.Function):
    """out = act(input) * mult with the op's backward (csrc/dropout.h): the
    derivative is read from the output and multiplied in, never selected, so a
    NaN gradient stays NaN everywhere (torch.relu's backward would zero it
    where the input is negative), and at a NaN output it is 0 (relu) or
    negative_slope (leaky_relu), as in both kernels."""

    # setup_context form with a generated vmap rule: torch.func transforms
    # (gan_ext runs the twins under them) can transform and batch it.
    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, activation: int, negative_slope: float, mult: Optional[Tensor]):
        y = activate(input.to(stats_dtype(input.dtype)), activation, negative_slope)
        if mult is not None:
            y = y * mult
        # The input's memory layout (at::empty_like's rule), as the kernels give.
        return torch.empty_like(input).copy_(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, activation, negative_slope, mult = inputs
        ctx.save_for_backward(output, mult)
        ctx.activation, ctx.negative_slope = activation, negative_slope

    @staticmethod
    def backward(ctx, grad: Tensor):
        out, mult = ctx.saved_tensors
        sd = stats_dtype(out.dtype)
        g = grad.to(sd)
        if ctx.activation == RELU:
            g = g * (out > 0).to(sd)
        elif ctx.activation == LEAKY_RELU:
            slope = torch.full_like(g, ctx.negative_slope)  # in sd, not rounded to float
            g = g * torch.where(out > 0, torch.ones_like(g), slope)
        if mult is not None:
            g = g * mult
        return torch.empty_like(out).copy_(g), None, None, None


def act_dropout(input: Tensor, activation: int, negative_slope: float, p: float, *,
                generator: Optional[torch.Generator] = None):
    """Twin of ``torch.ops.gan_ext.act_dropout``: (out, rng), the same mask as
    the kernel for the same generator state."""
    check_act_dropout_args(input, activation, negative_slope, p)
    mult = None
    if p > 0:
        seed, offset = generator_seed_offset(input.device, generator)
        keep = dropout_keep(input.numel(), p, input.device, seed, offset).reshape(input.shape)
        mult = keep.to(stats_dtype(input.dtype)) * dropout_scale(p)
        rng = torch.tensor([seed, offset], dtype=torch.int64, device=input.device)
    else:
        rng = torch.zeros(2, dtype=torch.int64, device=input.device)
    return _ActDropout.apply(input, activation, negative_slope, mult), rng
