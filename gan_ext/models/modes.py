"""The networks of the mode-collapse benchmarks (``gan_ext.metrics.modes``),
as the reference code of the papers builds them:

* :class:`MixtureGAN` (``ring``, ``grid``), two settings: ``"veegan"``
  (VEEGAN's 2-D networks: G z 256 -> 128 -> 128 -> 2 with ReLU, D 2 -> 128
  -> logit with ReLU, Adam 1e-3, beta1 0.5, batches of 500) and
  ``"pacgan"`` (PacGAN's: G 2 -> 400 x 4 (linear without bias, batch norm,
  ReLU) -> 2, D three maxout layers of 200 units and 5 pieces -> logit,
  every weight N(0, 0.02); Adam 1e-4, beta1 0.8; PacGAN's batches were
  100, the trainers' default is VEEGAN's 500 for both).
* :class:`StackedMNISTGAN` (``stacked-mnist``), two DCGAN settings:
  ``"unrolled"`` (the Unrolled-GAN paper's, as PacGAN reran it): G z 256 ->
  4x4x64 -> 3x3 stride-2 transposed convs to 7x7x32, 14x14x16, 28x28x8 -> a
  3x3 conv to 3 channels, tanh; D 3x3 stride-2 convs of ``d_width`` x (8, 16,
  32) filters (1/4: 2, 4, 8; 1/2: 4, 8, 16), each with batch norm and
  LeakyReLU 0.3 -> a linear logit; Adam D lr 2e-4, G lr 1e-4, betas (0.5,
  0.99). ``"veegan"`` (VEEGAN's and PacGAN's): G z 100 -> 2x2x512 -> 5x5
  stride-2 transposed convs to 4x4x256, 7x7x128, 14x14x64, 28x28x3, tanh; D
  5x5 stride-2 convs 64 (no norm), 128, 256, 512 with LeakyReLU 0.2 -> a
  linear logit; Adam 2e-4, beta1 0.5.

Every batch norm + activation pair is a fused :class:`~gan_ext.nn.BatchNormAct2d`
(or BatchNorm1d + ReLU for the MLP); with ``loss="wgan-gp"`` D's are affine
:class:`~gan_ext.nn.InstanceNormAct2d` (:func:`.stabilize.critic_norm`). D is
always a :class:`~gan_ext.models.cures.CuredDiscriminator`, so every cure applies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..nn import BatchNormAct2d, InstanceNormAct2d
from . import cures, stabilize
from ._checks import check_choice, check_int, check_ints, check_latent, check_real
from .gan import GAN, TrainConfig

__all__ = ["MixtureGANConfig", "MixtureGAN", "Maxout", "StackedMNISTConfig", "StackedMNISTGAN",
           "STACKED_ARCHS", "MIXTURE_ARCHS"]

STACKED_ARCHS = ("unrolled", "veegan")


def _init_normal(module: nn.Module, std: float = 0.02) -> None:
    """Weights N(0, std), biases 0, norm scales 1 (the reference code's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Maxout(nn.Module):
    """Linear to ``out_features * pieces`` and the max over each group of
    ``pieces`` (Goodfellow et al. 2013)."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        self.out_features, self.pieces = check_int("out_features", out_features), \
            check_int("pieces", pieces)
        self.linear = nn.Linear(check_int("in_features", in_features), out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear(x)                                           # (B, out * pieces)
        return h.view(x.shape[0], self.out_features, self.pieces).amax(2)


# --------------------------------------------------------------- 2-D mixtures
MIXTURE_ARCHS = {
    "veegan": dict(nz=256, g_hidden=(128, 128), d_hidden=(128,), maxout=0, g_batchnorm=False,
                   init_std=None, lr=1e-3, betas=(0.5, 0.999)),
    "pacgan": dict(nz=2, g_hidden=(400, 400, 400, 400), d_hidden=(200, 200, 200), maxout=5,
                   g_batchnorm=True, init_std=0.02, lr=1e-4, betas=(0.8, 0.999)),
}
_NETWORK_FIELDS = ("nz", "g_hidden", "d_hidden", "maxout", "g_batchnorm", "init_std")


@dataclass
class MixtureGANConfig(TrainConfig):
    arch: str = "pacgan"             # the networks of MIXTURE_ARCHS, or "custom"
    nz: int = 2
    g_hidden: Tuple[int, ...] = (400, 400, 400, 400)
    d_hidden: Tuple[int, ...] = (200, 200, 200)
    maxout: int = 5                  # D's maxout pieces; 0: ReLU
    g_batchnorm: bool = True
    init_std: Optional[float] = 0.02  # N(0, std) weights; None: torch's default init
    lr: float = 1e-4
    betas: Tuple[float, float] = (0.8, 0.999)

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, (*MIXTURE_ARCHS, "custom"))
        self.g_hidden = check_ints("g_hidden", self.g_hidden)
        self.d_hidden = check_ints("d_hidden", self.d_hidden)
        if self.arch != "custom":   # the label must name the networks that are built
            ref = MIXTURE_ARCHS[self.arch]
            bad = [k for k in _NETWORK_FIELDS if getattr(self, k) != ref[k]]
            if bad:
                raise ValueError(f"arch={self.arch!r} has {bad[0]}={ref[bad[0]]!r}, got "
                                 f"{getattr(self, bad[0])!r}: use MixtureGANConfig.for_arch("
                                 f"{self.arch!r}), or arch='custom' for other networks")
        check_int("nz", self.nz)
        check_int("maxout", self.maxout, 0)
        if self.init_std is not None:
            check_real("init_std", self.init_std, 0, low_open=True)
        super().__post_init__()
        if self.diffaugment:
            raise ValueError("diffaugment augments images; the mixtures' samples are 2-D points")

    @classmethod
    def for_arch(cls, arch: str, **kw) -> "MixtureGANConfig":
        """The reference code's settings of ``arch``, overridden by ``kw``."""
        check_choice("arch", arch, tuple(MIXTURE_ARCHS))
        return cls(arch=arch, **{**MIXTURE_ARCHS[arch], **kw})


class PointGenerator(nn.Module):
    """z (B, nz) -> point (B, 2): [Linear (no bias), BatchNorm1d, ReLU] per
    hidden width (without ``batchnorm``: [Linear, ReLU]), then Linear."""

    def __init__(self, nz: int, hidden: Tuple[int, ...], batchnorm: bool = True,
                 init_std: Optional[float] = 0.02) -> None:
        super().__init__()
        self.nz = check_int("nz", nz)
        layers, width = [], nz
        for h in hidden:
            norm = [nn.BatchNorm1d(h)] if batchnorm else []
            layers += [nn.Linear(width, h, bias=not batchnorm), *norm, nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, 2))
        self.main = nn.Sequential(*layers)
        if init_std is not None:
            _init_normal(self, init_std)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(check_latent(z, self.nz))


