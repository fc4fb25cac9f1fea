"""Argument checks and image conversions shared by the metrics.

Conventions: the MNIST metrics take float images in [0, 1] shaped
(N, 1, 28, 28) or (N, 28, 28); the translation metrics take float images in
[-1, 1] shaped (N, 3, 32, 32) or (N, 1, 32, 32), what the CycleGAN and pix2pix
generators return. Every mistake a user can make raises ValueError/TypeError
naming the argument and saying what to do.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from .._validate import check_int

# Tolerance on the value range: sigmoid/tanh outputs and (x + 1) / 2 round a
# hair past the ends in float32; anything further out is a convention mistake.
_RANGE_TOL = 1e-4


def check_float_tensor(x, name: str, hint: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__} "
                        f"(use torch.from_numpy for numpy arrays)")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor ({hint}), got dtype {x.dtype}")
    return x


def _check_range(x: Tensor, name: str, low: float, high: float, hint: str) -> None:
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach())
    lo, hi = lo.item(), hi.item()
    if lo != lo or hi != hi:  # NaN
        raise ValueError(f"{name} contains NaN")
    if lo < low - _RANGE_TOL or hi > high + _RANGE_TOL:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got values in "
                         f"[{lo:.4g}, {hi:.4g}]; {hint}")


def unit_images(images, name: str = "images") -> Tensor:
    """Validated MNIST-style images as a float32 (N, 1, 28, 28) tensor in [0, 1]."""
    check_float_tensor(images, name, "MNIST images in [0, 1]; divide uint8 images by 255")
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name} must have shape (N, 1, 28, 28) or (N, 28, 28), got "
                         f"{list(images.shape)}; for 32x32 [-1, 1] generator outputs use "
                         f"mnist_like_to_unit first")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    _check_range(images, name, 0.0, 1.0,
                 "images in [-1, 1] (tanh outputs) map to [0, 1] with (x + 1) / 2")
    return images.detach().float().clamp(0.0, 1.0)


def signed_images(images, name: str = "images", size: int = 32) -> Tensor:
    """Validated generator outputs as a float32 (N, C, size, size) tensor in
    [-1, 1], C in {1, 3}."""
    check_float_tensor(images, name, "images in [-1, 1]")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"{name} must have shape (N, 3, {size}, {size}) or "
                         f"(N, 1, {size}, {size}), got {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    _check_range(images, name, -1.0, 1.0, "images in [0, 1] map to [-1, 1] with 2 * x - 1")
    return images.detach().float().clamp(-1.0, 1.0)


def check_labels(labels, n: int, name: str = "labels") -> Tensor:
    """int64 (n,) labels in 0..9."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the images, got {list(labels.shape)}")
    if n and (labels.min().item() < 0 or labels.max().item() > 9):
        raise ValueError(f"{name} must hold digit classes 0..9, got values in "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    return labels.long().cpu()


def mnist_like_to_unit(images) -> Tensor:
    """Generator outputs in MNIST style, (N, 3 or 1, 32, 32) in [-1, 1] (the
    A domain of ``gan_ext.data.mnist_pair``: digits padded 28 -> 32), as the
    classifier's input: channel mean, centre crop 32 -> 28, mapped to [0, 1].
    Returns (N, 1, 28, 28)."""
    x = signed_images(images, "images")
    x = x.mean(dim=1, keepdim=True)[:, :, 2:30, 2:30]  # (N, 1, 28, 28)
    return ((x + 1.0) * 0.5).clamp_(0.0, 1.0)


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def batches(x: Tensor, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size].to(device, non_blocking=True)


@torch.no_grad()
def run_batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int,
                device: Optional[torch.device] = None) -> Tensor:
    """``torch.cat([fn(batch) for batch in x])`` on ``device``, results on CPU."""
    device = device if device is not None else x.device
    return torch.cat([fn(b).float().cpu() for b in batches(x, batch_size, device)])
