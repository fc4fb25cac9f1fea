"""Argument checks shared by every part of gan_ext (models, data, metrics)."""
from __future__ import annotations

import numbers

__all__ = ["check_int"]


def check_int(name: str, value, minimum: int = 1) -> int:
    """An integer (not a bool) ``>= minimum``, returned as ``int``; the error
    names the argument and what it got."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
