"""pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks"): a U-Net generator and a PatchGAN on (input, output)
pairs (the networks of :mod:`gan_ext.models.networks`), state_dict-compatible
with the official junyanz/pytorch-CycleGAN-and-pix2pix.

    G = UnetGenerator()                          # unet_256, batch norm, dropout
    model = Pix2Pix(Pix2PixConfig())
    opt_G, opt_D = model.make_optimizers()
    losses = model.train_step(real_A, real_B, opt_G, opt_D)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..nn import GANLoss
from ._checks import check_images, check_real
from ._common import apply_channels_last, init_normal_, make_adam, set_requires_grad
# UnetSkipConnectionBlock is only re-exported: gan_ext.models.pix2pix offered
# it before the networks moved.
from .networks import (NLayerDiscriminator, UnetGenerator, UnetSkipConnectionBlock,
                       build_discriminator, build_generator)
from .schedule import check_schedule, make_linear_decay_schedulers

__all__ = ["UnetSkipConnectionBlock", "UnetGenerator", "NLayerDiscriminator", "Pix2PixConfig",
           "Pix2Pix"]


@dataclass
class Pix2PixConfig:
    """The official ``train.py --model pix2pix`` defaults."""
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    ndf: int = 64
    generator: str = "unet"    # "unet" (num_downs) | "resnet" (n_blocks)
    num_downs: int = 8         # unet_256
    n_blocks: int = 9          # generator="resnet": resnet_9blocks
    discriminator: str = "n_layers"   # "n_layers" | "pixel" (1x1 PatchGAN)
    n_layers_D: int = 3        # 70x70 PatchGAN
    norm: str = "batch"
    use_dropout: bool = True
    gan_mode: str = "vanilla"
    lambda_L1: float = 100.0
    lr: float = 2e-4
    beta1: float = 0.5
    n_epochs: int = 100
    n_epochs_decay: int = 100
    epoch_count: int = 1
    init_std: float = 0.02


class Pix2Pix(nn.Module):
    """``netG``: A -> B; ``netD``: a conditional PatchGAN on cat(A, B), (B, in+out, H, W)."""

    def __init__(self, config: Optional[Pix2PixConfig] = None, fused: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        super().__init__()
        cfg = Pix2PixConfig() if config is None else config
        if not isinstance(cfg, Pix2PixConfig):
            raise TypeError(f"config must be a Pix2PixConfig, got {type(cfg).__name__}")
        check_real("lambda_L1", cfg.lambda_L1, 0.0)
        check_real("init_std", cfg.init_std, 0.0)
        check_schedule(cfg)
        self.config = cfg
        self.netG = build_generator(cfg.generator, cfg.input_nc, cfg.output_nc, cfg.ngf,
                                    cfg.n_blocks, cfg.num_downs, cfg.norm, cfg.use_dropout, fused)
        self.netD = build_discriminator(cfg.discriminator, cfg.input_nc + cfg.output_nc, cfg.ndf,
                                        cfg.n_layers_D, cfg.norm, fused)
        init_normal_(self.netG, cfg.init_std)
        init_normal_(self.netD, cfg.init_std)
        self.gan_loss = GANLoss(cfg.gan_mode)
        self.fused = fused
        self.channels_last = apply_channels_last(self, channels_last, fused)

    def forward(self, real_A: Tensor) -> Tensor:
        return self.netG(real_A)  # (B, output_nc, H, W)

    def make_optimizers(self):
        cfg = self.config
        betas = (cfg.beta1, 0.999)
        return (make_adam(self.netG.parameters(), lr=cfg.lr, betas=betas, fused=self.fused),
                make_adam(self.netD.parameters(), lr=cfg.lr, betas=betas, fused=self.fused))

    def make_schedulers(self, opt_G, opt_D):
        return make_linear_decay_schedulers(self.config, opt_G, opt_D)

    def train_step(self, real_A: Tensor, real_B: Tensor, opt_G, opt_D) -> dict[str, Tensor]:
        """One official ``optimize_parameters``: D first, then G against the
        updated D. Returns the detached losses D, G_GAN and G_L1 (weighted)."""
        cfg = self.config
        check_real("lambda_L1", cfg.lambda_L1, 0.0)  # the config may have been edited since
        check_images(real_A, (cfg.input_nc, "H", "W"), name="real_A", who="Pix2Pix.train_step")
        check_images(real_B, (cfg.output_nc, "H", "W"), name="real_B", who="Pix2Pix.train_step")
        fake_B = self.netG(real_A)
        fake_AB = torch.cat((real_A, fake_B), 1)  # (B, in + out, H, W): D judges the pair

        opt_D.zero_grad(set_to_none=True)
        pred_fake = self.netD(fake_AB.detach())  # fake first, as official (BN running stats)
        pred_real = self.netD(torch.cat((real_A, real_B), 1))
        loss_D = 0.5 * self.gan_loss.d_loss(pred_real, pred_fake)
        loss_D.backward()
        opt_D.step()

        set_requires_grad(False, self.netD)
        try:
            opt_G.zero_grad(set_to_none=True)
            loss_G_GAN = self.gan_loss.g_loss(self.netD(fake_AB))
            loss_G_L1 = ops.l1_loss(fake_B, real_B) * cfg.lambda_L1
            (loss_G_GAN + loss_G_L1).backward()
            opt_G.step()
        finally:
            set_requires_grad(True, self.netD)
        return {"D": loss_D.detach(), "G_GAN": loss_G_GAN.detach(), "G_L1": loss_G_L1.detach()}
