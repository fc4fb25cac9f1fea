"""The base of the per-family trainers (:class:`Trainer`) and the registry
of trainers by model name (:func:`register`, :data:`TRAINERS`).

A leaf of ``gan_ext.train``: the trainer modules import it to subclass and
register, the loop and ``sample``/``eval`` import it to look a trainer up,
and it imports neither. ``gan_ext.train`` imports every trainer module, so
the registry is complete once the package is imported.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import torch
from torch import Tensor

from .checkpoint import CheckpointError
from .options import DEFAULTS, MODELS, TrainOptions

__all__ = ["Trainer", "register", "TRAINERS", "trainer_class"]


def _config_dict(config) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


class Trainer:
    """One model family. Subclasses set the class attributes and implement
    :meth:`build`, :meth:`train_data`, :meth:`step`, :meth:`sample_grid` and
    :meth:`evaluate`; nothing else about the loop."""

    name: str = ""
    loss_groups: Dict[str, Sequence[str]] = {}
    progress_keys: Sequence[str] = ()
    # Several processes: how the ranks' gradients combine ("mean": the loss
    # is a mean over the batch; "sum": a batch sum) and which step stats are
    # batch sums (summed over ranks, not averaged).
    grad_reduction: str = "mean"
    summed_stats: Tuple[str, ...] = ()
    # The numbers evaluate() returns that --keep-best may follow, each with
    # its direction ("min": lower is better), and the default criterion:
    # metric names compared in order (the later ones break ties).
    eval_metrics: Dict[str, str] = {}
    best_metric: Tuple[str, ...] = ()
    # Whether evaluate() measures only the default (MNIST) data: with --data
    # it returns a note, so a run has no metrics to follow, unless the family
    # has data_metrics: what it measures on --data instead (FID/KID against
    # the folder, gan/dcgan), with their default criterion.
    metrics_need_default_data: bool = False
    data_metrics: Dict[str, str] = {}
    data_best_metric: Tuple[str, ...] = ()
    # `gan-ext eval --fid-backend`: the package evaluate() scores images with.
    fid_backend: Optional[str] = None

    def __init__(self, opts: TrainOptions, device: torch.device) -> None:
        self.opts, self.device = opts, device
        self.model: Optional[torch.nn.Module] = None
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.schedulers: Dict[str, Any] = {}
        # Set while an evaluation runs on several processes: the Context
        # that splits its generation across the ranks (see map_rows).
        self.eval_split = None

    # ------------------------------------------------ defaults (options.DEFAULTS)
    @property
    def default_batch_size(self) -> int:
        return DEFAULTS[self.name]["batch_size"]

    @property
    def default_epochs(self) -> int:
        return DEFAULTS[self.name]["epochs"]

    @property
    def default_decay_epochs(self) -> int:
        return DEFAULTS[self.name].get("decay_epochs", 0)

    @property
    def default_limit(self) -> Optional[int]:
        return DEFAULTS[self.name].get("limit")

    @property
    def default_eval_n(self) -> int:
        return DEFAULTS[self.name].get("eval_n", 2000)

    @property
    def batch_multiple(self) -> int:
        """Samples the loader puts in each batch entry (PacGAN: the pack size)."""
        return 1

    # ------------------------------------------------------------- family API
    @property
    def batches_per_step(self) -> int:
        return 1

    def build(self, model_config: Optional[dict] = None) -> None:
        """Sets ``self.model``, ``self.optimizers`` and ``self.schedulers``;
        ``model_config``: the saved config of a checkpoint."""
        raise NotImplementedError

    def model_config(self) -> dict:
        return _config_dict(self.model.config)

    def train_data(self) -> Tuple[Tensor, ...]:
        """The training tensors (CPU), batched together by the loader."""
        raise NotImplementedError

    def step(self, batches: List[Tuple[Tensor, ...]]) -> Dict[str, Tensor]:
        """One iteration on ``batches_per_step`` batches (already on the device)."""
        raise NotImplementedError

    def sample_grid(self) -> Tuple[Tensor, int]:
        """Images for the progress grid from fixed inputs, in [-1, 1], and the
        grid's row length. Must not draw from the global RNGs."""
        raise NotImplementedError

    def evaluate(self, n: int) -> Dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def metric_names(cls, opts: TrainOptions) -> Optional[Dict[str, str]]:
        """:attr:`eval_metrics`, or None where :meth:`evaluate` returns a
        note instead of metrics (a run with ``opts`` has none)."""
        if cls.metrics_need_default_data and opts.data is not None:
            return cls.data_metrics or None
        return cls.eval_metrics

    @classmethod
    def default_best(cls, opts: TrainOptions) -> Tuple[str, ...]:
        """The default ``--keep-best`` criterion of a run with ``opts``."""
        if cls.metrics_need_default_data and opts.data is not None and cls.data_metrics:
            return cls.data_best_metric
        return cls.best_metric

    # True: --decay-epochs decays every optimizer's LR per step (decay_lr),
    # instead of per-epoch schedulers (cyclegan and pix2pix have those).
    step_decay = False

    def decay_lr(self, factor: float) -> None:
        """Every optimizer's learning rate = its initial one x factor."""
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def end_epoch(self) -> None:
        for s in self.schedulers.values():
            s.step()

    def extra_state(self) -> dict:
        return {}

    def distribute(self, ctx) -> None:
        """Several processes: draw what must be the global batch's (latents,
        noise) through ``ctx`` (:class:`gan_ext.train.distributed.Context`).
        Nothing by default: such a family's randomness is per rank."""

    def map_rows(self, fn: Callable[[Tensor], Tensor], n: int) -> Tensor:
        """``fn(torch.arange(n))``: the rows an evaluation computes (samples
        from z[idx], translations of x[idx]), split across the ranks while
        ``eval_split`` is set, else in this process."""
        if self.eval_split is None:
            return fn(torch.arange(n))
        return self.eval_split.map_rows(fn, n)

    def rank_state(self) -> dict:
        """What each rank holds of its own and a resume must restore on that
        rank (a CycleGAN's image pools); rank 0's is also in extra_state."""
        return {}

    def load_rank_state(self, state: dict) -> None:
        pass

    def load_extra_state(self, state: dict) -> None:
        pass

    # -------------------------------------------------------------- helpers
    def lr(self) -> float:
        opt = next(iter(self.optimizers.values()))
        return float(opt.param_groups[0]["lr"])

    def state(self) -> dict:
        return {"models": self.model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "extra": self.extra_state()}

    def load_state(self, ckpt: dict, weights_only: bool = False) -> None:
        try:
            self.model.load_state_dict(ckpt["models"])
            if not weights_only:
                for k, o in self.optimizers.items():
                    o.load_state_dict(ckpt["optimizers"][k])
                for k, s in self.schedulers.items():
                    s.load_state_dict(ckpt["schedulers"][k])
                self.load_extra_state(ckpt.get("extra", {}))
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"the checkpoint does not fit the {self.name} model: "
                                  f"{first[:200]}") from e

    def run_eval(self, n: int) -> Dict[str, Any]:
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.evaluate(n)
        finally:
            self.model.train(was)

    def write_picture(self, samples: Tensor, path: str, nrow: int = 8) -> str:
        """The picture of ``samples`` (what :meth:`sample_grid` or ``sample``
        returned): an image grid; the 2-D benchmarks draw a scatter plot."""
        from .grid import save_grid
        return save_grid(samples, path, nrow=nrow)

    def grid(self) -> Tuple[Tensor, int]:
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.sample_grid()
        finally:
            self.model.train(was)


# MODEL name -> its trainer class, filled by @register as the trainer modules
# are imported (gan_ext/train/__init__.py imports them all).
TRAINERS: Dict[str, Type[Trainer]] = {}

_T = TypeVar("_T", bound=Type[Trainer])


def register(cls: _T) -> _T:
    """Class decorator: makes ``cls`` the trainer of the model ``cls.name``."""
    if cls.name not in MODELS:
        raise ValueError(f"trainer {cls.__name__} has name {cls.name!r}, not one of the "
                         f"models: {', '.join(MODELS)}")
    old = TRAINERS.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"two trainers for {cls.name!r}: {TRAINERS[cls.name].__name__} and "
                         f"{cls.__name__}")
    TRAINERS[cls.name] = cls
    return cls


def trainer_class(model: str) -> Type[Trainer]:
    if model not in TRAINERS:
        raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    return TRAINERS[model]
