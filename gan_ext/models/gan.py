"""The original GAN (Goodfellow et al. 2014, "Generative Adversarial Nets"):
MLP generator and discriminator, and Algorithm 1's alternating update, which
every family in :mod:`gan_ext.models` trains with (:func:`train_step`).

    gan = GAN(GANConfig())
    opt_g, opt_d = gan.make_optimizers()
    for real in loader:                       # (B, 1, 28, 28) in [-1, 1]
        stats = gan.train_step(real, opt_g, opt_d)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..nn import ActDropout, GANLoss
from ._checks import check_choice, check_images, check_int, check_ints, check_latent, check_real
from ._common import apply_channels_last, make_adam
from . import cures, stabilize
from .gan_step import Batches, train_step

__all__ = ["TrainConfig", "GANConfig", "MLPGenerator", "MLPDiscriminator", "GAN", "train_step"]

LOSS_MODES = ("vanilla", "lsgan", "hinge", "wgan-gp")


# ----------------------------------------------------------------- configs
@dataclass(kw_only=True)
class TrainConfig:
    """How the two players are trained; every family's config extends it."""
    loss: str = "vanilla"          # "vanilla" (BCE) | "lsgan" | "hinge" | "wgan-gp" (stabilize)
    minimax: bool = False          # G minimizes log(1 - D(G(z))) as in the paper, not -log D(G(z))
    k: int = 1                     # D updates per G update (Algorithm 1)
    g_steps: int = 1               # G updates per iteration, on the same latents
    real_label: float = 1.0        # 0.9: one-sided label smoothing
    lr: float = 2e-4               # Adam, as in DCGAN
    betas: Tuple[float, float] = (0.5, 0.999)
    # Cures for mode collapse (gan_ext.models.cures): D-side, then G-side.
    pack: int = 1                  # PacGAN: D judges this many samples at once
    minibatch_stddev: int = 0      # ProGAN's group stddev feature map (group size); 0: off
    minibatch_discrimination: Optional[tuple] = None   # (num_kernels, kernel_dim[, "mean"])
    feature_matching: bool = False # G matches the mean of D's last features on real data
    unrolled: int = 0              # G trains against D after this many look-ahead steps
    unrolled_first_order: bool = False   # the look-ahead's D as constants (no 2nd derivative)
    ema: Optional[float] = None    # decay of G's moving average, used for sampling
    joint_batch: bool = False      # D scores real and fake in one call (one set of BN statistics)
    # Modern training (gan_ext.models.stabilize).
    lr_d: Optional[float] = None   # TTUR: D's Adam learning rate; None: lr
    lr_g: Optional[float] = None   # TTUR: G's; None: lr
    spectral_norm: bool = False    # spectral normalisation of D's conv/linear weights
    diffaugment: Tuple[str, ...] = ()   # DiffAugment policies on every image D sees
    r1_gamma: float = 0.0          # R1 penalty weight gamma on real data; 0: off
    r1_every: int = 16             # lazy R1: every N-th D step, scaled by N
    gp_lambda: float = 10.0        # loss="wgan-gp": the gradient penalty's weight lambda

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSS_MODES)
        check_int("k", self.k)
        check_int("g_steps", self.g_steps)
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        for i, b in enumerate(self.betas):
            check_real(f"betas[{i}]", b, 0, 1, high_open=True)
        cures.check_cures(self)
        stabilize.check_stabilizers(self)
        self.make_loss()  # validates loss, minimax and real_label now, not at step 1

    def make_loss(self) -> GANLoss:
        # WGAN-GP's critic loss is the Wasserstein one; its penalty is train_step's gp_lambda.
        mode = "wasserstein" if self.loss == "wgan-gp" else self.loss
        return GANLoss(mode, real_label=self.real_label, minimax=self.minimax)


@dataclass
class GANConfig(TrainConfig):
    nz: int = 100
    img_shape: Tuple[int, ...] = (1, 28, 28)
    g_hidden: Tuple[int, ...] = (256, 512, 1024)
    d_hidden: Tuple[int, ...] = (1024, 512, 256)
    negative_slope: float = 0.2
    dropout: float = 0.3           # the paper trains D with dropout


