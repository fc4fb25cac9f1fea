"""The GAN families: ``gan`` (MLP), ``dcgan`` and ``cgan`` (class-conditional):
k D steps per G step, non-saturating or minimax G loss, one-sided label
smoothing; the models' own ``train_step`` with the fused losses."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import metrics
from ..data import MNIST_CLASSES, MNIST_SIZE, folder_source, pad_to
from ..models import (CGANConfig, ConditionalGAN, DCGAN, DCGANConfig, GAN, GANConfig)
from ..models.cures import EMA_SETTLED, mbd_spec
from ..models.stabilize import GP_LAMBDA, WGAN_GP_DEFAULTS
from . import _data
from .base import Trainer, register
from .architecture import gan_sizes
from .image_metrics import image_scores
from .options import R1_EVERY, diffaugment_policy
from .latents import EVAL_STREAM, GRID_STREAM, interpolation_latents, slerp, stream

__all__ = ["GANTrainer", "DCGANTrainer", "CGANTrainer", "slerp", "interpolation_latents",
           "gan_metrics", "GENERATE_BATCH"]

# Latents through G at a time: bounds the activations of a large --n.
GENERATE_BATCH = 500


@register
class GANTrainer(Trainer):
    name = "gan"
    model_class = GAN
    config_class = GANConfig
    progress_keys = ("d_loss", "g_loss")
    grid_n = 64
    samplers: Dict[str, Any] = {}   # train_step's sample_z/sample_labels (several processes)
    step_decay = True   # --decay-epochs: the LR decays per step

    @property
    def loss_groups(self) -> Dict[str, List[str]]:
        # train_step logs sigmoid(D) for the BCE loss, D's raw scores for the others.
        outputs = "probabilities" if self.opts.loss == "vanilla" else "raw scores"
        return {"losses": ["d_loss", "g_loss"],
                f"D outputs ({outputs})": ["d_real", "d_fake", "d_gen"],
                "R1 penalty (--r1)": ["r1"], "gradient penalty (--loss wgan-gp)": ["gp"]}

    # ---------------------------------------------------------- the model
    def image_shape(self) -> Tuple[int, int, int]:
        o = self.opts
        if o.data is None:
            return (1, MNIST_SIZE, MNIST_SIZE)
        return (o.channels or 1, o.image_size or MNIST_SIZE, o.image_size or MNIST_SIZE)

    def train_config_kwargs(self) -> Dict[str, Any]:
        """The TrainConfig fields every GAN family takes from the options.
        ``--loss wgan-gp`` brings the paper's k, Adam lr and betas
        (WGAN_GP_DEFAULTS: 5, 1e-4, (0, 0.9)) for every family, over the
        model's own; an explicit --k / --lr / --lr-d / --lr-g wins."""
        o = self.opts
        common = dict(WGAN_GP_DEFAULTS) if o.loss == "wgan-gp" else {}
        common.update(loss=o.loss, gp_lambda=o.gp_lambda if o.gp_lambda is not None else GP_LAMBDA)
        if o.k is not None:
            common["k"] = o.k
        common.update(g_steps=o.g_steps, minimax=o.g_loss == "minimax",
                      real_label=1.0 - o.label_smoothing,
                      pack=o.pack, minibatch_stddev=4 if o.minibatch_stddev else 0,
                      minibatch_discrimination=(mbd_spec(o.minibatch_discrimination)
                                                if o.minibatch_discrimination else None),
                      feature_matching=o.feature_matching, unrolled=o.unrolled,
                      unrolled_first_order=o.unrolled_first_order, ema=o.ema,
                      joint_batch=o.joint_batch, spectral_norm=o.spectral_norm,
                      diffaugment=diffaugment_policy(o.diffaugment), r1_gamma=o.r1,
                      r1_every=o.r1_every or R1_EVERY)
        for name in ("lr", "lr_d", "lr_g"):
            if getattr(o, name) is not None:
                common[name] = getattr(o, name)
        return common

    def make_config(self):
        c, s, _ = self.image_shape()
        return self.config_class(img_shape=(c, s, s), **gan_sizes(self.opts),
                                 **self.train_config_kwargs())

    def build(self, model_config: Optional[dict] = None) -> None:
        cfg = self.config_class(**model_config) if model_config else self.make_config()
        self.model = self.model_class(cfg).to(self.device)
        opt_g, opt_d = self.model.make_optimizers()
        self.optimizers = {"G": opt_g, "D": opt_d}
        g = stream(self.opts.seed, GRID_STREAM)
        self.fixed_z = torch.randn(self.grid_n, cfg.nz, generator=g).to(self.device)

    def extra_state(self) -> dict:
        # lazy R1's schedule; the moving average's update count (cures.ema_decay)
        return {"d_steps": self.model.d_steps, "ema_updates": self.model.ema_updates}

    def load_extra_state(self, state: dict) -> None:
        self.model.d_steps = int(state.get("d_steps", 0))
        # A checkpoint from before the count averaged at the constant decay: continue so.
        self.model.ema_updates = int(state.get("ema_updates", EMA_SETTLED))

    @property
    def batches_per_step(self) -> int:
        return self.model.config.k

    @property
    def batch_multiple(self) -> int:
        return self.model.config.pack

    @property
    def conditional(self) -> bool:
        return False

    # --------------------------------------------------------------- data
    def train_data(self):
        o = self.opts
        if o.data is None:
            x, y = _data.mnist_signed("train", o.mnist_dir)
            x = pad_to(x, self.image_shape()[-1], value=-1.0)                # (N, 1, S, S)
        else:   # read per batch (cgan refuses --data: no labels)
            c, s, _ = self.image_shape()
            return folder_source(o.data, _data.center(s), c, limit=o.limit, seed=o.seed)
        x, y = _data.limit(o.limit, x, y)
        return (x, y) if self.conditional else (x,)

    # --------------------------------------------------------------- step
    def step(self, batches: List[Tuple[Tensor, ...]]) -> Dict[str, Tensor]:
        opt_g, opt_d = self.optimizers["G"], self.optimizers["D"]
        reals = [b[0] for b in batches]
        labels = [b[1] for b in batches] if self.conditional else None
        return self.model.train_step(reals, opt_g, opt_d, labels=labels, **self.samplers)

    def distribute(self, ctx) -> None:
        """Draws the latents of every step through ``ctx``
        (:class:`gan_ext.train.distributed.Context`): the global batch's, this rank's share."""
        self.samplers = ctx.sampler_kwargs(self.model.config.nz,
                                           getattr(self.model.G, "num_classes", None))

    # ----------------------------------------------------------- sampling
    def generate(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """G's samples of ``z`` (and ``labels``), (N, C, H, W) in [-1, 1] on the
        CPU; in an evaluation on several processes each rank makes its share."""
        def rows(idx: Tensor) -> Tensor:
            out = []
            for i in range(0, len(idx), GENERATE_BATCH):
                j = idx[i:i + GENERATE_BATCH]
                zi = z[j].to(self.device)
                if self.conditional:
                    out.append(self.model.sampler(zi, labels[j].to(self.device)).float().cpu())
                else:
                    out.append(self.model.sampler(zi).float().cpu())
            return torch.cat(out)
        return self.map_rows(rows, len(z))                                # (N, C, H, W) in [-1, 1]

    def sample_grid(self):
        return self.generate(self.fixed_z), 8

    def sample(self, n: int, interpolate: bool, generator: torch.Generator,
               inputs: Optional[Tensor] = None):
        nz = self.model.config.nz
        if interpolate:
            z, steps = interpolation_latents(n, nz, generator)
            return self.generate(z), steps
        z = torch.randn(n, nz, generator=generator)
        return self.generate(z), max(1, math.isqrt(n - 1) + 1)

    # ---------------------------------------------------------- evaluation
    eval_metrics = {"mnist_fid": "min", "inception_score": "max", "class_min_frac": "max",
                    "class_max_frac": "min"}
    best_metric = ("mnist_fid",)
    metrics_need_default_data = True
    data_metrics = {"fid": "min", "kid": "min"}   # against the --data folder (image_metrics)
    data_best_metric = ("fid",)

    def evaluate(self, n: int) -> Dict[str, Any]:
        if self.opts.data is not None:
            return {"n": n, **image_scores(self, n, self.fid_backend)}
        g = stream(self.opts.seed, EVAL_STREAM)
        z = torch.randn(n, self.model.config.nz, generator=g)
        labels = torch.arange(n) % MNIST_CLASSES if self.conditional else None
        images = self.generate(z, labels)                                 # (N, 1, S, S)
        m = (images.shape[-1] - MNIST_SIZE) // 2                          # the MNIST padding
        images = images[..., m:m + MNIST_SIZE, m:m + MNIST_SIZE]
        return gan_metrics((images + 1) / 2, labels)                      # (N, 1, 28, 28)


def gan_metrics(images01: Tensor, labels: Optional[Tensor] = None) -> Dict[str, Any]:
    is_mean, is_std = metrics.inception_score(images01)
    cov = metrics.class_coverage(images01)
    out = {"n": len(images01), "inception_score": float(is_mean),
           "inception_score_std": float(is_std), "mnist_fid": float(metrics.mnist_fid(images01)),
           "class_fractions": [round(float(f), 4) for f in cov.fractions],
           "class_min_frac": float(cov.min_frac), "class_max_frac": float(cov.max_frac),
           "coverage_warnings": list(cov.warnings)}
    if labels is not None:
        out["label_accuracy"] = float(metrics.classifier_accuracy(images01, labels))
    return out


@register
class DCGANTrainer(GANTrainer):
    name = "dcgan"
    model_class = DCGAN
    config_class = DCGANConfig

    def image_shape(self):
        o = self.opts
        if o.data is None:
            # MNIST padded to 32x32 by default: the 3-stage DCGAN (ngf 64:
            # 256-128-64 channels). The 2-stage 28x28 one (128-64) plateaued
            # near classifier IS 6.3 in 3-5 epochs; 32x32 reached 7.5 in 3000
            # steps (benchmarks/RESULTS.md, quality runs).
            s = o.image_size or 32
            if s not in (28, 32):
                raise ValueError(f"--image-size must be 28 or 32 for dcgan on MNIST, got {s}")
            return (1, s, s)
        s = o.image_size or 64
        if s not in (28, 32, 64, 128):
            raise ValueError(f"--image-size must be 28, 32, 64 or 128 for dcgan, got {s}")
        return (o.channels or 3, s, s)

    def make_config(self):
        c, s, _ = self.image_shape()
        return DCGANConfig(nc=c, image_size=s, **gan_sizes(self.opts),
                           **self.train_config_kwargs())


@register
class CGANTrainer(DCGANTrainer):
    name = "cgan"
    model_class = ConditionalGAN
    config_class = CGANConfig
    grid_n = MNIST_CLASSES * 8    # a row of 8 per class
    eval_metrics = {**GANTrainer.eval_metrics, "label_accuracy": "max"}

    @property
    def conditional(self) -> bool:
        return True

    def image_shape(self):
        if self.opts.data is not None:
            raise ValueError("cgan trains on MNIST and its labels; --data is not supported for "
                             "cgan (use dcgan for an image folder)")
        return (1, MNIST_SIZE, MNIST_SIZE)

    def make_config(self):
        return CGANConfig(nc=1, image_size=MNIST_SIZE, num_classes=MNIST_CLASSES,
                          **gan_sizes(self.opts), **self.train_config_kwargs())

    def build(self, model_config: Optional[dict] = None) -> None:
        super().build(model_config)
        per = self.grid_n // MNIST_CLASSES
        self.fixed_labels = torch.arange(MNIST_CLASSES).repeat_interleave(per)  # class by row

    def sample_grid(self):
        return self.generate(self.fixed_z, self.fixed_labels), self.grid_n // MNIST_CLASSES

    def sample(self, n: int, interpolate: bool, generator: torch.Generator,
               inputs: Optional[Tensor] = None, labels: Optional[Sequence[int]] = None):
        """A class-by-row grid: row c holds class c (with --interpolate: a
        latent path per row, the class fixed). ``labels``: the classes of the
        rows (default: all 10)."""
        k = self.model.config.num_classes
        classes = list(range(k)) if labels is None else list(labels)
        bad = [c for c in classes if not 0 <= int(c) < k]
        if bad:
            raise ValueError(f"--label must be class numbers in [0, {k - 1}], got {bad[0]}")
        rows = len(classes)
        nz, per = self.model.config.nz, max(1, n // rows)
        if interpolate:
            z0 = torch.randn(rows, nz, generator=generator)
            z1 = torch.randn(rows, nz, generator=generator)
            z = slerp(z0, z1, torch.linspace(0, 1, per)).reshape(rows * per, nz)
        else:
            z = torch.randn(rows * per, nz, generator=generator)
        labels_t = torch.tensor(classes, dtype=torch.int64).repeat_interleave(per)
        return self.generate(z, labels_t), per
