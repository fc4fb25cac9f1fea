"""What the op modules share: the integer codes of the schemas, the argument
checks that several ops run, the loss helpers, the fake-kernel layout rules
and the registration of the twin ops that the C++ autograd calls.

The codes and messages are the C++ side's (csrc/): the kernel and its twin
reject the same input with the same text.
"""
from __future__ import annotations

import functools
import sys

import torch
from torch import Tensor

# Codes shared with the C++ side (activation: norm_act, act_dropout; reduction: the losses, KL).
IDENTITY, RELU, LEAKY_RELU = 0, 1, 2
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU}
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
NONE, MEAN, SUM = 0, 1, 2
_FLOAT_DTYPES = "float32, float64, bfloat16 or float16"


# ------------------------------------------------------- autocast (loss wrappers)
def autocast_float32(*tensors):
    """The tensors as autocast gives them to the loss ops (float32; registered
    in gan_ext/ops/__init__.py), so the twins see what the kernels see: under
    autocast both backends compute the loss in float32, and bf16 logits may
    meet a float32 target. Unchanged outside autocast."""
    device = tensors[0].device.type
    if not (torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)):
        return tensors  # meta has no autocast: asking would raise
    return tuple(t.float() if t.is_floating_point() else t for t in tensors)


def autocast_like_op(twin, n: int):
    """``twin`` as its op runs under autocast: the first ``n`` (tensor)
    arguments cast by :func:`autocast_float32`. The fused op gets the same cast
    from its registered autocast kernel, so only the twin path pays for it."""
    @functools.wraps(twin)
    def call(*args, **kwargs):
        return twin(*autocast_float32(*args[:n]), *args[n:], **kwargs)
    return call


# ------------------------------------------------------- string -> code (wrappers)
def choice_code(value, table: dict, allowed, what: str) -> int:
    if value in allowed:
        return table[value]
    raise ValueError(f"{what} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def activation_code(activation: str) -> int:
    """'identity' | 'relu' | 'leaky_relu' -> the op's integer code."""
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}") from None


def reduction_code(reduction: str, allow_none: bool = False) -> int:
    allowed = ("none", "mean", "sum") if allow_none else ("mean", "sum")
    return choice_code(reduction, REDUCTIONS, allowed, "reduction")


def check_tensor(t, name: str = "input") -> None:
    """The wrappers' first check: a Python value that is not a tensor never
    reaches the dispatcher's less readable schema error."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


# ------------------------------------------------------- checks (twins and fakes)
def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_float(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor ({_FLOAT_DTYPES}), got {t.dtype}")


def check_activation(activation: int) -> None:
    if activation not in (IDENTITY, RELU, LEAKY_RELU):
        raise ValueError(f"activation must be 0 (identity), 1 (relu) or 2 (leaky_relu), got {activation}")


def check_loss_reduction(reduction: int) -> None:
    if reduction not in (MEAN, SUM):
        raise ValueError(f"reduction must be 1 ('mean') or 2 ('sum'), got {reduction}")


def check_not_empty_for_mean(t: Tensor, name: str, reduction: int) -> None:
    if t.numel() == 0 and reduction == MEAN:
        raise ValueError(f"{name} is empty: reduction='mean' of no elements is undefined (use "
                         "reduction='sum', which gives 0 for an empty tensor)")


def check_same(a: Tensor, an: str, b: Tensor, bn: str, shape: bool = True) -> None:
    if a.device != b.device:
        raise ValueError(f"{an} is on {a.device} but {bn} is on {b.device}; they must be on the "
                         "same device")
    if shape and a.shape != b.shape:
        raise ValueError(f"{an} has shape {list(a.shape)} but {bn} has shape {list(b.shape)}; they "
                         "must match (no broadcasting)")
    if a.dtype != b.dtype:
        raise TypeError(f"{an} has dtype {a.dtype} but {bn} has dtype {b.dtype}; they must match")


def check_pair_args(a, an, b, bn, reduction) -> None:
    """Twin of check_pair_args in the C++ loss checks (bce_with_logits, l1_loss, cycle_l1_loss)."""
    check_loss_reduction(reduction)
    check_float(a, an)
    check_float(b, bn)
    check_same(a, an, b, bn)
    check_not_empty_for_mean(a, an, reduction)


# ------------------------------------------------------------ loss twins' pieces
def reduce(t: Tensor, reduction: int) -> Tensor:
    # float64 accumulation, like the kernels' cross-block sums.
    s = t.double().sum()
    return s / t.numel() if reduction == MEAN else s


def bce(x: Tensor, y) -> Tensor:
    """softplus(x) - x*y, stable for any finite x."""
    return torch.clamp_min(x, 0) - x * y + torch.log1p(torch.exp(-x.abs()))


# --------------------------------------------------------- fake-kernel layouts
# Tensor.is_non_overlapping_and_dense() for fake tensors; renamed (and made
# safe for symbolic shapes: unknown counts as False) in recent torch.
_pc = torch._prims_common
_is_dense = getattr(_pc, "is_non_overlapping_and_dense_or_false", None) or \
    getattr(_pc, "is_non_overlapping_and_dense")


def dense_like(t):
    # Mirrors as_dense() in the C++ loss checks: dense tensors keep their strides.
    if _is_dense(t):
        return torch.empty_like(t)
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def dense_pair_like(a, b):
    # Mirrors as_dense_pair() in the C++ loss checks.
    if _is_dense(a) and _is_dense(b) and a.stride() == b.stride():
        return torch.empty_like(a), torch.empty_like(b)
    return (torch.empty(a.shape, dtype=a.dtype, device=a.device),
            torch.empty(b.shape, dtype=b.dtype, device=b.device))


def scalar_like(t):
    return t.new_empty(())


# ------------------------------------------------------------------ twin ops
_twin_lib = None


def register_twin(schema: str, module: str, fn: str) -> None:
    """Defines the op `schema` (gan_ext::<name>_twin) with the Python function
    `fn` of `module` as its CompositeImplicitAutograd kernel.

    Why these ops exist: the fused ops' backward runs kernels whose results
    autograd cannot differentiate again, and gradient penalties (WGAN-GP, R1)
    need that second derivative. When a backward runs with create_graph, the
    C++ autograd takes the first derivative from these ops instead: their
    kernels are the pure-PyTorch twins, so autograd records them and the
    result can be differentiated again, to any order. The first-order path
    never runs them. Their schemas live in Python because their kernels are
    Python; the C++ autograd looks them up when it first needs them."""
    global _twin_lib
    if _twin_lib is None:
        _twin_lib = torch.library.Library("gan_ext", "FRAGMENT")
    name = schema.split("(", 1)[0]

    # Looked up per call, so the twin is always the module's current one.
    def call(*args):
        return getattr(sys.modules[module], fn)(*args)
    call.__name__ = name
    _twin_lib.define(schema)
    _twin_lib.impl(name, call, "CompositeImplicitAutograd")
