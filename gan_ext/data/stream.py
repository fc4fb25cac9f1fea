"""Image folders read per batch: :class:`ImageSource` (a
``torch.utils.data.Dataset`` of file paths) and :class:`StreamingLoader`
(a ``DataLoader`` with worker processes, behind the interface of
:class:`~gan_ext.data.InMemoryLoader`).

Memory: the paths and the image sizes read from the file headers at the
start; each batch is decoded by the workers to uint8 and made float32 in the
main process as it is handed out, never the whole set (CelebA at 64 px
would be about 10 GB of float32).

Exactness: a batch is named by (epoch, sample indices) drawn from the
loader's position (:class:`~gan_ext.data.loader.BatchPosition`), and each
image's crop and flip by (seed, epoch, index) (:mod:`.preprocess`), so the
batches do not depend on the number of workers, and a loader restored from
its ``state_dict`` mid-epoch hands out exactly what the uninterrupted one would.
"""
from __future__ import annotations

import os
import signal
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .errors import DataError
from .images import (_check_channels, _check_folder, _decode, _images_and_skips, aligned_folder,
                     no_images, unpaired_folders)
from .loader import BatchPosition, InMemoryLoader, epoch_order, shard_of
from .preprocess import CENTER, Preprocess, augment_rng, decode
from .._validate import check_int

__all__ = ["ImageSource", "StreamingLoader", "folder_source", "unpaired_source",
           "aligned_source", "make_loader", "default_workers"]

Key = Tuple[Optional[int], int]   # (epoch, sample index); epoch None: an evaluation image


