"""A class-conditional DCGAN (Mirza & Osindero 2014, "Conditional Generative
Adversarial Nets", on the DCGAN backbone of :mod:`gan_ext.models.dcgan`).

G sees ``[z, embed(y)]``. D sees the label either as extra input channels
(``d_conditioning="channels"``: ``embed(y)`` broadcast to H x W, the cGAN
recipe) or through a projection (``"projection"``, Miyato & Koyama 2018,
"cGANs with Projection Discriminator"): ``logit = psi(phi(x)) + <embed(y), phi(x)>``
with ``phi(x)`` the sum-pooled features of the last conv stage.

    gan = ConditionalGAN(CGANConfig(nc=1, image_size=28, num_classes=10))
    opt_g, opt_d = gan.make_optimizers()
    stats = gan.train_step(real, opt_g, opt_d, labels=y)   # y: (B,) int64 in [0, 10)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .cures import cured_head, cured_logit
from ._checks import check_images, check_int, check_latent
from ._common import init_normal_
from .dcgan import (check_image_size, discriminator_layers, generator_layers, run_generator,
                    score_head)
from .gan import GAN, TrainConfig
from .stabilize import critic_norm

__all__ = ["CGANConfig", "ConditionalGenerator", "ConditionalDiscriminator", "ConditionalGAN",
           "D_CONDITIONING"]

D_CONDITIONING = ("channels", "projection")


@dataclass
class CGANConfig(TrainConfig):
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    nc: int = 1
    image_size: int = 28                   # 28, 32, 64 or 128 (dcgan.IMAGE_SIZES)
    num_classes: int = 10
    embed_dim: int = 16                    # G's label embedding (and D's with "channels")
    d_conditioning: str = "projection"     # "channels" | "projection"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pack != 1:
            raise ValueError(f"pack must be 1 for the conditional GAN, got {self.pack}: PacGAN "
                             "packs unconditional samples (a pack of differently labelled "
                             "samples has no label for D to condition on)")


def check_labels(y, num_classes: int, batch: int) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an int64 (or int32) tensor of class indices, "
                        f"got {y.dtype}")
    if y.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), one per sample, got {tuple(y.shape)}")
    # One host sync per call, cheaper than a device-side assert that kills the
    # CUDA context; skipped while tracing, where it would break the graph.
    if not torch.compiler.is_compiling() and bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"labels must lie in [0, {num_classes}) for num_classes={num_classes}, "
                         f"got values in [{int(y.min())}, {int(y.max())}]")
    return y


class ConditionalGenerator(nn.Module):
    """(z (B, nz), y (B,)) -> image (B, nc, S, S) in [-1, 1]."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 1, image_size: int = 28,
                 num_classes: int = 10, embed_dim: int = 16, fused: bool = True) -> None:
        super().__init__()
        self.nz = check_int("nz", nz)
        self.num_classes = check_int("num_classes", num_classes)
        self.embed = nn.Embedding(self.num_classes, check_int("embed_dim", embed_dim))
        self.main = nn.Sequential(*generator_layers(self.nz + embed_dim, check_int("ngf", ngf),
                                                    check_int("nc", nc), image_size, fused))
        self.nc, self.image_size, self.fused = nc, image_size, fused
        init_normal_(self)  # convs and norms; the embedding keeps N(0, 1), the scale of z

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        z = check_latent(z, self.nz)                                 # (B, nz)
        y = check_labels(y, self.num_classes, z.size(0))             # (B,)
        h = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)         # (B, nz + E)
        return run_generator(self.main, h, self.fused)               # (B, nc, S, S)


class ConditionalDiscriminator(nn.Module):
    """(image (B, nc, S, S), y (B,)) -> logit (B,).

    ``main`` is the DCGAN discriminator body (input channels ``nc + embed_dim``
    with ``conditioning="channels"``; ``norm``: its norms, instance norm for
    the WGAN-GP critic), ``head`` its last conv (psi).
    """

    def __init__(self, nc: int = 1, ndf: int = 64, image_size: int = 28, num_classes: int = 10,
                 embed_dim: int = 16, conditioning: str = "projection", fused: bool = True,
                 minibatch_stddev: int = 0,
                 minibatch_discrimination: Optional[tuple] = None,
                 norm: str = "batch") -> None:
        super().__init__()
        if conditioning not in D_CONDITIONING:
            raise ValueError(f"conditioning must be one of {D_CONDITIONING}, got {conditioning!r}")
        self.conditioning = conditioning
        self.nc, self.image_size = check_int("nc", nc), image_size
        self.num_classes = check_int("num_classes", num_classes)
        embed_dim = check_int("embed_dim", embed_dim)
        base, _ = check_image_size(image_size)
        in_channels = nc + embed_dim if conditioning == "channels" else nc
        layers, width = discriminator_layers(in_channels, check_int("ndf", ndf), image_size, fused,
                                             head=False, norm=norm)
        self.main = nn.Sequential(*layers)
        # The mode-collapse cures (gan_ext.models.cures) act on psi's input only;
        # the projection term keeps the body's features.
        self.group = minibatch_stddev
        self.mbd, self.head = cured_head((width, base, base), minibatch_stddev,
                                         minibatch_discrimination)
        # A projection embedding lives in feature space (width); N(0, 0.02) like
        # the convs keeps the initial inner products, summed over width x b x b
        # terms, at the scale of the psi logit.
        self.embed = nn.Embedding(self.num_classes,
                                  embed_dim if conditioning == "channels" else width)
        self.fused = fused
        init_normal_(self)
        if conditioning == "projection":
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: Tensor, y: Tensor, features: bool = False) -> Tensor:
        """The logit (B,); ``features``: the body's features (B, C b b), what
        feature matching compares."""
        check_images(x, (self.nc, self.image_size, self.image_size), who=type(self).__name__)
        y = check_labels(y, self.num_classes, x.size(0))                # (B,)
        e = self.embed(y).to(x.dtype)                                   # (B, E)
        if self.conditioning == "channels":
            S = self.image_size
            x = torch.cat([x, e[:, :, None, None].expand(-1, -1, S, S)], dim=1)  # (B, nc + E, S, S)
        h = self.main(x)                                                # (B, C, b, b)
        if features:
            return h.flatten(1)
        logit = cured_logit(h, self.group, self.mbd, self.head,
                            lambda head, hp: score_head(head, hp, self.fused))  # (B,)
        if self.conditioning == "projection":
            logit = logit + (e * h.sum(dim=(2, 3))).sum(dim=1)          # + <embed(y), phi(x)>
        return logit


class ConditionalGAN(GAN):
    """:class:`ConditionalGenerator` and :class:`ConditionalDiscriminator` with
    the GAN trainer interface; ``train_step`` and ``gan(z, labels)`` need labels."""

    config_class = CGANConfig

    def build(self, c: CGANConfig, fused: bool):
        return (ConditionalGenerator(c.nz, c.ngf, c.nc, c.image_size, c.num_classes, c.embed_dim,
                                     fused=fused),
                ConditionalDiscriminator(c.nc, c.ndf, c.image_size, c.num_classes, c.embed_dim,
                                         c.d_conditioning, fused=fused,
                                         minibatch_stddev=c.minibatch_stddev,
                                         minibatch_discrimination=c.minibatch_discrimination,
                                         norm=critic_norm(c)))
