"""The one training loop every family shares (:func:`fit`) and the base of
the per-family trainers (:class:`Trainer`).

A family trainer only knows how to build its model, optimizers, schedulers
and data, and how to do one step; :func:`fit` does the rest: seeding,
device, backend and autocast, batches across epochs, logging, sample grids,
the loss plot, atomic checkpoints with every RNG state (so ``--resume``
continues bit for bit), Ctrl-C, and the final evaluation.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .checkpoint import FORMAT, CheckpointError, atomic_save, load_checkpoint, rng_state, set_rng_state
from .grid import save_grid
from .monitor import MetricsLog, Progress, append_jsonl, plot_losses
from .options import RESUMABLE_OVERRIDES, TrainOptions

__all__ = ["Trainer", "fit", "TrainingInterrupted", "resolve_device", "seed_everything",
           "versions", "RunResult"]


class TrainingInterrupted(Exception):
    """Ctrl-C during :func:`fit`: the checkpoint was saved at ``path``."""

    def __init__(self, path: str, step: int) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved to {path} "
                         "(continue with --resume)")
        self.path, self.step = path, step


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is a
    one-line ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise ValueError(f"--device cuda was requested but {why} (torch {torch.__version__}); "
                         "use --device cpu or --device auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def versions() -> Dict[str, str]:
    import gan_ext
    return {"gan_ext": str(gan_ext.__version__), "torch": str(torch.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(), "backend": str(gan_ext.get_backend())}


def _config_dict(config) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


class Trainer:
    """One model family. Subclasses set the class attributes and implement
    :meth:`build`, :meth:`train_data`, :meth:`step`, :meth:`sample_grid` and
    :meth:`evaluate`; nothing else about the loop."""

    name: str = ""
    default_batch_size: int = 64
    default_epochs: int = 5
    default_decay_epochs: int = 0
    loss_groups: Dict[str, Sequence[str]] = {}
    progress_keys: Sequence[str] = ()

    def __init__(self, opts: TrainOptions, device: torch.device) -> None:
        self.opts, self.device = opts, device
        self.model: Optional[torch.nn.Module] = None
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.schedulers: Dict[str, Any] = {}

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

    def end_epoch(self) -> None:
        for s in self.schedulers.values():
            s.step()

    def extra_state(self) -> dict:
        return {}

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

    def grid(self) -> Tuple[Tensor, int]:
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.sample_grid()
        finally:
            self.model.train(was)


class RunResult(dict):
    """What :func:`fit` wrote (``paths``) and measured (``metrics``)."""


# ------------------------------------------------------------------ the loop
class _StopFlag:
    """SIGINT sets a flag the loop checks between steps, so a checkpoint never
    holds a half-done step; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        self.prev = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.prev = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.set:
                    raise KeyboardInterrupt
                self.set = True
            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)
        return False


def _merge_resume(opts: TrainOptions, saved: dict, explicit: Sequence[str]) -> TrainOptions:
    merged = TrainOptions.from_dict(saved)
    kw = merged.to_dict()
    for name in RESUMABLE_OVERRIDES:
        if name in explicit:
            kw[name] = getattr(opts, name)
    kw["resume"] = True
    kw["out"] = opts.out if opts.out is not None else merged.out
    return TrainOptions(**kw)


