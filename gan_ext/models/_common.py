"""Pieces every model family shares: the papers' weight init and parameter counts."""
from __future__ import annotations

import numbers

import torch
from torch import nn

__all__ = ["init_normal_", "num_parameters", "check_int"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)


@torch.no_grad()
def init_normal_(module: nn.Module, std: float = 0.02, linear: bool = True) -> nn.Module:
    """DCGAN / CycleGAN init (Radford et al. 2015; the official CycleGAN ``init_type='normal'``):
    conv (and, with ``linear=True``, Linear) weights ~ N(0, std), their biases 0;
    affine norm weights ~ N(1, std), norm biases 0. The fused norm layers subclass
    the torch norms, so they are covered. Returns ``module``."""
    kinds = _CONVS if linear else _CONVS[:-1]
    for m in module.modules():
        if isinstance(m, kinds):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
            nn.init.normal_(m.weight, 1.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def num_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def check_int(name: str, value, minimum: int = 1) -> int:
    """The argument checks of every model family: an integer (not a bool)
    ``>= minimum``, returned as ``int``; the error names the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
