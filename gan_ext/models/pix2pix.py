"""pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks"): a U-Net generator and a PatchGAN on (input, output)
pairs, state_dict-compatible with the official junyanz/pytorch-CycleGAN-and-pix2pix.

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
from ._common import apply_channels_last, check_int, init_normal_, make_adam
from .cyclegan import (NORMS, NLayerDiscriminator, _check_bool, _check_choice, _check_images,
                       _check_real, _check_schedule, _OfficialCheckpoint,
                       make_linear_decay_schedulers, norm_act, plain_norm, set_requires_grad,
                       use_bias)

__all__ = ["UnetSkipConnectionBlock", "UnetGenerator", "NLayerDiscriminator", "Pix2PixConfig",
           "Pix2Pix"]


class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: ``x -> [down, submodule, up] -> cat(x, up)``.

    ``model`` indices are the official ones. Non-outermost blocks start with
    ``LeakyReLU(0.2, inplace=True)``, which (official quirk) overwrites the
    parent's down-norm output before the skip concatenation, so the skip
    carries ``lrelu(norm(conv(x)))``. With ``fused=True`` the parent's down-norm
    therefore carries that LeakyReLU and the child's slot 0 is ``nn.Identity()``
    (``input_activated=True``, set by :class:`UnetGenerator` when ``fused``):
    same outputs, one pass fewer, no in-place write.
    ``gan_ext.fuse`` cannot do this on a plain U-Net (the pair spans two
    Sequentials), so the U-Net does it itself.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: Optional[int] = None,
                 submodule: Optional["UnetSkipConnectionBlock"] = None, outermost: bool = False,
                 innermost: bool = False, norm: str = "batch", use_dropout: bool = False,
                 input_activated: bool = False) -> None:
        super().__init__()
        if (submodule is None) != innermost:
            raise ValueError("a UnetSkipConnectionBlock needs a submodule unless innermost=True")
        if input_activated and outermost:
            raise ValueError("the outermost block's input is the image: input_activated must "
                             "be False")
        _check_choice("norm", norm, NORMS)
        if submodule is not None and submodule.input_activated and norm == "none":
            raise ValueError("the submodule expects its input activated by our down-norm "
                             "(input_activated=True), but norm='none' has no norm to carry it")
        self.outermost = outermost
        self.input_activated = input_activated
        input_nc = outer_nc if input_nc is None else input_nc
        bias = use_bias(norm)
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=bias)
        downrelu = nn.Identity() if input_activated else nn.LeakyReLU(0.2, True)

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, nn.ReLU(True), upconv, plain_norm(norm, outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=bias)
            if submodule.input_activated:  # the child expects lrelu(norm(.)) from us
                downnorm = norm_act(norm, inner_nc, "leaky_relu", fused=True)[0]
            else:
                downnorm = plain_norm(norm, inner_nc)
            layers = [downrelu, downconv, downnorm, submodule,
                      nn.ReLU(True), upconv, plain_norm(norm, outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        # Evaluated left to right: in the plain net, model(x) has already
        # applied its LeakyReLU to x in place when cat reads x.
        return torch.cat([x, self.model(x)], 1)  # (B, C_x + outer_nc, H, W)


class UnetGenerator(_OfficialCheckpoint):
    """The pix2pix generator: ``num_downs`` stride-2 levels with skips, so H and W
    must be divisible by ``2 ** num_downs`` (``num_downs=8``: ``unet_256``, 7:
    ``unet_128``). Channels ngf, 2ngf, 4ngf, then 8ngf for the remaining levels;
    Dropout(0.5) in the ``num_downs - 5`` innermost 8ngf levels when
    ``use_dropout`` (pix2pix's noise source). ``norm``: ``"batch"`` (the paper),
    ``"instance"`` or ``"none"``. Torch's default init; :class:`Pix2Pix` applies
    N(0, 0.02). Loads official checkpoints strictly, as ``ResnetGenerator`` does.

    Shape: (B, input_nc, H, W) -> (B, output_nc, H, W) in [-1, 1].
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = True, fused: bool = True) -> None:
        super().__init__()
        for name, v in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf)):
            check_int(name, v, 1)
        check_int("num_downs", num_downs, 5)  # the 4 outer levels + the innermost one
        _check_choice("norm", norm, NORMS)
        _check_bool("use_dropout", use_dropout)
        _check_bool("fused", fused)
        self.input_nc, self.num_downs = input_nc, num_downs
        act_in = fused and norm != "none"  # every level below the second gets lrelu(norm) fused
        kw = dict(norm=norm)
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, input_activated=act_in,
                                        **kw)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block,
                                            use_dropout=use_dropout, input_activated=act_in, **kw)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, input_activated=act_in,
                                        **kw)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, input_activated=act_in,
                                        **kw)
        # Its input is the outermost conv's output, with no norm to fuse into.
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                             outermost=True, **kw)

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.input_nc, type(self).__name__)
        k = 2 ** self.num_downs
        if x.size(2) % k or x.size(3) % k:
            raise ValueError(f"UnetGenerator: height and width must be divisible by 2**num_downs"
                             f" = {k}, got {tuple(x.shape[2:])}")
        return self.model(x)  # (B, output_nc, H, W)


@dataclass
class Pix2PixConfig:
    """The official ``train.py --model pix2pix`` defaults."""
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    ndf: int = 64
    num_downs: int = 8         # unet_256
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
        _check_real("lambda_L1", cfg.lambda_L1)
        _check_real("init_std", cfg.init_std)
        _check_schedule(cfg)
        self.config = cfg
        self.netG = UnetGenerator(cfg.input_nc, cfg.output_nc, cfg.num_downs, cfg.ngf, cfg.norm,
                                  cfg.use_dropout, fused)
        self.netD = NLayerDiscriminator(cfg.input_nc + cfg.output_nc, cfg.ndf, cfg.n_layers_D,
                                        cfg.norm, fused)
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
        _check_real("lambda_L1", cfg.lambda_L1)  # the config may have been edited since
        _check_images(real_A, cfg.input_nc, "Pix2Pix.train_step", "real_A")
        _check_images(real_B, cfg.output_nc, "Pix2Pix.train_step", "real_B")
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
