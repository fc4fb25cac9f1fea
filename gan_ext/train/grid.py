"""Image grids written with Pillow (no torchvision)."""
from __future__ import annotations

import math
import os
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["make_grid", "save_grid", "to_uint8", "interleave_rows"]


def to_uint8(images: Tensor, value_range: Tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """(N, C, H, W) floats in ``value_range`` -> uint8 in [0, 255], clamped."""
    lo, hi = value_range
    x = (images.detach().float().cpu() - lo) / (hi - lo)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def interleave_rows(groups: List[Tensor], per_row: int) -> Tensor:
    """Interleaves equally long image batches as rows of ``per_row``:
    g0[0:8], g1[0:8], g0[8:16], ... (3-channel, for one grid)."""
    groups = [g.expand(-1, 3, -1, -1) if g.shape[1] == 1 else g for g in groups]
    rows = []
    for i in range(0, len(groups[0]), per_row):
        rows += [g[i:i + per_row] for g in groups]
    return torch.cat(rows)


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 0,
              value_range: Tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Tiles (N, C, H, W) images, ``nrow`` per row, into one (H', W', 3)
    uint8 array (1-channel images are replicated to RGB). ``padding`` pixels of
    ``pad_value`` separate the tiles and frame the grid."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    if images.size(1) not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.size(1)}")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    n, c, h, w = images.shape
    u8 = to_uint8(images, value_range)
    if c == 1:
        u8 = u8.expand(n, 3, h, w)
    cols = min(nrow, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3),
                   pad_value, dtype=np.uint8)
    tiles = u8.permute(0, 2, 3, 1).numpy()                      # (N, H, W, 3)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = tiles[i]
    return grid


def save_grid(images: Tensor, path: str, nrow: int = 8, value_range=(-1.0, 1.0),
              scale: Optional[int] = None) -> str:
    """Writes :func:`make_grid` as a PNG (enlarged ``scale`` times with
    nearest-neighbour, default: so that small images stay visible). Returns the path."""
    from PIL import Image

    grid = make_grid(images, nrow=nrow, value_range=value_range)
    img = Image.fromarray(grid)
    if scale is None:
        scale = max(1, 64 // max(images.shape[-1], 1))
        scale = min(scale, 3)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
    return path
