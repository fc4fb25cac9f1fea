"""Latent paths and the random streams of a run, shared by the trainers and
``gan-ext sample``/``eval``.

Every random draw outside the training step comes from its own
``torch.Generator``, never from the global RNGs, so drawing a grid or an
evaluation does not shift the training's random numbers (``--resume`` stays
exact). The stream ids are part of the results: changing one changes every
grid and metric a given ``--seed`` produces.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["GRID_STREAM", "EVAL_STREAM", "NOISE_STREAM", "DATA_STREAM", "FID_BACKEND_SEED",
           "EXAMPLES_DCGAN_EVAL_SEED", "INTERPOLATION_STEPS", "stream", "slerp",
           "interpolation_latents"]

# Offsets from the run's --seed: seed + id seeds the stream.
GRID_STREAM = 1    # the fixed inputs of the progress grids (gan families, vae)
EVAL_STREAM = 2    # the samples of the final evaluation (gan families)
NOISE_STREAM = 3   # the denoising autoencoder's input noise (the same at every step)
DATA_STREAM = 4    # the training sets drawn for the synthetic benchmarks (ring, grid, stacked-mnist)
# Seeds of samples drawn without a run seed at hand.
FID_BACKEND_SEED = 123         # `gan-ext eval --fid-backend`: the generated images
EXAMPLES_DCGAN_EVAL_SEED = 2   # `gan-ext eval` of a pytorch/examples netG file

INTERPOLATION_STEPS = 10       # latents per interpolation row (`sample --interpolate`)


def stream(seed: int, stream_id: int) -> torch.Generator:
    """The CPU generator of one stream of the run seeded ``seed``."""
    return torch.Generator().manual_seed(seed + stream_id)


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (White 2016), the usual path through a Gaussian
    latent space. z0, z1: (B, D); t: (T,) -> (B, T, D)."""
    a, b = z0[:, None], z1[:, None]
    cos = (torch.nn.functional.normalize(z0, dim=1) * torch.nn.functional.normalize(z1, dim=1)
           ).sum(1).clamp(-1 + 1e-6, 1 - 1e-6)[:, None, None]
    omega = torch.acos(cos)
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolation_latents(n: int, dim: int, generator: torch.Generator,
                          spherical: bool = True,
                          steps: int = INTERPOLATION_STEPS) -> Tuple[Tensor, int]:
    """max(1, n // steps) rows of ``steps`` latents from one N(0, I) draw to
    another: (rows * steps, dim), and the row length. Spherical (slerp) for
    the GANs' Gaussian z, linear for a VAE's posterior means."""
    rows = max(1, n // steps)
    z0 = torch.randn(rows, dim, generator=generator)
    z1 = torch.randn(rows, dim, generator=generator)
    t = torch.linspace(0, 1, steps)
    path = slerp(z0, z1, t) if spherical else (1 - t)[None, :, None] * z0[:, None] + t[None, :, None] * z1[:, None]
    return path.reshape(rows * steps, dim), steps
