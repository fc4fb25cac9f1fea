"""The default datasets of the trainers, built from :mod:`gan_ext.data`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Preprocess, load_mnist, pad_to, to_signed, to_unit
from ..data.preprocess import CENTER, CROP_SIZE, LOAD_SIZE

__all__ = ["mnist", "mnist_unit", "mnist_signed", "limit", "mnist_edges_pair", "center",
           "crop_size", "preprocess", "check_network_size"]


def mnist(split: str, data_dir: Optional[str]) -> Tuple[Tensor, Tensor]:
    return load_mnist(split, data_dir=data_dir)


def mnist_unit(split: str, data_dir: Optional[str]) -> Tuple[Tensor, Tensor]:
    """(N, 1, 28, 28) in [0, 1] and the labels."""
    x, y = mnist(split, data_dir)
    return to_unit(x), y


def mnist_signed(split: str, data_dir: Optional[str]) -> Tuple[Tensor, Tensor]:
    """(N, 1, 28, 28) in [-1, 1] and the labels."""
    x, y = mnist(split, data_dir)
    return to_signed(x), y


def limit(n: Optional[int], *tensors: Tensor) -> Tuple[Tensor, ...]:
    return tuple(t[:n] for t in tensors) if n is not None else tensors


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def mnist_edges_pair(split: str, data_dir: Optional[str], n: Optional[int] = None
                     ) -> Tuple[Tensor, Tensor, Tensor]:
    """The default pix2pix task, an MNIST "edges2digits": A = the Sobel edge
    map of a digit, B = the digit; both (N, 1, 32, 32) in [-1, 1], plus labels.
    Deterministic (no randomness)."""
    x01, y = limit(n, *mnist_unit(split, data_dir))
    b = pad_to(x01, 32)                                               # (N, 1, 32, 32)
    k = torch.stack([_SOBEL, _SOBEL.t()])[:, None]                    # (2, 1, 3, 3)
    g = F.conv2d(b, k, padding=1)                                     # (N, 2, 32, 32)
    edges = g.pow(2).sum(1, keepdim=True).sqrt()
    edges = (edges / 4.0).clamp(0, 1)                                 # max |grad| of a 0/1 step is 4
    return edges * 2 - 1, b * 2 - 1, y


# ----------------------------------------------------------- image folders
def center(size: int) -> Preprocess:
    """gan/dcgan/ae on --data: the centered square resized to ``size``, no
    randomness (as pytorch/examples' DCGAN: Resize then CenterCrop)."""
    return Preprocess(mode=CENTER, crop_size=size, flip=False)


def crop_size(opts) -> int:
    """cyclegan/pix2pix on --data: the size trained at."""
    return opts.crop_size or opts.image_size or CROP_SIZE


def preprocess(opts, multiple: int) -> Preprocess:
    """cyclegan/pix2pix on --data: the options' :class:`Preprocess`;
    ``multiple``: what ``none`` rounds sides to (the generator's stride)."""
    crop = crop_size(opts)
    load = opts.load_size or round(crop * LOAD_SIZE / CROP_SIZE)
    return Preprocess(mode=opts.preprocess or "resize_and_crop", load_size=load, crop_size=crop,
                      flip=not opts.no_flip, multiple=multiple)


def check_network_size(size: Tuple[int, int], multiple: int, minimum: int, what: str) -> None:
    """ValueError when images of ``size`` (h, w) do not fit the networks:
    sides divisible by ``multiple`` and at least ``minimum``."""
    h, w = size
    if h % multiple or w % multiple or min(h, w) < minimum:
        raise ValueError(f"the images come out {h}x{w} (height x width) and {what} needs sides "
                         f"that are multiples of {multiple}, at least {minimum}: choose "
                         f"--preprocess, --load-size or --crop-size to give such a size")
