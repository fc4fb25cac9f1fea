"""The twins csrc/autograd.cpp calls when a backward must be differentiable.

The fused ops' backward runs fused kernels whose results autograd cannot
differentiate again. Gradient penalties (WGAN-GP, R1, path length) need that
second derivative: they run ``torch.autograd.grad(..., create_graph=True)``.
In that case (grad mode on inside the backward) the C++ autograd computes the
first derivative from these ops instead. Their kernels are
CompositeImplicitAutograd: the pure-PyTorch twins of gan_ext.reference, so
autograd records them and the derivative they give can be differentiated
again, to any order. The first-order path (create_graph=False) never runs
them and is as fast as before.

Internal: the schemas live here (not in csrc/gan_ext.cpp) because their
kernels are Python; the C++ autograd looks them up when it first needs them.
"""
from __future__ import annotations

import torch

from . import reference as ref

_lib = torch.library.Library("gan_ext", "FRAGMENT")

_SCHEMAS = {
    # norm_act: the first derivative (grad_input, grad_weight, grad_bias) from
    # the gradients reaching the outputs out, mean and invstd.
    "norm_act_backward_twin": (
        "norm_act_backward_twin(Tensor? grad_out, Tensor? grad_mean, Tensor? grad_invstd, "
        "Tensor saved, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd, "
        "bool use_input_stats, bool instance, int activation, float negative_slope, "
        "bool saved_is_output) -> (Tensor, Tensor, Tensor)",
        "norm_act_backward_with_stats"),
    # The losses themselves (autograd.cpp differentiates them with create_graph).
    "d_loss_twin": (
        "d_loss_twin(Tensor real_logits, Tensor fake_logits, int mode, float real_label, "
        "float fake_label, int reduction) -> Tensor", "d_loss"),
    "g_loss_twin": (
        "g_loss_twin(Tensor fake_logits, int mode, float real_label, float fake_label, "
        "int reduction) -> Tensor", "g_loss"),
    "bce_with_logits_twin": (
        "bce_with_logits_twin(Tensor input, Tensor target, int reduction) -> Tensor",
        "bce_with_logits"),
    "l1_loss_twin": (
        "l1_loss_twin(Tensor input, Tensor target, int reduction) -> Tensor", "l1_loss"),
    "cycle_l1_loss_twin": (
        "cycle_l1_loss_twin(Tensor input1, Tensor target1, Tensor input2, Tensor target2, "
        "float weight1, float weight2, int reduction) -> Tensor", "cycle_l1_loss"),
    # z and the KL for a given eps (the noise the forward drew, recovered from z).
    "reparameterize_kl_twin": (
        "reparameterize_kl_twin(Tensor mu, Tensor logvar, Tensor eps, bool with_kl, "
        "int reduction) -> (Tensor, Tensor)", "reparameterize_kl_given_noise"),
}



def _twin(name: str):
    # Looked up per call, so the twin is always gan_ext.reference's current one.
    def call(*args):
        return getattr(ref, name)(*args)
    call.__name__ = f"{name}_twin"
    return call


for _op, (_schema, _twin_name) in _SCHEMAS.items():
    _lib.define(_schema)
    _lib.impl(_op, _twin(_twin_name), "CompositeImplicitAutograd")
