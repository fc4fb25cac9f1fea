"""The op spec: what every op module says about its op, as data, so that one
test module (tests/test_op_spec.py) gives every op the same checks and the
benchmarks read the same shapes. torchvision's RoIOpTester is the model; a new
op gets every check by writing its spec.

A spec is data only: it builds tensors but runs no op, and it imports no test
framework."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# "contiguous"; "channels_last" (4-D inputs only); "strided": every other
# column of a wider tensor (neither contiguous nor channels_last).
LAYOUTS = ("contiguous", "channels_last", "strided")


@dataclass(frozen=True)
class Sample:
    """One call of the op: its arguments (the schema's integer codes, not the
    wrappers' strings). Tensors that gradcheck differentiates require grad."""
    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    grad_outputs: Optional[tuple] = None  # this call's, when not the spec's


@dataclass(frozen=True)
class BadInput:
    """A call that both the kernel and the twin must refuse with `error` and a
    message containing `match` (and the same message from both)."""
    name: str
    make: Callable[[str], Sample]  # device -> the call
    error: type
    match: str


@dataclass(frozen=True)
class OpSpec:
    name: str                        # torch.ops.gan_ext.<name>
    twin: Callable                   # the pure-PyTorch twin, the op's signature
    # (dtype, device, layout) -> samples; the same seed gives the same tensors.
    samples: Callable[[torch.dtype, str, str], list]
    # sample -> the public wrapper's call of the same computation (gan_ext.ops.*).
    public: Callable[[Sample], Any]
    # Indices of the op's outputs compared with the twin and torch (the rest:
    # RNG state), and of those differentiated by gradcheck.
    outputs: tuple = (0,)
    grad_outputs: tuple = (0,)
    dtypes: tuple = FLOAT_DTYPES
    layouts: tuple = ("contiguous", "strided")
    # Plain-torch computation of the same outputs, the op's signature; None:
    # torch has none (the noise of the random ops is the twin's).
    baseline: Optional[Callable] = None
    # dtype -> (rtol, atol) of the kernel against the twin; low precision is
    # scaled by the largest value compared.
    tolerances: dict = field(default_factory=lambda: {
        torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 2e-5),
        torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)})
    gradcheck: dict = field(default_factory=lambda: dict(eps=1e-6, atol=1e-7, rtol=1e-5))
    # device -> float64 samples for gradcheck/gradgradcheck (default: samples()).
    grad_samples: Optional[Callable[[str], list]] = None
    gradgrad_samples: Optional[Callable[[str], list]] = None  # default: grad_samples
    bad_inputs: tuple = ()
    nan_sample: Optional[Callable[[str], Sample]] = None   # NaN in -> NaN out
    empty_samples: Optional[Callable[[str], list]] = None  # must run, empty/zero out
    # device -> {name: (op overload, args, kwargs, test_utils or None)} for opcheck,
    # the op's helper ops (with_grad forms, backward ops) included.
    opchecks: Optional[Callable[[str], dict]] = None
    # Benchmark shapes (data for benchmarks/): name -> shape of the main input.
    bench_shapes: dict = field(default_factory=dict)
    random: bool = False             # draws noise: reseeded before each call

    def grad_cases(self, device: str) -> list:
        if self.grad_samples is not None:
            return self.grad_samples(device)
        return self.samples(torch.float64, device, "contiguous")

    def gradgrad_cases(self, device: str) -> list:
        if self.gradgrad_samples is not None:
            return self.gradgrad_samples(device)
        return self.grad_cases(device)


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values as x, in the requested memory layout (gradients flow back to x)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        return wide.index_copy(-1, torch.arange(0, 2 * x.shape[-1], 2, device=x.device), x)[..., ::2]
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def leaf(values64: torch.Tensor, dtype, device, layout="contiguous", requires_grad=False):
    """A leaf with the given values, dtype and layout (the leaf itself has the layout)."""
    x = to_layout(values64.to(device=device, dtype=dtype), layout).detach()
    return x.requires_grad_(requires_grad)


def away_from_kinks(x: torch.Tensor, kinks=(-1.0, 1.0), margin: float = 0.1) -> torch.Tensor:
    """Moves every value closer than `margin` to a kink out to 2*margin from it,
    on the same side (finite differences across a kink would not match the
    one-sided derivative)."""
    for k in kinks:
        d = x - k
        x = torch.where(d.abs() < margin, k + torch.where(d >= 0, 2 * margin, -2 * margin), x)
    return x


def l1_pair(shape):
    """(a, b) in float64 with |a - b| >= 0.1 everywhere: no ties, so the L1
    gradient is well defined (and survives rounding to bf16/f16)."""
    a = torch.randn(shape, dtype=torch.float64)
    sign = torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).double()
    return a, a + sign * (0.1 + torch.rand(shape, dtype=torch.float64))
