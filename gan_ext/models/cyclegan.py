"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks"): the config and the model, on the
networks of :mod:`gan_ext.models.networks`, state_dict-compatible with the
official junyanz/pytorch-CycleGAN-and-pix2pix: its published
``latest_net_G.pth`` files load strictly into :class:`ResnetGenerator`
(:func:`load_official_state_dict`).

    G = ResnetGenerator()                       # resnet_9blocks, instance norm
    load_official_state_dict(G, "latest_net_G.pth")
    model = CycleGAN(CycleGANConfig())
    opt_G, opt_D = model.make_optimizers()
    losses = model.train_step(real_A, real_B, opt_G, opt_D)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..nn import GANLoss
from ._checks import check_images, check_real
from ._common import apply_channels_last, init_normal_, make_adam, set_requires_grad
# ResnetBlock, LinearDecay and load_official_state_dict are only re-exported:
# gan_ext.models.cyclegan offered them before they moved.
from .image_pool import ImagePool
from .networks import (NLayerDiscriminator, ResnetBlock, ResnetGenerator, build_discriminator,
                       build_generator)
from .official import load_official_state_dict
from .schedule import LinearDecay, check_schedule, make_linear_decay_schedulers

__all__ = ["ResnetBlock", "ResnetGenerator", "NLayerDiscriminator", "ImagePool", "LinearDecay",
           "CycleGANConfig", "CycleGAN", "load_official_state_dict"]


@dataclass
class CycleGANConfig:
    """The official ``train.py --model cycle_gan`` defaults."""
    input_nc: int = 3          # channels of domain A
    output_nc: int = 3         # channels of domain B
    ngf: int = 64
    ndf: int = 64
    generator: str = "resnet"  # "resnet" (n_blocks) | "unet" (num_downs)
    n_blocks: int = 9          # resnet_9blocks; 6 for 128x128 images
    num_downs: int = 8         # generator="unet": unet_256 (7: unet_128)
    discriminator: str = "n_layers"   # "n_layers" | "pixel" (1x1 PatchGAN)
    n_layers_D: int = 3        # 70x70 PatchGAN
    norm: str = "instance"
    use_dropout: bool = False
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0     # cycle loss A -> B -> A
    lambda_B: float = 10.0     # cycle loss B -> A -> B
    lambda_identity: float = 0.5  # identity loss weight, relative to lambda_A / lambda_B
    pool_size: int = 50
    lr: float = 2e-4
    beta1: float = 0.5
    n_epochs: int = 100        # epochs at the initial lr
    n_epochs_decay: int = 100  # epochs of linear decay to 0
    epoch_count: int = 1
    init_std: float = 0.02


