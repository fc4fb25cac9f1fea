"""FID and KID of generated images against real ones, RGB, any size: the
metrics of a run on the user's own images (``--data``).

Both compare feature vectors of the two image sets:

* FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to
  the features, computed by :func:`gan_ext.metrics.frechet_distance` (float64,
  the matrix square root from a symmetric eigendecomposition, no scipy);
* KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
  estimate of the squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x . y / d + 1) ** 3``, averaged over random subsets, with
  torch-fidelity's defaults (100 subsets of min(1000, N) samples); reported
  as mean and standard deviation over the subsets. Unlike FID it is
  unbiased, so small sample counts are comparable (though noisy).

The features come from Inception-v3 in the papers; this package ships no
Inception weights, so :func:`fid_kid` needs a **feature extractor**:

* torch-fidelity or clean-fid (``gan_ext.metrics.backends``), which fetch
  Inception weights themselves on first use (that needs the internet once);
* or any callable set with :func:`set_feature_extractor` or the environment
  variable ``GAN_EXT_FEATURE_EXTRACTOR=package.module:function``: it takes a
  uint8 tensor (N, 3, H, W) in [0, 255] and returns float features (N, D).
  With a backend, the same callable replaces that backend's Inception (how
  the tests check the plumbing offline). :func:`pooled_pixels` is such a
  stand-in: block means of the pixels, no perception at all; its numbers
  compare runs of one dataset with each other, not with published FIDs.
"""
from __future__ import annotations

import importlib
import math
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .fid import frechet_distance

__all__ = ["kernel_inception_distance", "fid_from_features", "fid_kid", "to_rgb_uint8",
           "set_feature_extractor", "feature_extractor", "pooled_pixels", "ENV_EXTRACTOR",
           "KID_SUBSETS", "KID_SUBSET_SIZE"]

ENV_EXTRACTOR = "GAN_EXT_FEATURE_EXTRACTOR"
KID_SUBSETS = 100        # torch-fidelity's and clean-fid's defaults
KID_SUBSET_SIZE = 1000
FEATURE_BATCH = 100

Extractor = Callable[[Tensor], Tensor]
_EXTRACTOR: Optional[Tuple[Extractor, str]] = None


def _features_2d(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor) or not (x.is_floating_point() or x.dtype in (
            torch.uint8, torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a real tensor or numpy array of features (N, D), got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2, got {list(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def kernel_inception_distance(features_a, features_b, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, degree: int = 3,
                              gamma: Optional[float] = None, coef0: float = 1.0,
                              seed: int = 0) -> Tuple[float, float]:
    """(mean, std) over ``subsets`` random subsets (drawn without replacement,
    min(``subset_size``, N_a, N_b) each) of the unbiased MMD^2 between the
    feature sets (N, D), kernel ``(gamma x . y + coef0) ** degree`` with
    gamma = 1 / D by default. float64; the draws come from a generator seeded
    with ``seed`` (no global RNG is touched). Identical distributions give
    values around 0 (negative ones happen: the estimate is unbiased)."""
    a, b = _features_2d(features_a, "features_a"), _features_2d(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same width D, got "
                         f"{a.shape[1]} and {b.shape[1]}")
    for name, v in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
        if not isinstance(v, int) or isinstance(v, bool) or v < (2 if name == "subset_size" else 1):
            raise ValueError(f"{name} must be a whole number >= "
                             f"{2 if name == 'subset_size' else 1}, got {v!r}")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    m = min(subset_size, a.shape[0], b.shape[0])
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=g)[:m]]
        y = b[torch.randperm(b.shape[0], generator=g)[:m]]
        kxx = (gamma * x @ x.T + coef0) ** degree
        kyy = (gamma * y @ y.T + coef0) ** degree
        kxy = (gamma * x @ y.T + coef0) ** degree
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append((within - 2 * kxy.sum() / (m * m)).item())
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std(unbiased=False)) if len(values) > 1 else 0.0


def fid_from_features(features_a, features_b) -> float:
    """FID: the Frechet distance between Gaussians fitted (mean, unbiased
    covariance) to two feature sets (N, D)."""
    a, b = _features_2d(features_a, "features_a"), _features_2d(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same width D, got "
                         f"{a.shape[1]} and {b.shape[1]}")
    return frechet_distance(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1),
                            b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))


