"""Fake kernels for torch.ops.gan_ext.* (the C++ side defines the schemas, the
CPU/CUDA kernels and autograd). Imported by gan_ext.ops only when _C loaded.
"""
from __future__ import annotations

import torch

from . import _twin_ops  # noqa: F401  (the differentiable backward of create_graph)
from . import reference as ref

lib = torch.ops.gan_ext


def _kernel_memory_format(t: torch.Tensor) -> torch.memory_format:
    # Mirrors use_channels_last() in csrc/norm_act.h.
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


# ---------------------------------------------------------------- fake kernels
@torch.library.register_fake("gan_ext::norm_act")
def _norm_act_fake(input, weight, bias, running_mean, running_var, num_batches_tracked,
                   use_input_stats, instance, momentum, eps, activation, negative_slope):
    # The running statistics are mutated in place (the schema says so); a fake
    # kernel only describes the outputs.
    ref.check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                                  use_input_stats, momentum)
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


# ---------------------------------------------------------------------- losses
# Tensor.is_non_overlapping_and_dense() for fake tensors; renamed (and made
# safe for symbolic shapes: unknown counts as False) in recent torch.
_pc = torch._prims_common
_is_dense = getattr(_pc, "is_non_overlapping_and_dense_or_false", None) or \
    getattr(_pc, "is_non_overlapping_and_dense")


def _dense_like(t):
    # Mirrors as_dense() in csrc/losses.h: dense tensors keep their strides.
    if _is_dense(t):
        return torch.empty_like(t)
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def _dense_pair_like(a, b):
    # Mirrors as_dense_pair() in csrc/losses.h.
    if _is_dense(a) and _is_dense(b) and a.stride() == b.stride():
        return torch.empty_like(a), torch.empty_like(b)
    return (torch.empty(a.shape, dtype=a.dtype, device=a.device),
            torch.empty(b.shape, dtype=b.dtype, device=b.device))


def _scalar(t):
    return t.new_empty(())


@torch.library.register_fake("gan_ext::d_loss")
def _d_loss_fake(real, fake, mode, real_label, fake_label, reduction):
    ref.check_d_loss_args(real, fake, mode, real_label, fake_label, reduction)
    return _scalar(real)


@torch.library.register_fake("gan_ext::d_loss_with_grad")
def _d_loss_with_grad_fake(real, fake, mode, real_label, fake_label, reduction):
    ref.check_d_loss_args(real, fake, mode, real_label, fake_label, reduction)
    return _scalar(real), _dense_like(real), _dense_like(fake)


@torch.library.register_fake("gan_ext::g_loss")
def _g_loss_fake(fake, mode, real_label, fake_label, reduction):
    ref.check_g_loss_args(fake, mode, real_label, fake_label, reduction)
    return _scalar(fake)


@torch.library.register_fake("gan_ext::g_loss_with_grad")
def _g_loss_with_grad_fake(fake, mode, real_label, fake_label, reduction):
    ref.check_g_loss_args(fake, mode, real_label, fake_label, reduction)
    return _scalar(fake), _dense_like(fake)


@torch.library.register_fake("gan_ext::bce_with_logits")
def _bce_fake(input, target, reduction):
    ref.check_pair_args(input, "input", target, "target", reduction)
    return _scalar(input)


@torch.library.register_fake("gan_ext::bce_with_logits_with_grad")
def _bce_with_grad_fake(input, target, reduction, grad_target):
    ref.check_pair_args(input, "input", target, "target", reduction)
    gi, gt = _dense_pair_like(input, target)
    return _scalar(input), gi, (gt if grad_target else input.new_empty((0,)))


@torch.library.register_fake("gan_ext::l1_loss")
def _l1_fake(input, target, reduction):
    ref.check_pair_args(input, "input", target, "target", reduction)
    return _scalar(input)


@torch.library.register_fake("gan_ext::cycle_l1_loss")
def _cycle_l1_fake(input1, target1, input2, target2, weight1, weight2, reduction):
    ref.check_pair_args(input1, "input1", target1, "target1", reduction)
    ref.check_pair_args(input2, "input2", target2, "target2", reduction)
    return _scalar(input1)


@torch.library.register_fake("gan_ext::l1_loss_backward")
def _l1_backward_fake(grad, input, target, weight, reduction, grad_input, grad_target):
    gi, gt = _dense_pair_like(input, target)
    empty = input.new_empty((0,))
    return (gi if grad_input else empty), (gt if grad_target else empty)


@torch.library.register_fake("gan_ext::scale_loss_grads")
def _scale_loss_grads_fake(grad, saved_a, saved_b):
    ref.check_scale_loss_grads_args(grad, saved_a, saved_b)
    return tuple(grad.new_empty((0,)) if s is None else _dense_like(s) for s in (saved_a, saved_b))


# ---------------------------------------------------------- reparameterization
@torch.library.register_fake("gan_ext::reparameterize")
def _reparameterize_fake(mu, logvar, *, generator=None):
    ref.check_reparameterize_args(mu, logvar, False, ref.MEAN)
    return torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)


@torch.library.register_fake("gan_ext::reparameterize_kl")
def _reparameterize_kl_fake(mu, logvar, reduction, *, generator=None):
    ref.check_reparameterize_args(mu, logvar, True, reduction)
    z = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    kl = mu.new_empty((mu.shape[0],) if reduction == ref.NONE else ())
    return z, kl


@torch.library.register_fake("gan_ext::reparameterize_backward")
def _reparameterize_backward_fake(grad_z, grad_kl, z, mu, logvar, reduction):
    return (torch.empty(mu.shape, dtype=mu.dtype, device=mu.device),
            torch.empty(mu.shape, dtype=mu.dtype, device=mu.device))


# -------------------------------------------------------- activation + dropout
@torch.library.register_fake("gan_ext::act_dropout")
def _act_dropout_fake(input, activation, negative_slope, p, *, generator=None):
    ref.check_act_dropout_args(input, activation, negative_slope, p)
    # The input's memory layout (csrc/dropout.h, Layout).
    return torch.empty_like(input), input.new_empty((2,), dtype=torch.int64)


@torch.library.register_fake("gan_ext::act_dropout_backward")
def _act_dropout_backward_fake(grad, out, rng, activation, negative_slope, p):
    return torch.empty_like(out)
