"""L1 losses, ``torch.ops.gan_ext.l1_loss`` and ``cycle_l1_loss`` (one backward
op, ``l1_loss_backward``, for both): the functional forms, the pure-PyTorch
twins, the fake kernels, the twin ops of the double backward and the op spec."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from ._common import (check_pair_args, check_same, check_tensor, dense_pair_like, reduce,
                      reduction_code, register_twin, scalar_like, stats_dtype)

__all__ = ["l1_loss", "cycle_l1_loss"]

OP = "l1_loss"
KERNELS = ("l1_loss", "cycle_l1_loss", "l1_loss_backward")

_lib = torch.ops.gan_ext


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """``mean|input - target|`` (or the sum) with gradients for both inputs;
    backward recomputes the sign from the inputs, so nothing extra is saved.
    ``reduction="none"`` is ``(input - target).abs()`` as ``F.l1_loss``
    computes it (not fused: per-element output, nothing to save)."""
    check_tensor(input, "input")
    check_tensor(target, "target")
    if reduction == "none":
        return torch.nn.functional.l1_loss(input, target, reduction="none")
    r = reduction_code(reduction)
    fn = _lib.l1_loss if _backend.use_fused(input, OP) else l1_loss_ref
    return fn(input, target, r)


def cycle_l1_loss(input1: Tensor, target1: Tensor, input2: Tensor, target2: Tensor,
                  weight1: float = 1.0, weight2: float = 1.0, reduction: str = "mean") -> Tensor:
    """``weight1 * l1_loss(input1, target1) + weight2 * l1_loss(input2, target2)``
    in one call: CycleGAN's two cycle (or identity) terms, one pass per pair."""
    for t, n in ((input1, "input1"), (target1, "target1"), (input2, "input2"), (target2, "target2")):
        check_tensor(t, n)
    r = reduction_code(reduction)
    fn = _lib.cycle_l1_loss if _backend.use_fused(input1, OP) else cycle_l1_loss_ref
    return fn(input1, target1, input2, target2, float(weight1), float(weight2), r)


def l1_loss_ref(input: Tensor, target: Tensor, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.l1_loss``."""
    check_pair_args(input, "input", target, "target", reduction)
    sd = stats_dtype(input.dtype)
    return reduce((input.to(sd) - target.to(sd)).abs(), reduction).to(input.dtype)


def cycle_l1_loss_ref(input1: Tensor, target1: Tensor, input2: Tensor, target2: Tensor,
                      weight1: float, weight2: float, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.cycle_l1_loss``."""
    check_pair_args(input1, "input1", target1, "target1", reduction)
    check_pair_args(input2, "input2", target2, "target2", reduction)
    check_same(input1, "input1", input2, "input2", shape=False)
    sd1, sd2 = stats_dtype(input1.dtype), stats_dtype(input2.dtype)
    l1 = reduce((input1.to(sd1) - target1.to(sd1)).abs(), reduction)
    l2 = reduce((input2.to(sd2) - target2.to(sd2)).abs(), reduction)
    return (weight1 * l1 + weight2 * l2).to(input1.dtype)


def _register() -> None:
    @torch.library.register_fake("gan_ext::l1_loss")
    def _l1_fake(input, target, reduction):
        check_pair_args(input, "input", target, "target", reduction)
        return scalar_like(input)

    @torch.library.register_fake("gan_ext::cycle_l1_loss")
    def _cycle_l1_fake(input1, target1, input2, target2, weight1, weight2, reduction):
        check_pair_args(input1, "input1", target1, "target1", reduction)
        check_pair_args(input2, "input2", target2, "target2", reduction)
        return scalar_like(input1)

    @torch.library.register_fake("gan_ext::l1_loss_backward")
    def _l1_backward_fake(grad, input, target, weight, reduction, grad_input, grad_target):
        gi, gt = dense_pair_like(input, target)
        empty = input.new_empty((0,))
        return (gi if grad_input else empty), (gt if grad_target else empty)

    register_twin("l1_loss_twin(Tensor input, Tensor target, int reduction) -> Tensor",
                  __name__, "l1_loss_ref")
    register_twin("cycle_l1_loss_twin(Tensor input1, Tensor target1, Tensor input2, Tensor target2, "
                  "float weight1, float weight2, int reduction) -> Tensor",
                  __name__, "cycle_l1_loss_ref")


if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
