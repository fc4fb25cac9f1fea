"""Binary cross-entropy on logits, ``torch.ops.gan_ext.bce_with_logits`` (and
its ``_with_grad`` form): the functional form, the pure-PyTorch twin, the fake
kernels, the twin op of the double backward and the op spec."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from ._spec import BadInput, OpSpec, Sample, leaf
from ._common import (autocast_like_op, bce, check_pair_args, check_tensor, dense_pair_like,
                      reduce, reduction_code, register_twin, scalar_like, stats_dtype)

__all__ = ["bce_with_logits"]

OP = "bce_with_logits"
KERNELS = ("bce_with_logits", "bce_with_logits_with_grad", "scale_loss_grads")

_lib = torch.ops.gan_ext


def bce_with_logits(input: Tensor, target: Tensor, reduction: str = "mean",
                    weight: Optional[Tensor] = None,
                    pos_weight: Optional[Tensor] = None) -> Tensor:
    """``F.binary_cross_entropy_with_logits(input, target)`` with its gradient
    computed in the forward pass: the VAE reconstruction term on decoder logits
    (``reduction="sum"`` is the classic VAE objective). Shapes and dtypes of
    input and target must match.

    ``weight``, ``pos_weight`` and ``reduction="none"`` are computed as
    torch computes them, by ``F.binary_cross_entropy_with_logits`` itself (not
    fused: a per-element result or weights leave nothing for a fused pass to
    save over PyTorch's own elementwise kernel)."""
    check_tensor(input, "input")
    check_tensor(target, "target")
    if weight is not None or pos_weight is not None or reduction == "none":
        reduction_code(reduction, allow_none=True)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            input, target, weight=weight, pos_weight=pos_weight, reduction=reduction)
    r = reduction_code(reduction)
    fn = _lib.bce_with_logits if _backend.use_fused(input, OP) else _bce_twin
    return fn(input, target, r)


def bce_with_logits_ref(input: Tensor, target: Tensor, reduction: int) -> Tensor:
    """Twin of ``torch.ops.gan_ext.bce_with_logits``."""
    check_pair_args(input, "input", target, "target", reduction)
    sd = stats_dtype(input.dtype)
    return reduce(bce(input.to(sd), target.to(sd)), reduction).to(input.dtype)


def _register() -> None:
    @torch.library.register_fake("gan_ext::bce_with_logits")
    def _bce_fake(input, target, reduction):
        check_pair_args(input, "input", target, "target", reduction)
        return scalar_like(input)

    @torch.library.register_fake("gan_ext::bce_with_logits_with_grad")
    def _bce_with_grad_fake(input, target, reduction, grad_target):
        check_pair_args(input, "input", target, "target", reduction)
        gi, gt = dense_pair_like(input, target)
        return scalar_like(input), gi, (gt if grad_target else input.new_empty((0,)))

    register_twin("bce_with_logits_twin(Tensor input, Tensor target, int reduction) -> Tensor",
                  __name__, "bce_with_logits_ref")



# --------------------------------------------------------------------- spec
_RED_NAMES = {1: "mean", 2: "sum"}


def _samples(dtype, device, layout):
    """Logits to +-6, targets in (0.1, 0.9); with and without a target gradient."""
    out = []
    for code, red in _RED_NAMES.items():
        for grad_target in (False, True):
            x = leaf(2 * torch.randn(4, 3, 5, dtype=torch.float64), dtype, device, layout, True)
            y = leaf(0.1 + 0.8 * torch.rand(4, 3, 5, dtype=torch.float64), dtype, device, layout,
                     grad_target)
            out.append(Sample(f"{red}-{'input+target' if grad_target else 'input'}", (x, y, code)))
    return out


def _opchecks(device):
    L = torch.ops.gan_ext
    x = leaf(2 * torch.randn(4, 5, dtype=torch.float64), torch.float32, device)
    return {
        "bce_with_logits": (L.bce_with_logits.default,
                            (x.clone().requires_grad_(),
                             torch.rand(4, 5, device=device).requires_grad_(), 1)),
        "bce_with_logits_with_grad-target": (L.bce_with_logits_with_grad.default,
                                             (x, torch.rand(4, 5, device=device), 2, True)),
        "bce_with_logits_with_grad-input": (L.bce_with_logits_with_grad.default,
                                            (x, torch.rand(4, 5, device=device), 1, False)),
    }


def _bad(name, make, error, match):
    return BadInput(name, lambda d: Sample(name, make(d)), error, match)


SPECS = (OpSpec(
    "bce_with_logits", bce_with_logits_ref, _samples,
    lambda s: bce_with_logits(s.args[0], s.args[1], _RED_NAMES[s.args[2]]),
    baseline=lambda x, y, r: torch.nn.functional.binary_cross_entropy_with_logits(
        x, y, reduction=_RED_NAMES[r]),
    layouts=("contiguous", "strided"), opchecks=_opchecks,
    bad_inputs=(
        _bad("shape-mismatch", lambda d: (torch.randn(4, 3, device=d), torch.rand(4, 1, device=d), 1),
             ValueError, "input has shape [4, 3] but target has shape [4, 1]"),
        _bad("int-target", lambda d: (torch.randn(4, device=d), torch.ones(4, dtype=torch.int64, device=d), 1),
             TypeError, "target must be a floating point tensor"),
        _bad("reduction-code", lambda d: (torch.randn(4, device=d), torch.rand(4, device=d), 0),
             ValueError, "reduction must be 1 ('mean') or 2 ('sum')"),
        _bad("empty-mean", lambda d: (torch.randn(0, device=d), torch.rand(0, device=d), 1),
             ValueError, "input is empty")),
    nan_sample=lambda d: Sample("nan", (torch.tensor([0.5] * 20 + [float("nan")], device=d),
                                        torch.rand(21, device=d), 1)),
    empty_samples=lambda d: [Sample("sum", (torch.randn(0, 3, device=d), torch.rand(0, 3, device=d), 2))],
    bench_shapes={"vae-mnist": (128, 784)}),)


# The twins as the wrappers call them: cast as the op's autocast kernel casts.
_bce_twin = autocast_like_op(bce_with_logits_ref, 2)

# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and helpers the tests use.
REFERENCE = {"bce_with_logits": bce_with_logits_ref}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
