"""Tensor conversions and the training-time augmentation, all on whole batches."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validate import check_int

__all__ = ["to_unit", "to_signed", "pad_to", "augment"]

Size = Union[int, Tuple[int, int]]


def to_unit(images: Tensor) -> Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]
    (C = 1 for 3-D input)."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {images.dtype}; float images are "
                        f"already converted")
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {list(images.shape)}")
    return images.to(torch.float32).div_(255.0)


def to_signed(images: Tensor) -> Tensor:
    """uint8 images -> float32 (N, C, H, W) in [-1, 1] (the tanh range of the generators)."""
    return to_unit(images).mul_(2.0).sub_(1.0)


def _pair(name: str, size: Size) -> Tuple[int, int]:
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return check_int(name, size[0]), check_int(name, size[1])
    s = check_int(name, size)
    return s, s


def pad_to(x: Tensor, size: Size, value: float = 0.0) -> Tensor:
    """Pads the last two dims of ``x`` evenly (the odd pixel goes bottom/right)
    to ``size`` (int or (H, W)) with ``value``: 0 for [0, 1] images, -1 for
    [-1, 1] ones. MNIST 28 -> 32 adds 2 pixels on each side."""
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise TypeError(f"x must be a tensor with at least 2 dims (..., H, W), got "
                        f"{getattr(x, 'shape', type(x).__name__)}")
    th, tw = _pair("size", size)
    h, w = x.shape[-2:]
    if th < h or tw < w:
        raise ValueError(f"size ({th}, {tw}) is smaller than the images ({h}, {w}); pad_to "
                         f"only grows images, resize to shrink them")
    top, left = (th - h) // 2, (tw - w) // 2
    if (th, tw) == (h, w):
        return x
    return F.pad(x, (left, tw - w - left, top, th - h - top), value=value)


def augment(batch: Union[Tensor, Sequence[Tensor]], generator: Optional[torch.Generator] = None,
            load_size: Optional[int] = None, crop_size: Optional[int] = None,
            flip: bool = True) -> Union[Tensor, Tuple[Tensor, ...]]:
    """The CycleGAN / pix2pix training augmentation on an in-memory batch:
    resize to ``load_size`` (bilinear; skipped when already that size), a
    random ``crop_size`` crop per image, and a horizontal flip of each image
    with probability 1/2 (when ``flip``).

    ``batch`` is a float (N, C, H, W) tensor or a sequence of such tensors
    with the same N and H, W (e.g. pix2pix's aligned A and B): they all get
    the same crop and flip per image. All randomness comes from
    ``generator`` (on the CPU), so a seeded generator makes it reproducible
    and its ``get_state()`` can be checkpointed."""
    single = isinstance(batch, Tensor)
    xs = [batch] if single else list(batch)
    if not xs or not all(isinstance(x, Tensor) and x.dim() == 4 for x in xs):
        raise TypeError("batch must be a (N, C, H, W) tensor or a sequence of them")
    n, (h, w) = xs[0].shape[0], xs[0].shape[-2:]
    if any(x.shape[0] != n or x.shape[-2:] != (h, w) for x in xs):
        raise ValueError(f"all tensors in batch must share N, H and W, got "
                         f"{[list(x.shape) for x in xs]}")
    if h != w and load_size is None:
        raise ValueError(f"images are not square ({h}x{w}); pass load_size to resize them")
    load = check_int("load_size", load_size) if load_size is not None else h
    crop = check_int("crop_size", crop_size) if crop_size is not None else load
    if crop > load:
        raise ValueError(f"crop_size ({crop}) must be <= load_size ({load})")
    if (h, w) != (load, load):
        xs = [F.interpolate(x, size=(load, load), mode="bilinear", align_corners=False,
                            antialias=load < min(h, w)) for x in xs]
    # Draw everything first, in a fixed order, whatever the branches below do.
    oy = torch.randint(0, load - crop + 1, (n,), generator=generator)
    ox = torch.randint(0, load - crop + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    out = []
    for x in xs:
        if crop < load:
            ar = torch.arange(crop)
            rows = (oy[:, None] + ar).to(x.device)  # (N, crop)
            cols = (ox[:, None] + ar).to(x.device)  # (N, crop)
            nidx = torch.arange(n, device=x.device)[:, None, None]
            # (N, crop, crop, C) by advanced indexing, back to (N, C, crop, crop)
            x = x.permute(0, 2, 3, 1)[nidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
            x = x.contiguous()
        if flips is not None:
            m = flips.to(x.device)[:, None, None, None]
            x = torch.where(m, x.flip(-1), x)
        out.append(x)
    return out[0] if single else tuple(out)
