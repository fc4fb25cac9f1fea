"""The mode-collapse benchmarks as trainers: ``ring`` and ``grid`` (2-D
mixtures of Gaussians) and ``stacked-mnist`` (1,000 modes), with the
papers' metrics (:mod:`gan_ext.metrics.modes`) in their evaluation and
scatter plots of the samples in the run folder."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .. import metrics
from ..data import load_mnist
from ..metrics.modes import MIXTURES, stacked_mnist
from ..models.modes import MixtureGAN, MixtureGANConfig, StackedMNISTConfig, StackedMNISTGAN
from .base import register
from .gan import GANTrainer
from .latents import DATA_STREAM, EVAL_STREAM, stream
from .monitor import pyplot, save_figure
from .options import MODEL_ARCHS

__all__ = ["MixtureTrainer", "RingTrainer", "GridTrainer", "StackedMNISTTrainer",
           "plot_points", "MIXTURE_TRAIN_POINTS", "STACKED_TRAIN_IMAGES"]

MIXTURE_TRAIN_POINTS = 100_000   # PacGAN's fixed training set
STACKED_TRAIN_IMAGES = {"veegan": 128_000, "unrolled": 1_000_000}


def plot_points(points: Tensor, centres: Tensor, path: str, title: str = "",
                limit: Optional[float] = None) -> str:
    """A scatter plot of 2-D ``points`` over the mixture's ``centres``."""
    fig, ax = pyplot().subplots(figsize=(5, 5))
    p = points.float().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4, color="tab:blue", label="samples")
    c = centres.float().numpy()
    ax.scatter(c[:, 0], c[:, 1], s=40, marker="x", color="tab:red", label="centres")
    if limit is None:
        limit = float(centres.abs().max()) * 1.5
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


class MixtureTrainer(GANTrainer):
    """The 2-D mixtures: 100,000 fixed points (PacGAN's training set), the
    ``--arch`` networks (default VEEGAN's), 2,500 samples evaluated."""

    model_class = MixtureGAN
    config_class = MixtureGANConfig
    grid_n = 2500
    eval_metrics = {"modes": "max", "high_quality": "max", "reverse_kl": "min"}
    best_metric = ("modes", "high_quality")   # the most modes, then the most high-quality samples

    @property
    def mixture(self):
        return MIXTURES[self.name]

    def make_config(self):
        return MixtureGANConfig.for_arch(self.opts.arch or MODEL_ARCHS[self.name][0],
                                         **self.train_config_kwargs())

    def train_data(self):
        x = self.mixture.sample(MIXTURE_TRAIN_POINTS, stream(self.opts.seed, DATA_STREAM))
        return (x[:self.opts.limit] if self.opts.limit else x,)

    def sample_grid(self):
        """The fixed-z samples (N, 2); pictured by :meth:`write_picture`."""
        return self.generate(self.fixed_z), 0

    def write_picture(self, points: Tensor, path: str, nrow: int = 0) -> str:
        """The progress picture of 2-D samples: a scatter plot over the centres."""
        return plot_points(points, self.mixture.centres, path, f"{self.name}: {len(points)} samples")

    def sample(self, n: int, interpolate: bool, generator: torch.Generator,
               inputs: Optional[Tensor] = None):
        if interpolate:
            raise ValueError(f"--interpolate does not apply to {self.name} (2-D points)")
        return self.generate(torch.randn(n, self.model.config.nz, generator=generator)), 0

    def evaluate(self, n: int) -> Dict[str, Any]:
        z = torch.randn(n, self.model.config.nz, generator=stream(self.opts.seed, EVAL_STREAM))
        return metrics.mixture_modes(self.generate(z), self.mixture)


@register
class RingTrainer(MixtureTrainer):
    name = "ring"


@register
class GridTrainer(MixtureTrainer):
    name = "grid"


@register
class StackedMNISTTrainer(GANTrainer):
    """Stacked MNIST: each training image three MNIST digits as R, G, B,
    drawn once with the run's seed (the loader holds the digit indices; the
    step looks the pixels up); 26,000 samples evaluated, each channel
    classified by the shipped MNIST classifier."""

    name = "stacked-mnist"
    model_class = StackedMNISTGAN
    config_class = StackedMNISTConfig
    grid_n = 64
    eval_metrics = {"kl": "min", "modes": "max"}
    best_metric = ("kl",)

    def make_config(self):
        kw = self.train_config_kwargs()
        o = self.opts
        if o.lr is not None and o.lr_g is None:   # --lr: both networks' rate
            kw["lr_g"] = o.lr
        if o.d_width is not None:
            kw["d_width"] = o.d_width
        return StackedMNISTConfig.for_arch(o.arch or MODEL_ARCHS[self.name][0], **kw)

    def image_shape(self):
        return (3, 28, 28)

    def _pool(self) -> Tuple[Tensor, Tensor]:
        """The digits the stacks are drawn from: MNIST train (unrolled
        setting), train + test (VEEGAN's); uint8 (M, 28, 28) and labels."""
        x, y = load_mnist("train", data_dir=self.opts.mnist_dir)
        if self.model.config.arch == "veegan":
            xt, yt = load_mnist("test", data_dir=self.opts.mnist_dir)
            x, y = torch.cat([x, xt]), torch.cat([y, yt])
        return x, y

    def train_data(self):
        pool, labels = self._pool()
        self.pixels = (pool.float() / 127.5 - 1.0).to(self.device)       # (M, 28, 28) in [-1, 1]
        n = self.opts.limit or STACKED_TRAIN_IMAGES[self.model.config.arch]
        g = stream(self.opts.seed, DATA_STREAM)
        idx = torch.randint(len(pool), (n, 3), generator=g)              # digit indices per channel
        return (idx,)

    def step(self, batches: List[Tuple[Tensor, ...]]) -> Dict[str, Tensor]:
        images = [(self.pixels[b[0]],) for b in batches]                 # (B, 3, 28, 28)
        return super().step(images)

    def evaluate(self, n: int) -> Dict[str, Any]:
        z = torch.randn(n, self.model.config.nz, generator=stream(self.opts.seed, EVAL_STREAM))
        return metrics.stacked_mnist_modes((self.generate(z) + 1) / 2)

    def sample_grid(self):
        return self.generate(self.fixed_z), 8


def real_stacked(n: int, seed: int = 0, mnist_dir: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """``n`` real stacked-MNIST images in [0, 1] (n, 3, 28, 28) and their modes
    (the perfect sampler of the benchmark)."""
    x, y = load_mnist("test", data_dir=mnist_dir)
    imgs, modes = stacked_mnist(n, x, y, torch.Generator().manual_seed(seed))
    return imgs.float() / 255.0, modes
