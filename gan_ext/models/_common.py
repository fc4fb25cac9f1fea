"""Pieces every model family shares: the papers' weight init, parameter
counts, freezing a network, and the two speed choices of the gan_ext builds:
channels_last weights and PyTorch's fused Adam. The argument checks are in
:mod:`._checks`."""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
from torch import nn

__all__ = ["init_normal_", "num_parameters", "set_requires_grad", "apply_channels_last",
           "make_adam"]

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


def set_requires_grad(requires_grad: bool, *nets: nn.Module) -> None:
    """The official ``set_requires_grad``: freezes (or unfreezes) every
    parameter of ``nets``, so a G update computes no gradients for D."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(requires_grad)


def apply_channels_last(module: nn.Module, channels_last: Optional[bool], fused: bool) -> bool:
    """The memory layout rule of the model wrappers: ``channels_last=None``
    means "the gan_ext build (``fused=True``) stores its 4-D conv weights
    channels_last, the plain build keeps PyTorch's default". A conv whose
    weight is channels_last gives a channels_last output whatever its input,
    so the whole network then runs in that layout: oneDNN's faster conv path
    on CPU, and the fused norm layers read it natively. Values do not change,
    only strides. Returns the choice made."""
    use = bool(fused) if channels_last is None else channels_last
    if not isinstance(use, bool):
        raise TypeError(f"channels_last must be a bool or None, got {channels_last!r}")
    if use:
        module.to(memory_format=torch.channels_last)
    return use


def make_adam(params: Iterable[nn.Parameter], *, lr: float, betas: Tuple[float, float] = (0.9, 0.999),
              weight_decay: float = 0.0, fused: bool = True) -> torch.optim.Adam:
    """Adam. ``fused=True`` (the gan_ext builds) asks for PyTorch's fused
    implementation (one kernel per parameter tensor for the whole update, on
    CPU and CUDA); where this torch or these parameters do not support it, the
    default implementation. Same update rule either way, and the state_dicts
    load into one another."""
    params = list(params)
    kw = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if fused:
        try:
            return torch.optim.Adam(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, **kw)
