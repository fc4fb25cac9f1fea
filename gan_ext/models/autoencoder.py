"""Convolutional (denoising) autoencoder for 1x28x28 images (MNIST).

Encoder: three stride-2 3x3 convs, each conv -> BatchNorm -> ReLU as one fused
:class:`~gan_ext.nn.Conv2dNormAct` (28 -> 14 -> 7 -> 3), then an MLP down to the
code. Decoder: the mirror image with :class:`~gan_ext.nn.ConvTranspose2dNormAct`
(3 -> 7 -> 14 -> 28) and a final plain transposed conv giving logits; the image
is ``sigmoid(logits)``. Trained with the MSE between the reconstruction and the
clean input. With ``denoising=True`` the input (never the target) is corrupted
in training by ``clamp(x + noise_factor * N(0, 1), 0, 1)`` (Vincent et al. 2008).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import Conv2dNormAct, ConvTranspose2dNormAct
from ._checks import (UNIT_IMAGES, check_bool, check_code, check_images, check_int,
                      check_real)
from ._common import apply_channels_last, make_adam

__all__ = ["AEConfig", "ConvAutoencoder"]

IMAGE_SHAPE = (1, 28, 28)
_FEATURES = (32, 3, 3)  # the last conv's output, flattened to 288


@dataclass
class AEConfig:
    latent_dim: int = 4
    denoising: bool = False
    noise_factor: float = 0.3  # std of the Gaussian corruption (denoising only)
    lr: float = 1e-3
    weight_decay: float = 1e-5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int("latent_dim", self.latent_dim)
        check_bool("denoising", self.denoising)
        check_real("noise_factor", self.noise_factor, 0.0, 1.0)
        check_real("lr", self.lr, 0.0, low_open=True)
        check_real("weight_decay", self.weight_decay, 0.0)


class ConvAutoencoder(nn.Module):
    """``forward(x)`` -> reconstruction in [0, 1], (B, 1, 28, 28)."""

    def __init__(self, config: Optional[AEConfig] = None, channels_last: bool = True) -> None:
        super().__init__()
        if config is None:
            config = AEConfig()
        if not isinstance(config, AEConfig):
            raise TypeError(f"config must be an AEConfig, got {type(config).__name__}")
        config.validate()  # the dataclass may have been edited after construction
        self.config = config
        # Where the denoising noise comes from when no generator is given:
        # None is torch's generator; a callable (shape, device, dtype) ->
        # Tensor replaces it (training on several processes draws the global
        # batch's noise and keeps this rank's share).
        self.noise_source: Optional[Callable[..., Tensor]] = None
        d = config.latent_dim
        self.encoder = nn.Sequential(
            Conv2dNormAct(1, 8, 3, stride=2, padding=1),    # (B, 8, 14, 14)
            Conv2dNormAct(8, 16, 3, stride=2, padding=1),   # (B, 16, 7, 7)
            Conv2dNormAct(16, 32, 3, stride=2, padding=0),  # (B, 32, 3, 3)
            nn.Flatten(1),                                  # (B, 288)
            nn.Linear(288, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, d),                              # (B, latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(d, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 288),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, _FEATURES),                                            # (B, 32, 3, 3)
            ConvTranspose2dNormAct(32, 16, 3, stride=2, padding=0),                # (B, 16, 7, 7)
            ConvTranspose2dNormAct(16, 8, 3, stride=2, padding=1, output_padding=1),  # (B, 8, 14, 14)
            nn.ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1),   # (B, 1, 28, 28)
        )
        self.channels_last = apply_channels_last(self, channels_last, True)

    # ------------------------------------------------------------------ model
    def add_noise(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """``clamp(x + noise_factor * N(0, 1), 0, 1)``: the denoising corruption.
        Draws from ``generator``, else ``noise_source``, else torch's
        generator (``torch.manual_seed`` reproduces it)."""
        check_images(x, IMAGE_SHAPE, who="add_noise", floating=UNIT_IMAGES)
        if generator is None and self.noise_source is not None:
            noise = self.noise_source(tuple(x.shape), x.device, x.dtype)
        else:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (x + self.config.noise_factor * noise).clamp_(0.0, 1.0)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) -> (B, latent_dim). No corruption here (see forward)."""
        check_images(x, IMAGE_SHAPE, who="ConvAutoencoder.encode", floating=UNIT_IMAGES)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> logits (B, 1, 28, 28); the image is their sigmoid."""
        check_code(z, self.config.latent_dim, "ConvAutoencoder.decode")
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of x in [0, 1]; in training with ``denoising=True`` the
        encoder sees ``add_noise(x)`` instead of x."""
        check_images(x, IMAGE_SHAPE, who="ConvAutoencoder", floating=UNIT_IMAGES)
        if self.training and self.config.denoising:
            x = self.add_noise(x)
        return torch.sigmoid(self.decode(self.encoder(x)))  # (B, 1, 28, 28)

    # --------------------------------------------------------------- training
    def loss(self, x: Tensor) -> Tensor:
        """MSE (mean over pixels and batch) between the reconstruction and the
        clean x, as the seeds train it; differentiable."""
        return F.mse_loss(self(x), x)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return make_adam(self.parameters(), lr=self.config.lr,
                         weight_decay=self.config.weight_decay)

    def train_step(self, x: Tensor, opt: torch.optim.Optimizer) -> dict[str, Tensor]:
        """One optimizer step on batch x; returns ``{"loss": detached MSE}``.
        The caller chooses the mode (``model.train()``)."""
        opt.zero_grad(set_to_none=True)
        loss = self.loss(x)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}
