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


def _update_running(running: Optional[Tensor], batch: Tensor, momentum: float, instance: bool,
                    N: int, scale: float = 1.0) -> None:
    """running = (1 - momentum) * running + momentum * scale * batch, in place."""
    if running is None:
        return
    if instance:
        # nn.InstanceNorm2d averages the per-instance statistics over the batch.
        batch = batch.reshape(N, -1).mean(0)
    # Two in-place ops and no temporaries: this runs on every training step and
    # is most of the Python cost on small tensors. add_ casts into the buffer's
    # dtype (float32 statistics into a bfloat16 buffer).
    running.mul_(1.0 - momentum).add_(batch, alpha=momentum * scale)


def _norm_act(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
              instance, act, negative_slope):
    if _backend.use_fused(input):
        # mean/var are non-differentiable outputs of the op: no detach needed.
        out, mean, _invstd, var = _lib.norm_act(input, weight, bias, running_mean, running_var,
                                                use_input_stats, instance, eps, act, negative_slope)
    else:
        out, mean, _invstd, var = ref.norm_act(input, weight, bias, running_mean, running_var,
                                               use_input_stats, instance, eps, act, negative_slope)
        mean, var = mean.detach(), var.detach()
    if use_input_stats and running_mean is not None and input.numel() > 0:
        N = input.shape[0]
        n = input.shape[2] * input.shape[3] * (1 if instance else N)
        _update_running(running_mean, mean, momentum, instance, N)
        # Running variance is unbiased, as in torch.nn.BatchNorm2d.
        _update_running(running_var, var, momentum, instance, N, n / max(n - 1, 1))
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