# ------------------------------------------------------------ the features
def to_rgb_uint8(images: Tensor, name: str = "images") -> Tensor:
    """Generator outputs, float (N, C, H, W) in [-1, 1] with C = 1 or 3, as
    uint8 RGB (N, 3, H, W) in [0, 255]: what an image file of them holds
    (grey images repeat their channel, as PIL's convert("RGB") does)."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (N, C, H, W) in [-1, 1]")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 1 or 3, H, W) with N >= 1, got "
                         f"{list(images.shape)}")
    u8 = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


def pooled_pixels(images: Tensor) -> Tensor:
    """A stand-in feature extractor: the means of 4 x 4 blocks of each RGB
    channel plus their squares' (a little texture), 96 features in [0, 1].
    It measures colour and layout, not content: use it to check plumbing or
    to compare runs of one dataset offline, never against published FIDs."""
    x = images.float() / 255.0                                       # (N, 3, H, W)
    mean = F.adaptive_avg_pool2d(x, 4).flatten(1)                    # (N, 48)
    sq = F.adaptive_avg_pool2d(x * x, 4).flatten(1)                  # (N, 48)
    return torch.cat([mean, sq], 1)


def set_feature_extractor(fn: Optional[Extractor], name: Optional[str] = None) -> None:
    """Makes ``fn`` (uint8 (N, 3, H, W) -> float (N, D)) the feature
    extractor of :func:`fid_kid` and of the backends (instead of their
    Inception); None restores the default (``GAN_EXT_FEATURE_EXTRACTOR`` or
    the backends' Inception)."""
    global _EXTRACTOR
    if fn is not None and not callable(fn):
        raise TypeError(f"the feature extractor must be callable, got {type(fn).__name__}")
    _EXTRACTOR = None if fn is None else (fn, name or getattr(fn, "__qualname__", repr(fn)))


def feature_extractor() -> Optional[Tuple[Extractor, str]]:
    """(callable, name) set by :func:`set_feature_extractor`, else the one
    ``GAN_EXT_FEATURE_EXTRACTOR=module:function`` names, else None."""
    if _EXTRACTOR is not None:
        return _EXTRACTOR
    spec = os.environ.get(ENV_EXTRACTOR, "").strip()
    if not spec:
        return None
    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr) if attr else None
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{ENV_EXTRACTOR}={spec!r} does not name a function "
                         f"('package.module:function'): {e}") from None
    if not callable(fn):
        raise ValueError(f"{ENV_EXTRACTOR}={spec!r} must be 'package.module:function' naming a "
                         "callable")
    return fn, spec


def _extract(fn: Extractor, u8: Tensor) -> Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(u8), FEATURE_BATCH):
            f = fn(u8[i:i + FEATURE_BATCH])
            if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[0] != len(u8[i:i + FEATURE_BATCH]):
                raise ValueError("the feature extractor must return a tensor (N, D) for N images, "
                                 f"got {getattr(f, 'shape', type(f).__name__)}")
            out.append(f.detach().double().cpu())
    return torch.cat(out)


def fid_kid(real: Tensor, fake: Tensor, extractor: Optional[Tuple[Extractor, str]] = None,
            seed: int = 0) -> Dict[str, object]:
    """FID and KID of ``fake`` against ``real`` (each float (N, C, H, W) in
    [-1, 1], C = 1 or 3, N >= 2; the sizes may differ if the extractor takes
    both) with ``extractor`` (default :func:`feature_extractor`). Returns
    ``{"fid", "kid", "kid_std", "fid_features", "fid_real_n"}``."""
    ext = extractor if extractor is not None else feature_extractor()
    if ext is None:
        raise ValueError("FID/KID need a feature extractor: install torch-fidelity or clean-fid "
                         f"(Inception), or set {ENV_EXTRACTOR}=package.module:function")
    fn, name = ext
    fr = _extract(fn, to_rgb_uint8(real, "real"))
    ff = _extract(fn, to_rgb_uint8(fake, "fake"))
    fid = fid_from_features(fr, ff)
    kid, kid_std = kernel_inception_distance(fr, ff, seed=seed)
    if not all(math.isfinite(v) for v in (fid, kid, kid_std)):
        raise ValueError("FID/KID are not finite: the feature extractor returned degenerate "
                         "features")
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "fid_features": name,
            "fid_real_n": int(len(fr))}
