"""The VAE's log-likelihood: the importance-weighted estimate of Burda et al.
(2016), the standard MNIST likelihood measure,

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k,
    z_k ~ q(z|x), k = 1..K,

reported as a negative log-likelihood in nats per image. It is a stochastic
lower bound of log p(x) (so the NLL is an upper bound of -log p(x)) that
tightens as K grows, and its expectation is never below the ELBO: with K = 1
it is the ELBO. The papers use K = 5,000 (Burda et al.) or 1,000 on all 10,000
test images.

Determinism: the draws of image i come from its own generator, seeded from
``(seed, i)``, so an image's estimate does not depend on the batch size, the
chunking of K, the device, or which other images are evaluated (the first n
images give the same per-image values as a longer run). The log weights are
float64 and combined with ``logsumexp``; the decoder runs in the model's
dtype on at most ``max_latents`` latents at a time.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Union

import torch
from torch import Tensor, nn

from ._checks import check_int, model_device
from .families import _check_vae, _eval_mode, _unit_batch

__all__ = ["IWEstimate", "vae_importance_nll", "image_seed"]

_MASK = 2 ** 63 - 1


class IWEstimate(NamedTuple):
    """Nats per image, from the same K draws of each image: ``nll`` the
    importance-weighted -log p(x), ``nelbo`` the K-sample average of -log w
    (the -ELBO it tightens; ``nll <= nelbo`` image by image). Floats (means
    over the images) or (N,) float64 tensors with ``per_image=True``."""
    nll: Union[float, Tensor]
    nelbo: Union[float, Tensor]


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s draws: a SplitMix64 mix of (seed, index),
    so neighbouring images and seeds get unrelated streams."""
    x = (seed * 0x9E3779B97F4A7C15 + index + 1) & (2 ** 64 - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2 ** 64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2 ** 64 - 1)
    return (x ^ (x >> 31)) & _MASK


def _draws(first: int, count: int, k: int, dim: int, seed: int) -> Tensor:
    """eps (count, k, dim), float64, for images first .. first + count - 1."""
    out = torch.empty(count, k, dim, dtype=torch.float64)
    for j in range(count):
        g = torch.Generator().manual_seed(image_seed(seed, first + j))
        out[j] = torch.randn(k, dim, generator=g, dtype=torch.float64)
    return out


def vae_importance_nll(model: nn.Module, images_unit, k: int = 1000, seed: int = 0,
                       max_latents: int = 4096, per_image: bool = False,
                       first_index: int = 0) -> IWEstimate:
    """Importance-weighted NLL and the K-sample -ELBO of ``model`` (a
    ``gan_ext.models.vae`` VAE or ConvVAE, run in eval mode) on
    ``images_unit`` (float (N, C, H, W) in [0, 1], or (N, 784) for the MLP
    VAE), in nats per image, with K = ``k`` draws from q(z|x) per image.

    The likelihood is the decoder's Bernoulli on the grey levels, the VAE's
    training loss; on binarized MNIST the same model would give other numbers.
    ``max_latents`` bounds the latents decoded at once (memory);
    ``first_index`` is the index of ``images_unit[0]`` in the evaluated set
    (its draws' seed: a share of the set gives the values of the whole)."""
    _check_vae(model, "log_importance_weights(x, eps)")
    k = check_int("k", k)
    seed = check_int("seed", seed, 0)
    max_latents = check_int("max_latents", max_latents)
    first_index = check_int("first_index", first_index, 0)
    x = _unit_batch(images_unit, "images_unit")
    device = model_device(model)
    dim = model.config.latent_dim
    images = max(1, min(x.shape[0], max_latents // k))   # per encoder pass
    chunk = max(1, min(k, max_latents // images))         # draws per decoder pass
    # Results go into buffers allocated once: small tensors kept between the
    # decoder's big temporaries fragment glibc's heap (gigabytes over 10,000 images).
    nll_t = torch.empty(x.shape[0], dtype=torch.float64)
    nelbo_t = torch.empty(x.shape[0], dtype=torch.float64)
    logw = torch.empty(images, k, dtype=torch.float64)
    with _eval_mode(model):
        for i in range(0, x.shape[0], images):
            b = x[i:i + images].to(device)
            B = b.shape[0]
            stats = model.encode_stats(b)
            eps = _draws(first_index + i, B, k, dim, seed)
            for j in range(0, k, chunk):
                logw[:B, j:j + chunk] = model.log_importance_weights(b, eps[:, j:j + chunk], stats)
            torch.logsumexp(logw[:B], dim=1, out=nll_t[i:i + B])
            nll_t[i:i + B].neg_().add_(math.log(k))
            torch.mean(logw[:B], dim=1, out=nelbo_t[i:i + B]).neg_()
    if not bool(torch.isfinite(nll_t).all()):
        raise ValueError("the importance weights are not finite (NaN or inf in the model's "
                         "outputs)")
    if per_image:
        return IWEstimate(nll_t, nelbo_t)
    return IWEstimate(nll_t.mean().item(), nelbo_t.mean().item())
