"""DCGAN (Radford et al. 2015, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks") for 28x28, 32x32, 64x64 and
128x128 images (128: one more stride-2 stage each way, 16 ngf at the 4x4 map).

At 64x64 the modules have exactly the state_dict of pytorch/examples
``dcgan/main.py``, so its ``netG_epoch_N.pth`` / ``netD_epoch_N.pth`` load
strictly. Every BatchNorm2d -> ReLU/LeakyReLU pair is one fused
:class:`~gan_ext.nn.BatchNormAct2d` followed by an ``nn.Identity()`` in the
activation's slot; ``fused=False`` builds the plain pair (what
:func:`gan_ext.fuse` turns into the fused one).

    gan = DCGAN(DCGANConfig(nc=1, image_size=28))
    opt_g, opt_d = gan.make_optimizers()
    stats = gan.train_step(real, opt_g, opt_d)    # real: (B, 1, 28, 28) in [-1, 1]
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import Tensor, nn

from ..nn import BatchNormAct2d, InstanceNormAct2d
from ._checks import check_choice, check_images, check_int, check_latent
from ._common import init_normal_
from . import cures, stabilize
from .gan import GAN, TrainConfig

__all__ = ["DCGANConfig", "Generator", "Discriminator", "DCGAN", "IMAGE_SIZES", "run_generator",
           "score_head"]

# image_size -> (side of the first/last feature map, number of stride-2 stages)
IMAGE_SIZES = {28: (7, 2), 32: (4, 3), 64: (4, 4), 128: (4, 5)}


def check_image_size(image_size) -> Tuple[int, int]:
    check_int("image_size", image_size)
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {sorted(IMAGE_SIZES)}, got {image_size}")
    return IMAGE_SIZES[image_size]


@dataclass
class DCGANConfig(TrainConfig):
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    nc: int = 3            # 1 for MNIST
    image_size: int = 64   # 28, 32, 64 or 128


NORMS = ("batch", "instance")


def norm_act(channels: int, activation: str, fused: bool, negative_slope: float = 0.01,
             norm: str = "batch") -> List[nn.Module]:
    """BatchNorm2d (``norm="instance"``: an affine InstanceNorm2d, the
    WGAN-GP critic's per-sample norm) -> activation as two Sequential entries."""
    check_choice("norm", norm, NORMS)
    if fused:
        if norm == "instance":
            return [InstanceNormAct2d(channels, affine=True, activation=activation,
                                      negative_slope=negative_slope), nn.Identity()]
        return [BatchNormAct2d(channels, activation=activation, negative_slope=negative_slope),
                nn.Identity()]
    act = (nn.ReLU(inplace=True) if activation == "relu"
           else nn.LeakyReLU(negative_slope, inplace=True))
    if norm == "instance":
        return [nn.InstanceNorm2d(channels, affine=True), act]
    return [nn.BatchNorm2d(channels), act]


def generator_layers(in_channels: int, ngf: int, nc: int, image_size: int, fused: bool
                     ) -> List[nn.Module]:
    """(B, in_channels, 1, 1) -> (B, nc, S, S): a ConvTranspose to the first
    feature map, stride-2 ConvTranspose stages halving the width, tanh."""
    base, stages = check_image_size(image_size)
    width = ngf * 2 ** (stages - 1)                    # 8 ngf at 64x64, as in the paper
    layers = [nn.ConvTranspose2d(in_channels, width, base, 1, 0, bias=False),  # (B, w, b, b)
              *norm_act(width, "relu", fused)]
    for _ in range(stages - 1):
        layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),  # (B, w/2, 2s, 2s)
                   *norm_act(width // 2, "relu", fused)]
        width //= 2
    layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False),             # (B, nc, S, S)
               nn.Tanh()]
    return layers


def discriminator_layers(in_channels: int, ndf: int, image_size: int, fused: bool,
                         head: bool = True, norm: str = "batch") -> Tuple[List[nn.Module], int]:
    """(B, in_channels, S, S) -> stride-2 convs doubling the width (no norm on
    the first, as in the paper; ``norm``: the others', :func:`norm_act`) ->
    (B, width, b, b) and, with ``head``, a conv to the logit (B, 1, 1, 1).
    Returns the layers and the last width."""
    base, stages = check_image_size(image_size)
    layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1, bias=False),                # (B, ndf, S/2, S/2)
              nn.LeakyReLU(0.2, inplace=True)]
    width = ndf
    for _ in range(stages - 1):
        layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),           # (B, 2w, s/2, s/2)
                   *norm_act(width * 2, "leaky_relu", fused, 0.2, norm)]
        width *= 2
    if head:
        layers.append(nn.Conv2d(width, 1, base, 1, 0, bias=False))             # (B, 1, 1, 1)
    return layers, width


