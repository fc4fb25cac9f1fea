"""Datasets as in-memory tensors: MNIST (offline by default), image folders
(any folder, the CycleGAN and pix2pix layouts), an unpaired MNIST pair for
CycleGAN, the tensor conversions and a resumable batch loader.

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
    "InMemoryLoader",
]
