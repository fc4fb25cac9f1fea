"""The activation argument every fused layer takes: its check, its repr,
and applying it in place."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import reference as ref

__all__ = ["check_activation", "check_negative_slope", "activation_repr", "activate_"]


def check_activation(activation: Optional[str]) -> str:
    """Validates ``activation``; ``None`` means no activation ("identity")."""
    if activation is None:
        return "identity"
    if not isinstance(activation, str) or activation not in ref.ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ref.ACTIVATIONS)} or None, got {activation!r}")
    return activation


def check_negative_slope(negative_slope) -> float:
    try:
        return float(negative_slope)
    except (TypeError, ValueError):
        raise TypeError(f"negative_slope must be a real number, got {negative_slope!r}") from None


def activation_repr(activation: str, negative_slope: float) -> str:
    if activation == "leaky_relu":
        return f"activation={activation}, negative_slope={negative_slope}"
    return f"activation={activation}"


def activate_(x: Tensor, activation: str, negative_slope: float) -> Tensor:
    """Activation in place on a tensor this module just produced (a conv output)."""
    if activation == "relu":
        return torch.relu_(x)
    if activation == "leaky_relu":
        return F.leaky_relu_(x, negative_slope)
    return x
