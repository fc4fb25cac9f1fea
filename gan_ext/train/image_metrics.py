"""FID and KID of a run's samples against the run's own real images: the
evaluation of gan/dcgan on ``--data`` (every channel, RGB), and ``gan-ext
eval --fid-backend`` on any generative run (MNIST runs: the test digits,
padded as the run was trained).

Where the features come from (:mod:`gan_ext.metrics.image_fid`):

1. ``--fid-backend B`` given: that package (its Inception, or the feature
   hook in its place when one is set); a failure is an error;
2. else a feature hook (``GAN_EXT_FEATURE_EXTRACTOR`` or
   ``gan_ext.metrics.set_feature_extractor``): gan_ext's own FID and KID;
3. else the first of torch-fidelity, clean-fid that imports; a failure
   (no Inception weights offline) becomes a warning in the metrics;
4. else none: a note says what to install.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from .. import metrics
from ..data import folder_source, pad_to
from . import _data
from .latents import FID_BACKEND_SEED

__all__ = ["reference_images", "image_scores", "write_pngs", "IMAGE_SCORE_MODELS"]

IMAGE_SCORE_MODELS = ("gan", "dcgan", "cgan", "vae")
NO_FEATURES = ("FID/KID against the run's images need a feature extractor: pip install "
               "torch-fidelity (or clean-fid; either fetches Inception weights once), or set "
               "GAN_EXT_FEATURE_EXTRACTOR=package.module:function")


def reference_images(trainer, n: int) -> Tensor:
    """Up to ``n`` real images as the run was trained on them, (N, C, H, W)
    in [-1, 1]: the ``--data`` folder at the run's size and channels (a
    seeded random subset when it holds more), else the MNIST test digits
    (padded to the run's size). Kept on the trainer for later evaluations."""
    cached = getattr(trainer, "_fid_reference", None)
    if cached is not None and len(cached) >= n:
        return cached[:n]
    o = trainer.opts
    if trainer.name == "vae":
        x = trainer.test_images(max(n, 2)) * 2 - 1                      # (N, 1, 28, 28)
    elif o.data is not None:
        c, s, _ = trainer.image_shape()
        src = folder_source(o.data, _data.center(s), c)   # decodes only the images it keeps
        keep = None
        if len(src) > n:
            g = torch.Generator().manual_seed(FID_BACKEND_SEED)
            keep = torch.randperm(len(src), generator=g)[:n].tolist()
        x = src.materialize(indices=keep)[0]
    else:
        x = _data.mnist_signed("test", o.mnist_dir)[0][:n]
        x = pad_to(x, trainer.image_shape()[-1], value=-1.0)
    trainer._fid_reference = x
    return x[:n]


def write_pngs(images: Tensor, folder: str) -> None:
    """``images`` (N, C, H, W) in [-1, 1] as RGB PNG files 000000.png, ..."""
    from PIL import Image  # only here: pillow is slow to import
    os.makedirs(folder, exist_ok=True)
    u8 = metrics.to_rgb_uint8(images).permute(0, 2, 3, 1).numpy()     # (N, H, W, 3)
    for i, im in enumerate(u8):
        Image.fromarray(np.ascontiguousarray(im)).save(os.path.join(folder, f"{i:06d}.png"))


def _with_backend(backend: str, real: Tensor, fake: Tensor) -> Dict[str, Any]:
    hook = metrics.feature_extractor()
    with tempfile.TemporaryDirectory(prefix="gan_ext_fid_") as tmp:
        write_pngs(real, os.path.join(tmp, "real"))
        write_pngs(fake, os.path.join(tmp, "fake"))
        out = metrics.scores_with_backend(backend, os.path.join(tmp, "real"),
                                          os.path.join(tmp, "fake"),
                                          extractor=hook[0] if hook else None)
    out["fid_features"] = f"{hook[1] if hook else 'inception-v3'} via {backend}"
    out["fid_real_n"] = int(len(real))
    return out


def _fakes(trainer, n: int) -> Tensor:
    g = torch.Generator().manual_seed(FID_BACKEND_SEED)
    fake, _ = trainer.sample(n, False, g)
    return fake


def image_scores(trainer, n: int, backend: Optional[str] = None) -> Dict[str, Any]:
    """``{"fid", "kid", "kid_std", "fid_features", "fid_real_n"}`` of ``n``
    samples of ``trainer`` against :func:`reference_images`, or ``{"note"}``
    / ``{"warnings"}`` where no features could be had (see the module)."""
    if trainer.name not in IMAGE_SCORE_MODELS:
        raise ValueError(f"--fid-backend applies to the generative models "
                         f"({', '.join(IMAGE_SCORE_MODELS)}), not {trainer.name}")
    if n < 2:
        return {"note": "FID/KID need at least 2 samples"}
    if backend is not None:
        return _with_backend(backend, reference_images(trainer, n), _fakes(trainer, n))
    hook = metrics.feature_extractor()
    if hook is not None:
        return metrics.fid_kid(reference_images(trainer, n), _fakes(trainer, n), hook)
    auto = metrics.installed_backend()
    if auto is None:
        return {"note": NO_FEATURES}
    try:
        return _with_backend(auto, reference_images(trainer, n), _fakes(trainer, n))
    except Exception as e:   # e.g. the Inception download offline: the run's other results stand
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return {"warnings": [f"FID/KID through {auto} failed ({type(e).__name__}: {first}); "
                             "gan-ext eval RUN --fid-backend NAME retries and shows the error"]}