class CycleGAN(nn.Module):
    """G_A: A -> B, G_B: B -> A, D_A judges domain B, D_B judges domain A, with
    one image pool of fakes per discriminator. The state_dict holds the four
    networks under ``G_A.``, ``G_B.``, ``D_A.``, ``D_B.`` (the official files
    ``latest_net_G_A.pth`` ... are the per-network state_dicts); save the pools
    with ``fake_A_pool.state_dict()`` / ``fake_B_pool.state_dict()``.
    ``channels_last=None``: channels_last weights for the fused build (see
    ``models._common.apply_channels_last``)."""

    def __init__(self, config: Optional[CycleGANConfig] = None, fused: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        super().__init__()
        cfg = CycleGANConfig() if config is None else config
        if not isinstance(cfg, CycleGANConfig):
            raise TypeError(f"config must be a CycleGANConfig, got {type(cfg).__name__}")
        check_real("init_std", cfg.init_std, 0.0)
        check_schedule(cfg)
        self.config = cfg
        self._check_loss_config()
        g = (cfg.generator, cfg.ngf, cfg.n_blocks, cfg.num_downs, cfg.norm, cfg.use_dropout, fused)
        self.G_A = build_generator(g[0], cfg.input_nc, cfg.output_nc, *g[1:])
        self.G_B = build_generator(g[0], cfg.output_nc, cfg.input_nc, *g[1:])
        d = (cfg.ndf, cfg.n_layers_D, cfg.norm, fused)
        self.D_A = build_discriminator(cfg.discriminator, cfg.output_nc, *d)
        self.D_B = build_discriminator(cfg.discriminator, cfg.input_nc, *d)
        for net in (self.G_A, self.G_B, self.D_A, self.D_B):
            init_normal_(net, cfg.init_std)
        self.fake_A_pool = ImagePool(cfg.pool_size)  # fakes of domain A, for D_B
        self.fake_B_pool = ImagePool(cfg.pool_size)  # fakes of domain B, for D_A
        self.gan_loss = GANLoss(cfg.gan_mode)
        self.fused = fused
        self.channels_last = apply_channels_last(self, channels_last, fused)

    def _check_loss_config(self) -> None:
        # Also run per step: the config is a plain dataclass a user may edit.
        cfg = self.config
        for name in ("lambda_A", "lambda_B", "lambda_identity"):
            check_real(name, getattr(cfg, name), 0.0)
        if cfg.lambda_identity > 0 and cfg.input_nc != cfg.output_nc:
            raise ValueError("the identity loss needs input_nc == output_nc (G_A(real_B) is "
                             f"compared with real_B); got {cfg.input_nc} and {cfg.output_nc}: "
                             "set lambda_identity=0")

    def forward(self, real_A: Tensor, real_B: Tensor):
        """(fake_B, rec_A, fake_A, rec_B), each (B, C, H, W)."""
        fake_B = self.G_A(real_A)  # G_A(A)
        rec_A = self.G_B(fake_B)   # G_B(G_A(A))
        fake_A = self.G_B(real_B)  # G_B(B)
        rec_B = self.G_A(fake_A)   # G_A(G_B(B))
        return fake_B, rec_A, fake_A, rec_B

    def make_optimizers(self):
        """(opt_G, opt_D): Adam over both generators and over both discriminators."""
        cfg = self.config
        betas = (cfg.beta1, 0.999)
        opt_G = make_adam(itertools.chain(self.G_A.parameters(), self.G_B.parameters()),
                          lr=cfg.lr, betas=betas, fused=self.fused)
        opt_D = make_adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()),
                          lr=cfg.lr, betas=betas, fused=self.fused)
        return opt_G, opt_D

    def make_schedulers(self, opt_G, opt_D):
        """``LambdaLR`` with :class:`LinearDecay`; call ``.step()`` once per epoch."""
        return make_linear_decay_schedulers(self.config, opt_G, opt_D)

    def _backward_D(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        # The official 0.5 slows D down relative to G.
        loss = 0.5 * self.gan_loss.d_loss(D(real), D(fake.detach()))
        loss.backward()
        return loss.detach()

    def train_step(self, real_A: Tensor, real_B: Tensor, opt_G, opt_D) -> dict[str, Tensor]:
        """One official ``optimize_parameters``: generators first (the
        discriminators frozen), then both discriminators on pooled fakes.
        Returns the detached scalar losses D_A, G_A, cycle_A, idt_A, D_B, G_B,
        cycle_B, idt_B (already weighted by the lambdas)."""
        cfg = self.config
        self._check_loss_config()
        check_images(real_A, (cfg.input_nc, "H", "W"), name="real_A", who="CycleGAN.train_step")
        check_images(real_B, (cfg.output_nc, "H", "W"), name="real_B", who="CycleGAN.train_step")
        fake_B, rec_A, fake_A, rec_B = self(real_A, real_B)

        # Generators. D's parameters need no gradients from the G loss.
        set_requires_grad(False, self.D_A, self.D_B)
        try:
            opt_G.zero_grad(set_to_none=True)
            # idt_A = G_A(B) is compared with B, so it is weighted by lambda_B.
            w_idt_A = cfg.lambda_B * cfg.lambda_identity
            w_idt_B = cfg.lambda_A * cfg.lambda_identity
            loss_G = ops.cycle_l1_loss(rec_A, real_A, rec_B, real_B, cfg.lambda_A, cfg.lambda_B)
            if cfg.lambda_identity > 0:
                idt_A = self.G_A(real_B)  # G_A should leave images of its target domain alone
                idt_B = self.G_B(real_A)
                loss_G = loss_G + ops.cycle_l1_loss(idt_A, real_B, idt_B, real_A, w_idt_A, w_idt_B)
            loss_G_A = self.gan_loss.g_loss(self.D_A(fake_B))
            loss_G_B = self.gan_loss.g_loss(self.D_B(fake_A))
            (loss_G + loss_G_A + loss_G_B).backward()
            opt_G.step()
        finally:
            set_requires_grad(True, self.D_A, self.D_B)

        # Discriminators, on a history of fakes.
        opt_D.zero_grad(set_to_none=True)
        loss_D_A = self._backward_D(self.D_A, real_B, self.fake_B_pool.query(fake_B))
        loss_D_B = self._backward_D(self.D_B, real_A, self.fake_A_pool.query(fake_A))
        opt_D.step()

        # The per-direction terms, for logging only: the losses above were fused.
        with torch.no_grad():
            zero = real_A.new_zeros(())
            idt_on = cfg.lambda_identity > 0
            return {
                "D_A": loss_D_A, "G_A": loss_G_A.detach(),
                "cycle_A": ops.l1_loss(rec_A.detach(), real_A) * cfg.lambda_A,
                "idt_A": ops.l1_loss(idt_A.detach(), real_B) * w_idt_A if idt_on else zero,
                "D_B": loss_D_B, "G_B": loss_G_B.detach(),
                "cycle_B": ops.l1_loss(rec_B.detach(), real_B) * cfg.lambda_B,
                "idt_B": ops.l1_loss(idt_B.detach(), real_A) * w_idt_B if idt_on else zero,
            }
