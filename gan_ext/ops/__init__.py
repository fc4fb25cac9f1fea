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

# choice_code, reduction_code and the GAN mode checks: gan_ext.nn.GANLoss validates with them.
from ._common import activation_code, choice_code, reduction_code  # noqa: F401

# The index: every op module, in the order the tests list them.
OP_MODULES = tuple(importlib.import_module(f"{__name__}.{name}") for name in (
    "norm_act", "gan_loss", "bce_with_logits", "l1_loss", "reparameterize", "act_dropout",
    "scale_loss_grads"))

from . import _norm_act_backward  # noqa: E402,F401  (norm_act_backward's fake kernel, twin op)

# After the modules: a function of the same name as its module (bce_with_logits,
# l1_loss, reparameterize, act_dropout) then wins the package attribute, as in
# torchvision.ops; reach a module through OP_MODULES or importlib.
from .act_dropout import act_dropout  # noqa: E402
from .bce_with_logits import bce_with_logits  # noqa: E402
from .gan_loss import D_MODES, G_MODES, check_hinge_labels, d_loss, g_loss  # noqa: E402,F401
from .l1_loss import cycle_l1_loss, l1_loss  # noqa: E402
from .norm_act import batch_norm_act, instance_norm_act  # noqa: E402
from .reparameterize import kl_divergence, reparameterize, reparameterize_kl  # noqa: E402

__all__ = ["batch_norm_act", "instance_norm_act", "activation_code", "d_loss", "g_loss",
           "bce_with_logits", "l1_loss", "cycle_l1_loss", "reparameterize", "reparameterize_kl",
           "kl_divergence", "act_dropout"]
