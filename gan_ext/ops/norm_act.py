"""Batch/instance norm + activation: ``torch.ops.gan_ext.norm_act`` (and its
backward op), the functional forms, the pure-PyTorch twin, the fake kernels,
the twin op of the double backward and the op spec."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from ._common import (LEAKY_RELU, RELU, activation_code, check_activation, check_tensor,
                      register_twin, stats_dtype)

__all__ = ["batch_norm_act", "instance_norm_act"]

OP = "norm_act"
KERNELS = ("norm_act", "norm_act_backward")
# Mirrors kMinAbsWeight in the C++ norm_act checks.
MIN_ABS_WEIGHT = 1e-5

_lib = torch.ops.gan_ext


# ------------------------------------------------------------------ wrappers
def _call(input, running_mean, running_var, num_batches_tracked, weight, bias,
          use_input_stats, momentum, eps, instance, act, negative_slope):
    # The op (or its twin) updates the running statistics and the counter in place.
    if use_input_stats and running_mean is not None and _backend.vmap_active():
        raise ValueError(
            f"{'instance' if instance else 'batch'}_norm_act under torch.func.vmap with input "
            "statistics would update the running statistics in place from every vmapped "
            "sample; use eval mode, a layer with track_running_stats=False, or pass "
            "running_mean=None and running_var=None")
    fn = _lib.norm_act if _backend.use_fused(input, OP) else norm_act
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
    check_tensor(input)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm_act: running_mean and running_var are required when training=False")
    return _call(input, running_mean, running_var, num_batches_tracked, weight, bias, training,
                 momentum, eps, False, activation_code(activation), negative_slope)


def instance_norm_act(input: Tensor, running_mean: Optional[Tensor] = None,
                      running_var: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                      bias: Optional[Tensor] = None, use_input_stats: bool = True,
                      momentum: float = 0.1, eps: float = 1e-5, activation: str = "relu",
                      negative_slope: float = 0.01) -> Tensor:
    """``act(F.instance_norm(input, ...))`` in one fused pass (two with input stats)."""
    check_tensor(input)
    if not use_input_stats and (running_mean is None or running_var is None):
        raise ValueError("instance_norm_act: running_mean and running_var are required when "
                         "use_input_stats=False")
    return _call(input, running_mean, running_var, None, weight, bias, use_input_stats,
                 momentum, eps, True, activation_code(activation), negative_slope)


# ---------------------------------------------------------------------- twin
def output_is_invertible(activation: int, negative_slope: float) -> bool:
    return activation == LEAKY_RELU and negative_slope > 0


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
    """The twin of check_norm_act_args in the C++ norm_act checks: both backends reject
    the same input with the same message (without it the fallback would, say,
    normalize a single value per channel to zero where the kernel raises)."""
    if input.dim() != 4:
        raise ValueError(f"input must be a 4-D (N, C, H, W) tensor, got a {input.dim()}-D tensor "
                         f"of shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError("input must be a floating point tensor (float32, float64, bfloat16 or "
                        f"float16), got {input.dtype}")
    check_activation(activation)
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
    """The twin of check_running_update_args in the C++ norm_act checks."""
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
    """In place, as the kernels do it (the CPU kernel's update_running_stats):
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


# ------------------------------------------------------- fake kernels, twin op
def _kernel_memory_format(t: torch.Tensor) -> torch.memory_format:
    # Mirrors use_channels_last() in the C++ norm_act checks.
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _register() -> None:
    # Autograd of norm_act is registered in C++: the Python register_autograd
    # wrapper cost more per call than eager BatchNorm2d+ReLU on small tensors.
    # norm_act_backward stays a separate op with its own fake kernel.
    @torch.library.register_fake("gan_ext::norm_act")
    def _norm_act_fake(input, weight, bias, running_mean, running_var, num_batches_tracked,
                       use_input_stats, instance, momentum, eps, activation, negative_slope):
        # The running statistics are mutated in place (the schema says so); a fake
        # kernel only describes the outputs.
        check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                                  use_input_stats, momentum)
        out = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                          memory_format=_kernel_memory_format(input))
        n = input.shape[0] * input.shape[1] if (instance and use_input_stats) else input.shape[1]
        sd = stats_dtype(input.dtype)
        stats = [input.new_empty((n,), dtype=sd) for _ in range(3)]
        return (out, *stats)

    @torch.library.register_fake("gan_ext::norm_act_backward")
    def _norm_act_backward_fake(grad_out, saved, weight, bias, mean, invstd, use_input_stats,
                                instance, activation, negative_slope, saved_is_output):
        grad_input = torch.empty(saved.shape, dtype=saved.dtype, device=saved.device,
                                 memory_format=_kernel_memory_format(saved))
        pdt = weight.dtype if weight is not None else saved.dtype
        C = saved.shape[1]
        return grad_input, saved.new_empty((C,), dtype=pdt), saved.new_empty((C,), dtype=pdt)

    # The first derivative (grad_input, grad_weight, grad_bias) from the
    # gradients reaching the outputs out, mean and invstd.
    register_twin(
        "norm_act_backward_twin(Tensor? grad_out, Tensor? grad_mean, Tensor? grad_invstd, "
        "Tensor saved, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd, "
        "bool use_input_stats, bool instance, int activation, float negative_slope, "
        "bool saved_is_output) -> (Tensor, Tensor, Tensor)",
        __name__, "norm_act_backward_with_stats")


if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
