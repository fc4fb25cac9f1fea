"""Argument checks the model families share. Each error names the argument
(and, for tensors, the module that was called) and says what was expected."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

from torch import Tensor

from .._validate import check_int

__all__ = ["UNIT_IMAGES", "check_int", "check_ints", "check_bool", "check_choice", "check_real",
           "check_images", "check_latent", "check_code"]

# What the autoencoders' x holds, for check_images(floating=...).
UNIT_IMAGES = "images in [0, 1]"


def check_ints(name: str, values, allow_empty: bool = False) -> Tuple[int, ...]:
    """A sequence of ints >= 1 (``img_shape``, hidden widths), returned as a tuple."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a tuple of ints, got {values!r}")
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_int(f"{name}[{i}]", v) for i, v in enumerate(values))


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == math.inf:
        return f"be {'>' if low_open else '>='} {low}"
    return f"lie in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_real(name: str, value, low: float = -math.inf, high: float = math.inf, *,
               low_open: bool = False, high_open: bool = False) -> float:
    """A real number (not a bool) in the interval from ``low`` to ``high``
    (closed ends unless ``low_open`` / ``high_open``), returned as ``float``.
    NaN is never in it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):  # both False for NaN
        raise ValueError(f"{name} must {_interval(low, high, low_open, high_open)}, got {value}")
    return value


def check_images(x, shape: Sequence[Union[int, str]], *, name: str = "x", who: str = "",
                 floating: Optional[str] = None) -> None:
    """``x`` must be a (B, *shape) tensor; a str entry of ``shape`` ("H") is a
    size that may be anything. Checked up front because a conv would only say
    'expected input[...] to have 3 channels' deep inside the network.
    ``who`` (the module or method called) prefixes the message. ``floating``,
    when given, requires a floating point dtype and says in the message what
    the values are (``"images in [0, 1]"``)."""
    where = f"{who}: " if who else ""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating is not None and not x.is_floating_point():
        raise TypeError(f"{where}{name} must be a floating point tensor ({floating}), "
                        f"got dtype {x.dtype}")
    if x.dim() != 1 + len(shape) or any(
            isinstance(s, int) and n != s for n, s in zip(x.shape[1:], shape)):
        raise ValueError(f"{where}{name} must have shape (B, {', '.join(map(str, shape))}), "
                         f"got {tuple(x.shape)}")


def check_latent(z, nz: int) -> Tensor:
    """z: (B, nz) or (B, nz, 1, 1) -> (B, nz)."""
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if not (z.dim() == 2 or (z.dim() == 4 and z.shape[2:] == (1, 1))) or z.size(1) != nz:
        raise ValueError(f"z must have shape (B, {nz}) or (B, {nz}, 1, 1) for nz={nz}, "
                         f"got {tuple(z.shape)}")
    return z.flatten(1)


def check_code(z, latent_dim: int, who: str) -> None:
    """z must be a (B, latent_dim) tensor: an autoencoder's code, given to ``who``."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{who}: z must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2 or z.shape[1] != latent_dim:
        raise ValueError(f"{who}: expected z of shape (B, {latent_dim}), got {list(z.shape)}")
