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

__all__ = ["batch_norm_act", "instance_norm_act", "activation_code"]


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


def _check_reference_args(input, weight, bias, running_mean, running_var, use_input_stats,
                          instance, eps) -> None:
    """The checks of check_norm_act_args (csrc/norm_act.h) for the reference path,
    so both backends reject the same input with the same message; without them
    the fallback silently normalizes a single value per channel to zero, where
    the kernel (and torch) raise."""
    if input.dim() != 4:
        raise ValueError(f"input must be a 4-D (N, C, H, W) tensor, got a {input.dim()}-D tensor "
                         f"of shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError("input must be a floating point tensor (float32, float64, bfloat16 or "
                        f"float16), got {input.dtype}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
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


def _update_running(running: Optional[Tensor], batch: Tensor, momentum: float, instance: bool,
                    N: int) -> None:
    if running is None:
        return
    if instance:
        # nn.InstanceNorm2d averages the per-instance statistics over the batch.
        batch = batch.reshape(N, -1).mean(0)
    running.lerp_(batch.to(running.dtype), momentum)


def _norm_act(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
              instance, act, negative_slope):
    if _backend.use_fused(input):
        out, mean, _invstd, var = _lib.norm_act(input, weight, bias, running_mean, running_var,
                                                use_input_stats, instance, eps, act, negative_slope)
    else:
        _check_reference_args(input, weight, bias, running_mean, running_var, use_input_stats,
                              instance, eps)
        out, mean, _invstd, var = ref.norm_act(input, weight, bias, running_mean, running_var,
                                               use_input_stats, instance, eps, act, negative_slope)
    if use_input_stats and running_mean is not None and input.numel() > 0:
        N = input.shape[0]
        n = input.shape[2] * input.shape[3] * (1 if instance else N)
        with torch.no_grad():
            _update_running(running_mean, mean.detach(), momentum, instance, N)
            # Running variance is unbiased, as in torch.nn.BatchNorm2d.
            _update_running(running_var, var.detach() * (n / max(n - 1, 1)), momentum, instance, N)
    return out


def batch_norm_act(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                   weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                   training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                   activation: str = "relu", negative_slope: float = 0.01) -> Tensor:
    """``act(F.batch_norm(input, ...))`` in one fused pass (two in training).

    Arguments follow :func:`torch.nn.functional.batch_norm`; ``momentum`` must
    already be resolved to a float (the modules turn ``momentum=None`` into the
    cumulative-average factor). Running statistics are updated in place.
    """
    _check_input(input)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm_act: running_mean and running_var are required when training=False")
    return _norm_act(input, running_mean, running_var, weight, bias, training, momentum, eps, False,
                     activation_code(activation), negative_slope)


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
    return _norm_act(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                     True, activation_code(activation), negative_slope)
