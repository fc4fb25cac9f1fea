"""The options of a training run (``gan-ext train``), as one dataclass that is
saved in ``config.json`` and in every checkpoint."""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Optional

__all__ = ["MODELS", "TrainOptions", "G_LOSSES", "DEVICES", "RESUMABLE_OVERRIDES"]

MODELS = ("gan", "dcgan", "cgan", "ae", "dae", "vae", "cyclegan", "pix2pix")
G_LOSSES = ("non-saturating", "minimax")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("fused", "reference")

# What a resumed run may change; everything else comes from the checkpoint.
RESUMABLE_OVERRIDES = ("steps", "epochs", "decay_epochs", "sample_every", "log_every",
                       "checkpoint_every", "eval_n", "progress", "device", "amp", "backend")


@dataclass
class TrainOptions:
    model: str
    data: Optional[str] = None           # image folder / CycleGAN root / pix2pix root; None: MNIST
    mnist_dir: Optional[str] = None      # folder with the MNIST IDX files (default: cache/offline)
    steps: Optional[int] = None          # total optimizer iterations (G steps for GANs)
    epochs: Optional[int] = None         # epochs (cyclegan/pix2pix: at the constant LR)
    decay_epochs: Optional[int] = None   # cyclegan/pix2pix: epochs of linear LR decay to 0
    batch_size: Optional[int] = None     # None: the family's default
    out: Optional[str] = None            # run folder; None: runs/<model>
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = False                    # bf16 autocast (CUDA only)
    backend: str = "fused"
    k: int = 1                           # GANs: D steps per G step
    g_loss: str = "non-saturating"       # GANs: "non-saturating" | "minimax"
    label_smoothing: float = 0.0         # GANs: real label = 1 - label_smoothing
    beta: float = 1.0                    # VAE: weight of the KL term
    lr: Optional[float] = None           # None: the paper's (the model config's) default
    image_size: Optional[int] = None     # --data: the size images are resized/cropped to
    channels: Optional[int] = None       # --data (gan/dcgan): 1 or 3
    direction: str = "AtoB"              # pix2pix --data: which half is the input
    limit: Optional[int] = None          # use at most this many training images
    sample_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 1000
    eval_n: int = 2000                   # samples for the final evaluation; 0: none
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        for name in ("steps", "epochs", "batch_size", "limit", "image_size"):
            v = getattr(self, name)
            if v is not None:
                _int(name, v, 1)
        if self.decay_epochs is not None:
            _int("decay_epochs", self.decay_epochs, 0)
        for name in ("sample_every", "log_every", "checkpoint_every", "k"):
            _int(name, getattr(self, name), 1)
        _int("eval_n", self.eval_n, 0)
        _int("seed", self.seed, 0)
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.g_loss not in G_LOSSES:
            raise ValueError(f"g_loss must be one of {G_LOSSES}, got {self.g_loss!r}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not float(self.beta) >= 0.0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.lr is not None and not float(self.lr) > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.channels is not None and self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be AtoB or BtoA, got {self.direction!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