class MixtureGAN(GAN):
    config_class = MixtureGANConfig

    def build(self, c: MixtureGANConfig, fused: bool):
        layers, width = [], 2 * c.pack
        for h in c.d_hidden:
            layers += ([Maxout(width, h, c.maxout)] if c.maxout
                       else [nn.Linear(width, h), nn.ReLU(inplace=True)])
            width = h
        D = cures.CuredDiscriminator(nn.Sequential(*layers), (2,), (width,), head_bias=True,
                                     **cures.d_options(c))
        if c.init_std is not None:
            _init_normal(D, c.init_std)
        return PointGenerator(c.nz, c.g_hidden, c.g_batchnorm, c.init_std), D


# -------------------------------------------------------------- stacked MNIST
@dataclass
class StackedMNISTConfig(TrainConfig):
    arch: str = "unrolled"       # "unrolled" | "veegan"
    d_width: float = 0.25        # "unrolled": D's widths over G's (the papers: 0.25, 0.5)
    nz: int = 256
    # lr_g (TrainConfig, TTUR): "unrolled" trains G at 1e-4 against D's 2e-4.

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, STACKED_ARCHS)
        check_real("d_width", self.d_width, 0, 64, low_open=True)
        check_int("nz", self.nz)
        super().__post_init__()

    @classmethod
    def for_arch(cls, arch: str, **kw) -> "StackedMNISTConfig":
        """The paper's settings of ``arch``, overridden by ``kw``."""
        base = (dict(nz=256, lr=2e-4, lr_g=1e-4, betas=(0.5, 0.99)) if arch == "unrolled"
                else dict(nz=100, lr=2e-4, betas=(0.5, 0.999)))
        return cls(arch=arch, **{**base, **kw})