# ------------------------------------------------------------------ models
class MLPGenerator(nn.Module):
    """z (B, nz) -> Linear -> LeakyReLU -> ... -> Linear -> tanh -> (B, *img_shape).

    ``fused`` is accepted for the same interface as the conv families: an MLP
    has no norm -> activation pair, so both builds are identical.
    """

    def __init__(self, nz: int = 100, img_shape: Sequence[int] = (1, 28, 28),
                 hidden: Sequence[int] = (256, 512, 1024), negative_slope: float = 0.2,
                 fused: bool = True) -> None:
        super().__init__()
        self.nz = check_int("nz", nz)
        self.img_shape = check_ints("img_shape", img_shape)
        negative_slope = check_real("negative_slope", negative_slope, 0)
        layers, width = [], self.nz
        for h in check_ints("hidden", hidden, allow_empty=True):
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope, inplace=True)]
            width = h
        layers += [nn.Linear(width, math.prod(self.img_shape)), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        z = check_latent(z, self.nz)                          # (B, nz)
        return self.main(z).view(z.size(0), *self.img_shape)  # (B, C, H, W)


class MLPDiscriminator(nn.Module):
    """x (B, *img_shape) -> flatten -> [Linear, LeakyReLU, Dropout] x n -> Linear
    -> logit (B, 1).

    With ``fused=True`` each LeakyReLU -> Dropout pair is one
    :class:`~gan_ext.nn.ActDropout` followed by ``nn.Identity()`` in the
    dropout's slot (what :func:`gan_ext.fuse` makes of the ``fused=False``
    build); neither holds parameters, so the state_dicts are the same.
    """

    def __init__(self, img_shape: Sequence[int] = (1, 28, 28),
                 hidden: Sequence[int] = (1024, 512, 256), negative_slope: float = 0.2,
                 dropout: float = 0.3, fused: bool = True) -> None:
        super().__init__()
        self.img_shape = check_ints("img_shape", img_shape)
        negative_slope = check_real("negative_slope", negative_slope, 0)
        dropout = check_real("dropout", dropout, 0, 1, high_open=True)
        layers, width = mlp_d_layers(math.prod(self.img_shape), hidden, negative_slope, dropout,
                                     fused)
        layers.append(nn.Linear(width, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, self.img_shape, who=type(self).__name__)
        return self.main(x.flatten(1))  # (B, 1) logit


def mlp_d_layers(in_features: int, hidden: Sequence[int], negative_slope: float, dropout: float,
                 fused: bool) -> Tuple[list, int]:
    """[Linear, LeakyReLU, Dropout] per hidden width (with ``fused`` the
    activation + dropout as one ActDropout and an Identity); the layers and
    the last width."""
    layers, width = [], in_features
    for h in check_ints("hidden", hidden, allow_empty=True):
        if fused:
            act_drop = [ActDropout("leaky_relu", negative_slope, dropout), nn.Identity()]
        else:
            act_drop = [nn.LeakyReLU(negative_slope, inplace=True), nn.Dropout(dropout)]
        layers += [nn.Linear(width, h), *act_drop]
        width = h
    return layers, width


# ----------------------------------------------------------------- wrapper
class GAN(nn.Module):
    """A generator ``G``, a discriminator ``D``, their ``loss`` and ``config``:
    what a trainer needs. ``gan(z)`` samples. Other families (DCGAN,
    ConditionalGAN) override ``config_class`` and :meth:`build` only."""

    config_class = GANConfig

    def __init__(self, config: Optional[TrainConfig] = None, *, fused: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        super().__init__()
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config
        self.G, self.D = self.build(config, fused)
        if config.loss == "wgan-gp":   # a family's build must give a critic without batch norm
            stabilize.check_critic(self.D)
        # G's moving average (cures.ema_update after each G step) samples for the trainers.
        if config.spectral_norm:   # at build: the saved config rebuilds it, checkpoints load
            stabilize.spectral_norm_(self.D)
        self.G_ema = cures.make_ema(self.G) if config.ema is not None else None
        self.d_steps = 0   # D updates so far: lazy R1's schedule (trainers save it)
        self.ema_updates = 0   # G_ema's updates so far: cures.ema_decay's t (trainers save it)
        self.loss = config.make_loss()
        self.fused = bool(fused)
        self.channels_last = apply_channels_last(self, channels_last, fused)

    def build(self, c: GANConfig, fused: bool) -> Tuple[nn.Module, nn.Module]:
        G = MLPGenerator(c.nz, c.img_shape, c.g_hidden, c.negative_slope, fused=fused)
        if not cures.d_cured(c):
            return G, MLPDiscriminator(c.img_shape, c.d_hidden, c.negative_slope, c.dropout,
                                       fused=fused)
        layers, width = mlp_d_layers(math.prod(c.img_shape) * c.pack, c.d_hidden,
                                     c.negative_slope, c.dropout, fused)
        return G, cures.CuredDiscriminator(nn.Sequential(nn.Flatten(), *layers), c.img_shape,
                                           (width,), **cures.d_options(c))

    def make_optimizers(self) -> Tuple[torch.optim.Adam, torch.optim.Adam]:
        """(G's Adam, D's Adam) at ``lr_g`` and ``lr_d`` (TTUR), each ``lr`` if None."""
        c = self.config
        lr_g = c.lr if c.lr_g is None else c.lr_g
        lr_d = c.lr if c.lr_d is None else c.lr_d
        return (make_adam(self.G.parameters(), lr=lr_g, betas=c.betas, fused=self.fused),
                make_adam(self.D.parameters(), lr=lr_d, betas=c.betas, fused=self.fused))

    def train_step(self, real: Batches, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer, labels: Optional[Batches] = None,
                   **samplers: Callable) -> Dict[str, Tensor]:
        """:func:`train_step` with ``k = config.k`` (``real``: a list of k batches when k > 1);
        ``samplers``: its ``sample_z`` and ``sample_labels``."""
        c = self.config
        stats = train_step(self.G, self.D, opt_g, opt_d, real, self.loss, k=c.k, labels=labels,
                           g_objective=cures.generator_objective(c, self.loss, opt_d),
                           joint_batch=c.joint_batch, augment=c.diffaugment,
                           r1_gamma=c.r1_gamma, r1_every=c.r1_every, d_step=self.d_steps,
                           gp_lambda=c.gp_lambda if c.loss == "wgan-gp" else 0.0,
                           g_steps=c.g_steps, **samplers)
        self.d_steps += c.k
        if self.G_ema is not None:
            self.ema_updates += 1
            cures.ema_update(self.G_ema, self.G, cures.ema_decay(c.ema, self.ema_updates))
        return stats

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples: G's moving average with ``ema``, else G."""
        return self.G_ema if self.G_ema is not None else self.G

    def forward(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        G = self.sampler
        return G(z) if labels is None else G(z, labels)
