"""The GAN losses on logits, ``torch.ops.gan_ext.d_loss`` and ``g_loss`` (with
their ``*_with_grad`` forms): the functional forms, the pure-PyTorch twins, the
fake kernels, the twin ops of the double backward and the op spec."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _backend
from ._spec import BadInput, OpSpec, Sample, away_from_kinks, leaf
from ._common import (autocast_like_op, choice_code, bce, check_float, check_loss_reduction,
                      check_not_empty_for_mean, check_tensor, reduce, reduction_code,
                      register_twin, scalar_like, dense_like, stats_dtype)

__all__ = ["d_loss", "g_loss"]

OP = "gan_loss"
KERNELS = ("d_loss", "d_loss_with_grad", "g_loss", "g_loss_with_grad", "scale_loss_grads")
# Codes shared with the C++ loss checks.
GAN_MODES = {"vanilla": 0, "lsgan": 1, "hinge": 2, "minimax": 3, "wasserstein": 4}
VANILLA, LSGAN, HINGE, MINIMAX, WASSERSTEIN = 0, 1, 2, 3, 4
D_MODES = ("vanilla", "lsgan", "hinge", "wasserstein")
G_MODES = ("vanilla", "lsgan", "hinge", "minimax", "wasserstein")
# The modes whose terms take no labels: real_label/fake_label must stay at 1 and 0.
UNLABELLED = ("hinge", "wasserstein")

_lib = torch.ops.gan_ext


# ------------------------------------------------------------------ wrappers
def check_hinge_labels(mode: str, real_label: float, fake_label: float) -> None:
    """Refuses labels other than the defaults for the modes without labels
    (hinge, wasserstein): a smoothing asked for would silently do nothing."""
    if mode in UNLABELLED and (real_label != 1.0 or fake_label != 0.0):
        raise ValueError(f"real_label and fake_label have no meaning for the {mode} loss; leave "
                         f"them at 1.0 and 0.0 (got {real_label} and {fake_label})")


def d_loss(real_logits: Tensor, fake_logits: Tensor, mode: str = "vanilla", real_label: float = 1.0,
           fake_label: float = 0.0, reduction: str = "mean") -> Tensor:
    """Discriminator loss on the logits of real and fake samples, with both
    gradients computed in the same pass as the loss.

    * ``vanilla``: BCE with logits against ``real_label`` / ``fake_label``
      (``real_label=0.9`` is one-sided label smoothing);
    * ``lsgan``: ``mean((real - real_label)^2) + mean((fake - fake_label)^2)``;
    * ``hinge``: ``mean(relu(1 - real)) + mean(relu(1 + fake))``;
    * ``wasserstein``: ``mean(fake) - mean(real)`` (the WGAN critic's loss,
      without the gradient penalty, which needs D itself).

    The two terms are reduced separately, so the batch sizes (and shapes) of
    ``real_logits`` and ``fake_logits`` may differ.
    """
    check_tensor(real_logits, "real_logits")
    check_tensor(fake_logits, "fake_logits")
    m = choice_code(mode, GAN_MODES, D_MODES, "mode")
    check_hinge_labels(mode, real_label, fake_label)
    r = reduction_code(reduction)
    fn = _lib.d_loss if _backend.use_fused(real_logits, OP) else _d_loss_twin
    return fn(real_logits, fake_logits, m, float(real_label), float(fake_label), r)


def g_loss(fake_logits: Tensor, mode: str = "vanilla", real_label: float = 1.0,
           fake_label: float = 0.0, reduction: str = "mean", minimax: bool = False) -> Tensor:
    """Generator loss on the discriminator's logits for fake samples.

    ``vanilla`` is the non-saturating ``-log D(G(z))`` (BCE against
    ``real_label``); with ``minimax=True`` it is the paper's
    ``log(1 - D(G(z)))`` (minus the BCE against ``fake_label``). ``lsgan``:
    ``mean((fake - real_label)^2)``; ``hinge`` and ``wasserstein``: ``-mean(fake)``.
    """
    check_tensor(fake_logits, "fake_logits")
    m = choice_code(mode, GAN_MODES, G_MODES, "mode")
    if minimax:
        if mode != "vanilla":
            raise ValueError(f"minimax=True is the BCE ('vanilla') generator loss; got mode={mode!r}")
        m = MINIMAX
    check_hinge_labels(mode, real_label, fake_label)
    r = reduction_code(reduction)
    fn = _lib.g_loss if _backend.use_fused(fake_logits, OP) else _g_loss_twin
    return fn(fake_logits, m, float(real_label), float(fake_label), r)


# --------------------------------------------------------------------- twins
def check_label(v: float, name: str, mode: int) -> None:
    if mode in (VANILLA, MINIMAX):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1] for the BCE ('vanilla') loss, got {v}")
    elif not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")


def check_d_loss_args(real, fake, mode, real_label, fake_label, reduction) -> None:
    """Twin of check_d_loss_args in the C++ loss checks."""
    if mode not in (VANILLA, LSGAN, HINGE, WASSERSTEIN):
        raise ValueError("mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge') or 4 ('wasserstein') "
                         f"for d_loss, got {mode}")
    check_loss_reduction(reduction)
    check_float(real, "real_logits")
    check_float(fake, "fake_logits")
    if real.dtype != fake.dtype:
        raise TypeError(f"real_logits has dtype {real.dtype} but fake_logits has dtype {fake.dtype}; "
                        "they must match")
    if real.device != fake.device:
        raise ValueError(f"real_logits is on {real.device} but fake_logits is on {fake.device}; they "
                         "must be on the same device")
    check_label(real_label, "real_label", mode)
    check_label(fake_label, "fake_label", mode)
    check_not_empty_for_mean(real, "real_logits", reduction)
    check_not_empty_for_mean(fake, "fake_logits", reduction)


def check_g_loss_args(fake, mode, real_label, fake_label, reduction) -> None:
    """Twin of check_g_loss_args in the C++ loss checks."""
    if mode not in (VANILLA, LSGAN, HINGE, MINIMAX, WASSERSTEIN):
        raise ValueError("mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge'), 3 ('minimax') or 4 "
                         f"('wasserstein') for g_loss, got {mode}")
    check_loss_reduction(reduction)
    check_float(fake, "fake_logits")
    check_label(real_label, "real_label", mode)
    check_label(fake_label, "fake_label", mode)
    check_not_empty_for_mean(fake, "fake_logits", reduction)


def _term(x: Tensor, kind: str, label: float) -> Tensor:
    xs = x.to(stats_dtype(x.dtype))
    if kind == "bce":
        return bce(xs, label)
    if kind == "neg_bce":
        return -bce(xs, label)
    if kind == "square":
        return (xs - label) ** 2
    if kind == "hinge_real":
        return torch.relu(1 - xs)
    if kind == "hinge_fake":
        return torch.relu(1 + xs)
    if kind == "identity":
        return xs
    assert kind == "neg"
    return -xs


def d_loss_ref(real_logits: Tensor, fake_logits: Tensor, mode: int, real_label: float,
               fake_label: float, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.d_loss``."""
    check_d_loss_args(real_logits, fake_logits, mode, real_label, fake_label, reduction)
    kinds = {VANILLA: ("bce", "bce"), LSGAN: ("square", "square"), HINGE: ("hinge_real", "hinge_fake"),
             WASSERSTEIN: ("neg", "identity")}
    kr, kf = kinds[mode]
    loss = (reduce(_term(real_logits, kr, real_label), reduction)
            + reduce(_term(fake_logits, kf, fake_label), reduction))
    return loss.to(real_logits.dtype)


