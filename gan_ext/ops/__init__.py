"""Functional forms of the fused ops, one module per op (the same grouping as
``csrc/ops/<op>/``). Each module holds the public wrapper, which dispatches to
the compiled kernel (``torch.ops.gan_ext.*``) or to its pure-PyTorch twin
following the backend switch (``GAN_EXT_BACKEND`` / :func:`gan_ext.set_backend`),
the twin itself (re-exported by :mod:`gan_ext.reference`), the fake kernels,
the twin ops the C++ autograd calls for a double backward, and the op's spec
(:mod:`gan_ext.ops._spec`), from which the tests and benchmarks are built.

Adding an op: one module here and one line in OP_MODULES below.
"""
from __future__ import annotations

import importlib

import torch

from .. import _backend

# choice_code, reduction_code and the GAN mode checks: gan_ext.nn.GANLoss validates with them.
from ._common import activation_code, choice_code, reduction_code  # noqa: F401

# The index: every op module, in the order the tests list them.
OP_MODULES = tuple(importlib.import_module(f"{__name__}.{name}") for name in (
    "norm_act", "gan_loss", "bce_with_logits", "l1_loss", "reparameterize", "act_dropout",
    "scale_loss_grads", "minibatch_discrimination"))

from . import _norm_act_backward  # noqa: E402,F401  (norm_act_backward's fake kernel, twin op)

# Under autocast the losses and the KL run in float32, as torch's own losses do (autocast's
# float32 list): bf16 logits beside a float32 target would be refused, and a bf16 loss value
# keeps 3 digits. Their inputs are logits and latents, small next to the activations.
AUTOCAST_FLOAT32 = ("d_loss", "d_loss_with_grad", "g_loss", "g_loss_with_grad", "bce_with_logits",
                    "l1_loss", "cycle_l1_loss", "reparameterize_kl")
if _backend.extension_loaded:
    for _op in AUTOCAST_FLOAT32:
        for _device in ("cpu", "cuda"):
            torch.library.register_autocast(f"gan_ext::{_op}", _device, torch.float32)

# After the modules: a function of the same name as its module (bce_with_logits,
# l1_loss, reparameterize, act_dropout) then wins the package attribute, as in
# torchvision.ops; reach a module through OP_MODULES or importlib.
from .act_dropout import act_dropout  # noqa: E402
from .bce_with_logits import bce_with_logits  # noqa: E402
from .gan_loss import D_MODES, G_MODES, check_hinge_labels, d_loss, g_loss  # noqa: E402,F401
from .l1_loss import cycle_l1_loss, l1_loss  # noqa: E402
from .minibatch_discrimination import minibatch_discrimination  # noqa: E402
from .norm_act import batch_norm_act, instance_norm_act  # noqa: E402
from .reparameterize import kl_divergence, reparameterize, reparameterize_kl  # noqa: E402

__all__ = ["batch_norm_act", "instance_norm_act", "activation_code", "d_loss", "g_loss",
           "bce_with_logits", "l1_loss", "cycle_l1_loss", "reparameterize", "reparameterize_kl",
           "kl_divergence", "act_dropout", "minibatch_discrimination"]
