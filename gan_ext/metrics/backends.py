"""Inception FID and KID from the established packages, when they are installed.

gan_ext does not depend on them: both download Inception-v3 weights on first
use (so they are not offline) and pull in their own dependencies (torchvision,
scipy). Use them for numbers comparable with papers on natural images; the
MNIST metrics of this package need neither.

A feature extractor set with :func:`gan_ext.metrics.set_feature_extractor`
(or ``GAN_EXT_FEATURE_EXTRACTOR``) replaces their Inception: registered as a
torch-fidelity feature extractor, handed to clean-fid as its model. The
images still go through each package's own reading (and clean-fid's resize
to 299 x 299), so this is how the call into them is checked without weights.
"""
from __future__ import annotations

import importlib
import os
from typing import Dict, Optional

import numpy as np
import torch

from .image_fid import KID_SUBSET_SIZE, KID_SUBSETS, Extractor, feature_extractor

__all__ = ["BACKENDS", "fid_with_backend", "scores_with_backend", "installed_backend"]

# backend -> (module to import, pip package)
BACKENDS = {"torch-fidelity": ("torch_fidelity", "torch-fidelity"),
            "clean-fid": ("cleanfid", "clean-fid")}
_API = {"torch-fidelity": "torch_fidelity", "clean-fid": "cleanfid.fid"}   # what is called
_STANDIN = "gan-ext-feature-extractor"   # the name a hook is registered under in torch-fidelity


def _import(backend: str, module: Optional[str] = None):
    package = BACKENDS[backend][1]
    try:
        return importlib.import_module(module or BACKENDS[backend][0])
    except ImportError as e:
        raise ValueError(f"backend={backend!r} needs the package {package!r}, which does not "
                         f"import here ({e}): pip install {package} (it downloads Inception "
                         f"weights on first use)") from None


def installed_backend() -> Optional[str]:
    """The first backend whose package imports (torch-fidelity first), or None."""
    for name in BACKENDS:
        try:
            importlib.import_module(_API[name])
            return name
        except Exception:   # missing, or broken (a torchvision that does not fit torch)
            continue
    return None


def _check_dirs(backend: str, real_dir, fake_dir) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    for name, d in (("real_dir", real_dir), ("fake_dir", fake_dir)):
        if not isinstance(d, (str, os.PathLike)):
            raise TypeError(f"{name} must be a path to a folder of images, got {type(d).__name__}")
        if not os.path.isdir(d):
            raise ValueError(f"{name}: no folder at {os.fspath(d)!r}")


def fid_with_backend(backend: str, real_dir, fake_dir, **kwargs) -> float:
    """Inception FID between two folders of images with ``backend``:
    "torch-fidelity" (``torch_fidelity.calculate_metrics``) or "clean-fid"
    (``cleanfid.fid.compute_fid``, mode "clean"). ``kwargs`` go to that
    function. Raises ValueError naming the package to install if it is missing."""
    _check_dirs(backend, real_dir, fake_dir)
    lib = _import(backend)
    real_dir, fake_dir = os.fspath(real_dir), os.fspath(fake_dir)
    if backend == "torch-fidelity":
        kwargs.setdefault("verbose", False)
        kwargs.setdefault("cuda", torch.cuda.is_available())
        out = lib.calculate_metrics(input1=fake_dir, input2=real_dir, fid=True, **kwargs)
        return float(out["frechet_inception_distance"])
    kwargs.setdefault("mode", "clean")
    fid = _import(backend, "cleanfid.fid")
    return float(fid.compute_fid(real_dir, fake_dir, **kwargs))


def _count(d: str) -> int:
    return sum(1 for f in os.listdir(d) if f.lower().endswith(".png"))


def scores_with_backend(backend: str, real_dir, fake_dir,
                        extractor: Optional[Extractor] = None) -> Dict[str, float]:
    """FID and KID (mean and std over 100 subsets of min(1000, N) images) of
    the PNG images in ``fake_dir`` against those in ``real_dir`` through
    ``backend``: ``{"fid", "kid", "kid_std"}`` (clean-fid gives no
    ``kid_std``). ``extractor`` (default: the hook of
    :func:`gan_ext.metrics.feature_extractor`, else the package's Inception)
    takes uint8 (N, 3, H, W) and returns (N, D) features."""
    _check_dirs(backend, real_dir, fake_dir)
    real_dir, fake_dir = os.fspath(real_dir), os.fspath(fake_dir)
    if extractor is None:
        hook = feature_extractor()
        extractor = hook[0] if hook else None
    subset = min(KID_SUBSET_SIZE, _count(real_dir), _count(fake_dir))
    if subset < 2:
        raise ValueError("FID/KID need at least 2 images in each folder")
    cuda = torch.cuda.is_available()
    if backend == "torch-fidelity":
        lib = _import(backend)
        kw = {}
        if extractor is not None:
            kw["feature_extractor"] = _register_torch_fidelity(lib, extractor)
            cuda = False   # the hook runs where its caller put it
        out = lib.calculate_metrics(input1=fake_dir, input2=real_dir, fid=True, kid=True,
                                    kid_subsets=KID_SUBSETS, kid_subset_size=subset, cuda=cuda,
                                    cache=False, verbose=False, samples_find_ext="png", **kw)
        return {"fid": float(out["frechet_inception_distance"]),
                "kid": float(out["kernel_inception_distance_mean"]),
                "kid_std": float(out["kernel_inception_distance_std"])}
    fid = _import(backend, "cleanfid.fid")
    device = torch.device("cuda" if cuda and extractor is None else "cpu")
    if extractor is None:
        model = fid.build_feature_extractor("clean", device, use_dataparallel=False)
    else:   # clean-fid hands its model float (N, 3, 299, 299) in [0, 255]
        def model(x):
            return extractor(x.clamp(0, 255).round().to(torch.uint8))
    feats = [fid.get_folder_features(d, model, num_workers=0, device=device, mode="clean",
                                     verbose=False) for d in (real_dir, fake_dir)]
    state = np.random.get_state()   # clean-fid's KID draws its subsets from numpy's global RNG
    try:
        np.random.seed(0)
        kid = float(fid.kernel_distance(feats[0], feats[1], num_subsets=KID_SUBSETS,
                                        max_subset_size=subset))
    finally:
        np.random.set_state(state)
    return {"fid": float(fid.fid_from_feats(feats[0], feats[1])), "kid": kid}  # no KID std


def _register_torch_fidelity(lib, extractor: Extractor) -> str:
    """Registers ``extractor`` as a torch-fidelity feature extractor (its one
    feature layer, "features", serves FID and KID); returns the name."""
    base = lib.FeatureExtractorBase

    class HookExtractor(base):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("features",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "features"

        @staticmethod
        def can_be_compiled():
            return False

        def forward(self, x):
            return (HookExtractor.fn(x).float(),)

    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY  # replace a previous hook
    FEATURE_EXTRACTORS_REGISTRY.pop(_STANDIN, None)
    HookExtractor.fn = staticmethod(extractor)
    lib.register_feature_extractor(_STANDIN, HookExtractor)
    return _STANDIN