def default_workers() -> int:
    """min(4, the CPUs this process may use)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cpus or 1)


def _scan(folder, halves: bool, limit: Optional[int]) -> Tuple[List[str], np.ndarray]:
    """The image files of ``folder`` whose header reads, and their (w, h);
    the others are skipped with a warning naming them (one file that
    decodes badly later stops the run with a DataError naming it)."""
    from PIL import Image

    folder = _check_folder(folder, "image folder")
    files, skips = _images_and_skips(folder)
    paths, sizes = [], []
    for p in files:
        if limit is not None and len(paths) >= limit:
            break
        try:
            with Image.open(p) as img:
                w, h = img.size
            if (w // 2 if halves else w) < 1 or h < 1:
                raise ValueError(f"image is too small ({w}x{h})")
        except Exception as e:  # PIL raises many types for broken files
            skips.add(p, f"cannot be read as an image ({type(e).__name__}: {e})")
            continue
        paths.append(str(p))
        sizes.append((w, h))
    skips.finish()
    if not paths:
        raise no_images("image folder", folder, skips)
    return paths, np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


class _Failed:
    """A file that did not decode in a worker: raised in the main process."""

    def __init__(self, path: str, why: str) -> None:
        self.path, self.why = path, why


class ImageSource(Dataset):
    """Samples of one or more domains (lists of paths with their header sizes),
    sample i being file i of each domain: ``source[(epoch, i)]`` is a tuple
    of uint8 (C, H, W) tensors, one per domain (two for pix2pix's A|B halves,
    ``(B, A)`` with ``swap``). ``epoch`` None: the evaluation version (center
    crop, no flip). Every sample has the size ``image_size`` (h, w); sizes that
    differ across files (``scale_width``/``none`` on mixed shapes) are refused."""

    def __init__(self, domains: Sequence[Tuple[List[str], np.ndarray]], prep: Preprocess,
                 channels: int = 3, *, halves: bool = False, swap: bool = False, seed: int = 0,
                 unit: bool = False) -> None:
        n = min(len(paths) for paths, _ in domains)
        self.domains = [(paths[:n], sizes[:n]) for paths, sizes in domains]
        self.prep, self.halves, self.swap, self.unit = prep, halves, swap, unit
        self.mode = "L" if _check_channels(channels) == 1 else "RGB"
        self.channels, self.seed = channels, check_int("seed", seed, 0)
        self.image_size = self._output_size()

    def _output_size(self) -> Tuple[int, int]:
        prep = self.prep
        if prep.mode in (CENTER, "resize_and_crop"):   # whatever the input
            return prep.crop_size, prep.crop_size
        seen = {}
        for paths, sizes in self.domains:
            for path, (w, h) in zip(paths, sizes.tolist()):
                w = w // 2 if self.halves else w
                prep.check_size(w, h, path)
                seen.setdefault(prep.output_size(w, h), path)
                if len(seen) > 1:
                    (s0, p0), (s1, p1) = seen.items()
                    raise DataError(f"--preprocess {prep.mode} gives images of different sizes "
                                    f"({p0}: {s0[1]}x{s0[0]}, {p1}: {s1[1]}x{s1[0]}); a batch "
                                    f"needs one size: use a cropping --preprocess (resize_and_"
                                    f"crop, scale_width_and_crop) or images of one shape")
        return next(iter(seen))

    def __len__(self) -> int:
        return len(self.domains[0][0])

    def __getitem__(self, key: Key) -> Union[Tuple[Tensor, ...], _Failed]:
        epoch, i = key
        arrays = []
        for d, (paths, sizes) in enumerate(self.domains):
            path, (w, h) = paths[i], sizes[i].tolist()
            try:
                if self.prep.mode == CENTER:
                    arrays += _decode(path, self.prep.crop_size, self.mode, self.halves)
                else:
                    rng = None if epoch is None else augment_rng(self.seed, epoch, i, d)
                    plan = self.prep.plan(w // 2 if self.halves else w, h, rng)
                    arrays += decode(path, self.mode, (w, h), self.halves, plan)
            except Exception as e:  # PIL raises many types for broken files
                return _Failed(path, f"{type(e).__name__}: {e}")
        if self.swap:
            arrays.reverse()
        # PIL's arrays are read-only views: copied once (torch wants writable memory).
        return tuple(torch.from_numpy(a if a.flags.writeable else a.copy()).permute(2, 0, 1)
                     for a in arrays)                                  # (C, H, W) uint8 each

    def convert(self, batch: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        """uint8 batches -> float32 in [-1, 1] (``unit``: [0, 1]), as
        :func:`gan_ext.data.load_image_folder` computes them."""
        out = tuple(x.to(torch.float32).div_(127.5).sub_(1.0) for x in batch)
        return tuple(x.add_(1).div_(2) for x in out) if self.unit else out

    def materialize(self, n: Optional[int] = None,
                    indices: Optional[Sequence[int]] = None) -> Tuple[Tensor, ...]:
        """The evaluation version of the first ``n`` samples (all: None), or
        of the samples at ``indices``, as float32 tensors (N, C, H, W): the
        test images a trainer keeps, the real images FID compares with."""
        if indices is None:
            indices = range(len(self) if n is None else min(n, len(self)))
        return self.convert(_collate_checked([self[(None, int(i))] for i in indices]))


def _collate(items):
    for item in items:
        if isinstance(item, _Failed):
            return item
    return tuple(torch.stack(ts) for ts in zip(*items))   # (B, C, H, W) uint8 each


def _collate_checked(items) -> Tuple[Tensor, ...]:
    batch = _collate(items)
    if isinstance(batch, _Failed):
        raise DataError(f"{batch.path} cannot be decoded ({batch.why}); remove or replace the "
                        f"file (its header read at the start, its pixels do not)")
    return batch


def _quiet_worker(_: int) -> None:
    # Ctrl-C reaches the whole process group: the main process saves a
    # checkpoint and may still need a batch; it shuts the workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Keys:
    """The DataLoader's batch sampler: the loader's batches from (epoch, i)
    on, forever, as lists of (epoch, index) keys. It holds copies of the
    loader's settings, not the loader: the iterator holding it must be freed
    as soon as the loader lets it go (its worker processes with it)."""

    def __init__(self, loader: "StreamingLoader", epoch: int, i: int) -> None:
        self.start, self.per_epoch = (epoch, i), len(loader)
        self.args = (loader.num_samples, loader.seed, loader.shuffle)
        self.batch_size, self.shard = loader.batch_size, loader.shard

    def __iter__(self):
        (epoch, i), order = self.start, None
        while True:
            if i >= self.per_epoch:
                epoch, i = epoch + 1, 0
            if order is None or order[0] != epoch:
                order = (epoch, epoch_order(self.args[0], self.args[1], epoch, self.args[2]))
            yield [(epoch, int(j)) for j in shard_of(order[1], i, self.batch_size, self.shard)]
            i += 1


class StreamingLoader(BatchPosition):
    """:class:`~gan_ext.data.InMemoryLoader`'s interface (``batches()``,
    iteration, ``state_dict()``, ``steps_done``, ``len()``, ``shard``) over an
    :class:`ImageSource`, decoded by ``workers`` processes (0: in this one)
    ahead of use. Batches are float32 tuples as the source converts them."""

    _format = "gan_ext.StreamingLoader/1"

    def __init__(self, source: ImageSource, *, batch_size: int, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, shard: Tuple[int, int] = (0, 1),
                 workers: int = 0) -> None:
        if not isinstance(source, ImageSource):
            raise TypeError(f"source must be an ImageSource, got {type(source).__name__}")
        self.source = source
        self.workers = check_int("workers", workers, 0)
        self._setup(len(source), batch_size, shuffle, drop_last, seed, shard)
        self._stream, self._expect = None, None

    def _fetch(self, epoch: int, i: int) -> Tuple[Tensor, ...]:
        if self._stream is None or self._expect != (epoch, i):   # first batch, or a jump
            self.close()
            # A generator of its own: DataLoader draws its base seed from the
            # global RNG otherwise, which would shift the training's random
            # stream by when the stream (re)starts.
            loader = DataLoader(self.source, batch_sampler=_Keys(self, epoch, i),
                                num_workers=self.workers, collate_fn=_collate,
                                generator=torch.Generator(),
                                worker_init_fn=_quiet_worker if self.workers else None)
            self._stream = iter(loader)
        batch = next(self._stream)
        self._expect = (epoch, i + 1) if i + 1 < len(self) else (epoch + 1, 0)
        if isinstance(batch, _Failed):
            self.close()
            _collate_checked([batch])
        return self.source.convert(batch)

    def close(self) -> None:
        """Stops the worker processes (a later batch starts them again)."""
        self._stream, self._expect = None, None

    def __repr__(self) -> str:
        return (f"StreamingLoader({self.num_samples} samples, batch_size={self.batch_size}, "
                f"{len(self)} batches/epoch, workers={self.workers}, epoch={self.epoch}, "
                f"position={self.position})")


def folder_source(path, prep: Preprocess, channels: int = 3, *, limit: Optional[int] = None,
                  seed: int = 0, unit: bool = False) -> ImageSource:
    """Every image under ``path`` (recursive, sorted by path)."""
    return ImageSource([_scan(path, False, limit)], prep, channels, seed=seed, unit=unit)


def unpaired_source(root, split: str, prep: Preprocess, channels: int = 3, *,
                    limit: Optional[int] = None, seed: int = 0) -> ImageSource:
    """The CycleGAN layout ``root/{split}A``, ``root/{split}B``: sample i is
    (A file i, B file i), as many as the smaller domain has; the two get
    independent crops and flips (the official unaligned dataset)."""
    a, b = unpaired_folders(root, split)
    return ImageSource([_scan(a, False, limit), _scan(b, False, limit)], prep, channels,
                       seed=seed)


def aligned_source(root, split: str, prep: Preprocess, direction: str = "AtoB",
                   channels: int = 3, *, limit: Optional[int] = None,
                   seed: int = 0) -> ImageSource:
    """The pix2pix layout ``root/{split}/`` of A|B images: sample i is
    (input, target) of file i, both halves with the same crop and flip."""
    folder = aligned_folder(root, split, direction)
    return ImageSource([_scan(folder, True, limit)], prep, channels, halves=True,
                       swap=direction == "BtoA", seed=seed)


def make_loader(data: Union[ImageSource, Tuple[Tensor, ...]], *, batch_size: int, seed: int,
                shard: Tuple[int, int] = (0, 1), workers: Optional[int] = None
                ) -> BatchPosition:
    """A :class:`StreamingLoader` for an :class:`ImageSource` (``workers``
    None: :func:`default_workers`), an :class:`InMemoryLoader` for tensors;
    shuffled, the last partial batch dropped."""
    if isinstance(data, ImageSource):
        return StreamingLoader(data, batch_size=batch_size, seed=seed, shard=shard,
                               workers=default_workers() if workers is None else workers)
    return InMemoryLoader(*data, batch_size=batch_size, seed=seed, shard=shard)
