"""Mode-collapse benchmarks, measured as the papers measure them.

* ``ring`` and ``grid`` (:data:`RING`, :data:`GRID`): 2-D mixtures of
  Gaussians with equal weights, 8 centres on a circle of radius 2 (sigma
  0.02) and 25 centres at {-4, -2, 0, 2, 4}^2 (sigma 0.05), the setting of
  the Unrolled GAN, VEEGAN and PacGAN papers. :func:`mixture_modes` counts
  the modes covered (a mode with at least one sample within 3 sigma of its
  centre), the high-quality samples (within 3 sigma of the nearest centre)
  and the reverse KL of the mode histogram to the uniform one.
* ``stacked-mnist`` (:func:`stacked_mnist`, :func:`stacked_mnist_modes`):
  three MNIST digits as the R, G and B channels, 1,000 modes; each channel
  is classified with the shipped MNIST classifier and the mode is the
  3-digit number read off the channels.

A perfect sampler of a 2-D mixture puts 1 - exp(-9/2) = 98.9% of its
samples within 3 sigma (the squared distance over sigma^2 is chi-square
with 2 degrees of freedom), so high-quality rates just under 99% are the
ceiling, not a defect.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .._validate import check_int
from ._checks import check_float_tensor
from .classifier import MNISTClassifier, load_classifier
from .scores import class_log_probs

__all__ = ["Mixture", "RING", "GRID", "MIXTURES", "mixture_modes", "kl_to_uniform",
           "stacked_mnist", "stacked_mnist_modes", "STACKED_MODES", "ring_centres",
           "grid_centres"]

STACKED_MODES = 1000
N_STD = 3.0   # "within 3 standard deviations": the papers' threshold


def ring_centres(n: int = 8, radius: float = 2.0) -> Tensor:
    """``n`` centres at angles 2 pi i / n, i = 0..n-1 (linspace(0, 2 pi, n)
    would put the last on top of the first)."""
    a = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return torch.stack([radius * torch.cos(a), radius * torch.sin(a)], 1)     # (n, 2)


def grid_centres(values=(-4.0, -2.0, 0.0, 2.0, 4.0)) -> Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    return torch.cartesian_prod(v, v)                                          # (25, 2)


@dataclass(frozen=True)
class Mixture:
    """An equal-weight mixture of isotropic 2-D Gaussians."""
    name: str
    centres: Tensor          # (K, 2) float64
    sigma: float

    @property
    def modes(self) -> int:
        return int(self.centres.shape[0])

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` points (n, 2) float32: a centre chosen uniformly, plus N(0, sigma^2 I)."""
        check_int("n", n, 0)
        idx = torch.randint(self.modes, (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.centres[idx] + self.sigma * noise).float()


RING = Mixture("ring", ring_centres(), 0.02)
GRID = Mixture("grid", grid_centres(), 0.05)
MIXTURES: Dict[str, Mixture] = {"ring": RING, "grid": GRID}


def kl_to_uniform(counts: Tensor) -> float:
    """KL(p || uniform) in nats of the histogram ``counts`` (K bins): 0 for a
    uniform histogram, log K when every sample is in one bin; NaN when the
    histogram is empty (nothing to compare)."""
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        return float("nan")
    p = counts / total
    k = counts.numel()
    nz = p > 0
    return float((p[nz] * (p[nz] * k).log()).sum())


def _check_points(samples, name: str = "samples") -> Tensor:
    check_float_tensor(samples, name, "2-D points")
    if samples.dim() != 2 or samples.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {list(samples.shape)}")
    if samples.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    if not torch.isfinite(samples).all():
        raise ValueError(f"{name} holds NaN or inf: the generator diverged")
    return samples.detach().double().cpu()


def mixture_modes(samples, mixture: Mixture, n_std: float = N_STD) -> Dict[str, object]:
    """The 2-D mixture metrics of ``samples`` (N, 2): ``modes`` covered,
    ``high_quality`` (fraction within ``n_std`` sigma of the nearest centre),
    ``reverse_kl`` (KL of the histogram of the high-quality samples over the
    modes to uniform, in nats; NaN when no sample is high quality) and the
    per-mode ``counts``."""
    x = _check_points(samples)
    if not (isinstance(n_std, (int, float)) and n_std > 0):
        raise ValueError(f"n_std must be a positive number, got {n_std!r}")
    dist = torch.cdist(x, mixture.centres)                                    # (N, K)
    d, nearest = dist.min(1)
    good = d <= n_std * mixture.sigma
    counts = torch.bincount(nearest[good], minlength=mixture.modes)
    return {"n": int(x.shape[0]), "modes": int((counts > 0).sum()), "max_modes": mixture.modes,
            "high_quality": float(good.double().mean()), "reverse_kl": kl_to_uniform(counts),
            "counts": [int(c) for c in counts]}


# ------------------------------------------------------------- stacked MNIST
def stacked_mnist(n: int, images: Tensor, labels: Tensor,
                  generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """``n`` stacked digits from an MNIST split (``images`` uint8 (M, 28, 28),
    ``labels`` (M,)): three digits drawn independently and uniformly as the
    R, G, B channels; returns uint8 (n, 3, 28, 28) and the modes
    100 * label_R + 10 * label_G + label_B (n,)."""
    check_int("n", n, 0)
    if images.dim() != 3 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images must be (M, H, W) with M = len(labels) > 0, got "
                         f"{list(images.shape)} and {len(labels)} labels")
    idx = torch.randint(len(images), (n, 3), generator=generator)
    x = images[idx]                                                           # (n, 3, 28, 28)
    y = labels[idx].long()
    return x, y[:, 0] * 100 + y[:, 1] * 10 + y[:, 2]


def stacked_mnist_modes(images01, classifier: Optional[MNISTClassifier] = None,
                        batch_size: int = 500) -> Dict[str, object]:
    """Stacked-MNIST metrics of ``images01`` (N, 3, 28, 28) in [0, 1]: each
    channel classified; ``modes`` covered out of 1,000 and ``kl`` =
    KL(p_generated || uniform over 1,000) in nats, with the histogram."""
    check_float_tensor(images01, "images", "stacked MNIST images in [0, 1]")
    if images01.dim() != 4 or tuple(images01.shape[1:]) != (3, 28, 28):
        raise ValueError(f"images must have shape (N, 3, 28, 28), got {list(images01.shape)}")
    classifier = load_classifier() if classifier is None else classifier
    digits = [class_log_probs(images01[:, c], classifier, batch_size).argmax(1)
              for c in range(3)]
    modes = digits[0] * 100 + digits[1] * 10 + digits[2]
    counts = torch.bincount(modes, minlength=STACKED_MODES)
    return {"n": int(images01.shape[0]), "modes": int((counts > 0).sum()),
            "max_modes": STACKED_MODES, "kl": kl_to_uniform(counts),
            "counts": [int(c) for c in counts]}
