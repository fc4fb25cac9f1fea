"""The per-image preprocessing of the official CycleGAN/pix2pix code
(``--preprocess``, ``--load-size``, ``--crop-size``, ``--no-flip``), decided
per image from its size alone and applied with Pillow to uint8 pixels.

The modes (the official ``options/base_options.py`` and ``data/base_dataset.py``):

- ``resize_and_crop`` (default): resize to load x load (bicubic), a random
  crop x crop crop.
- ``crop``: a random crop x crop crop of the image as it is.
- ``scale_width``: width to load, height to keep the aspect ratio (at least
  crop); no crop. ``scale_width_and_crop``: then a random crop x crop crop.
- ``none``: the image as it is, its sides rounded to a multiple of
  ``multiple`` (the official code: 4; pix2pix's U-Net here: 2**num_downs).

Then a horizontal flip with probability 1/2 unless ``flip=False``. A fifth,
internal mode, ``center``, is what gan/dcgan/ae use: the centered square
resized to ``crop_size``, no randomness (:func:`gan_ext.data.load_image_folder`).

Randomness: a training image's crop and flip come from a generator seeded by
(run seed, epoch, index, domain) alone, never from a worker's RNG, so they do
not depend on the number of loader workers or on a resume. Evaluation
images (``train=False``) take the center crop and no flip.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .errors import DataError

__all__ = ["PREPROCESS_MODES", "Preprocess", "Plan", "augment_rng"]

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
CENTER = "center"
LOAD_SIZE, CROP_SIZE = 286, 256   # the official defaults


def augment_rng(seed: int, epoch: int, index: int, domain: int) -> random.Random:
    """The generator of one training image's crop and flip."""
    key = f"gan_ext.augment:{seed}:{epoch}:{index}:{domain}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


@dataclass(frozen=True)
class Plan:
    """What happens to one image: resize to ``resize`` (w, h) or not, crop
    the box ``crop`` (left, top, right, bottom) of that or not, flip or not."""
    resize: Optional[Tuple[int, int]]
    crop: Optional[Tuple[int, int, int, int]]
    flip: bool

    @property
    def size(self) -> Tuple[int, int]:
        """The output (h, w)."""
        if self.crop is not None:
            return self.crop[3] - self.crop[1], self.crop[2] - self.crop[0]
        return self.resize[1], self.resize[0]


