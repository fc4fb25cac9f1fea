"""The options of a training run (``gan-ext train``), as one dataclass that is
saved in ``config.json`` and in every checkpoint."""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .._validate import check_int
from ..data import PREPROCESS_MODES
from ..models.diffaugment import parse_policy
from ..models.cures import mbd_spec
from ..models import stabilize
from . import architecture
from ..models.gan import LOSS_MODES as LOSSES

__all__ = ["MODELS", "TrainOptions", "G_LOSSES", "DEVICES", "RESUMABLE_OVERRIDES", "DEFAULTS",
           "LENGTH_OPTIONS", "RUN_OPTIONS", "RECIPE", "model_defaults", "recipe_text",
           "check_applicable", "check_resume", "defaults_text",
           "MAX_SEED", "DEMO_STEPS", "GAN_MODELS", "R1_EVERY", "diffaugment_policy",
           "LOSSES", "IW_K", "IW_N"]

MODELS = ("gan", "dcgan", "cgan", "ae", "dae", "vae", "cyclegan", "pix2pix", "ring", "grid",
          "stacked-mnist")
G_LOSSES = ("non-saturating", "minimax")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("fused", "reference")
MAX_SEED = 2 ** 63 - 1   # torch.manual_seed takes a 64-bit signed seed

# What `make demo` trains (`gan-ext train dcgan --steps DEMO_STEPS`): the
# Makefile, the CLI's examples and the README say this number (a test checks).
DEMO_STEPS = 1800

# The one table of per-model defaults: the trainers, the CLI's help and the
# README's option list read it (a test checks the README against it).
#   epochs: at the constant LR; decay_epochs: then linear decay to 0 (cyclegan,
#   pix2pix); limit: training images used from the default (MNIST) data.
#   ema, r1, amp (RECIPE): option defaults of `gan-ext train` for that model
#   (model_defaults), each left out where the user gives the option.
DEFAULTS = {
    "gan":      {"epochs": 30, "batch_size": 64},
    # The quality recipe (issue 18; RESULTS.md): 28 epochs, G's moving average,
    # lazy R1 gamma 1, bf16 autocast where the hardware has it: IS 9.19 on MNIST.
    "dcgan":    {"epochs": 28, "batch_size": 64, "ema": 0.999, "r1": 1.0, "amp": True},
    "cgan":     {"epochs": 14, "batch_size": 64},
    "ae":       {"epochs": 10, "batch_size": 128},
    "dae":      {"epochs": 10, "batch_size": 128},
    "vae":      {"epochs": 10, "batch_size": 128},
    "cyclegan": {"epochs": 10, "decay_epochs": 10, "batch_size": 4, "limit": 1000},
    "pix2pix":  {"epochs": 5, "decay_epochs": 5, "batch_size": 16, "limit": 10000},
    # The mode-collapse benchmarks (gan_ext.metrics.modes): eval_n is the protocol's
    # sample count. ring/grid: 100,000 points, batch 500 (VEEGAN's; PacGAN's code used
    # 100), 200 steps per epoch: 30,000 and 40,000 steps, the benchmark table's lengths.
    "ring":     {"epochs": 150, "batch_size": 500, "eval_n": 2500},
    "grid":     {"epochs": 200, "batch_size": 500, "eval_n": 2500},
    "stacked-mnist": {"epochs": 1, "batch_size": 128, "eval_n": 26000},
}


RECIPE = ("ema", "r1", "amp")


