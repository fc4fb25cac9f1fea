"""An unpaired two-domain dataset made from MNIST, for CycleGAN without a download.

Domain A: MNIST digits as they are (white strokes on black). Domain B: OTHER
MNIST images (a disjoint half of the split) drawn in another style: strokes
in a per-image colour over a textured background (a smooth two-colour
gradient, soft stripes and grey pixel noise, in roughly the complementary hue).
The translation A <-> B must change colour and texture and keep the digit,
so the digit classes give an evaluation signal a real unpaired dataset lacks.
"""
from __future__ import annotations

import hashlib
import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataError
from .mnist import load_mnist
from .._validate import check_int
from .transforms import pad_to, to_unit

__all__ = ["MNISTPair", "mnist_pair", "pair_indices", "domain_style"]

_CHUNK = 4096  # images styled at a time: bounds the temporaries to ~100 MB at 32x32


class MNISTPair(NamedTuple):
    A: Tensor         # (N_A, 3, S, S) float32 in [-1, 1]: plain digits
    B: Tensor         # (N_B, 3, S, S) float32 in [-1, 1]: other digits, coloured and textured
    labels_A: Tensor  # (N_A,) int64, for evaluation only
    labels_B: Tensor  # (N_B,) int64, for evaluation only


def _seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for each (seed, purpose): independent streams for the
    split and the style, with no collisions between nearby seeds."""
    digest = hashlib.blake2b(f"gan_ext.mnist_pair:{purpose}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def pair_indices(n_total: int, n: Optional[int] = None, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """(index_A, index_B): two disjoint sets of indices into a split of
    ``n_total`` images, from a seeded permutation cut in two halves; ``n``
    (default: all of a half) of each. int64 (n,) each."""
    n_total = check_int("n_total", n_total)
    half = n_total // 2
    if n is None:
        n = half
    n = check_int("n", n)
    if n > half:
        raise DataError(f"n = {n} is more than half of the {n_total} images: the two domains "
                        f"need disjoint images; use n <= {half}")
    g = torch.Generator().manual_seed(_seed(check_int("seed", seed, 0), "split"))
    perm = torch.randperm(n_total, generator=g)
    return perm[:n].clone(), perm[half:half + n].clone()


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(N,) hue in [0, 1) (wraps), saturation, value -> (N, 3) RGB in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + (h.remainder(1.0) * 6.0)[:, None]).remainder(6.0)  # (N, 3)
    return v[:, None] - (v * s)[:, None] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _uniform(n: int, low: float, high: float, g: Optional[torch.Generator]) -> Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _style_chunk(alpha: Tensor, g: Optional[torch.Generator]) -> Tensor:
    n, _, h, w = alpha.shape
    hue = torch.rand(n, generator=g)
    stroke = _hsv_to_rgb(hue, _uniform(n, 0.55, 0.9, g), _uniform(n, 0.9, 1.0, g))  # (N, 3)
    # Background: darker, in roughly the complementary hue, so the digit stays the brightest part.
    bg_hue = hue + 0.5 + _uniform(n, -0.12, 0.12, g)
    c0 = _hsv_to_rgb(bg_hue, _uniform(n, 0.4, 0.9, g), _uniform(n, 0.2, 0.45, g))
    c1 = _hsv_to_rgb(bg_hue + _uniform(n, -0.2, 0.2, g), _uniform(n, 0.4, 0.9, g),
                     _uniform(n, 0.2, 0.45, g))
    ys = torch.linspace(-1.0, 1.0, h)[:, None]                                        # (H, 1)
    xs = torch.linspace(-1.0, 1.0, w)[None, :]                                        # (1, W)

    def along(theta: Tensor) -> Tensor:  # (N,) angle -> (N, 1, H, W) coordinate along it
        return torch.addcmul(xs * theta.cos()[:, None, None], ys, theta.sin()[:, None, None])[:, None]

    t = along(_uniform(n, 0.0, 2 * math.pi, g)).mul_(0.5).add_(0.5).clamp_(0.0, 1.0)  # (N, 1, H, W)
    freq = _uniform(n, 1.5, 4.0, g)[:, None, None, None]  # stripe cycles across the image
    phase = _uniform(n, 0.0, 2 * math.pi, g)[:, None, None, None]
    # The single-channel parts first (a third of the work of colour planes): grey
    # pixel noise and soft stripes, then the two-colour gradient in one fused op.
    texture = torch.randn(n, 1, h, w, generator=g).mul_(0.05)
    texture.add_(torch.sin(along(_uniform(n, 0.0, math.pi, g)).mul_(math.pi * freq).add_(phase)),
                 alpha=0.08)
    bg = texture + c0[:, :, None, None]                                               # (N, 3, H, W)
    bg.addcmul_((c1 - c0)[:, :, None, None], t).clamp_(0.0, 1.0)
    return torch.lerp(bg, stroke[:, :, None, None], alpha)


def domain_style(images_unit: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Renders digits in the B style: ``images_unit`` float (N, 1, H, W) or
    (N, H, W) in [0, 1], read as stroke coverage -> float32 (N, 3, H, W) in
    [0, 1]. All randomness (stroke hue, background colours, gradient angle,
    stripes, noise) comes from ``generator`` (CPU), so a seeded generator
    gives the same images every time."""
    if not isinstance(images_unit, Tensor) or not images_unit.is_floating_point():
        raise TypeError("images_unit must be a float tensor in [0, 1] (use to_unit for uint8 images)")
    x = images_unit.unsqueeze(1) if images_unit.dim() == 3 else images_unit
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"images_unit must have shape (N, 1, H, W) or (N, H, W), got "
                         f"{list(images_unit.shape)}")
    x = x.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    if x.shape[0] == 0:
        return x.new_zeros(0, 3, *x.shape[2:])
    return torch.cat([_style_chunk(x[i:i + _CHUNK], generator) for i in range(0, x.shape[0], _CHUNK)])


def _fit(x: Tensor, size: int) -> Tensor:
    """(N, 1, 28, 28) in [0, 1] -> (N, 1, size, size): black border when
    growing (MNIST 28 -> 32, the classic LeNet input), area resize when shrinking."""
    if size >= x.shape[-1]:
        return pad_to(x, size, 0.0)
    return F.interpolate(x, size=(size, size), mode="area")


def mnist_pair(split: str = "train", n: Optional[int] = None, data_dir=None, seed: int = 0,
               image_size: int = 32, download: bool = True) -> MNISTPair:
    """The offline unpaired dataset (see the module docstring) from MNIST
    ``split``: ``n`` images per domain (default: half the split each, 30,000
    for train, 5,000 for test), A and B from disjoint images (see
    :func:`pair_indices`), both (N, 3, image_size, image_size) in [-1, 1].
    Deterministic for a given ``seed``; ``data_dir`` and ``download`` are
    passed to :func:`load_mnist`."""
    image_size = check_int("image_size", image_size, 8)
    seed = check_int("seed", seed, 0)
    images, labels = load_mnist(split, data_dir=data_dir, download=download)
    idx_a, idx_b = pair_indices(len(images), n, seed)
    a = _fit(to_unit(images[idx_a]), image_size)                                      # (N, 1, S, S)
    a = a.expand(-1, 3, -1, -1).mul(2.0).sub(1.0)                                     # (N, 3, S, S)
    g = torch.Generator().manual_seed(_seed(seed, "style"))
    b = domain_style(_fit(to_unit(images[idx_b]), image_size), g).mul_(2.0).sub_(1.0)  # (N, 3, S, S)
    return MNISTPair(a.contiguous(), b, labels[idx_a].clone(), labels[idx_b].clone())
