"""``torch.ops.gan_ext.scale_loss_grads``: the backward op every loss shares
(a loss's forward already computed its gradients; the backward multiplies them
by the incoming gradient). No public wrapper: the losses' C++ autograd calls
it. Here: the argument checks its fake kernel and twin share, the twin and the
fake kernel. Its opcheck cases are in the d_loss spec (gan_loss.py), which
exercises it."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _backend
from ._common import check_float, check_same, dense_like

__all__ = ["check_scale_loss_grads_args", "scale_loss_grads_ref"]

OP = "scale_loss_grads"
KERNELS = ("scale_loss_grads",)


def check_scale_loss_grads_args(grad, saved_a, saved_b) -> None:
    """Twin of check_scale_loss_grads_args in csrc/ops/scale_loss_grads/checks.h."""
    check_float(grad, "grad")
    if grad.numel() != 1:
        raise ValueError(f"grad must hold the loss's gradient (one value), got shape {list(grad.shape)}")
    for s, name in ((saved_a, "saved_a"), (saved_b, "saved_b")):
        if s is not None:
            check_same(s, name, grad, "grad", shape=False)


def scale_loss_grads_ref(grad: Tensor, saved_a: Optional[Tensor],
                         saved_b: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Twin of ``torch.ops.gan_ext.scale_loss_grads``: (grad * saved_a,
    grad * saved_b), an empty tensor for an absent one."""
    check_scale_loss_grads_args(grad, saved_a, saved_b)
    g = grad.reshape(())
    return tuple(grad.new_empty((0,)) if s is None else g * s for s in (saved_a, saved_b))


def _register() -> None:
    @torch.library.register_fake("gan_ext::scale_loss_grads")
    def _scale_loss_grads_fake(grad, saved_a, saved_b):
        check_scale_loss_grads_args(grad, saved_a, saved_b)
        return tuple(grad.new_empty((0,)) if s is None else dense_like(s) for s in (saved_a, saved_b))


# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and helpers the tests use.
REFERENCE = {"scale_loss_grads": scale_loss_grads_ref, "check_scale_loss_grads_args": check_scale_loss_grads_args}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
