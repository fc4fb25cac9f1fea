"""Fake kernels for torch.ops.gan_ext.* (the C++ side defines the schemas, the
CPU/CUDA kernels and autograd). Imported by gan_ext.ops only when _C loaded.
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


# Autograd of norm_act is registered in C++ (csrc/autograd.cpp): the Python
# register_autograd wrapper cost more per call than eager BatchNorm2d+ReLU on
# small tensors. norm_act_backward stays a separate op with its own fake kernel.
