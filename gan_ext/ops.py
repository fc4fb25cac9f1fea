"""Functional forms of the fused ops. Each dispatches to the compiled kernel
(``torch.ops.gan_ext.*``) or to its twin in :mod:`gan_ext.reference`, following
the backend switch (``GAN_EXT_BACKEND`` / :func:`gan_ext.set_backend`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _backend
from . import reference as ref

if _backend.extension_loaded:
    from . import _ops  # noqa: F401  (fake kernels + autograd)

_lib = torch.ops.gan_ext

__all__ = ["batch_norm_act", "instance_norm_act", "activation_code", "d_loss", "g_loss",
           "bce_with_logits", "l1_loss", "cycle_l1_loss", "reparameterize", "reparameterize_kl",
           "kl_divergence", "act_dropout"]


def activation_code(activation: str) -> int:
    """'identity' | 'relu' | 'leaky_relu' -> the op's integer code."""
    try:
        return ref.ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation must be one of {sorted(ref.ACTIVATIONS)}, got {activation!r}") from None


def _check_input(input: Tensor, name: str = "input") -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")


def _norm_act(input, running_mean, running_var, num_batches_tracked, weight, bias,
              use_input_stats, momentum, eps, instance, act, negative_slope):
    # The op (or its twin) updates the running statistics and the counter in place.
    if use_input_stats and running_mean is not None and _backend.vmap_active():
        raise ValueError(
            f"{'instance' if instance else 'batch'}_norm_act under torch.func.vmap with input "
            "statistics would update the running statistics in place from every vmapped "
            "sample; use eval mode, a layer with track_running_stats=False, or pass "
            "running_mean=None and running_var=None")
    fn = _lib.norm_act if _backend.use_fused(input) else ref.norm_act
    return fn(input, weight, bias, running_mean, running_var, num_batches_tracked,
              use_input_stats, instance, momentum, eps, act, negative_slope)[0]


def batch_norm_act(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                   weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                   training: bool = False, momentum: Optional[float] = 0.1, eps: float = 1e-5,
                   activation: str = "relu", negative_slope: float = 0.01, *,
                   num_batches_tracked: Optional[Tensor] = None) -> Tensor:
    """``act(F.batch_norm(input, ...))`` in one fused pass (two in training).

    Arguments follow :func:`torch.nn.functional.batch_norm`. In training the
    running statistics are updated in place by the op, and
    ``num_batches_tracked`` (if given) is incremented; ``momentum=None`` is
    ``nn.BatchNorm2d``'s cumulative average, ``1 / num_batches_tracked``, and
    requires the counter.
    """
    _check_input(input)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm_act: running_mean and running_var are required when training=False")
    return _norm_act(input, running_mean, running_var, num_batches_tracked, weight, bias, training,
                     momentum, eps, False, activation_code(activation), negative_slope)


def instance_norm_act(input: Tensor, running_mean: Optional[Tensor] = None,
                      running_var: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                      bias: Optional[Tensor] = None, use_input_stats: bool = True,
                      momentum: float = 0.1, eps: float = 1e-5, activation: str = "relu",
                      negative_slope: float = 0.01) -> Tensor:
    """``act(F.instance_norm(input, ...))`` in one fused pass (two with input stats)."""
    _check_input(input)
    if not use_input_stats and (running_mean is None or running_var is None):
        raise ValueError("instance_norm_act: running_mean and running_var are required when "
                         "use_input_stats=False")
    return _norm_act(input, running_mean, running_var, None, weight, bias, use_input_stats,
                     momentum, eps, True, activation_code(activation), negative_slope)


# ---------------------------------------------------------------------- losses
_D_MODES = ("vanilla", "lsgan", "hinge")
_G_MODES = ("vanilla", "lsgan", "hinge", "minimax")