def run_generator(main: nn.Sequential, z: Tensor, project: bool) -> Tensor:
    """``main(z[:, :, None, None])``. With ``project`` (the fused builds) the
    first layer, a stride-1 transposed conv on a 1x1 input, runs as the one
    GEMM it is: out[b, o, i, j] = sum_c z[b, c] W[c, o, i, j]. On the 2-core
    CPU oneDNN's transposed conv takes 2-6x longer at this shape (B 128,
    100 -> 128 x 7 x 7). Same weight, same state_dict; only the summation
    order differs. The result is channels_last, a view of the GEMM output."""
    first = main[0]
    if not project:
        return main(z[:, :, None, None])
    w = first.weight                                            # (nz, C, k, k)
    nz, c, kh, kw = w.shape
    h = z @ w.permute(0, 2, 3, 1).reshape(nz, kh * kw * c)      # (B, k*k*C)
    h = h.view(z.shape[0], kh, kw, c).permute(0, 3, 1, 2)       # (B, C, k, k)
    for layer in itertools.islice(main, 1, None):  # main[1:] would build a Sequential per call
        h = layer(h)
    return h


def score_head(head: nn.Conv2d, h: Tensor, project: bool) -> Tensor:
    """``head(h).view(-1)`` for the D's last conv, a single-output conv whose
    kernel covers all of h: one logit per image. With ``project`` (the fused
    builds) it runs as the dot product it is, in h's own memory order (no
    copy for channels_last h): oneDNN's conv and conv backward for one output
    channel took about 3 ms per call at DCGAN-28 size on the 2-core CPU, the
    GEMM well under 1 ms."""
    w = head.weight                                             # (1, C, k, k)
    if not project or h.shape[1:] != w.shape[1:] or head.bias is not None:
        return head(h).view(-1)
    cl = h.is_contiguous(memory_format=torch.channels_last) and h.dim() == 4
    if cl:
        return h.permute(0, 2, 3, 1).reshape(h.shape[0], -1) @ w.permute(0, 2, 3, 1).reshape(-1)
    return h.reshape(h.shape[0], -1) @ w.reshape(-1)            # (B,)


class Generator(nn.Module):
    """z (B, nz) or (B, nz, 1, 1) -> image (B, nc, S, S) in [-1, 1]."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, image_size: int = 64,
                 fused: bool = True) -> None:
        super().__init__()
        self.nz = check_int("nz", nz)
        self.main = nn.Sequential(*generator_layers(self.nz, check_int("ngf", ngf),
                                                    check_int("nc", nc), image_size, fused))
        self.nc, self.image_size, self.fused = nc, image_size, fused
        init_normal_(self)

    def forward(self, z: Tensor) -> Tensor:
        z = check_latent(z, self.nz)                           # (B, nz)
        return run_generator(self.main, z, self.fused)         # (B, nc, S, S)


class Discriminator(nn.Module):
    """image (B, nc, S, S) -> logit (B,). ``norm="instance"``: the WGAN-GP
    critic (:func:`gan_ext.models.stabilize.critic_norm`).

    The output is a logit, not a probability: pytorch/examples ends ``main``
    in a Sigmoid (index 12, no parameters, so its checkpoints still load);
    the fused losses take logits, which is also numerically safer.
    """

    def __init__(self, nc: int = 3, ndf: int = 64, image_size: int = 64,
                 fused: bool = True, norm: str = "batch") -> None:
        super().__init__()
        self.nc, self.image_size = check_int("nc", nc), image_size
        layers, _ = discriminator_layers(self.nc, check_int("ndf", ndf), image_size, fused,
                                         norm=norm)
        self.main = nn.Sequential(*layers)
        self.fused = fused
        init_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, (self.nc, self.image_size, self.image_size), who=type(self).__name__)
        h = x
        for layer in itertools.islice(self.main, len(self.main) - 1):
            h = layer(h)                                        # (B, C, b, b)
        return score_head(self.main[-1], h, self.fused)         # (B,)


class DCGAN(GAN):
    """:class:`Generator` and :class:`Discriminator` with the GAN trainer interface."""

    config_class = DCGANConfig

    def build(self, c: DCGANConfig, fused: bool):
        G = Generator(c.nz, c.ngf, c.nc, c.image_size, fused=fused)
        norm = stabilize.critic_norm(c)
        if not cures.d_cured(c):
            return G, Discriminator(c.nc, c.ndf, c.image_size, fused=fused, norm=norm)
        # The mode-collapse cures: the same body (input channels times the pack), a new head.
        layers, width = discriminator_layers(c.nc * c.pack, c.ndf, c.image_size, fused,
                                             head=False, norm=norm)
        base, _ = check_image_size(c.image_size)
        body = nn.Sequential(*layers)
        init_normal_(body)
        return G, cures.CuredDiscriminator(body, (c.nc, c.image_size, c.image_size),
                                           (width, base, base), **cures.d_options(c))