def _up(cin: int, cout: int, k: int, out_pad: int) -> list:
    """A stride-2 transposed conv (size 2s - 1 + out_pad from s) + BN + ReLU."""
    return [nn.ConvTranspose2d(cin, cout, k, 2, k // 2, output_padding=out_pad, bias=False),
            BatchNormAct2d(cout, activation="relu")]


class StackedGenerator(nn.Module):
    """z (B, nz) -> (B, 3, 28, 28) in [-1, 1]."""

    def __init__(self, arch: str, nz: int) -> None:
        super().__init__()
        self.nz = check_int("nz", nz)
        if arch == "unrolled":
            self.base, widths, k = (64, 4), (32, 16, 8), 3          # 4 -> 7 -> 14 -> 28
            pads = (0, 1, 1)
        else:
            self.base, widths, k = (512, 2), (256, 128, 64), 5      # 2 -> 4 -> 7 -> 14 -> 28
            pads = (1, 0, 1)
        c0, s0 = self.base
        self.project = nn.Linear(nz, c0 * s0 * s0, bias=False)
        self.norm0 = BatchNormAct2d(c0, activation="relu")
        layers, width = [], c0
        for w, p in zip(widths, pads):
            layers += _up(width, w, k, p)
            width = w
        if arch == "unrolled":
            layers += [nn.Conv2d(width, 3, 3, 1, 1), nn.Tanh()]
        else:
            layers += [nn.ConvTranspose2d(width, 3, k, 2, k // 2, output_padding=1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        _init_normal(self)

    def forward(self, z: Tensor) -> Tensor:
        z = check_latent(z, self.nz)
        c0, s0 = self.base
        h = self.norm0(self.project(z).view(-1, c0, s0, s0))
        return self.main(h)


def stacked_d_body(arch: str, in_channels: int, d_width: float, norm: str = "batch"
                   ) -> Tuple[nn.Sequential, tuple]:
    """D's conv stack and its feature shape (C, s, s); ``norm="instance"``:
    affine instance norms in place of the batch norms (the WGAN-GP critic)."""
    def norm_act(w: int, slope: float) -> nn.Module:
        if norm == "instance":
            return InstanceNormAct2d(w, affine=True, activation="leaky_relu", negative_slope=slope)
        return BatchNormAct2d(w, activation="leaky_relu", negative_slope=slope)

    layers = []
    if arch == "unrolled":
        widths = [max(1, round(d_width * w)) for w in (8, 16, 32)]
        width = in_channels
        for w in widths:                                              # 28 -> 14 -> 7 -> 4
            layers += [nn.Conv2d(width, w, 3, 2, 1, bias=False), norm_act(w, 0.3)]
            width = w
        return nn.Sequential(*layers), (width, 4, 4)
    widths = (64, 128, 256, 512)
    width = in_channels
    for i, w in enumerate(widths):                                    # 28 -> 14 -> 7 -> 4 -> 2
        layers.append(nn.Conv2d(width, w, 5, 2, 2, bias=False))
        layers.append(nn.LeakyReLU(0.2, inplace=True) if i == 0 else norm_act(w, 0.2))
        width = w
    return nn.Sequential(*layers), (width, 2, 2)


class StackedMNISTGAN(GAN):
    config_class = StackedMNISTConfig

    def build(self, c: StackedMNISTConfig, fused: bool):
        body, feat = stacked_d_body(c.arch, 3 * c.pack, c.d_width, stabilize.critic_norm(c))
        _init_normal(body)
        D = cures.CuredDiscriminator(body, (3, 28, 28), feat, head_bias=True,
                                     **cures.d_options(c))
        _init_normal(D.head)
        return StackedGenerator(c.arch, c.nz), D
