"""Datasets: MNIST (offline by default) and an unpaired MNIST pair for
CycleGAN as in-memory tensors; image folders (any folder, the CycleGAN and
pix2pix layouts) in memory or streamed per batch with the official
CycleGAN/pix2pix preprocessing; the tensor conversions and resumable batch
loaders.

Every error a user can cause raises :class:`DataError` (a ValueError) with
one line naming the path or argument and saying what to do.
"""
from __future__ import annotations

from ._files import cache_dir
from .errors import DataError
from .idx import read_idx, write_idx
from .images import (IMAGE_EXTENSIONS, list_images, load_aligned, load_image_folder,
                     load_named_images, load_unpaired)
from .loader import InMemoryLoader
from .preprocess import PREPROCESS_MODES, Preprocess
from .stream import (ImageSource, StreamingLoader, aligned_source, default_workers, folder_source,
                     make_loader, unpaired_source)
from .mnist import (MNIST_CLASSES, MNIST_SIZE, download_mnist, load_mnist, mnist_cache_dir,
                    mnist_source)
from .mnist_pair import MNISTPair, domain_style, mnist_pair, pair_indices
from .transforms import augment, pad_to, to_signed, to_unit

__all__ = [
    "DataError", "cache_dir",
    "MNIST_SIZE", "MNIST_CLASSES",
    "load_mnist", "mnist_source", "download_mnist", "mnist_cache_dir", "read_idx", "write_idx",
    "to_unit", "to_signed", "pad_to", "augment",
    "IMAGE_EXTENSIONS", "list_images", "load_image_folder", "load_named_images", "load_unpaired",
    "load_aligned",
    "MNISTPair", "mnist_pair", "pair_indices", "domain_style",
    "InMemoryLoader", "StreamingLoader", "ImageSource", "folder_source", "unpaired_source",
    "aligned_source", "make_loader", "default_workers", "Preprocess", "PREPROCESS_MODES",
]
