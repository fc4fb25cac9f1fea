"""The backward of norm_act as a twin: ``torch.ops.gan_ext.norm_act_backward``'s
pure-PyTorch twin, the differentiable first derivative the C++ autograd takes
for a double backward (the op gan_ext::norm_act_backward_twin), and the
backward op's fake kernel. Beside gan_ext/ops/norm_act.py, whose op uses it."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from ._common import LEAKY_RELU, RELU, register_twin, stats_dtype
from .norm_act import _kernel_memory_format, _per_channel, effective_weight


def invert_activation(y: Tensor, activation: int, negative_slope: float) -> Tensor:
    if activation == LEAKY_RELU:
        return torch.where(y >= 0, y, y / negative_slope)
    return y
def norm_act_backward(grad_out: Tensor, saved: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                      mean: Tensor, invstd: Tensor, use_input_stats: bool, instance: bool,
                      activation: int, negative_slope: float, saved_is_output: bool):
    """Twin of ``torch.ops.gan_ext.norm_act_backward``; analytic, in stats precision.
    grad_weight is the effective weight's (see effective_weight_grad for weight's)."""
    xhat, z, gamma, rs = normalized(saved, weight, bias, mean, invstd, instance, use_input_stats,
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
    every argument: csrc/ops/norm_act/norm_act.cpp calls it (through the op
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
        xhat, _, _, rs = normalized(saved, weight, bias, mean, invstd, instance, True, activation,
                                     negative_slope, saved_is_output)
        extra = extra - _per_channel(grad_invstd.to(sd), saved, instance, True) * rs * rs * xhat / m
    return (gi.to(sd) + extra).to(saved.dtype), gw, gb


def normalized(saved: Tensor, weight, bias, mean: Tensor, invstd: Tensor, instance: bool,
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


def _register() -> None:
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
