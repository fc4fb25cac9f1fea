"""Fake kernels and autograd for torch.ops.gan_ext.* (the C++ side defines the
schemas and the CPU/CUDA kernels). Imported by gan_ext.ops only when _C loaded.
"""
from __future__ import annotations

import torch

from . import reference as ref

lib = torch.ops.gan_ext


def _kernel_memory_format(t: torch.Tensor) -> torch.memory_format:
    # Mirrors use_channels_last() in csrc/norm_act.h.
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


# ---------------------------------------------------------------- fake kernels
@torch.library.register_fake("gan_ext::norm_act")
def _norm_act_fake(input, weight, bias, running_mean, running_var, use_input_stats, instance, eps,
                   activation, negative_slope):
    out = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                      memory_format=_kernel_memory_format(input))
    n = input.shape[0] * input.shape[1] if (instance and use_input_stats) else input.shape[1]
    sd = ref.stats_dtype(input.dtype)
    stats = [input.new_empty((n,), dtype=sd) for _ in range(3)]
    return (out, *stats)


@torch.library.register_fake("gan_ext::norm_act_backward")
def _norm_act_backward_fake(grad_out, saved, weight, bias, mean, invstd, use_input_stats, instance,
                            activation, negative_slope, saved_is_output):
    grad_input = torch.empty(saved.shape, dtype=saved.dtype, device=saved.device,
                             memory_format=_kernel_memory_format(saved))
    pdt = weight.dtype if weight is not None else saved.dtype
    C = saved.shape[1]
    return grad_input, saved.new_empty((C,), dtype=pdt), saved.new_empty((C,), dtype=pdt)


# -------------------------------------------------------------------- autograd
def _norm_act_setup_context(ctx, inputs, output):
    (input, weight, bias, _rm, _rv, use_input_stats, instance, _eps, activation, negative_slope) = inputs
    out, mean, invstd, _var = output
    saved_is_output = ref.output_is_invertible(activation, negative_slope)
    # In-Place Activated BatchNorm: an invertible activation lets backward work
    # from the output alone, so the input need not stay alive.
    ctx.save_for_backward(out if saved_is_output else input, weight, bias, mean, invstd)
    ctx.args = (use_input_stats, instance, activation, negative_slope, saved_is_output)
    ctx.mark_non_differentiable(mean, invstd, _var)


def _norm_act_backward(ctx, grad_out, _gm, _gi, _gv):
    saved, weight, bias, mean, invstd = ctx.saved_tensors
    use_input_stats, instance, activation, negative_slope, saved_is_output = ctx.args
    need_in, need_w, need_b = ctx.needs_input_grad[:3]
    if not (need_in or need_w or need_b):
        return (None,) * 10
    grad_input, grad_weight, grad_bias = lib.norm_act_backward(
        grad_out, saved, weight, bias, mean, invstd, use_input_stats, instance, activation,
        negative_slope, saved_is_output)
    return (grad_input if need_in else None,
            grad_weight if (need_w and weight is not None) else None,
            grad_bias if (need_b and bias is not None) else None,
            None, None, None, None, None, None, None)


torch.library.register_autograd("gan_ext::norm_act", _norm_act_backward,
                                setup_context=_norm_act_setup_context)
