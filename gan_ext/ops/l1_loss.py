"""L1 losses, ``torch.ops.gan_ext.l1_loss`` and ``cycle_l1_loss`` (one backward
op, ``l1_loss_backward``, for both): the functional forms, the pure-PyTorch
twins, the fake kernels, the twin ops of the double backward and the op spec."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from ._spec import BadInput, OpSpec, Sample, l1_pair, leaf
from ._common import (autocast_like_op, check_pair_args, check_same, check_tensor,
                      dense_pair_like, reduce, reduction_code, register_twin, scalar_like, stats_dtype)

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
    fn = _lib.l1_loss if _backend.use_fused(input, OP) else _l1_twin
    return fn(input, target, r)


def cycle_l1_loss(input1: Tensor, target1: Tensor, input2: Tensor, target2: Tensor,
                  weight1: float = 1.0, weight2: float = 1.0, reduction: str = "mean") -> Tensor:
    """``weight1 * l1_loss(input1, target1) + weight2 * l1_loss(input2, target2)``
    in one call: CycleGAN's two cycle (or identity) terms, one pass per pair."""
    for t, n in ((input1, "input1"), (target1, "target1"), (input2, "input2"), (target2, "target2")):
        check_tensor(t, n)
    r = reduction_code(reduction)
    fn = _lib.cycle_l1_loss if _backend.use_fused(input1, OP) else _cycle_l1_twin
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



# -------------------------------------------------------------------- specs
_RED_NAMES = {1: "mean", 2: "sum"}
_F = torch.nn.functional


def _pair(shape, dtype, device, layout, grads=(True, True)):
    return tuple(leaf(t, dtype, device, layout, g) for t, g in zip(l1_pair(shape), grads))


def _l1_samples(dtype, device, layout):
    return [Sample(red, (*_pair((3, 2, 4, 5), dtype, device, layout), code))
            for code, red in _RED_NAMES.items()]


def _cycle_samples(dtype, device, layout):
    """Weights (10, 5), pairs of different shapes; and pairs where only the
    input or only the target requires grad (the cycle target is usually the
    real image): l1_loss_backward's grad_input/grad_target flags."""
    out = [Sample(red, (*_pair((2, 3, 4, 4), dtype, device, layout),
                        *_pair((3, 5), dtype, device, layout), 10.0, 5.0, code))
           for code, red in _RED_NAMES.items()]
    for which, grads in (("input", (True, False)), ("target", (False, True))):
        out.append(Sample(f"mean-{which}-only",
                          (*_pair((2, 3, 4), dtype, device, layout, grads),
                           *_pair((2, 3, 4), dtype, device, layout, grads), 10.0, 5.0, 1)))
    return out


def _l1_opchecks(device):
    L = torch.ops.gan_ext
    a, b = (leaf(v, torch.float32, device) for v in l1_pair((2, 3, 4, 4)))
    return {
        "l1_loss": (L.l1_loss.default, (a.clone().requires_grad_(), b.clone().requires_grad_(), 1)),
        "l1_loss_backward-both": (L.l1_loss_backward.default,
                                  (torch.tensor(1.5, device=device), a, b, 10.0, 1, True, True)),
        "l1_loss_backward-target": (L.l1_loss_backward.default,
                                    (torch.tensor(0.5, device=device), a, b, 5.0, 2, False, True)),
    }


def _cycle_opchecks(device):
    a, b = (leaf(v, torch.float32, device) for v in l1_pair((2, 3, 4, 4)))
    ag, bg = a.clone().requires_grad_(), b.clone().requires_grad_()
    return {"cycle_l1_loss": (torch.ops.gan_ext.cycle_l1_loss.default,
                              (ag, b, ag.detach().clone().requires_grad_(), bg, 10.0, 5.0, 2))}


def _bad(name, make, error, match):
    return BadInput(name, lambda d: Sample(name, make(d)), error, match)


def _r(d, *shape, dtype=torch.float32):
    return torch.randn(*shape, device=d).to(dtype)


SPECS = (
    OpSpec("l1_loss", l1_loss_ref, _l1_samples,
           lambda s: l1_loss(s.args[0], s.args[1], _RED_NAMES[s.args[2]]),
           baseline=lambda a, b, r: _F.l1_loss(a, b, reduction=_RED_NAMES[r]),
           layouts=("contiguous", "channels_last", "strided"), opchecks=_l1_opchecks,
           bad_inputs=(
               _bad("shape-mismatch", lambda d: (_r(d, 2, 3), _r(d, 3, 2), 1), ValueError,
                    "input has shape [2, 3] but target has shape [3, 2]"),
               _bad("dtype-mismatch", lambda d: (_r(d, 4), _r(d, 4, dtype=torch.float64), 1),
                    TypeError, "but target has dtype"),
               _bad("empty-mean", lambda d: (_r(d, 0), _r(d, 0), 1), ValueError, "input is empty")),
           nan_sample=lambda d: Sample("nan", (torch.tensor([1.0] * 20 + [float("nan")], device=d),
                                               _r(d, 21), 1)),
           empty_samples=lambda d: [Sample("sum", (_r(d, 0, 3), _r(d, 0, 3), 2))],
           bench_shapes={"pix2pix": (1, 3, 256, 256)}),
    OpSpec("cycle_l1_loss", cycle_l1_loss_ref, _cycle_samples,
           lambda s: cycle_l1_loss(*s.args[:6], _RED_NAMES[s.args[6]]),
           baseline=lambda a1, b1, a2, b2, w1, w2, r: (w1 * _F.l1_loss(a1, b1, reduction=_RED_NAMES[r])
                                                       + w2 * _F.l1_loss(a2, b2, reduction=_RED_NAMES[r])),
           opchecks=_cycle_opchecks,
           bad_inputs=(
               _bad("pair2-shape", lambda d: (_r(d, 4), _r(d, 4), _r(d, 2, 3), _r(d, 3, 2), 1.0, 1.0, 1),
                    ValueError, "input2 has shape [2, 3] but target2 has shape [3, 2]"),
               _bad("pairs-dtype", lambda d: (_r(d, 4), _r(d, 4), _r(d, 4, dtype=torch.float64),
                                              _r(d, 4, dtype=torch.float64), 1.0, 1.0, 1),
                    TypeError, "but input2 has dtype")),
           nan_sample=lambda d: Sample("nan", (_r(d, 5), _r(d, 5),
                                               torch.tensor([float("nan")] * 3, device=d), _r(d, 3),
                                               1.0, 1.0, 1)),
           empty_samples=lambda d: [Sample("sum", (_r(d, 0), _r(d, 0), _r(d, 0), _r(d, 0), 1.0, 1.0, 2))],
           bench_shapes={"cyclegan": (1, 3, 256, 256)}),
)


# The twins as the wrappers call them: cast as the op's autocast kernel casts.
_l1_twin = autocast_like_op(l1_loss_ref, 2)
_cycle_l1_twin = autocast_like_op(cycle_l1_loss_ref, 4)

# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and helpers the tests use.
REFERENCE = {"l1_loss": l1_loss_ref, "cycle_l1_loss": cycle_l1_loss_ref}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
