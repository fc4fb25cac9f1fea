"""Frechet distance between Gaussians fitted to classifier features (FID).

    FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

computed in float64 without scipy: S1 S2 is similar to the symmetric PSD
matrix A = S1^(1/2) S2 S1^(1/2) (conjugate by S1^(1/2)), so the eigenvalues of
(S1 S2)^(1/2) are the square roots of A's, from ``eigh``. Tiny negative
eigenvalues (rounding of a singular covariance) are clamped to zero.

:func:`mnist_fid` measures with the shipped MNIST classifier's 128-d
features, so values are comparable between runs of this package but not with
Inception FIDs in papers (for those, see :func:`fid_with_backend`).
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..data import cache_dir, load_mnist
from ._checks import check_int, model_device, run_batched, unit_images
from .classifier import MNISTClassifier, load_classifier

__all__ = ["frechet_distance", "feature_stats", "reference_stats", "mnist_fid"]

REFERENCES = ("test", "train")
_STATS: Dict[tuple, Tuple[Tensor, Tensor]] = {}
_LOCK = threading.Lock()


def _as_float64(x, name: str, dims: int) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    if x.dim() != dims:
        raise ValueError(f"{name} must be {'a vector (D,)' if dims == 1 else 'a matrix (D, D)'}, "
                         f"got shape {list(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _sqrt_psd(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and
    N(mu2, sigma2). mu: (D,), sigma: (D, D) symmetric PSD; torch tensors or
    numpy arrays, computed in float64. Returns a float >= 0."""
    mu1, mu2 = _as_float64(mu1, "mu1", 1), _as_float64(mu2, "mu2", 1)
    s1, s2 = _as_float64(sigma1, "sigma1", 2), _as_float64(sigma2, "sigma2", 2)
    d = mu1.shape[0]
    for name, x in (("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if any(n != d for n in x.shape):
            raise ValueError(f"{name} has shape {list(x.shape)}, which does not match mu1 ({d},)")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    r1 = _sqrt_psd(s1)
    a = r1 @ s2 @ r1
    eig = torch.linalg.eigvalsh((a + a.T) / 2).clamp(min=0)
    fid = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * eig.sqrt().sum()
    return max(fid.item(), 0.0)  # >= 0 exactly; rounding can leave -1e-12


def _features(images: Tensor, classifier: MNISTClassifier, batch_size: int) -> Tensor:
    return run_batched(classifier.features, images, batch_size, model_device(classifier))


def feature_stats(images, classifier: Optional[MNISTClassifier] = None,
                  batch_size: int = 500) -> Tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) (unbiased, float64) of the classifier's
    features of ``images``: float (N, 1, 28, 28) or (N, 28, 28) in [0, 1], N >= 2."""
    x = unit_images(images)
    batch_size = check_int("batch_size", batch_size)
    if x.shape[0] < 2:
        raise ValueError(f"images: need at least 2 images for a covariance, got {x.shape[0]}")
    classifier = load_classifier() if classifier is None else classifier
    f = _features(x, classifier, batch_size).double()  # (N, D)
    mu = f.mean(0)
    c = f - mu
    return mu, (c.T @ c) / (f.shape[0] - 1)


def _stats_dir() -> str:
    return os.path.join(os.fspath(cache_dir()), "metrics")


def reference_stats(reference: str = "test", classifier: Optional[MNISTClassifier] = None,
                    data_dir: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """:func:`feature_stats` of the real MNIST ``reference`` split ("test" or
    "train", from ``gan_ext.data.load_mnist``). Cached per process, and on
    disk under ``$GAN_EXT_CACHE`` (default ``~/.cache/gan_ext``)/metrics, keyed
    by the classifier's sha256 and the sha256 of the reference images."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    classifier = load_classifier() if classifier is None else classifier
    images, _ = load_mnist(reference, data_dir=data_dir)  # uint8 (N, 28, 28)
    sha = getattr(classifier, "sha256", None)  # set by load_classifier; None: not cacheable
    data_sha = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()
    key = (reference, sha, data_sha)
    with _LOCK:
        if sha is not None and key in _STATS:
            return _STATS[key]
    path = os.path.join(_stats_dir(), f"mnist_{reference}_stats_{sha[:16]}_{data_sha[:16]}.pt") \
        if sha else None
    stats = None
    if path and os.path.isfile(path):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("classifier_sha256") == sha and saved.get("data_sha256") == data_sha:
                stats = (saved["mu"], saved["sigma"])
        except Exception:  # a corrupt cache file is recomputed, never trusted
            stats = None
    if stats is None:
        stats = feature_stats(images.unsqueeze(1).float().div_(255.0), classifier)
        if path:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.{os.getpid()}.tmp"
                torch.save({"mu": stats[0], "sigma": stats[1], "classifier_sha256": sha,
                            "data_sha256": data_sha, "n": images.shape[0]}, tmp)
                os.replace(tmp, path)
            except OSError as e:
                warnings.warn(f"could not cache the FID reference statistics in {path} ({e}); "
                              f"they are recomputed in the next process", stacklevel=2)
    if sha is not None:
        with _LOCK:
            _STATS[key] = stats
    return stats


def mnist_fid(images, reference: str = "test", classifier: Optional[MNISTClassifier] = None,
              data_dir: Optional[str] = None, batch_size: int = 500) -> float:
    """FID in the MNIST classifier's feature space between ``images`` (float
    (N, 1, 28, 28) or (N, 28, 28) in [0, 1]; use 10,000 for numbers comparable
    with the test-set reference, the estimate is biased upwards for small N)
    and the real MNIST ``reference`` split."""
    mu, sigma = feature_stats(images, classifier, batch_size)
    mu_r, sigma_r = reference_stats(reference, classifier, data_dir)
    return frechet_distance(mu, sigma, mu_r, sigma_r)
