"""Activation + inverted dropout, ``torch.ops.gan_ext.act_dropout`` (and its
backward op): the functional form, the pure-PyTorch twin (the same Philox mask
as the kernels), the fake kernels and the op spec. The twin is an
autograd.Function, differentiable to any order, so this op needs no twin op."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from ._spec import BadInput, OpSpec, Sample, leaf
from ._common import (LEAKY_RELU, RELU, activation_code, check_activation, check_float,
                      check_tensor, stats_dtype)
from ._philox import generator_seed_offset, philox_blocks
from .norm_act import activate

__all__ = ["act_dropout"]

OP = "act_dropout"
KERNELS = ("act_dropout", "act_dropout_backward")
# The mask compares 23 random bits with p * 2^23 (the C++ dropout header).
_BITS = float(1 << 23)

_lib = torch.ops.gan_ext


def act_dropout(input: Tensor, activation: str = "leaky_relu", negative_slope: float = 0.2,
                p: float = 0.5, training: bool = True,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """``dropout(act(input), p)`` in one pass: the activation (``'relu'``,
    ``'leaky_relu'`` with ``negative_slope >= 0``, or ``'identity'``) and
    inverted dropout, the keep mask drawn in-kernel from PyTorch's generator
    (``torch.manual_seed`` reproduces it). Backward stores no mask: it is
    regenerated from the (seed, offset) pair, and the activation's derivative
    is read from the output. With ``training=False`` or ``p == 0`` it is the
    activation alone. The output has the input's memory layout (its strides
    when dense, e.g. channels_last; else contiguous in its suggested format)."""
    check_tensor(input)
    act = activation_code(activation)
    slope, p = float(negative_slope), float(p)
    if not training:
        p = 0.0
    fn = _lib.act_dropout if _backend.use_fused(input, OP) else act_dropout_ref
    return fn(input, act, slope, p, generator=generator)[0]


# ---------------------------------------------------------------------- twin
def check_act_dropout_args(input: Tensor, activation: int, negative_slope: float, p: float) -> None:
    """Twin of check_act_dropout_args in the C++ dropout header."""
    check_float(input, "input")
    check_activation(activation)
    if activation == LEAKY_RELU and not (math.isfinite(negative_slope) and negative_slope >= 0):
        raise ValueError("negative_slope must be a finite number >= 0 for leaky_relu (the backward "
                         f"reads the sign of the output), got {negative_slope}")
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")


def dropout_threshold(p: float) -> int:
    t = math.ceil(p * _BITS - 0.5)
    return min(max(t, 0), int(_BITS))


def dropout_scale(p: float) -> float:
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def dropout_keep(numel: int, p: float, device, seed: int, offset: int) -> Tensor:
    """The keep mask (bool, numel) of the C++ dropout header for a (seed, offset):
    element 32 g + 8 k + lane is word k of Philox block 8 g + lane."""
    groups = -(-numel // 32)
    x = philox_blocks(torch.arange(8 * groups, dtype=torch.int64, device=device), seed, offset)
    words = x.reshape(groups, 8, 4).transpose(1, 2).reshape(-1)[:numel]
    return (words >> 9) >= dropout_threshold(p)


class _ActDropout(torch.autograd.Function):
    """out = act(input) * mult with the op's backward (the C++ dropout header): the
    derivative is read from the output and multiplied in, never selected, so a
    NaN gradient stays NaN everywhere (torch.relu's backward would zero it
    where the input is negative), and at a NaN output it is 0 (relu) or
    negative_slope (leaky_relu), as in both kernels."""

    # setup_context form with a generated vmap rule: torch.func transforms
    # (gan_ext runs the twins under them) can transform and batch it.
    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, activation: int, negative_slope: float, mult: Optional[Tensor]):
        y = activate(input.to(stats_dtype(input.dtype)), activation, negative_slope)
        if mult is not None:
            y = y * mult
        # The input's memory layout (at::empty_like's rule), as the kernels give.
        return torch.empty_like(input).copy_(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, activation, negative_slope, mult = inputs
        ctx.save_for_backward(output, mult)
        ctx.activation, ctx.negative_slope = activation, negative_slope

    @staticmethod
    def backward(ctx, grad: Tensor):
        out, mult = ctx.saved_tensors
        sd = stats_dtype(out.dtype)
        g = grad.to(sd)
        if ctx.activation == RELU:
            g = g * (out > 0).to(sd)
        elif ctx.activation == LEAKY_RELU:
            slope = torch.full_like(g, ctx.negative_slope)  # in sd, not rounded to float
            g = g * torch.where(out > 0, torch.ones_like(g), slope)
        if mult is not None:
            g = g * mult
        return torch.empty_like(out).copy_(g), None, None, None


def act_dropout_ref(input: Tensor, activation: int, negative_slope: float, p: float, *,
                    generator: Optional[torch.Generator] = None):
    """Twin of ``torch.ops.gan_ext.act_dropout``: (out, rng), the same mask as
    the kernel for the same generator state."""
    check_act_dropout_args(input, activation, negative_slope, p)
    mult = None
    if p > 0:
        seed, offset = generator_seed_offset(input.device, generator)
        keep = dropout_keep(input.numel(), p, input.device, seed, offset).reshape(input.shape)
        mult = keep.to(stats_dtype(input.dtype)) * dropout_scale(p)
        rng = torch.tensor([seed, offset], dtype=torch.int64, device=input.device)
    else:
        rng = torch.zeros(2, dtype=torch.int64, device=input.device)
    return _ActDropout.apply(input, activation, negative_slope, mult), rng


# -------------------------------------------------------------- fake kernels
def _register() -> None:
    @torch.library.register_fake("gan_ext::act_dropout")
    def _act_dropout_fake(input, activation, negative_slope, p, *, generator=None):
        check_act_dropout_args(input, activation, negative_slope, p)
        # The input's memory layout (the C++ dropout header, Layout).
        return torch.empty_like(input), input.new_empty((2,), dtype=torch.int64)

    @torch.library.register_fake("gan_ext::act_dropout_backward")
    def _act_dropout_backward_fake(grad, out, rng, activation, negative_slope, p):
        return torch.empty_like(out)



# --------------------------------------------------------------------- spec
_ACTS = {"identity": (0, 0.0), "relu": (1, 0.0), "leaky0.2": (2, 0.2)}
_ACT_NAMES = {0: "identity", 1: "relu", 2: "leaky_relu"}


def _away_from_zero(shape, dtype, device, layout):
    # relu/leaky_relu are not differentiable at 0.
    x = torch.randn(shape, dtype=torch.float64)
    return leaf(x + 0.1 * torch.sign(x), dtype, device, layout, True)


def _samples(dtype, device, layout):
    out = [Sample(f"{name}-p{p}", (_away_from_zero((5, 13), dtype, device, layout), code, slope, p))
           for name, (code, slope) in _ACTS.items() for p in (0.0, 0.3, 1.0)]
    out.append(Sample("leaky0.2-p0.5-generator",
                      (_away_from_zero((4, 40), dtype, device, layout), 2, 0.2, 0.5),
                      {"generator": torch.Generator(device=device)}))
    return out


def _public(s):
    x, act, slope, p = s.args
    return act_dropout(x, _ACT_NAMES[act], slope, p, **s.kwargs)


def _opchecks(device):
    L = torch.ops.gan_ext

    def x(grad, shape=(6, 50)):
        return torch.randn(shape, device=device).requires_grad_(grad)
    # test_aot_dispatch_dynamic reseeds only the default generator.
    no_aot = ("test_schema", "test_autograd_registration", "test_faketensor")
    return {
        "leaky": (L.act_dropout.default, (x(True), 2, 0.2, 0.3), {}),
        "relu-4d": (L.act_dropout.default, (x(True, (2, 3, 4, 5)), 1, 0.0, 0.5), {}),
        "identity-p0": (L.act_dropout.default, (x(True), 0, 0.0, 0.0), {}),
        "nograd-generator": (L.act_dropout.default, (x(False), 2, 0.2, 0.3),
                             {"generator": torch.Generator(device=device).manual_seed(1)}, no_aot),
        "backward": (L.act_dropout_backward.default,
                     (torch.randn(6, 50, device=device), torch.randn(6, 50, device=device),
                      torch.tensor([123, 0], dtype=torch.int64, device=device), 2, 0.2, 0.3), {}),
    }


def _bad(name, make, error, match):
    return BadInput(name, lambda d: Sample(name, make(d)), error, match)


SPECS = (OpSpec(
    "act_dropout", act_dropout_ref, _samples, _public, random=True,
    opchecks=_opchecks,
    bad_inputs=(
        _bad("int-input", lambda d: (torch.ones(4, dtype=torch.int64, device=d), 1, 0.0, 0.5),
             TypeError, "input must be a floating point tensor"),
        _bad("p-above-1", lambda d: (torch.randn(4, device=d), 1, 0.0, 1.5), ValueError,
             "dropout probability p must be in [0, 1], got 1.5"),
        _bad("p-nan", lambda d: (torch.randn(4, device=d), 1, 0.0, float("nan")), ValueError,
             "dropout probability p must be in [0, 1]"),
        _bad("negative-slope", lambda d: (torch.randn(4, device=d), 2, -0.2, 0.5), ValueError,
             "negative_slope must be a finite number >= 0"),
        _bad("activation-code", lambda d: (torch.randn(4, device=d), 3, 0.0, 0.5), ValueError,
             "activation must be 0 (identity), 1 (relu) or 2 (leaky_relu), got 3")),
    nan_sample=lambda d: Sample("nan", (torch.tensor([1.0] * 40 + [float("nan")], device=d),
                                        2, 0.2, 0.0)),
    empty_samples=lambda d: [Sample("p0.5", (torch.randn(0, 5, device=d), 2, 0.2, 0.5))],
    bench_shapes={"gan-mlp": (64, 1024)}),)


# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and helpers the tests use.
REFERENCE = {"act_dropout": act_dropout_ref, **{f.__name__: f for f in (check_act_dropout_args, dropout_keep, dropout_scale, dropout_threshold)}}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
