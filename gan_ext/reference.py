"""Pure-PyTorch twins of every gan_ext op.

Each function here has the signature and the semantics of the op of the same
name in ``torch.ops.gan_ext``. They serve twice: as the fallback when the C++
extension is not built (or ``GAN_EXT_BACKEND=reference``), and as the oracle the
tests check the kernels against. They are written for clarity, not speed, and
are differentiable with ordinary autograd.
"""
from __future__ import annotations

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


def norm_act(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
             running_mean: Optional[Tensor], running_var: Optional[Tensor],
             use_input_stats: bool, instance: bool, eps: float, activation: int,
             negative_slope: float):
    """Twin of ``torch.ops.gan_ext.norm_act``; returns (out, mean, invstd, var)."""
    check_norm_act_args(input, weight, bias, running_mean, running_var, use_input_stats, instance,
                        eps, activation)
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
    return out, mean, invstd, var


def invert_activation(y: Tensor, activation: int, negative_slope: float) -> Tensor:
    if activation == LEAKY_RELU:
        return torch.where(y >= 0, y, y / negative_slope)
    return y


def norm_act_backward(grad_out: Tensor, saved: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                      mean: Tensor, invstd: Tensor, use_input_stats: bool, instance: bool,
                      activation: int, negative_slope: float, saved_is_output: bool):
    """Twin of ``torch.ops.gan_ext.norm_act_backward``; analytic, in stats precision."""
    sd = stats_dtype(saved.dtype)
    C = saved.shape[1]
    w = effective_weight(weight, activation, negative_slope)
    gamma = (w.to(sd) if w is not None else torch.ones(C, dtype=sd, device=saved.device)).reshape(1, C, 1, 1)
    beta = (bias.to(sd) if bias is not None else torch.zeros(C, dtype=sd, device=saved.device)).reshape(1, C, 1, 1)
    per_sample = use_input_stats
    mu = _per_channel(mean, saved, instance, per_sample)
    rs = _per_channel(invstd, saved, instance, per_sample)
    s = saved.to(sd)
    dy = grad_out.to(sd)
    if saved_is_output:
        z = invert_activation(s, activation, negative_slope)
        xhat = (z - beta) / gamma
    else:
        xhat = (s - mu) * rs
        z = xhat * gamma + beta
    if activation == RELU:
        dz = torch.where(z > 0, dy, torch.zeros_like(dy))
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
