"""The image-to-image families: ``cyclegan`` (unpaired; the offline MNIST
pair by default) and ``pix2pix`` (aligned; MNIST edges -> digits by default).
Both use the model's own official ``train_step`` and its linear-decay
schedulers, stepped once per epoch."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .. import metrics
from ..data import aligned_source, mnist_pair, unpaired_source
from ..models import CycleGAN, CycleGANConfig, Pix2Pix, Pix2PixConfig
from . import _data
from .architecture import translation_networks
from .base import Trainer, register
from .grid import interleave_rows

__all__ = ["CycleGANTrainer", "Pix2PixTrainer", "translate"]


def translate(net: torch.nn.Module, x: Tensor, device, batch: int = 64) -> Tensor:
    out = [net(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]
    return torch.cat(out) if out else x.new_zeros((0,) + tuple(x.shape[1:]))


class _TranslationTrainer(Trainer):
    """What CycleGAN and pix2pix share: the LR schedule options, the model's
    optimizers and schedulers, the default training limit, the cached test
    split and the step. Subclasses build the config and load the data."""


    def schedule_kwargs(self) -> dict:
        """Config fields from --epochs, --decay-epochs and --lr."""
        o = self.opts
        return dict(n_epochs=o.epochs if o.epochs is not None else self.default_epochs,
                    n_epochs_decay=(o.decay_epochs if o.decay_epochs is not None
                                    else self.default_decay_epochs),
                    **({"lr": o.lr} if o.lr is not None else {}))

    def resumed_schedule(self, model_config: dict) -> dict:
        """A saved config with the schedule's length from the options: a
        resume may ask for more (or fewer) epochs, and the LR schedule must
        follow (the LR itself may not change on resume)."""
        sched = {k: v for k, v in self.schedule_kwargs().items() if k != "lr"}
        return {**model_config, **sched}

    def attach(self, model) -> None:
        self.model = model.to(self.device)
        opt_G, opt_D = self.model.make_optimizers()
        self.optimizers = {"G": opt_G, "D": opt_D}
        sch_G, sch_D = self.model.make_schedulers(opt_G, opt_D)
        self.schedulers = {"G": sch_G, "D": sch_D}
        self._test = None
        self.test_is_train = False  # set when --data has no test split

    def train_limit(self) -> Optional[int]:
        return self.opts.limit or (self.default_limit if self.opts.data is None else None)

    def cached_test(self, n: int, load):
        """``load("test", n)``, kept for later calls; a folder without a test
        split falls back to its training images."""
        if self._test is None or len(self._test[0]) < n:
            try:
                self._test = load("test", n)
            except ValueError:
                if self.opts.data is None:
                    raise
                self._test = load("train", n)
                self.test_is_train = True
        return self._test

    def translate(self, net: torch.nn.Module, x: Tensor) -> Tensor:
        """``net`` over ``x`` in batches; in an evaluation on several
        processes each rank translates its share."""
        return self.map_rows(lambda idx: translate(net, x[idx], self.device), len(x))

    def step(self, batches):
        a, b = batches[0]
        return self.model.train_step(a, b, self.optimizers["G"], self.optimizers["D"])


def _fits(cfg) -> Tuple[int, int, str]:
    """(multiple, minimum, what): the image sides a CycleGAN/pix2pix config's
    networks take: multiples of 4 (a resnet G's two stride-2 steps) or of
    2**num_downs (a U-Net), at least that and 3 * 2**n_layers_D for an
    n-layer PatchGAN (its output at least 1x1)."""
    if cfg.generator == "unet":
        multiple, what = 2 ** cfg.num_downs, f"the U-Net generator (2**num_downs = " \
                                             f"{2 ** cfg.num_downs})"
    else:
        multiple, what = 4, "the ResNet generator"
    minimum = multiple
    if cfg.discriminator == "n_layers":
        minimum = max(minimum, 3 * 2 ** cfg.n_layers_D)
        what += f" and the {cfg.n_layers_D}-layer PatchGAN"
    return multiple, minimum, what


def _pairs(inputs: Tensor, outputs: Tensor, raw: bool) -> Tuple[Tensor, int]:
    """(rows of 8 inputs over their outputs, 8), or with ``raw`` (outputs, 0)."""
    if raw:
        return outputs, 0
    per = min(8, max(1, len(inputs)))
    return interleave_rows([inputs, outputs], per), per


@register
class CycleGANTrainer(_TranslationTrainer):
    name = "cyclegan"
    loss_groups = {"generators (adversarial)": ["G_A", "G_B"],
                   "discriminators": ["D_A", "D_B"],
                   "cycle and identity (weighted)": ["cycle_A", "cycle_B", "idt_A", "idt_B"]}
    progress_keys = ("G_A", "D_A", "cycle_A")
    eval_metrics = {"B_to_A_digit_accuracy": "max", "A_to_B_digit_accuracy": "max",
                    "A_to_B_domain_score": "max"}
    best_metric = ("B_to_A_digit_accuracy",)   # the cleaner content check (metrics.families)
    metrics_need_default_data = True

    def image_size(self) -> int:
        if self.opts.data is None:
            return 32   # the MNIST pair's size
        return _data.crop_size(self.opts)

    def source(self, split: str, n: Optional[int]):
        """--data's ``split`` as an ImageSource of (A, B), read per batch, at
        sizes the networks take (:func:`_fits`)."""
        o = self.opts
        multiple, minimum, what = _fits(self.model.config)
        src = unpaired_source(o.data, split, _data.preprocess(o, multiple), limit=n, seed=o.seed)
        _data.check_network_size(src.image_size, multiple, minimum, what)
        return src

    def build(self, model_config: Optional[dict] = None) -> None:
        if model_config:
            cfg = CycleGANConfig(**self.resumed_schedule(model_config))
        else:
            # The MNIST pair: small enough for a CPU (ngf = ndf = 32, 6 residual blocks);
            # --data: the official sizes (architecture.py).
            cfg = CycleGANConfig(**translation_networks(self.opts, self.name, self.image_size()),
                                 **self.schedule_kwargs())
        self.attach(CycleGAN(cfg))

    def _pair(self, split: str, n: Optional[int]):
        o = self.opts
        if o.data is None:
            p = mnist_pair(split, n=n, data_dir=o.mnist_dir, seed=o.seed, image_size=32)
            return p.A, p.B, p.labels_A, p.labels_B
        A, B = self.source(split, n).materialize(n)   # the evaluation crop, no flip
        return A, B, None, None

    def train_data(self):
        if self.opts.data is not None:   # sample i: (A file i, B file i), min(|A|, |B|) of them
            return self.source("train", self.train_limit())
        A, B, _, _ = self._pair("train", self.train_limit())
        m = min(len(A), len(B))  # unpaired: equal counts, so one shuffled loader serves both
        return A[:m], B[:m]

    def test_pair(self, n: int):
        A, B, la, lb = self.cached_test(n, self._pair)
        return A[:n], B[:n], (la[:n] if la is not None else None), (lb[:n] if lb is not None else None)

    def extra_state(self) -> dict:
        return {"fake_A_pool": self.model.fake_A_pool.state_dict(),
                "fake_B_pool": self.model.fake_B_pool.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.model.fake_A_pool.load_state_dict(state["fake_A_pool"])
        self.model.fake_B_pool.load_state_dict(state["fake_B_pool"])

    # Several processes: each rank pools the fakes of its own share (as the
    # official code's pool sees one process's batch), so each rank's pools
    # are saved and restored on that rank.
    rank_state = extra_state
    load_rank_state = load_extra_state

    def sample_grid(self):
        """Rows of 8: real A, G_A(A), real B, G_B(B)."""
        A, B, _, _ = self.test_pair(8)
        m = self.model
        return interleave_rows([A, translate(m.G_A, A, self.device), B, translate(m.G_B, B, self.device)],
                     8), 8

    def sample(self, n: int, interpolate: bool, generator: torch.Generator,
               inputs: Optional[Tensor] = None, direction: str = "AtoB", raw: bool = False):
        """Rows of inputs over their translations; ``raw``: the translations alone."""
        net = self.model.G_A if direction == "AtoB" else self.model.G_B
        if inputs is None:
            A, B, _, _ = self.test_pair(n)
            inputs = A if direction == "AtoB" else B
        return _pairs(inputs, translate(net, inputs, self.device), raw)

    def evaluate(self, n: int) -> Dict[str, Any]:
        if self.opts.data is not None:
            return {"note": "digit accuracy and domain score are defined for the MNIST pair only"}
        # The pair's two domains split the 10,000 test digits: at most 5,000 each.
        A, B, la, lb = self.test_pair(min(n, 5000))
        fake_B = self.translate(self.model.G_A, A)                        # A -> B style
        fake_A = self.translate(self.model.G_B, B)                        # B -> MNIST-like
        out = {"n": len(A)}
        scores = metrics.translation_scores(fake_B, la)
        out.update({f"A_to_B_{k}": (float(v) if isinstance(v, (int, float)) else v)
                    for k, v in dict(scores).items()})
        out["B_to_A_digit_accuracy"] = float(metrics.digit_accuracy_of_mnist_like(fake_A, lb))
        return out


@register
class Pix2PixTrainer(_TranslationTrainer):
    name = "pix2pix"
    loss_groups = {"adversarial": ["D", "G_GAN"], "L1 (x lambda_L1)": ["G_L1"]}
    progress_keys = ("D", "G_GAN", "G_L1")
    eval_metrics = {"test_l1": "min"}
    best_metric = ("test_l1",)

    def image_size(self) -> int:
        return 32 if self.opts.data is None else _data.crop_size(self.opts)

    def source(self, split: str, n: Optional[int]):
        """--data's ``split`` as an ImageSource of (input, target), read per
        batch, at sizes the networks take (:func:`_fits`)."""
        o = self.opts
        multiple, minimum, what = _fits(self.model.config)
        src = aligned_source(o.data, split, _data.preprocess(o, multiple), direction=o.direction,
                             limit=n, seed=o.seed)
        _data.check_network_size(src.image_size, multiple, minimum, what)
        return src

    def build(self, model_config: Optional[dict] = None) -> None:
        o = self.opts
        if model_config:
            cfg = Pix2PixConfig(**self.resumed_schedule(model_config))
        else:
            # CPU-sized for 32x32 MNIST (ngf = ndf = 32, a 2-layer PatchGAN); --data: the
            # official sizes (architecture.py).
            ch = 1 if o.data is None else 3
            cfg = Pix2PixConfig(input_nc=ch, output_nc=ch,
                                **translation_networks(o, self.name, self.image_size()),
                                **self.schedule_kwargs())
        self.attach(Pix2Pix(cfg))

    def _pairs(self, split: str, n: Optional[int]):
        o = self.opts
        if o.data is None:
            A, B, _ = _data.mnist_edges_pair(split, o.mnist_dir, n)
        else:
            A, B = self.source(split, n).materialize(n)   # the evaluation crop, no flip
        return A[:n], B[:n]

    def train_data(self):
        if self.opts.data is not None:
            return self.source("train", self.train_limit())
        return self._pairs("train", self.train_limit())

    def test_pairs(self, n: int):
        A, B = self.cached_test(n, self._pairs)
        return A[:n], B[:n]

    def sample_grid(self):
        """Rows of 8: input A, G(A), target B."""
        A, B = self.test_pairs(8)
        return interleave_rows([A, translate(self.model.netG, A, self.device), B], 8), 8

    def sample(self, n: int, interpolate: bool, generator: torch.Generator,
               inputs: Optional[Tensor] = None, direction: str = "AtoB", raw: bool = False):
        if inputs is None:
            inputs = self.test_pairs(n)[0]
        return _pairs(inputs, translate(self.model.netG, inputs, self.device), raw)

    def evaluate(self, n: int) -> Dict[str, Any]:
        A, B = self.test_pairs(n)
        pred = self.translate(self.model.netG, A)
        out = {"n": len(A), "test_l1": float(metrics.pix2pix_l1(pred, B))}
        if self.test_is_train:
            out["warnings"] = [f"{self.opts.data} has no test split: test_l1 was measured on "
                               "training images, so it does not show generalisation"]
        return out
