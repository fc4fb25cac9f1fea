"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training"): the same random, differentiable augmentation
of every image D sees, real and fake, in the D step and the G step, so D
cannot overfit a small training set and G's gradient still flows through.

    x = diff_augment(x, ("color", "translation", "cutout"))   # (B, C, H, W)

The policies, each drawn per sample from torch's default generator (so
``torch.manual_seed`` reproduces them and a resume that restores the global
RNG continues them exactly), applied in this order whatever the order asked:

    color        brightness: x + U(-0.5, 0.5); saturation: the distance from
                 the pixel's channel mean times U(0, 2) (nothing on 1-channel
                 images, where the mean is the pixel); contrast: the distance
                 from the image's mean times U(0.5, 1.5)
    translation  a shift by up to 1/8 of the height and width (integer
                 pixels, each axis U{-s..s}), zeros moving in
    cutout       one square of half the height and width, centred at a
                 uniform pixel (clipped at the borders), multiplied by 0
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["POLICIES", "parse_policy", "diff_augment"]

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: Union[str, Sequence[str]], name: str = "diffaugment") -> Tuple[str, ...]:
    """``"color,cutout"`` (or a sequence of names) -> the policies in
    :data:`POLICIES` order; ValueError naming ``name`` for an unknown one."""
    if isinstance(policy, str):
        items = policy.split(",")
    elif isinstance(policy, (list, tuple)):
        items = list(policy)
    else:
        raise TypeError(f"{name} must be a comma-separated string or a sequence of policy "
                        f"names, got {type(policy).__name__}")
    names = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name}: policy names are strings, got {item!r}")
        item = item.strip()
        if item and item not in POLICIES:
            raise ValueError(f"{name}: unknown policy {item!r}; choose any of "
                             f"{', '.join(POLICIES)} (comma-separated)")
        names.append(item)
    return tuple(p for p in POLICIES if p in names)


def _uniform(x: Tensor, low: float, high: float) -> Tensor:
    """One U(low, high) per sample, (B, 1, 1, 1) in x's dtype (drawn in float32,
    so the draws do not depend on the dtype)."""
    u = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
    return (u * (high - low) + low).to(x.dtype)


def _color(x: Tensor) -> Tensor:
    x = x + _uniform(x, -0.5, 0.5)                                        # brightness
    mean = x.mean(dim=1, keepdim=True)                                    # (B, 1, H, W)
    x = (x - mean) * _uniform(x, 0.0, 2.0) + mean                         # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)                            # (B, 1, 1, 1)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean                      # contrast


def _translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    b, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1), device=x.device)
    # out[i, j] = x[i + dy, j + dx]: a gather from x zero-padded by the largest shift.
    xp = F.pad(x, (sw, sw, sh, sh))                                       # (B, C, H+2sh, W+2sw)
    rows = (torch.arange(h, device=x.device) + sh + dy)                   # (B, H)
    cols = (torch.arange(w, device=x.device) + sw + dx)                   # (B, W)
    xp = xp.gather(2, rows[:, None, :, None].expand(b, c, h, xp.shape[3]))  # (B, C, H, W+2sw)
    return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))        # (B, C, H, W)


def _cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (b, 1), device=x.device)                     # the square's centre
    cx = torch.randint(0, w, (b, 1), device=x.device)
    ys = torch.arange(h, device=x.device) - (cy - ch // 2)                # (B, H): row in square
    xs = torch.arange(w, device=x.device) - (cx - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    # A product, not a where: NaN stays NaN (a diverging run must still show it).
    return x * (~inside).to(x.dtype)[:, None]                             # (B, C, H, W)


_APPLY = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: Tensor, policy: Union[str, Sequence[str]]) -> Tensor:
    """``x`` (B, C, H, W) augmented by ``policy`` (names of :data:`POLICIES`,
    or one comma-separated string), fresh per-sample draws from the global
    RNG at each call; differentiable w.r.t. ``x``. The empty policy returns
    ``x`` itself."""
    policy = parse_policy(policy)
    if not policy:
        return x
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"diff_augment: x must be a floating-point image batch (B, C, H, W), "
                         f"got {type(x).__name__ if not isinstance(x, Tensor) else list(x.shape)}")
    for p in policy:
        x = _APPLY[p](x)
    return x
