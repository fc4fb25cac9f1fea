"""Folders of images as in-memory tensors: any folder, the CycleGAN
(``trainA/ trainB/ testA/ testB/``) and the pix2pix (``train/`` with A|B side
by side) layouts. Training reads folders with :mod:`gan_ext.data.stream`
instead (decoded per batch, never the whole set in memory); these functions
serve small sets (``sample --input``) and the library.

Every image is decoded once, center-cropped to a square and resized to
``image_size`` (bicubic, as the official CycleGAN/pix2pix code). No random
augmentation happens here: one random crop per image at load time would be
the same crop for the whole run. Training crops and flips each image as it
is read (:mod:`gan_ext.data.preprocess`, the official ``--preprocess``).

Memory: float32, 3 x S x S x 4 bytes per image (0.79 MB at 256, 0.98 MB at
286): about 1 GB for a 1,000-image domain at 286.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .errors import DataError
from .._validate import check_int

__all__ = ["IMAGE_EXTENSIONS", "list_images", "load_image_folder", "load_named_images",
           "load_unpaired", "load_aligned", "unpaired_folders", "aligned_folder"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm"})
_MAX_WARNINGS = 10  # one warning per skipped file up to this many, then one summary


def _check_folder(path, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str), got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} {p} does not exist; check the path")
    if not p.is_dir():
        raise DataError(f"{what} {p} is a file, not a folder of images")
    return p


def _check_channels(channels) -> int:
    c = check_int("channels", channels)
    if c not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {c}")
    return c


def list_images(folder) -> Tuple[List[Path], List[Path]]:
    """(image files, other files) under ``folder``, recursively, each sorted by
    path (deterministic order). Hidden files and folders (``.DS_Store``,
    ``.ipynb_checkpoints``) are ignored; "image" is by extension here, a file
    that does not decode is found when loading."""
    folder = Path(folder)
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return sorted(images), sorted(others)


class _Skips:
    """Collects skipped files; warns for the first few, then once for the rest."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, path: Path, why: str) -> None:
        self.count += 1
        if self.count <= _MAX_WARNINGS:
            warnings.warn(f"skipping {path}: {why}", stacklevel=4)

    def finish(self) -> None:
        if self.count > _MAX_WARNINGS:
            warnings.warn(f"skipped {self.count - _MAX_WARNINGS} more files that are not "
                          f"readable images", stacklevel=4)