def model_defaults(model: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """The RECIPE options ``model``'s DEFAULTS set that ``given`` (the
    user's options: command line and config file) leaves out; R1 is left
    out where it cannot combine (--loss wgan-gp, --unrolled: refused when
    asked for). Not for ``--resume``, which continues the saved run's."""
    out = {}
    for name in RECIPE:
        if name in given or name not in DEFAULTS.get(model, {}):
            continue
        if name == "r1" and stabilize.r1_conflict(given.get("loss"), given.get("unrolled")):
            continue
        out[name] = DEFAULTS[model][name]
    return out


def recipe_text(recipe: Dict[str, Any]) -> str:
    """'--ema 0.999 --r1 1 --amp (leave one out with --ema 0, --r1 0,
    --no-amp)' for model_defaults' options: a switch is left out by its
    --no- form, a number by 0."""
    on = " ".join(f"--{k}" if v is True else f"--{k} {v:g}" for k, v in recipe.items())
    off = ", ".join(f"--no-{k}" if v is True else f"--{k} 0" for k, v in recipe.items())
    return f"{on} (leave one out with {off})"


def defaults_text(key: str) -> str:
    """'gan 30, dcgan 14, ...' for one DEFAULTS key (the CLI's help)."""
    return ", ".join(f"{m} {d[key]}" for m, d in DEFAULTS.items() if key in d)


# The options that set how long a run trains. On --resume a given one replaces
# the saved one (the new total), and --epochs alone clears a saved --steps.
LENGTH_OPTIONS = ("steps", "epochs", "decay_epochs")
# Options about how a run is carried out, not what it trains: a resume may
# change them freely.
RUN_OPTIONS = ("sample_every", "log_every", "checkpoint_every", "eval_n", "eval_every", "progress",
               "device", "amp", "backend", "threads", "mnist_dir", "workers", "iw_k", "iw_n")
RESUMABLE_OVERRIDES = LENGTH_OPTIONS + RUN_OPTIONS

# The reference networks of the benchmarks (--arch), the default first.
MODEL_ARCHS = {"ring": ("veegan", "pacgan"), "grid": ("veegan", "pacgan"),
               "stacked-mnist": ("unrolled", "veegan"), "vae": ("mlp", "conv")}

# Options that only some models use: option -> (models, needs --data). An
# option given for another model is refused, never silently ignored.
GAN_MODELS = ("gan", "dcgan", "cgan", "ring", "grid", "stacked-mnist")
# PacGAN packs unconditional samples: not cgan's (a pack has no one label).
_PACKED = tuple(m for m in GAN_MODELS if m != "cgan")
_FOLDER_MODELS = tuple(m for m in MODELS if m not in ("cgan", "ring", "grid", "stacked-mnist"))
_APPLIES = {
    "k": (GAN_MODELS, False),
    "g_steps": (GAN_MODELS, False),
    "g_loss": (GAN_MODELS, False),
    "label_smoothing": (GAN_MODELS, False),
    "pack": (_PACKED, False),
    "minibatch_stddev": (GAN_MODELS, False),
    "minibatch_discrimination": (GAN_MODELS, False),
    "feature_matching": (GAN_MODELS, False),
    "unrolled": (GAN_MODELS, False),
    "unrolled_first_order": (GAN_MODELS, False),
    "ema": (GAN_MODELS, False),
    "joint_batch": (GAN_MODELS, False),
    "lr_d": (GAN_MODELS, False),
    "lr_g": (GAN_MODELS, False),
    "spectral_norm": (GAN_MODELS, False),
    # DiffAugment augments images: not ring/grid's 2-D points.
    "diffaugment": (tuple(m for m in GAN_MODELS if m not in ("ring", "grid")), False),
    "r1": (GAN_MODELS, False),
    "r1_every": (GAN_MODELS, False),
    "loss": (GAN_MODELS, False),
    "gp_lambda": (GAN_MODELS, False),
    # gan's MLPs have no batch norm; the others are checked once built.
    "sync_bn": (tuple(m for m in MODELS if m != "gan"), False),
    "arch": (("ring", "grid", "stacked-mnist", "vae"), False),
    "d_width": (("stacked-mnist",), False),
    "beta": (("vae",), False),
    "iw_k": (("vae",), False),
    "iw_n": (("vae",), False),
    "decay_epochs": (("cyclegan", "pix2pix") + GAN_MODELS, False),
    "data": (_FOLDER_MODELS, False),
    "image_size": (("gan", "dcgan", "cyclegan", "pix2pix"), False),
    "channels": (("gan", "dcgan"), True),
    "direction": (("pix2pix",), True),
    # Architecture and starting weights (train/architecture.py, train/init_weights.py):
    # the benchmarks' networks are fixed by --arch; gan's MLP has no conv widths.
    "nz": (("gan", "dcgan", "cgan", "ae", "dae", "vae"), False),
    **{name: (("dcgan", "cgan", "cyclegan", "pix2pix"), False) for name in ("ngf", "ndf")},
    **{name: (("cyclegan", "pix2pix"), False)
       for name in ("netG", "n_blocks", "netD", "n_layers_d", "norm")},
    **{name: (GAN_MODELS + ("cyclegan", "pix2pix"), False) for name in ("init_g", "init_d")},
    # Image folders (--data): streamed by worker processes; the official
    # CycleGAN/pix2pix preprocessing (gan_ext.data.preprocess).
    "workers": (_FOLDER_MODELS, True),
    "preprocess": (("cyclegan", "pix2pix"), True),
    "load_size": (("cyclegan", "pix2pix"), True),
    "crop_size": (("cyclegan", "pix2pix"), True),
    "no_flip": (("cyclegan", "pix2pix"), True),
}
# The VAE's importance-weighted NLL (gan_ext.metrics.likelihood): IW_K draws per
# image (the papers' K) on the first min(IW_N, --eval-n) test images unless
# --iw-k/--iw-n; the full measure, all 10,000 images, takes minutes on a CPU.
IW_K = 1000
IW_N = 1000
# Lazy R1: the penalty every R1_EVERY-th D step (StyleGAN2's interval) unless --r1-every.
R1_EVERY = 16

# Where image_size needs --data (the default data's size is fixed).
_IMAGE_SIZE_NEEDS_DATA = ("gan", "pix2pix", "cyclegan")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_applicable(opts: "TrainOptions", explicit) -> None:
    """ValueError naming the first option the user gave that ``opts.model``
    does not use."""
    for name in sorted(set(explicit) & set(_APPLIES)):
        models, needs_data = _APPLIES[name]
        if opts.model not in models:
            raise ValueError(f"{_flag(name)} does not apply to {opts.model} (it is an option of "
                             f"{', '.join(models)})")
        if (needs_data or (name == "image_size" and opts.model in _IMAGE_SIZE_NEEDS_DATA)) \
                and opts.data is None:
            raise ValueError(f"{_flag(name)} applies to {opts.model} only with --data (the "
                             "default MNIST data has a fixed size and layout)")
    architecture.check_combination(opts, explicit)
    if "g_loss" in explicit and opts.loss != "vanilla":   # minimax is checked in TrainOptions
        raise ValueError(f"--g-loss applies to --loss vanilla only (the BCE loss's two generator "
                         f"objectives), got --loss {opts.loss}")
    _check_preprocess(opts)


def _check_preprocess(opts: "TrainOptions") -> None:
    """Size options that the --preprocess mode would not use are refused.
    cyclegan/pix2pix with --data train at --crop-size, which --image-size
    names as well (refused when both are given and differ)."""
    if opts.data is None or opts.model not in ("cyclegan", "pix2pix"):
        return
    mode = opts.preprocess or "resize_and_crop"
    if opts.image_size is not None and opts.crop_size not in (None, opts.image_size):
        raise ValueError(f"--image-size {opts.image_size} and --crop-size {opts.crop_size}: for "
                         f"{opts.model} with --data both name the size trained at; give one")
    if opts.load_size is not None and mode in ("crop", "none"):
        raise ValueError(f"--load-size does not apply to --preprocess {mode} (it "
                         f"{'crops' if mode == 'crop' else 'keeps'} the image as it is)")
    size = "--crop-size" if opts.crop_size is not None else "--image-size"
    if mode == "none" and opts.model == "cyclegan" and (opts.crop_size or opts.image_size):
        raise ValueError(f"{size} does not apply to cyclegan with --preprocess none (the images "
                         "keep their size, rounded to a multiple of 4)")


def check_resume(saved: "TrainOptions", given: "TrainOptions", explicit) -> None:
    """ValueError naming the first option a ``--resume`` may not change (it
    would break the exact continuation or mix two runs' settings)."""
    for name in sorted(set(explicit) - set(RESUMABLE_OVERRIDES) - {"resume", "out", "model"}):
        old, new = getattr(saved, name), getattr(given, name)
        if old != new:
            raise ValueError(f"{_flag(name)} cannot change on --resume (the run was trained "
                             f"with {old!r}, asked {new!r}): a resume continues the saved run "
                             "exactly; start a new run in another --out instead")


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
    amp: bool = False                    # bf16 autocast (CUDA, or a CPU with native bf16)
    backend: str = "fused"
    k: Optional[int] = None              # GANs: D steps per G step (None: 1; wgan-gp 5)
    g_loss: str = "non-saturating"       # GANs: "non-saturating" | "minimax" (--loss vanilla)
    g_steps: int = 1                     # GANs: G steps per iteration (same latents)
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
    eval_n: Optional[int] = None         # samples for the final evaluation (None: the
    #                                      model's, DEFAULTS or 2000); 0: none
    eval_every: Optional[int] = None     # also evaluate every N steps (train/evaluation.py)
    keep_best: Optional[str] = None      # metric(s) whose best evaluation is kept as best.pt
    progress: bool = True                # progress bar; without it a log line per log_every
    overwrite: bool = False              # replace a finished or different run in `out`
    threads: Optional[int] = None        # torch CPU threads (None: what torch uses)
    # Mode-collapse cures (gan_ext.models.cures) and the stacked-MNIST settings.
    pack: int = 1                        # PacGAN: D judges this many samples concatenated
    minibatch_stddev: bool = False       # ProGAN's minibatch stddev feature map (group 4)
    minibatch_discrimination: Optional[str] = None   # "B,C[,mean]": Salimans et al.'s B kernels of dim C
    feature_matching: bool = False       # G matches D's mean features on real data
    unrolled: int = 0                    # G against D after K look-ahead steps (Metz et al.)
    unrolled_first_order: bool = False   # the look-ahead without second derivatives
    ema: Optional[float] = None          # decay of G's moving average used for sampling
    joint_batch: bool = False            # D scores real and fake in one call (shared BN stats)
    arch: Optional[str] = None           # the benchmarks' networks (MODEL_ARCHS; None: the first)
    d_width: Optional[float] = None      # stacked-mnist --arch unrolled: D's widths over G's (0.25)
    sync_bn: bool = False                # several processes: batch statistics over all ranks
    # Modern training (gan_ext.models.stabilize): TTUR, spectral norm, DiffAugment, R1.
    lr_d: Optional[float] = None         # D's Adam learning rate (None: --lr's, or the model's)
    lr_g: Optional[float] = None         # G's
    spectral_norm: bool = False          # spectral normalisation of D's conv/linear weights
    diffaugment: Optional[str] = None    # DiffAugment policies, e.g. "color,translation,cutout"
    r1: float = 0.0                      # R1 penalty gamma on real data; 0: off
    r1_every: Optional[int] = None       # lazy R1 interval (None: R1_EVERY)
    # Architecture (train/architecture.py; None: the model's default) and the
    # weights a new run starts from (train/init_weights.py).
    nz: Optional[int] = None             # latent size (ae/dae/vae: latent_dim)
    ngf: Optional[int] = None            # G's base width
    ndf: Optional[int] = None            # D's base width
    netG: Optional[str] = None           # cyclegan/pix2pix: resnet_9blocks ... unet_256
    n_blocks: Optional[int] = None       # residual blocks of a resnet generator
    netD: Optional[str] = None           # cyclegan/pix2pix: basic | n_layers | pixel
    n_layers_d: Optional[int] = None     # netD n_layers: the PatchGAN's depth
    norm: Optional[str] = None           # cyclegan/pix2pix: batch | instance | none
    init_g: Optional[str] = None         # G's starting weights: file(s) or folder
    init_d: Optional[str] = None         # D's
    # Image folders (--data) are read per batch by worker processes
    # (gan_ext.data.stream); cyclegan/pix2pix preprocess as the official code.
    workers: Optional[int] = None        # loader processes (None: min(4, CPUs)); 0: this one
    preprocess: Optional[str] = None     # None: resize_and_crop (gan_ext.data.PREPROCESS_MODES)
    load_size: Optional[int] = None      # None: 286 for crop 256 (the same ratio for others)
    crop_size: Optional[int] = None      # the size trained at (= --image-size); None: 256
    no_flip: bool = False                # no random horizontal flips
    # The adversarial loss; wgan-gp: Wasserstein + gradient penalty (stabilize.py).
    loss: str = "vanilla"                # LOSSES
    gp_lambda: Optional[float] = None    # wgan-gp: the penalty's weight (None: GP_LAMBDA)
    # VAE evaluation: the importance-weighted NLL (None: IW_K, and min(IW_N, eval n); iw_n 0: off).
    iw_k: Optional[int] = None           # draws from q(z|x) per image
    iw_n: Optional[int] = None           # test images (the first ones)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        for name in ("steps", "epochs", "batch_size", "limit", "image_size", "threads",
                     "eval_every", "load_size", "crop_size", "iw_k"):
            v = getattr(self, name)
            if v is not None:
                check_int(name, v, 1)
        if self.decay_epochs is not None:
            check_int("decay_epochs", self.decay_epochs, 0)
        for name in ("sample_every", "log_every", "checkpoint_every", "g_steps"):
            check_int(name, getattr(self, name), 1)
        if self.k is not None:
            check_int("k", self.k, 1)
        for name in ("eval_n", "iw_n"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 0)
        check_int("pack", self.pack, 1)
        if self.pack > 8:
            raise ValueError(f"pack must be at most 8 (PacGAN packs 2-4), got {self.pack}")
        check_int("unrolled", self.unrolled, 0)
        if self.minibatch_discrimination is not None:
            mbd_spec(self.minibatch_discrimination)
        if self.ema is not None and _float("ema", self.ema) == 0.0:
            self.ema = None   # --ema 0: no moving average (where a model's default has one)
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must be a decay in (0, 1), e.g. 0.999 (0: none), got {self.ema}")
        if (self.arch is not None and self.model in MODEL_ARCHS  # else: check_applicable says
                and self.arch not in MODEL_ARCHS[self.model]):
            raise ValueError(f"arch must be one of {', '.join(MODEL_ARCHS[self.model])} "
                             f"for {self.model}, got {self.arch!r}")
        if self.d_width is not None:
            if not 0.0 < _float("d_width", self.d_width) <= 4.0:
                raise ValueError(f"d_width must be in (0, 4], got {self.d_width}")
            if self.arch not in (None, "unrolled"):
                raise ValueError(f"--d-width applies to --arch unrolled only (the VEEGAN "
                                 f"setting's D is fixed), got --arch {self.arch}")
        if self.minibatch_stddev and self.batch_size is not None and self.batch_size % 4:
            raise ValueError(f"--minibatch-stddev takes groups of 4 samples: --batch-size must be "
                             f"a multiple of 4, got {self.batch_size}")
        if self.unrolled_first_order and not self.unrolled:
            raise ValueError("--unrolled-first-order needs --unrolled K (K >= 1 look-ahead steps)")
        check_int("seed", self.seed, 0)
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be at most 2**63 - 1, got {self.seed}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.g_loss not in G_LOSSES:
            raise ValueError(f"g_loss must be one of {G_LOSSES}, got {self.g_loss!r}")
        if not 0.0 <= _float("label_smoothing", self.label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not _float("beta", self.beta) >= 0.0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.lr is not None and not _float("lr", self.lr) > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("lr_d", "lr_g"):
            v = getattr(self, name)
            if v is not None and not _float(_flag(name), v) > 0:
                raise ValueError(f"{_flag(name)} must be a learning rate > 0, got {v}")
        if self.diffaugment is not None:
            diffaugment_policy(self.diffaugment)
        if not _float("--r1", self.r1) >= 0:
            raise ValueError(f"--r1 must be a penalty weight gamma >= 0, got {self.r1}")
        if self.r1_every is not None:
            check_int("r1_every", self.r1_every, 1)
            if not self.r1:
                raise ValueError("--r1-every needs --r1 GAMMA (the penalty it schedules)")
        self._check_loss()
        if self.channels is not None and self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be AtoB or BtoA, got {self.direction!r}")
        architecture.check_fields(self)
        if self.workers is not None:
            check_int("workers", self.workers, 0)
        if self.preprocess is not None and self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"--preprocess must be one of {', '.join(PREPROCESS_MODES)}, got "
                             f"{self.preprocess!r}")

    def _check_loss(self) -> None:
        """--loss and the options that depend on it."""
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.g_loss == "minimax" and self.loss != "vanilla":
            raise ValueError(f"--g-loss minimax is the BCE loss's generator objective: it applies "
                             f"to --loss vanilla only, got --loss {self.loss}")
        if self.label_smoothing and self.loss in ("hinge", "wgan-gp"):
            raise ValueError(f"--label-smoothing has no meaning for --loss {self.loss} (no "
                             "labels); it applies to vanilla and lsgan")
        if self.gp_lambda is not None:
            if self.loss != "wgan-gp":
                raise ValueError(f"--gp-lambda is the weight of WGAN-GP's gradient penalty: it "
                                 f"applies to --loss wgan-gp only, got --loss {self.loss}")
            if not _float("--gp-lambda", self.gp_lambda) > 0:
                raise ValueError(f"--gp-lambda must be > 0, got {self.gp_lambda}")
        conflict = stabilize.r1_conflict(self.loss, self.unrolled) if self.r1 else None
        if conflict:
            raise ValueError(f"--r1 cannot be combined with {conflict[1]}: {conflict[2]}")
        if self.loss == "wgan-gp" and self.unrolled:
            raise ValueError("--unrolled cannot be combined with --loss wgan-gp: the look-ahead "
                             "would reproduce D's updates without the gradient penalty")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def diffaugment_policy(value: Optional[str]) -> tuple:
    """``--diffaugment color,translation,cutout`` -> the policy tuple (any
    subset; None: off); ValueError naming the option for an unknown name."""
    return () if value is None else parse_policy(value, "--diffaugment")


def _float(name: str, value) -> float:
    """A finite number: inf or NaN would train to NaN weights."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)