def g_loss_ref(fake_logits: Tensor, mode: int, real_label: float, fake_label: float,
               reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.g_loss``."""
    check_g_loss_args(fake_logits, mode, real_label, fake_label, reduction)
    kind, label = {VANILLA: ("bce", real_label), MINIMAX: ("neg_bce", fake_label),
                   LSGAN: ("square", real_label), HINGE: ("neg", 0.0),
                   WASSERSTEIN: ("neg", 0.0)}[mode]
    return reduce(_term(fake_logits, kind, label), reduction).to(fake_logits.dtype)


# ------------------------------------------------------- fake kernels, twin ops
def _register() -> None:
    @torch.library.register_fake("gan_ext::d_loss")
    def _d_loss_fake(real, fake, mode, real_label, fake_label, reduction):
        check_d_loss_args(real, fake, mode, real_label, fake_label, reduction)
        return scalar_like(real)

    @torch.library.register_fake("gan_ext::d_loss_with_grad")
    def _d_loss_with_grad_fake(real, fake, mode, real_label, fake_label, reduction):
        check_d_loss_args(real, fake, mode, real_label, fake_label, reduction)
        return scalar_like(real), dense_like(real), dense_like(fake)

    @torch.library.register_fake("gan_ext::g_loss")
    def _g_loss_fake(fake, mode, real_label, fake_label, reduction):
        check_g_loss_args(fake, mode, real_label, fake_label, reduction)
        return scalar_like(fake)

    @torch.library.register_fake("gan_ext::g_loss_with_grad")
    def _g_loss_with_grad_fake(fake, mode, real_label, fake_label, reduction):
        check_g_loss_args(fake, mode, real_label, fake_label, reduction)
        return scalar_like(fake), dense_like(fake)

    # The losses themselves: the C++ autograd differentiates them with create_graph.
    register_twin("d_loss_twin(Tensor real_logits, Tensor fake_logits, int mode, float real_label, "
                  "float fake_label, int reduction) -> Tensor", __name__, "d_loss_ref")
    register_twin("g_loss_twin(Tensor fake_logits, int mode, float real_label, float fake_label, "
                  "int reduction) -> Tensor", __name__, "g_loss_ref")



# -------------------------------------------------------------------- specs
# Labels per mode: one-sided label smoothing for vanilla, the LSGAN paper's
# a=-1/b=1 for the discriminator, a non-default fake label for minimax (which
# must be the label it uses).
_D_LABELS = {"vanilla": (0.9, 0.0), "lsgan": (1.0, -1.0), "hinge": (1.0, 0.0),
             "wasserstein": (1.0, 0.0)}
_G_LABELS = {"vanilla": (0.9, 0.0), "minimax": (1.0, 0.1), "lsgan": (0.8, 0.0), "hinge": (1.0, 0.0),
             "wasserstein": (1.0, 0.0)}
_MODE_NAMES = {v: k for k, v in GAN_MODES.items()}
_RED_NAMES = {1: "mean", 2: "sum"}


def _logits(shape, dtype, device, layout="contiguous", scale=1.5):
    return leaf(away_from_kinks(scale * torch.randn(*shape, dtype=torch.float64)), dtype, device,
                layout, True)


def _d_samples(dtype, device, layout):
    """Different shapes (and batch sizes) for real and fake: reduced separately."""
    return [Sample(f"{mode}-{red}", (_logits((5, 1), dtype, device, layout),
                                     _logits((3, 1, 4, 4), dtype, device, layout),
                                     GAN_MODES[mode], *_D_LABELS[mode], code))
            for mode in D_MODES for code, red in _RED_NAMES.items()]


def _g_samples(dtype, device, layout):
    return [Sample(f"{mode}-{red}", (_logits((3, 1, 4, 4), dtype, device, layout),
                                     GAN_MODES[mode], *_G_LABELS[mode], code))
            for mode in G_MODES for code, red in _RED_NAMES.items()]


def _torch_term(x, kind, label, reduction):
    F = torch.nn.functional
    r = _RED_NAMES[reduction]
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(x, torch.full_like(x, label), reduction=r)
    if kind == "square":
        return F.mse_loss(x, torch.full_like(x, label), reduction=r)
    t = {"hinge_real": torch.relu(1 - x), "hinge_fake": torch.relu(1 + x), "neg": -x,
         "identity": x}[kind]
    return t.mean() if r == "mean" else t.sum()


def _d_torch(real, fake, mode, real_label, fake_label, reduction):
    kr, kf = {VANILLA: ("bce", "bce"), LSGAN: ("square", "square"),
              HINGE: ("hinge_real", "hinge_fake"), WASSERSTEIN: ("neg", "identity")}[mode]
    return _torch_term(real, kr, real_label, reduction) + _torch_term(fake, kf, fake_label, reduction)


def _g_torch(fake, mode, real_label, fake_label, reduction):
    if mode == MINIMAX:
        return -_torch_term(fake, "bce", fake_label, reduction)
    kind, label = {VANILLA: ("bce", real_label), LSGAN: ("square", real_label),
                   HINGE: ("neg", 0.0), WASSERSTEIN: ("neg", 0.0)}[mode]
    return _torch_term(fake, kind, label, reduction)


def _d_public(s):
    r, f, m, rl, fl, red = s.args
    return d_loss(r, f, _MODE_NAMES[m], rl, fl, _RED_NAMES[red])


def _g_public(s):
    f, m, rl, fl, red = s.args
    if m == MINIMAX:
        return g_loss(f, "vanilla", rl, fl, _RED_NAMES[red], minimax=True)
    return g_loss(f, _MODE_NAMES[m], rl, fl, _RED_NAMES[red])


def _t(device, *shape, grad=False, dtype=torch.float32, layout="contiguous"):
    return leaf(torch.randn(*shape, dtype=torch.float64), dtype, device, layout, grad)


def _d_opchecks(device):
    L = torch.ops.gan_ext
    return {
        "d_loss-vanilla": (L.d_loss.default, (_t(device, 5, 1, grad=True),
                                              _t(device, 3, 1, 4, 4, grad=True), 0, 0.9, 0.0, 1)),
        "d_loss-hinge-nograd": (L.d_loss.default, (_t(device, 6), _t(device, 6), 2, 1.0, 0.0, 2)),
        "d_loss-wasserstein": (L.d_loss.default, (_t(device, 4, grad=True),
                                                  _t(device, 2, 3, layout="strided", grad=True),
                                                  4, 1.0, 0.0, 1)),
        "d_loss_with_grad-wasserstein-sum": (L.d_loss_with_grad.default,
                                             (_t(device, 5, 1), _t(device, 3, 1, 2, 2), 4, 1.0, 0.0,
                                              2)),
        "d_loss_with_grad-lsgan-cl": (L.d_loss_with_grad.default,
                                      (_t(device, 2, 3, 4, 4, layout="channels_last"),
                                       _t(device, 5, 1), 1, 1.0, -1.0, 1)),
        # The losses' shared backward op.
        "scale_loss_grads-both": (L.scale_loss_grads.default,
                                  (torch.tensor(-0.5, device=device), _t(device, 5, 1),
                                   _t(device, 2, 3, 4, 4, layout="channels_last"))),
        "scale_loss_grads-second-strided": (L.scale_loss_grads.default,
                                            (torch.tensor(3.0, device=device), None,
                                             _t(device, 4, 3, 5, layout="strided"))),
    }


def _g_opchecks(device):
    L = torch.ops.gan_ext
    return {
        "g_loss-minimax": (L.g_loss.default, (_t(device, 3, 1, 4, 4, grad=True), 3, 1.0, 0.1, 1)),
        "g_loss_with_grad-hinge": (L.g_loss_with_grad.default, (_t(device, 7), 2, 1.0, 0.0, 2)),
        "g_loss-wasserstein": (L.g_loss.default, (_t(device, 2, 1, 3, 3, layout="channels_last",
                                                     grad=True), 4, 1.0, 0.0, 1)),
    }


def _bad(name, make, error, match):
    return BadInput(name, lambda device: Sample(name, make(device)), error, match)


def _f(device, *shape, dtype=torch.float32):
    return torch.randn(*shape, device=device).to(dtype)


_D_BAD = (
    _bad("int-logits", lambda d: (torch.ones(4, dtype=torch.int64, device=d), _f(d, 4), 0, 1.0, 0.0, 1),
         TypeError, "real_logits must be a floating point tensor"),
    _bad("dtype-mismatch", lambda d: (_f(d, 4), _f(d, 4, dtype=torch.float64), 0, 1.0, 0.0, 1),
         TypeError, "but fake_logits has dtype"),
    _bad("mode-code", lambda d: (_f(d, 4), _f(d, 4), 3, 1.0, 0.0, 1), ValueError,
         "mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge') or 4 ('wasserstein') for d_loss"),
    _bad("reduction-code", lambda d: (_f(d, 4), _f(d, 4), 0, 1.0, 0.0, 0), ValueError,
         "reduction must be 1 ('mean') or 2 ('sum')"),
    _bad("bce-label", lambda d: (_f(d, 4), _f(d, 4), 0, 1.5, 0.0, 1), ValueError,
         "real_label must lie in [0, 1]"),
    _bad("lsgan-label-inf", lambda d: (_f(d, 4), _f(d, 4), 1, 1.0, float("inf"), 1), ValueError,
         "fake_label must be finite"),
    _bad("wasserstein-label-nan", lambda d: (_f(d, 4), _f(d, 4), 4, float("nan"), 0.0, 1),
         ValueError, "real_label must be finite"),
    _bad("empty-mean", lambda d: (_f(d, 4), _f(d, 0), 0, 1.0, 0.0, 1), ValueError,
         "fake_logits is empty"),
)
_G_BAD = (
    _bad("int-logits", lambda d: (torch.ones(4, dtype=torch.int32, device=d), 0, 1.0, 0.0, 1),
         TypeError, "fake_logits must be a floating point tensor"),
    _bad("mode-code", lambda d: (_f(d, 4), 5, 1.0, 0.0, 1), ValueError,
         "mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge'), 3 ('minimax') or 4 ('wasserstein') "
         "for g_loss"),
    _bad("minimax-label", lambda d: (_f(d, 4), 3, 1.0, -0.1, 2), ValueError,
         "fake_label must lie in [0, 1]"),
    _bad("empty-mean", lambda d: (_f(d, 0, 1), 0, 1.0, 0.0, 1), ValueError, "fake_logits is empty"),
)


def _nan(t):
    t = t.detach().clone()
    t.view(-1)[t.numel() // 2] = float("nan")
    return t


def _specs():
    return (
        OpSpec("d_loss", d_loss_ref, _d_samples, _d_public, baseline=_d_torch,
               bad_inputs=_D_BAD, opchecks=_d_opchecks,
               nan_sample=lambda d: Sample("nan", (_nan(_f(d, 37)), _f(d, 5), 2, 1.0, 0.0, 1)),
               empty_samples=lambda d: [Sample("sum", (_f(d, 0), _f(d, 0, 1), 0, 1.0, 0.0, 2))],
               bench_shapes={"dcgan": (64, 1), "patchgan": (1, 1, 30, 30)}),
        OpSpec("g_loss", g_loss_ref, _g_samples, _g_public, baseline=_g_torch,
               bad_inputs=_G_BAD, opchecks=_g_opchecks,
               nan_sample=lambda d: Sample("nan", (_nan(_f(d, 37)), 1, 1.0, 0.0, 1)),
               empty_samples=lambda d: [Sample("sum", (_f(d, 0), 0, 1.0, 0.0, 2))],
               bench_shapes={"dcgan": (64, 1), "patchgan": (1, 1, 30, 30)}),
    )


SPECS = _specs()


# The twins as the wrappers call them: cast as the op's autocast kernel casts.
_d_loss_twin = autocast_like_op(d_loss_ref, 2)
_g_loss_twin = autocast_like_op(g_loss_ref, 1)

# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and helpers the tests use.
REFERENCE = {"d_loss": d_loss_ref, "g_loss": g_loss_ref, "GAN_MODES": GAN_MODES, "VANILLA": VANILLA, "LSGAN": LSGAN, "HINGE": HINGE, "MINIMAX": MINIMAX, "WASSERSTEIN": WASSERSTEIN, **{f.__name__: f for f in (check_label, check_d_loss_args, check_g_loss_args)}}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