def _images_and_skips(folder: Path) -> Tuple[List[Path], _Skips]:
    """The image files under ``folder``, and the skips with a warning for
    each other file."""
    files, others = list_images(folder)
    skips = _Skips()
    for p in others:
        skips.add(p, f"not an image (extension {p.suffix or 'none'}; images are "
                     f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files, skips


def no_images(what: str, folder: Path, skips: _Skips) -> DataError:
    """The error for a folder where no image could be read."""
    extra = f" ({skips.count} files skipped, see the warnings)" if skips.count else ""
    return DataError(f"{what} {folder} contains no readable images{extra}; "
                     f"expected {', '.join(sorted(IMAGE_EXTENSIONS))} files")


def _square_box(left: int, top: int, w: int, h: int) -> Tuple[int, int, int, int]:
    """The centered square of the (left, top, w, h) region."""
    m = min(w, h)
    x0, y0 = left + (w - m) // 2, top + (h - m) // 2
    return x0, y0, x0 + m, y0 + m


def _decode(path: Path, size: int, mode: str, halves: bool):
    """The image at ``path`` as uint8 (S, S, C) array(s): center square, resized
    to ``size``; with ``halves`` the left and right halves separately."""
    from PIL import Image

    with Image.open(path) as img:
        if img.format == "JPEG":
            # Let libjpeg decode at a reduced scale when the image is much larger than needed.
            img.draft(mode, (size * (2 if halves else 1), size))
        img = img.convert(mode)
        w, h = img.size
        regions = [(0, 0, w // 2, h), (w // 2, 0, w // 2, h)] if halves else [(0, 0, w, h)]
        out = []
        for region in regions:
            if region[2] < 1 or region[3] < 1:
                raise ValueError(f"image is too small ({w}x{h})")
            r = img.resize((size, size), Image.Resampling.BICUBIC, box=_square_box(*region),
                           reducing_gap=3.0)
            a = np.asarray(r, dtype=np.uint8)
            out.append(a[:, :, None] if a.ndim == 2 else a)
    return out


def _to_signed(arrays: List[np.ndarray]) -> Tensor:
    x = torch.from_numpy(np.stack(arrays))                         # (N, S, S, C) uint8
    x = x.permute(0, 3, 1, 2).to(torch.float32).contiguous()       # (N, C, S, S)
    return x.div_(127.5).sub_(1.0)


def _load(folder: Path, image_size: int, channels: int, limit: Optional[int], halves: bool,
          what: str, kept: Optional[List[Path]] = None, decode_one=None):
    """The images' tensors (two with ``halves``); ``kept`` collects the files
    read, in order; ``decode_one(path, mode)``: the arrays of one file, in
    place of the centre square resized to ``image_size``."""
    files, skips = _images_and_skips(folder) if folder.is_dir() else ([folder], _Skips())
    mode = "L" if channels == 1 else "RGB"
    decoded = []
    for p in files:
        if limit is not None and len(decoded) >= limit:
            break
        try:
            decoded.append(decode_one(p, mode) if decode_one is not None
                           else _decode(p, image_size, mode, halves))
            if kept is not None:
                kept.append(p)
        except Exception as e:  # PIL raises many types for broken files
            skips.add(p, f"cannot be read as an image ({type(e).__name__}: {e})")
    skips.finish()
    if not decoded:
        raise no_images(what, folder, skips)
    return [_to_signed([d[i] for d in decoded]) for i in range(len(decoded[0]))]


def _check_limit(limit) -> Optional[int]:
    return None if limit is None else check_int("limit", limit)


def load_image_folder(path, image_size: int, channels: int = 3, *,
                      limit: Optional[int] = None) -> Tensor:
    """Every image under ``path`` (recursive, sorted by path) as float32
    (N, channels, image_size, image_size) in [-1, 1]: the center square of
    each image resized to ``image_size``. ``limit`` keeps the first
    ``limit`` readable images. Non-image files and files that do not
    decode are skipped with a warning naming them. A missing folder or one
    without images raises DataError naming it."""
    image_size = check_int("image_size", image_size)
    channels = _check_channels(channels)
    folder = _check_folder(path, "image folder")
    return _load(folder, image_size, channels, _check_limit(limit), False, "image folder")[0]


def load_named_images(path, image_size: int, channels: int = 3, prep=None
                      ) -> Tuple[Tensor, List[str]]:
    """A folder of images (recursive, as :func:`load_image_folder`) or one
    image file, and each image's name: its path relative to the folder
    without the extension (``a/1`` for ``DIR/a/1.jpg``; the file's stem for
    one file). Two files of one name (``1.jpg`` and ``1.png``) raise
    DataError naming them: their results would overwrite each other. With
    ``prep`` (a :class:`~gan_ext.data.preprocess.Preprocess`) each image is
    its evaluation version (centre crop, no flip) instead of the centre
    square resized to ``image_size``; outputs of different sizes raise
    DataError."""
    image_size = check_int("image_size", image_size)
    channels = _check_channels(channels)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder or an image file, got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p} does not exist; check the path")
    kept: List[Path] = []
    decode_one = None if prep is None else (lambda f, mode: _prep_decode(f, mode, prep))
    try:
        x = _load(p, image_size, channels, None, False, "image folder" if p.is_dir() else "file",
                  kept, decode_one)[0]
    except ValueError as e:   # np.stack of arrays of different shapes
        if prep is None or isinstance(e, DataError):
            raise
        raise DataError(f"--preprocess {prep.mode} gives the images of {p} different sizes; "
                        "give images of one shape") from None
    names = [f.stem if not p.is_dir() else f.relative_to(p).with_suffix("").as_posix()
             for f in kept]
    seen = {}
    for f, n in zip(kept, names):
        if n in seen:
            raise DataError(f"{seen[n]} and {f} have the same name {n!r}; rename one (each "
                            "image's results are named after it)")
        seen[n] = f
    return x, names


def _prep_decode(path: Path, mode: str, prep) -> List[np.ndarray]:
    """One file through ``prep``'s evaluation plan (centre crop, no flip)."""
    from PIL import Image
    from .preprocess import decode

    with Image.open(path) as img:
        w, h = img.size
    prep.check_size(w, h, str(path))
    return decode(str(path), mode, (w, h), False, prep.plan(w, h, None))


def _check_split(split) -> str:
    if not isinstance(split, str) or not split or "/" in split or "\\" in split:
        raise DataError(f"split must be a folder-name prefix such as 'train' or 'test', got {split!r}")
    return split


def unpaired_folders(root, split: str) -> Tuple[Path, Path]:
    """``root/{split}A`` and ``root/{split}B``, checked: DataError naming
    what is missing and what was found."""
    split = _check_split(split)
    root = _check_folder(root, "dataset root")
    missing = [f"{split}{d}" for d in "AB" if not (root / f"{split}{d}").is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataError(f"{root} is not a CycleGAN dataset: missing folder(s) {', '.join(missing)} "
                        f"(found: {', '.join(present) or 'no folders'}); expected "
                        f"{split}A/ and {split}B/ with the images of each domain")
    return root / f"{split}A", root / f"{split}B"


def aligned_folder(root, split: str, direction: str) -> Path:
    """``root/{split}``, checked (and ``direction``): DataError naming what is
    missing and what was found."""
    split = _check_split(split)
    if direction not in ("AtoB", "BtoA"):
        raise DataError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
    root = _check_folder(root, "dataset root")
    folder = root / split
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataError(f"{root} is not a pix2pix dataset: missing folder {split}/ (found: "
                        f"{', '.join(present) or 'no folders'}); expected {split}/ with A|B "
                        f"side-by-side images")
    return folder


def load_unpaired(root, split: str = "train", image_size: int = 256, channels: int = 3, *,
                  limit: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """The official CycleGAN layout ``root/{split}A`` and ``root/{split}B``
    (e.g. ``horse2zebra/trainA``) as ``(A, B)``, each like
    :func:`load_image_folder` (the two domains may differ in size)."""
    image_size = check_int("image_size", image_size)
    channels = _check_channels(channels)
    folders = unpaired_folders(root, split)
    limit = _check_limit(limit)
    return tuple(_load(f, image_size, channels, limit, False, "image folder")[0] for f in folders)


def load_aligned(root, split: str = "train", image_size: int = 256, direction: str = "AtoB",
                 channels: int = 3, *, limit: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """The pix2pix layout: ``root/{split}/`` holds images whose left half is A
    and right half is B (e.g. ``facades/train/1.jpg``). Returns ``(input,
    target)``: ``(A, B)`` for direction "AtoB", ``(B, A)`` for "BtoA", each
    float32 (N, channels, image_size, image_size) in [-1, 1], row i of both
    from the same file."""
    image_size = check_int("image_size", image_size)
    channels = _check_channels(channels)
    folder = aligned_folder(root, split, direction)
    a, b = _load(folder, image_size, channels, _check_limit(limit), True, "image folder")
    return (a, b) if direction == "AtoB" else (b, a)
