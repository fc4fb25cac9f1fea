"""The autoencoder families: ``ae`` and ``dae`` (MSE, the denoising one
corrupts its input) and ``vae`` (the fused BCE + beta * KL)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .. import metrics
from ..data import MNIST_SIZE, folder_source, load_image_folder
from ..models import AEConfig, ConvAutoencoder, VAEConfig, build_vae
from . import _data
from .architecture import gan_sizes
from .base import Trainer, register
from .options import IW_K, IW_N, MODEL_ARCHS
from .latents import GRID_STREAM, INTERPOLATION_STEPS, NOISE_STREAM, interpolation_latents, stream

__all__ = ["AETrainer", "DAETrainer", "VAETrainer"]

# The seed of the importance-weighted NLL's draws (each image's stream derives from it).
IW_SEED = 0


class _UnitImages(Trainer):
    """MNIST (or a folder turned grey 28x28) in [0, 1]."""

    def train_data(self):
        o = self.opts
        if o.data is not None:   # read per batch
            return folder_source(o.data, _data.center(MNIST_SIZE), 1, limit=o.limit, seed=o.seed,
                                 unit=True)
        return _data.limit(o.limit, _data.mnist_unit("train", o.mnist_dir)[0])

    def test_images(self, n: int) -> Tensor:
        o = self.opts
        if o.data is not None:   # the folder's first n images
            return (load_image_folder(o.data, MNIST_SIZE, channels=1, limit=n) + 1) / 2
        return _data.mnist_unit("test", o.mnist_dir)[0][:n]

    def step(self, batches: List[Tuple[Tensor, ...]]) -> Dict[str, Tensor]:
        return self.model.train_step(batches[0][0], self.optimizers["model"])

    def build_fixed(self) -> None:
        self._fixed = None

    @property
    def fixed(self) -> Tensor:
        if getattr(self, "_fixed", None) is None:
            self._fixed = self.test_images(32).to(self.device)
        return self._fixed


@register
class AETrainer(_UnitImages):
    name = "ae"
    loss_groups = {"reconstruction MSE": ["loss"]}
    progress_keys = ("loss",)
    denoising = False
    eval_metrics = {"test_mse": "min"}
    best_metric = ("test_mse",)

    def build(self, model_config: Optional[dict] = None) -> None:
        if model_config:
            cfg = AEConfig(**model_config)
        else:
            cfg = AEConfig(denoising=self.denoising, **gan_sizes(self.opts, "latent_dim"),
                           **({"lr": self.opts.lr} if self.opts.lr is not None else {}))
        self.model = ConvAutoencoder(cfg).to(self.device)
        self.optimizers = {"model": self.model.configure_optimizer()}

    def distribute(self, ctx) -> None:
        """The denoising noise of the global batch from the shared generator,
        this rank's share: N processes corrupt as one process does."""
        if self.model.config.denoising:
            self.model.noise_source = ctx.shared_normal

    def _inputs(self, x: Tensor) -> Tensor:
        if not self.model.config.denoising:
            return x
        g = stream(self.opts.seed, NOISE_STREAM)
        noise = torch.randn(x.shape, generator=g).to(x.device)
        return (x + self.model.config.noise_factor * noise).clamp(0, 1)

    def sample_grid(self):
        """Rows of 8: input (noisy for dae), reconstruction."""
        x = self._inputs(self.fixed)
        rec = self.model(x)
        rows = []
        for i in range(0, len(x), 8):
            rows += [x[i:i + 8], rec[i:i + 8]]
        return torch.cat(rows).float().cpu() * 2 - 1, 8

    def sample(self, n: int, interpolate: bool, generator: torch.Generator,
               inputs: Optional[Tensor] = None, raw: bool = False):
        """Rows of inputs over reconstructions (``raw``: the reconstructions
        alone), or with ``interpolate`` decoded latent paths."""
        x = (inputs if inputs is not None else self.test_images(max(n, 2))).to(self.device)
        if interpolate:
            rows, steps = max(1, n // INTERPOLATION_STEPS), INTERPOLATION_STEPS
            z = self.model.encode(x[: 2 * rows])
            t = torch.linspace(0, 1, steps, device=z.device)[None, :, None]
            path = (1 - t) * z[:rows, None] + t * z[rows:2 * rows, None]
            out = torch.sigmoid(self.model.decode(path.reshape(-1, z.shape[1])))
            return out.float().cpu() * 2 - 1, steps
        x = self._inputs(x[:n])
        rec = self.model(x)
        if raw:
            return rec.float().cpu() * 2 - 1, 0
        rows = []
        for i in range(0, len(x), 8):
            rows += [x[i:i + 8], rec[i:i + 8]]
        return torch.cat(rows).float().cpu() * 2 - 1, 8

    def evaluate(self, n: int) -> Dict[str, Any]:
        x = self.test_images(n)
        return {"n": len(x), "test_mse": float(metrics.ae_test_mse(self.model, x))}


@register
class DAETrainer(AETrainer):
    name = "dae"
    denoising = True


@register
class VAETrainer(_UnitImages):
    name = "vae"
    # The loss is a batch sum (BCE summed over pixels and images + beta KL):
    # the global batch's gradient is the sum of the ranks'.
    grad_reduction = "sum"
    summed_stats = ("loss", "recon", "kl")
    eval_metrics = {"test_nelbo_nats": "min", "test_iw_nll_nats": "min",
                    "test_iw_nelbo_nats": "min"}
    best_metric = ("test_nelbo_nats",)
    loss_groups = {"negative ELBO terms (nats per image)":
                   ["recon_per_image", "kl_per_image", "loss_per_image"]}
    progress_keys = ("loss_per_image", "kl_per_image")

    def build(self, model_config: Optional[dict] = None) -> None:
        if model_config:
            cfg = VAEConfig(**model_config)
        else:
            cfg = VAEConfig.for_arch(self.opts.arch or MODEL_ARCHS[self.name][0],
                                     beta=float(self.opts.beta),
                                     **gan_sizes(self.opts, "latent_dim"),
                                     **({"lr": self.opts.lr} if self.opts.lr is not None else {}))
        self.model = build_vae(cfg).to(self.device)
        self.optimizers = {"model": self.model.configure_optimizer()}

    def _decode(self, z: Tensor) -> Tensor:
        c = self.model.config
        return torch.sigmoid(self.model.decode(z.to(self.device))).reshape(
            len(z), *c.image_shape).float().cpu() * 2 - 1

    def sample_grid(self):
        g = stream(self.opts.seed, GRID_STREAM)
        z = torch.randn(64, self.model.config.latent_dim, generator=g)
        return self._decode(z), 8

    def sample(self, n: int, interpolate: bool, generator: torch.Generator,
               inputs: Optional[Tensor] = None):
        d = self.model.config.latent_dim
        if interpolate:
            z, steps = interpolation_latents(n, d, generator, spherical=False)
            return self._decode(z), steps
        z = torch.randn(n, d, generator=generator)
        return self._decode(z), max(1, math.isqrt(n - 1) + 1)

    @classmethod
    def metric_names(cls, opts) -> Optional[Dict[str, str]]:
        names = super().metric_names(opts)
        if opts.iw_n == 0:   # no importance-weighted estimate
            names = {k: v for k, v in names.items() if not k.startswith("test_iw_")}
        return names

    def evaluate(self, n: int) -> Dict[str, Any]:
        """The test -ELBO (analytic KL + one sampled z per image, seed 0) on
        n images, and the importance-weighted NLL with the K-sample -ELBO of
        the same draws on the first ``--iw-n`` of them (default min(IW_N, n))."""
        x = self.test_images(n)
        out = {"n": len(x), "test_nelbo_nats": float(metrics.vae_test_nelbo(self.model, x))}
        iw_n = min(IW_N, n) if self.opts.iw_n is None else self.opts.iw_n
        if iw_n:
            out.update(self.importance_nll(iw_n, self.opts.iw_k or IW_K))
        return out

    def importance_nll(self, n: int, k: int) -> Dict[str, Any]:
        """``gan_ext.metrics.vae_importance_nll`` with K = k on the first n test
        images (split across the ranks on several processes: each image's
        draws are its own, so the split changes nothing)."""
        x = self.test_images(n)

        def rows(idx: Tensor) -> Tensor:   # (len(idx), 2) float64: nll, nelbo per image
            est = metrics.vae_importance_nll(self.model, x[idx], k=k, seed=IW_SEED,
                                             per_image=True, first_index=int(idx[0]))
            return torch.stack([est.nll, est.nelbo], 1)

        per = self.map_rows(rows, len(x))
        return {"iw_k": k, "iw_n": len(x), "test_iw_nll_nats": per[:, 0].mean().item(),
                "test_iw_nelbo_nats": per[:, 1].mean().item()}