def _code(value, table: dict, allowed, what: str) -> int:
    if value in allowed:
        return table[value]
    raise ValueError(f"{what} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def reduction_code(reduction: str, allow_none: bool = False) -> int:
    allowed = ("none", "mean", "sum") if allow_none else ("mean", "sum")
    return _code(reduction, ref.REDUCTIONS, allowed, "reduction")


def _check_tensor(t, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _check_hinge_labels(mode: str, real_label: float, fake_label: float) -> None:
    if mode == "hinge" and (real_label != 1.0 or fake_label != 0.0):
        raise ValueError("real_label and fake_label have no meaning for the hinge loss; leave them "
                         f"at 1.0 and 0.0 (got {real_label} and {fake_label})")


def d_loss(real_logits: Tensor, fake_logits: Tensor, mode: str = "vanilla", real_label: float = 1.0,
           fake_label: float = 0.0, reduction: str = "mean") -> Tensor:
    """Discriminator loss on the logits of real and fake samples, with both
    gradients computed in the same pass as the loss.

    * ``vanilla``: BCE with logits against ``real_label`` / ``fake_label``
      (``real_label=0.9`` is one-sided label smoothing);
    * ``lsgan``: ``mean((real - real_label)^2) + mean((fake - fake_label)^2)``;
    * ``hinge``: ``mean(relu(1 - real)) + mean(relu(1 + fake))``.

    The two terms are reduced separately, so the batch sizes (and shapes) of
    ``real_logits`` and ``fake_logits`` may differ.
    """
    _check_tensor(real_logits, "real_logits")
    _check_tensor(fake_logits, "fake_logits")
    m = _code(mode, ref.GAN_MODES, _D_MODES, "mode")
    _check_hinge_labels(mode, real_label, fake_label)
    r = reduction_code(reduction)
    if _backend.use_fused(real_logits):
        return _lib.d_loss(real_logits, fake_logits, m, float(real_label), float(fake_label), r)
    return ref.d_loss(real_logits, fake_logits, m, float(real_label), float(fake_label), r)


def g_loss(fake_logits: Tensor, mode: str = "vanilla", real_label: float = 1.0,
           fake_label: float = 0.0, reduction: str = "mean", minimax: bool = False) -> Tensor:
    """Generator loss on the discriminator's logits for fake samples.

    ``vanilla`` is the non-saturating ``-log D(G(z))`` (BCE against
    ``real_label``); with ``minimax=True`` it is the paper's
    ``log(1 - D(G(z)))`` (minus the BCE against ``fake_label``). ``lsgan``:
    ``mean((fake - real_label)^2)``; ``hinge``: ``-mean(fake)``.
    """
    _check_tensor(fake_logits, "fake_logits")
    m = _code(mode, ref.GAN_MODES, _G_MODES, "mode")
    if minimax:
        if mode != "vanilla":
            raise ValueError(f"minimax=True is the BCE ('vanilla') generator loss; got mode={mode!r}")
        m = ref.MINIMAX
    _check_hinge_labels(mode, real_label, fake_label)
    r = reduction_code(reduction)
    if _backend.use_fused(fake_logits):
        return _lib.g_loss(fake_logits, m, float(real_label), float(fake_label), r)
    return ref.g_loss(fake_logits, m, float(real_label), float(fake_label), r)


def bce_with_logits(input: Tensor, target: Tensor, reduction: str = "mean",
                    weight: Optional[Tensor] = None,
                    pos_weight: Optional[Tensor] = None) -> Tensor:
    """``F.binary_cross_entropy_with_logits(input, target)`` with its gradient
    computed in the forward pass: the VAE reconstruction term on decoder logits
    (``reduction="sum"`` is the classic VAE objective). Shapes and dtypes of
    input and target must match.

    ``weight``, ``pos_weight`` and ``reduction="none"`` are computed as
    torch computes them, by ``F.binary_cross_entropy_with_logits`` itself (not
    fused: a per-element result or weights leave nothing for a fused pass to
    save over PyTorch's own elementwise kernel)."""
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    if weight is not None or pos_weight is not None or reduction == "none":
        reduction_code(reduction, allow_none=True)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            input, target, weight=weight, pos_weight=pos_weight, reduction=reduction)
    r = reduction_code(reduction)
    if _backend.use_fused(input):
        return _lib.bce_with_logits(input, target, r)
    return ref.bce_with_logits(input, target, r)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """``mean|input - target|`` (or the sum) with gradients for both inputs;
    backward recomputes the sign from the inputs, so nothing extra is saved.
    ``reduction="none"`` is ``(input - target).abs()`` as ``F.l1_loss``
    computes it (not fused: per-element output, nothing to save)."""
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    if reduction == "none":
        return torch.nn.functional.l1_loss(input, target, reduction="none")
    r = reduction_code(reduction)
    if _backend.use_fused(input):
        return _lib.l1_loss(input, target, r)
    return ref.l1_loss(input, target, r)


def cycle_l1_loss(input1: Tensor, target1: Tensor, input2: Tensor, target2: Tensor,
                  weight1: float = 1.0, weight2: float = 1.0, reduction: str = "mean") -> Tensor:
    """``weight1 * l1_loss(input1, target1) + weight2 * l1_loss(input2, target2)``
    in one call: CycleGAN's two cycle (or identity) terms, one pass per pair."""
    for t, n in ((input1, "input1"), (target1, "target1"), (input2, "input2"), (target2, "target2")):
        _check_tensor(t, n)
    r = reduction_code(reduction)
    if _backend.use_fused(input1):
        return _lib.cycle_l1_loss(input1, target1, input2, target2, float(weight1), float(weight2), r)
    return ref.cycle_l1_loss(input1, target1, input2, target2, float(weight1), float(weight2), r)


# ---------------------------------------------------------- reparameterization
def reparameterize(mu: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """``z = mu + exp(0.5 * logvar) * eps`` with ``eps ~ N(0, 1)`` drawn inside
    the kernel from PyTorch's generator (the default one, or ``generator``):
    ``torch.manual_seed`` reproduces z. Backward keeps no eps."""
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    if _backend.use_fused(mu):
        return _lib.reparameterize(mu, logvar, generator=generator)
    return ref.reparameterize(mu, logvar, generator=generator)


def reparameterize_kl(mu: Tensor, logvar: Tensor, reduction: str = "mean",
                      generator: Optional[torch.Generator] = None):
    """``(z, kl)``: the reparameterized sample and
    ``kl = -0.5 * sum(1 + logvar - mu^2 - exp(logvar))`` over the latent dims,
    then the mean (default) or sum over the batch, or per sample (``'none'``)."""
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    r = reduction_code(reduction, allow_none=True)
    if _backend.use_fused(mu):
        return _lib.reparameterize_kl(mu, logvar, r, generator=generator)
    return ref.reparameterize_kl(mu, logvar, r, generator=generator)


def kl_divergence(mu: Tensor, logvar: Tensor, reduction: str = "mean") -> Tensor:
    """The KL term alone, in plain PyTorch (for evaluation without sampling)."""
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    r = reduction_code(reduction, allow_none=True)
    ref.check_reparameterize_args(mu, logvar, True, r)
    return ref.kl_divergence(mu, logvar, r)


# ------------------------------------------------------ activation + dropout
def act_dropout(input: Tensor, activation: str = "leaky_relu", negative_slope: float = 0.2,
                p: float = 0.5, training: bool = True,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """``dropout(act(input), p)`` in one pass: the activation (``'relu'``,
    ``'leaky_relu'`` with ``negative_slope >= 0``, or ``'identity'``) and
    inverted dropout, the keep mask drawn in-kernel from PyTorch's generator
    (``torch.manual_seed`` reproduces it). Backward stores no mask: it is
    regenerated from the (seed, offset) pair, and the activation's derivative
    is read from the output. With ``training=False`` or ``p == 0`` it is the
    activation alone. The output has the input's memory layout (its strides
    when dense, e.g. channels_last; else contiguous in its suggested format)."""
    _check_input(input)
    act = activation_code(activation)
    slope, p = float(negative_slope), float(p)
    if not training:
        p = 0.0
    if _backend.use_fused(input):
        return _lib.act_dropout(input, act, slope, p, generator=generator)[0]
    return ref.act_dropout(input, act, slope, p, generator=generator)[0]