def fit(opts: TrainOptions, explicit: Optional[Sequence[str]] = None,
        log: Callable[[str], None] = print) -> RunResult:
    """Trains ``opts.model`` as ``opts`` says; returns the paths written and
    the final metrics. ``explicit``: the option names the user gave (on
    ``--resume`` those in ``RESUMABLE_OVERRIDES`` override the saved run's).
    Raises :class:`TrainingInterrupted` after saving on Ctrl-C."""
    import gan_ext
    from ..data import InMemoryLoader
    from ..memory import retain_freed_memory
    from .registry import trainer_class

    explicit = set(explicit if explicit is not None else opts.to_dict())
    retain_freed_memory()
    run_dir = opts.out or os.path.join("runs", opts.model)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")

    ckpt = None
    if opts.resume:
        if not os.path.isfile(ckpt_path):
            raise ValueError(f"--resume: there is no checkpoint at {ckpt_path}; train without "
                             "--resume first or point --out at the run folder")
        ckpt = load_checkpoint(ckpt_path, model=opts.model)
        opts = _merge_resume(opts, ckpt["options"], explicit)
    opts.out = run_dir

    device = resolve_device(opts.device)
    amp = bool(opts.amp)
    if amp and device.type != "cuda":
        log("note: --amp (bf16 autocast) is CUDA-only; ignored on the CPU")
        amp = False
    gan_ext.set_backend(opts.backend)

    seed_everything(opts.seed)
    trainer = trainer_class(opts.model)(opts, device)
    trainer.build(ckpt["model_config"] if ckpt else None)
    data = trainer.train_data()
    batch_size = opts.batch_size or trainer.default_batch_size
    if len(data[0]) < batch_size:
        raise ValueError(f"the training set has {len(data[0])} images, fewer than --batch-size "
                         f"{batch_size}; lower --batch-size or add data")
    loader = InMemoryLoader(*data, batch_size=batch_size, shuffle=True, drop_last=True,
                            seed=opts.seed)
    per_epoch = max(1, len(loader) // trainer.batches_per_step)
    epochs = opts.epochs if opts.epochs is not None else trainer.default_epochs
    decay = (opts.decay_epochs if opts.decay_epochs is not None
             else trainer.default_decay_epochs)
    total = opts.steps if opts.steps is not None else (epochs + decay) * per_epoch

    os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    step, epoch, history = 0, 0, []
    if ckpt is not None:
        trainer.load_state(ckpt)
        loader.load_state_dict(ckpt["loader"])
        step, epoch, history = int(ckpt["step"]), int(ckpt["epoch"]), list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        log(f"resuming {opts.model} from {ckpt_path} at step {step} (epoch {epoch})")
        if os.path.isfile(metrics_path):  # drop records logged after the checkpoint
            keep = []
            with open(metrics_path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if "eval" in rec or rec.get("step", 0) <= step:
                        keep.append(line)
            with open(metrics_path, "w", encoding="utf-8") as f:
                f.writelines(keep)
    else:
        if os.path.exists(ckpt_path):
            log(f"note: starting a fresh run in {run_dir} (its checkpoint is replaced; "
                "pass --resume to continue it)")
        open(metrics_path, "w").close()

    config = {"options": opts.to_dict(), "model_config": trainer.model_config(),
              "batch_size": batch_size, "steps": total, "steps_per_epoch": per_epoch,
              "epochs": epochs, "decay_epochs": decay, "device": str(device), "amp": amp,
              "versions": versions()}
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, default=str)

    def save() -> None:
        atomic_save({"format": FORMAT, "model_name": opts.model, "options": opts.to_dict(),
                     "model_config": trainer.model_config(), **trainer.state(),
                     "loader": loader.state_dict(), "rng": rng_state(device.type == "cuda"),
                     "step": step, "epoch": epoch, "history": history,
                     "versions": versions()}, ckpt_path)

    def write_grid(path: str) -> str:
        images, nrow = trainer.grid()
        return save_grid(images, path, nrow=nrow)

    mlog = MetricsLog(run_dir)
    trainer.model.train()
    bar = Progress(total, initial=min(step, total), desc=f"{opts.model}", enabled=opts.progress)
    pending: List[Dict[str, Tensor]] = []
    interval: List[Dict[str, float]] = []
    t_last, n_last = time.perf_counter(), step
    it = loader.batches()  # (epoch, batch) across epochs; resumes mid-epoch exactly

    def flush() -> None:
        for s, p in pending:
            rec = {"step": s, **{k: float(v) for k, v in p.items()}}
            history.append(rec)
            interval.append(rec)
        pending.clear()

    log(f"training {opts.model} on {device} for {total} steps ({per_epoch} per epoch, batch "
        f"{batch_size}); run folder {run_dir}")
    try:
        with _StopFlag() as stop:
            while step < total:
                if stop.set:
                    raise KeyboardInterrupt
                batches = []
                for _ in range(trainer.batches_per_step):
                    e, b = next(it)
                    while epoch < e:  # a new epoch began: per-epoch LR schedules step
                        epoch += 1
                        trainer.end_epoch()
                    batches.append(tuple(t.to(device, non_blocking=True) for t in b))
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    stats = trainer.step(batches)
                step += 1
                pending.append((step, stats))
                if step % opts.log_every == 0 or step == total:
                    flush()
                    now = time.perf_counter()
                    keys = [k for k in interval[-1] if k != "step"] if interval else []
                    rec = {"step": step, "epoch": epoch,
                           **{k: sum(r[k] for r in interval) / len(interval) for k in keys},
                           "lr": trainer.lr(),
                           "it_per_s": (step - n_last) / max(now - t_last, 1e-9)}
                    mlog.log(rec, step)
                    interval.clear()
                    t_last, n_last = now, step
                    bar.update({k: rec[k] for k in trainer.progress_keys if k in rec})
                else:
                    bar.update()
                if step % opts.sample_every == 0:
                    write_grid(os.path.join(run_dir, "samples", f"step_{step:06d}.png"))
                if step % opts.checkpoint_every == 0 and step < total:
                    flush()
                    save()
    except KeyboardInterrupt:
        bar.close()
        flush()
        save()
        mlog.close()
        raise TrainingInterrupted(ckpt_path, step) from None
    bar.close()
    flush()
    save()

    paths = {"run": run_dir, "checkpoint": ckpt_path, "config": os.path.join(run_dir, "config.json"),
             "metrics": metrics_path}
    paths["samples"] = write_grid(os.path.join(run_dir, "samples.png"))
    curves = plot_losses(history, trainer.loss_groups, os.path.join(run_dir, "losses.png"),
                         title=f"{opts.model}: {step} steps")
    if curves:
        paths["losses"] = curves
    if mlog.tb_dir:
        paths["tensorboard"] = mlog.tb_dir
    metrics: Dict[str, Any] = {}
    if opts.eval_n > 0:
        metrics = trainer.run_eval(opts.eval_n)
        mlog.log({"step": step, "epoch": epoch, "eval": metrics}, step, prefix="eval")
    mlog.close()
    return RunResult(paths=paths, metrics=metrics, step=step, epoch=epoch)
