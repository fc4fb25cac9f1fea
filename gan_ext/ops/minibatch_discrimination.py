"""Minibatch discrimination (Salimans et al. 2016, "Improved Techniques for
Training GANs", section 3.2), ``torch.ops.gan_ext.minibatch_discrimination``
with its backward op: the functional form, the pure-PyTorch twin, the fake
kernels, the twin op of the double backward and the op spec.

The discriminator's features f (N, A) times a learned tensor T (A, B*C),
reshaped to M (N, B, C) (torch does the matmul), give for every sample i and
kernel b ``o[i, b] = sum over j != i of exp(-||M[i, b] - M[j, b]||_1)``: how
close the other samples of the batch are to it. The all-pairs L1 is N^2 B C
work, done by the op in one pass without the (N, N, B, C) difference tensor
that plain PyTorch builds."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from ._spec import BadInput, OpSpec, Sample, leaf
from ._common import check_float, check_tensor, register_twin, stats_dtype

__all__ = ["minibatch_discrimination"]

OP = "minibatch_discrimination"
KERNELS = ("minibatch_discrimination", "minibatch_discrimination_backward")

_lib = torch.ops.gan_ext


def minibatch_discrimination(M: Tensor) -> Tensor:
    """``o[i, b] = sum over j != i of exp(-sum_c |M[i, b, c] - M[j, b, c]|)``
    for M of shape (N, B, C); returns (N, B) in M's dtype (summed in float32
    for bfloat16/float16). A batch of one sample gives zeros."""
    check_tensor(M, "M")
    fn = _lib.minibatch_discrimination if _backend.use_fused(M, OP) else minibatch_discrimination_ref
    return fn(M)


# --------------------------------------------------------------------- twin
def check_minibatch_discrimination_args(M: Tensor) -> None:
    """Twin of check_minibatch_discrimination_args (csrc/ops/minibatch_discrimination/checks.h)."""
    check_float(M, "M")
    if M.dim() != 3:
        raise ValueError("M must be a 3-D tensor (N, B, C): the batch, the kernels and each "
                         f"kernel's dimension, got shape {list(M.shape)}")


def check_minibatch_discrimination_grad(grad: Tensor, M: Tensor) -> None:
    """Twin of check_minibatch_discrimination_grad (the backward op's checks)."""
    check_minibatch_discrimination_args(M)
    check_float(grad, "grad")
    if grad.device != M.device:
        raise ValueError(f"grad is on {grad.device} but M is on {M.device}; they must be on the "
                         "same device")
    if grad.dim() != 2 or tuple(grad.shape) != tuple(M.shape[:2]):
        raise ValueError(f"grad must have the output's shape [N, B] = [{M.shape[0]}, {M.shape[1]}], "
                         f"got {list(grad.shape)}")


def _others(n: int, device) -> Tensor:
    """(n, n - 1): row i lists every j != i in order."""
    k = torch.arange(max(n - 1, 0), device=device).unsqueeze(0)
    return k + (k >= torch.arange(n, device=device).unsqueeze(1)).long()


def minibatch_discrimination_ref(M: Tensor) -> Tensor:
    """Twin of ``torch.ops.gan_ext.minibatch_discrimination``. The pairs j != i
    are gathered rather than masked: a masked diagonal would still send
    0 * NaN = NaN back through exp and abs when M[i] holds a NaN (N = 1)."""
    check_minibatch_discrimination_args(M)
    m = M.to(stats_dtype(M.dtype))
    d = (m.unsqueeze(1) - m[_others(m.shape[0], m.device)]).abs().sum(-1)  # (N, N-1, B)
    return torch.exp(-d).sum(1).to(M.dtype)


# ------------------------------------------------------- fake kernels, twin op
def _register() -> None:
    @torch.library.register_fake("gan_ext::minibatch_discrimination")
    def _fake(M):
        check_minibatch_discrimination_args(M)
        return M.new_empty((M.shape[0], M.shape[1]))

    @torch.library.register_fake("gan_ext::minibatch_discrimination_backward")
    def _backward_fake(grad, M):
        check_minibatch_discrimination_grad(grad, M)
        return M.new_empty(M.shape)

    register_twin("minibatch_discrimination_twin(Tensor M) -> Tensor", __name__,
                  "minibatch_discrimination_ref")


# -------------------------------------------------------------------- specs
def distinct_features(shape) -> Tensor:
    """float64 M of shape (N, B, C) whose N values of every (b, c) are at least
    0.15 apart (a shuffled ladder with jitter): no ties, so the L1 gradient is
    defined, also after rounding to bfloat16/float16, and gradcheck's steps
    never cross a kink. Distances stay O(1), so exp(-d) is not negligible."""
    n, b, c = shape
    ladder = torch.argsort(torch.rand(b * c, n), dim=1).double() * 0.2  # a permutation per (b, c)
    values = ladder - 0.1 * n + 0.05 * torch.rand(b * c, n, dtype=torch.float64)
    return values.t().reshape(n, b, c)


# (N, B, C): a row of float32 lanes with a tail (19 = 16 + 3 = 2 * 8 + 3),
# one sample (o = 0), C over the CUDA kernel's 8 register coordinates.
_SHAPES = {"5x3x4": (5, 3, 4), "19x2x3": (19, 2, 3), "1x2x3": (1, 2, 3), "6x2x11": (6, 2, 11)}


def _samples(dtype, device, layout):
    return [Sample(name, (leaf(distinct_features(shape), dtype, device, layout, True),))
            for name, shape in _SHAPES.items()]


def _opchecks(device):
    L = torch.ops.gan_ext
    M = leaf(distinct_features((5, 3, 4)), torch.float32, device)
    return {
        "forward": (L.minibatch_discrimination.default, (M.clone().requires_grad_(),)),
        "forward-nograd": (L.minibatch_discrimination.default, (M,)),
        "backward": (L.minibatch_discrimination_backward.default,
                     (torch.randn(5, 3, device=device), M)),
    }


def _torch_minibatch_discrimination(M: Tensor) -> Tensor:
    """Plain torch by another road: per kernel the L1 distance matrix
    (torch.cdist), then the row sums less the diagonal's exp(0) = 1."""
    Mb = M.transpose(0, 1)  # (B, N, C)
    c = torch.exp(-torch.cdist(Mb, Mb, p=1))  # (B, N, N)
    return (c.sum(-1) - 1).transpose(0, 1)


def _bad(name, make, error, match):
    return BadInput(name, lambda d: Sample(name, make(d)), error, match)


def _nan_M(d):
    M = distinct_features((21, 3, 4)).float().to(d)
    M[5, 1, 2] = float("nan")
    return M


SPECS = (
    OpSpec("minibatch_discrimination", minibatch_discrimination_ref, _samples,
           lambda s: minibatch_discrimination(*s.args), baseline=_torch_minibatch_discrimination,
           opchecks=_opchecks,
           bad_inputs=(
               _bad("2d", lambda d: (torch.randn(4, 6, device=d),), ValueError,
                    "M must be a 3-D tensor (N, B, C): the batch, the kernels and each kernel's "
                    "dimension, got shape [4, 6]"),
               _bad("4d", lambda d: (torch.randn(4, 2, 3, 1, device=d),), ValueError,
                    "got shape [4, 2, 3, 1]"),
               _bad("int", lambda d: (torch.ones(4, 2, 3, dtype=torch.int64, device=d),), TypeError,
                    "M must be a floating point tensor")),
           nan_sample=lambda d: Sample("nan", (_nan_M(d),)),
           empty_samples=lambda d: [Sample(name, (torch.randn(*shape, device=d),))
                                    for name, shape in (("0x3x4", (0, 3, 4)), ("4x0x2", (4, 0, 2)))],
           bench_shapes={"improved-gan": (64, 100, 5), "batch256": (256, 100, 5)}),
)

# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and sample helper the tests use.
REFERENCE = {"minibatch_discrimination": minibatch_discrimination_ref,
             **{f.__name__: f for f in (check_minibatch_discrimination_args,
                                        check_minibatch_discrimination_grad, distinct_features)}}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
