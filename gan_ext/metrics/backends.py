"""Inception FID from the established packages, when they are installed.

gan_ext does not depend on them: both download Inception-v3 weights on first
use (so they are not offline) and pull in their own dependencies. Use them
for numbers comparable with papers on natural images; the MNIST metrics of
this package need neither.
"""
from __future__ import annotations

import importlib
import os

import torch

__all__ = ["BACKENDS", "fid_with_backend"]

# backend -> (module to import, pip package)
BACKENDS = {"torch-fidelity": ("torch_fidelity", "torch-fidelity"),
            "clean-fid": ("cleanfid", "clean-fid")}


def _import(backend: str):
    module, package = BACKENDS[backend]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"backend={backend!r} needs the package {package!r}, which is not "
                         f"installed: pip install {package} (it downloads Inception weights "
                         f"on first use)") from None


def fid_with_backend(backend: str, real_dir, fake_dir, **kwargs) -> float:
    """Inception FID between two folders of images with ``backend``:
    "torch-fidelity" (``torch_fidelity.calculate_metrics``) or "clean-fid"
    (``cleanfid.fid.compute_fid``, mode "clean"). ``kwargs`` go to that
    function. Raises ValueError naming the package to install if it is missing."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    for name, d in (("real_dir", real_dir), ("fake_dir", fake_dir)):
        if not isinstance(d, (str, os.PathLike)):
            raise TypeError(f"{name} must be a path to a folder of images, got {type(d).__name__}")
        if not os.path.isdir(d):
            raise ValueError(f"{name}: no folder at {os.fspath(d)!r}")
    lib = _import(backend)
    real_dir, fake_dir = os.fspath(real_dir), os.fspath(fake_dir)
    if backend == "torch-fidelity":
        kwargs.setdefault("verbose", False)
        kwargs.setdefault("cuda", torch.cuda.is_available())
        out = lib.calculate_metrics(input1=fake_dir, input2=real_dir, fid=True, **kwargs)
        return float(out["frechet_inception_distance"])
    kwargs.setdefault("mode", "clean")
    fid = importlib.import_module("cleanfid.fid")
    return float(fid.compute_fid(real_dir, fake_dir, **kwargs))