def _positive(flag: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{flag} must be a positive number of pixels, got {value!r}")
    return value


@dataclass(frozen=True)
class Preprocess:
    """One run's preprocessing; bad values raise DataError naming the option."""
    mode: str = "resize_and_crop"
    load_size: int = LOAD_SIZE
    crop_size: int = CROP_SIZE
    flip: bool = True
    multiple: int = 4   # "none": sides rounded to a multiple of this

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESS_MODES + (CENTER,):
            raise DataError(f"--preprocess must be one of {', '.join(PREPROCESS_MODES)}, got "
                            f"{self.mode!r}")
        _positive("--load-size", self.load_size)
        _positive("--crop-size", self.crop_size)
        _positive("multiple", self.multiple)
        if self.mode in ("resize_and_crop", "scale_width_and_crop") \
                and self.crop_size > self.load_size:
            raise DataError(f"--crop-size {self.crop_size} is larger than --load-size "
                            f"{self.load_size}: --preprocess {self.mode} crops the resized image; "
                            f"give --load-size >= --crop-size")

    @property
    def crops(self) -> bool:
        return self.mode in ("resize_and_crop", "crop", "scale_width_and_crop")

    def resized(self, w: int, h: int) -> Optional[Tuple[int, int]]:
        """The (w, h) an image of (w, h) is resized to, None for no resize."""
        m, load = self.mode, self.load_size
        if m in ("resize_and_crop", CENTER):
            return (load, load) if m != CENTER else (self.crop_size, self.crop_size)
        if m.startswith("scale_width"):
            if w == load and h >= self.crop_size:
                return None
            return load, int(max(load * h / w, self.crop_size))
        if m == "none":
            k = self.multiple
            rw, rh = round(w / k) * k, round(h / k) * k
            return None if (rw, rh) == (w, h) else (rw, rh)
        return None   # crop

    def check_size(self, w: int, h: int, name: str) -> None:
        """DataError when an image of (w, h) cannot give this output."""
        if self.mode == "crop" and (w < self.crop_size or h < self.crop_size):
            raise DataError(f"{name} is {w}x{h}, smaller than --crop-size {self.crop_size} "
                            f"(--preprocess crop cuts crops from the image as it is); use "
                            f"--preprocess resize_and_crop or a smaller --crop-size")
        if self.mode == "none" and min(round(w / self.multiple), round(h / self.multiple)) < 1:
            raise DataError(f"{name} is {w}x{h}: --preprocess none rounds its sides to a "
                            f"multiple of {self.multiple}, which leaves nothing; use larger images")

    def plan(self, w: int, h: int, rng: Optional[random.Random]) -> Plan:
        """The plan for an image of (w, h): ``rng`` draws the crop and flip of
        a training image (in the official order: x, y, flip); None: the center
        crop, no flip (evaluation)."""
        size = self.resized(w, h)
        rw, rh = size if size is not None else (w, h)
        c = self.crop_size
        if rng is not None:
            x, y = rng.randint(0, max(0, rw - c)), rng.randint(0, max(0, rh - c))
            flip = rng.random() > 0.5 and self.flip
        else:
            x, y, flip = max(0, rw - c) // 2, max(0, rh - c) // 2, False
        crop = (x, y, x + c, y + c) if self.crops else None
        if size is None and crop is None:
            size = (w, h)   # the image as it is
        return Plan(size, crop, flip)

    def output_size(self, w: int, h: int) -> Tuple[int, int]:
        """The (h, w) this gives for an image of (w, h)."""
        return self.plan(w, h, None).size


def render(img, regions: List[Tuple[int, int, int, int]], plan: Plan, full: Tuple[int, int],
           ) -> List[np.ndarray]:
    """``plan`` applied to each (left, top, w, h) region of the decoded PIL
    image ``img`` (``full``: its size in the file; a JPEG may have been decoded
    at a reduced scale, see :func:`decode`): uint8 (H, W, C) arrays."""
    from PIL import Image

    sx, sy = img.size[0] / full[0], img.size[1] / full[1]
    out = []
    for left, top, w, h in regions:
        box = (round(left * sx), round(top * sy), round((left + w) * sx), round((top + h) * sy))
        # Cropped first, so the resize filter sees only this region (pix2pix's halves).
        r = img.crop(box) if box != (0, 0) + img.size else img
        if plan.resize is not None and plan.resize != r.size:
            r = r.resize(plan.resize, Image.Resampling.BICUBIC)
        if plan.crop is not None:
            r = r.crop(plan.crop)
        if plan.flip:
            r = r.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        a = np.asarray(r, dtype=np.uint8)
        out.append(a[:, :, None] if a.ndim == 2 else a)
    return out


def decode(path: str, mode: str, full: Tuple[int, int], halves: bool, plan: Plan
           ) -> List[np.ndarray]:
    """The file at ``path`` (size ``full`` = (w, h)) decoded in PIL ``mode``
    and ``plan`` applied to the whole image, or to each half with ``halves``."""
    from PIL import Image

    w, h = full
    regions = [(0, 0, w // 2, h), (w // 2, 0, w // 2, h)] if halves else [(0, 0, w, h)]
    with Image.open(path) as img:
        if img.format == "JPEG" and plan.resize is not None:
            # libjpeg decodes at a reduced scale when the image is much larger than needed.
            img.draft(mode, (plan.resize[0] * len(regions), plan.resize[1]))
        img = img.convert(mode)
        return render(img, regions, plan, full)
