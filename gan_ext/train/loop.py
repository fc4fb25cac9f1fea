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

from .checkpoint import (FORMAT, CheckpointError, atomic_save, check_complete, load_checkpoint,
                         rng_state, set_rng_state)
from .grid import save_grid
from .monitor import MetricsLog, Progress, json_safe, plot_losses
from .options import DEFAULTS, RESUMABLE_OVERRIDES, TrainOptions, check_applicable, check_resume

__all__ = ["Trainer", "fit", "TrainingInterrupted", "TrainingDiverged", "CheckpointSaveError",
           "resolve_device", "seed_everything", "versions", "RunResult"]


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during :func:`fit`: the checkpoint was saved at
    ``path``. ``exit_code``: 130 for SIGINT, 143 for SIGTERM (128 + signal)."""

    def __init__(self, path: str, step: int, signum: Optional[int] = None) -> None:
        what = "terminated (SIGTERM)" if signum == getattr(signal, "SIGTERM", -1) else "interrupted"
        super().__init__(f"{what} at step {step}; checkpoint saved to {path} "
                         "(continue with --resume)")
        self.path, self.step = path, step
        self.exit_code = 128 + (signum if signum is not None else int(signal.SIGINT))


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
    loss_groups: Dict[str, Sequence[str]] = {}
    progress_keys: Sequence[str] = ()

    def __init__(self, opts: TrainOptions, device: torch.device) -> None:
        self.opts, self.device = opts, device
        self.model: Optional[torch.nn.Module] = None
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.schedulers: Dict[str, Any] = {}

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


class TrainingDiverged(ValueError):
    """A loss or a weight became NaN/inf: the run stopped without saving the
    broken state (the last checkpoint on disk is the last finite one)."""


class CheckpointSaveError(OSError):
    """The checkpoint could not be written (disk full, no permission); the
    previous checkpoint is intact."""


# ------------------------------------------------------------------ the loop
class _StopFlag:
    """SIGINT and SIGTERM (docker stop, Slurm preemption) set a flag the loop
    checks between steps, so a checkpoint never holds a half-done step; a
    second signal interrupts at once."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))

    def __init__(self) -> None:
        self.set = False
        self.signum: Optional[int] = None
        self.prev: Dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.set:
                    raise KeyboardInterrupt
                self.set, self.signum = True, signum
            for sig in self.SIGNALS:
                self.prev[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, prev in self.prev.items():
            signal.signal(sig, prev)
        return False


class _RunLock:
    """An exclusive lock on the run folder (``.lock``, flock): two ``train``
    runs never write into one folder at once. Released when the process ends,
    however it ends, so a killed run leaves no stale lock."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, ".lock")
        self.fd: Optional[int] = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise ValueError(f"{os.path.dirname(self.path)} is in use by another 'gan-ext train' "
                             f"(pid {other}); wait for it or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None
        return False


# The files a run writes into its folder (what --overwrite removes).
_RUN_FILES = ("checkpoint.pt", "config.json", "metrics.jsonl", "losses.png", "samples.png")


def _run_in(run_dir: str) -> Optional[str]:
    """A description of the run already in ``run_dir``, or None."""
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    if os.path.isfile(ckpt):
        return "a run (its checkpoint.pt)"
    for name in _RUN_FILES[1:]:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            return f"a run's files ({name})"
    return None


def _clear_run(run_dir: str) -> None:
    import shutil
    for name in _RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.unlink(path)
    samples = os.path.join(run_dir, "samples")
    if os.path.isdir(samples):
        for name in os.listdir(samples):
            if name.startswith("step_") and name.endswith(".png"):
                os.unlink(os.path.join(samples, name))
    shutil.rmtree(os.path.join(run_dir, "tensorboard"), ignore_errors=True)


def _remove_stale_temporaries(run_dir: str, log: Callable[[str], None]) -> None:
    """A save killed between the temporary write and the rename (kill -9,
    power loss) leaves ``.checkpoint.pt.*.tmp`` behind; under the run lock no
    save is in flight, so every such file is stale."""
    import glob
    for path in glob.glob(os.path.join(glob.escape(run_dir), ".checkpoint.pt.*.tmp")):
        try:
            os.unlink(path)
            log(f"note: removed {path}, left by an interrupted save")
        except OSError:
            pass


def _merge_resume(opts: TrainOptions, saved: dict, explicit: Sequence[str]) -> TrainOptions:
    """The saved run's options with what a resume may change (options.py:
    RESUMABLE_OVERRIDES); refuses a change to anything else."""
    merged = TrainOptions.from_dict(saved)
    check_resume(merged, opts, explicit)
    kw = merged.to_dict()
    for name in RESUMABLE_OVERRIDES:
        if name in explicit:
            kw[name] = getattr(opts, name)
    if "epochs" in explicit and "steps" not in explicit:
        kw["steps"] = None  # --epochs asks for a length in epochs: a saved --steps no longer applies
    kw["resume"] = True
    kw["out"] = opts.out if opts.out is not None else merged.out
    return TrainOptions(**kw)


def _check_finite(record: Dict[str, float], step: int) -> None:
    for k, v in record.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise TrainingDiverged(f"training diverged at step {step}: {k} = {v}")


def fit(opts: TrainOptions, explicit: Optional[Sequence[str]] = None,
        log: Callable[[str], None] = print) -> RunResult:
    """Trains ``opts.model`` as ``opts`` says; returns the paths written and
    the final metrics. ``explicit``: the option names the user gave (options
    a model does not use are refused; on ``--resume`` those in
    ``RESUMABLE_OVERRIDES`` override the saved run's, others may not change).
    Raises :class:`TrainingInterrupted` after saving on Ctrl-C or SIGTERM,
    :class:`TrainingDiverged` without saving when a loss or weight is NaN/inf."""
    explicit = set(explicit if explicit is not None else opts.to_dict())
    check_applicable(opts, explicit)
    if opts.resume and opts.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: "
                         "give one of them")
    if opts.mnist_dir is not None and not os.path.isdir(opts.mnist_dir):
        raise ValueError(f"--mnist-dir {opts.mnist_dir!r} is not a folder")
    run_dir = opts.out or os.path.join("runs", opts.model)
    os.makedirs(run_dir, exist_ok=True)
    with _RunLock(run_dir):
        _remove_stale_temporaries(run_dir, log)
        return _fit_locked(opts, explicit, run_dir, log)


def _fit_locked(opts: TrainOptions, explicit: set, run_dir: str,
                log: Callable[[str], None]) -> RunResult:
    import gan_ext
    from ..data import InMemoryLoader
    from ..memory import retain_freed_memory
    from .registry import trainer_class

    retain_freed_memory()
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")

    ckpt = None
    if opts.resume:
        if not os.path.isfile(ckpt_path):
            raise ValueError(f"--resume: there is no checkpoint at {ckpt_path}; train without "
                             "--resume first or point --out at the run folder")
        ckpt = load_checkpoint(ckpt_path, model=opts.model)
        check_complete(ckpt, ckpt_path)
        opts = _merge_resume(opts, ckpt["options"], explicit)
    else:
        existing = _run_in(run_dir)
        if existing is not None and not opts.overwrite:
            raise ValueError(f"{run_dir} already holds {existing}: continue it with --resume, "
                             "replace it with --overwrite, or choose another --out")
        if existing is not None:
            _clear_run(run_dir)
            log(f"note: --overwrite: removed the previous run's files from {run_dir}")
    opts.out = run_dir

    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    amp = bool(opts.amp)
    if amp and device.type != "cuda":
        if "amp" in explicit:
            raise ValueError("--amp (bf16 autocast) needs CUDA and this run is on the CPU; "
                             "drop --amp or use --device cuda")
        log("note: the run was trained with --amp on CUDA; it continues on the CPU without it")
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
        step, epoch = int(ckpt["step"]), int(ckpt["epoch"])
        if step >= total:
            raise ValueError(f"--resume: the run in {run_dir} is already at step {step} and "
                             f"the length asked for is {total} steps; ask for more with "
                             f"--steps N (N > {step}) or a larger --epochs")
        trainer.load_state(ckpt)
        loader.load_state_dict(ckpt["loader"])
        history = list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        log(f"resuming {opts.model} from {ckpt_path} at step {step} (epoch {epoch}) to "
            f"step {total}")
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
        open(metrics_path, "w").close()

    config = {"options": opts.to_dict(), "model_config": trainer.model_config(),
              "batch_size": batch_size, "steps": total, "steps_per_epoch": per_epoch,
              "epochs": epochs, "decay_epochs": decay, "device": str(device), "amp": amp,
              "versions": versions()}
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(json_safe(config), f, indent=2, default=str)

    saved_step = [step if ckpt is not None else None]

    def save() -> None:
        bad = [n for n, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"training diverged by step {step}: weight {bad[0]} holds "
                                   "NaN/inf")
        try:
            atomic_save({"format": FORMAT, "model_name": opts.model, "options": opts.to_dict(),
                         "model_config": trainer.model_config(), **trainer.state(),
                         "loader": loader.state_dict(), "rng": rng_state(device.type == "cuda"),
                         "step": step, "epoch": epoch, "history": history,
                         "versions": versions()}, ckpt_path)
        except OSError as e:
            prev = (f"the previous checkpoint (step {saved_step[0]}) is intact"
                    if saved_step[0] is not None else "no earlier checkpoint exists")
            raise CheckpointSaveError(f"could not save the checkpoint to {ckpt_path} at step "
                                      f"{step} ({e.strerror or e}); {prev}") from None
        saved_step[0] = step

    def write_grid(path: str) -> str:
        images, nrow = trainer.grid()
        return save_grid(images, path, nrow=nrow)

    curves_path = os.path.join(run_dir, "losses.png")
    last_curves = [time.perf_counter()]

    def draw_curves() -> Optional[str]:
        last_curves[0] = time.perf_counter()
        return plot_losses(history, trainer.loss_groups, curves_path,
                           title=f"{opts.model}: {step} steps")

    mlog = MetricsLog(run_dir)
    trainer.model.train()
    bar = Progress(total, initial=min(step, total), desc=f"{opts.model}", enabled=opts.progress)
    pending: List[Tuple[int, Dict[str, Tensor]]] = []
    interval: List[Dict[str, float]] = []
    t_last, n_last = time.perf_counter(), step
    it = loader.batches()  # (epoch, batch) across epochs; resumes mid-epoch exactly

    def flush() -> None:
        """Moves the pending step losses into the history; a NaN/inf loss
        stops the run here, before anything is saved."""
        for s, p in pending:
            rec = {"step": s, **{k: float(v) for k, v in p.items()}}
            _check_finite(rec, s)
            history.append(rec)
            interval.append(rec)
        pending.clear()

    def stopped(signum: Optional[int]) -> TrainingInterrupted:
        bar.close()
        flush()
        save()
        draw_curves()
        mlog.close()
        return TrainingInterrupted(ckpt_path, step, signum)

    log(f"training {opts.model} on {device} for {total} steps ({per_epoch} per epoch, batch "
        f"{batch_size}); run folder {run_dir}")
    try:
        with _StopFlag() as stop:
            try:
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
                        shown = {k: rec[k] for k in trainer.progress_keys if k in rec}
                        bar.update(shown)
                        if not opts.progress:
                            log(f"step {step}/{total} epoch {epoch} "
                                + " ".join(f"{k}={v:.4g}" for k, v in shown.items())
                                + f" ({rec['it_per_s']:.2f} it/s)")
                        if now - last_curves[0] >= 30.0:
                            draw_curves()
                    else:
                        bar.update()
                    if step % opts.sample_every == 0:
                        write_grid(os.path.join(run_dir, "samples", f"step_{step:06d}.png"))
                        flush()
                        draw_curves()
                    if step % opts.checkpoint_every == 0 and step < total:
                        flush()
                        save()
            except KeyboardInterrupt:
                raise stopped(stop.signum) from None
    except TrainingDiverged as e:
        bar.close()
        mlog.close()
        kept = (f"the last checkpoint, {ckpt_path} (step {saved_step[0]}), is the last finite "
                "state" if saved_step[0] is not None else "no checkpoint was written")
        raise TrainingDiverged(f"{e}; stopped without saving it: {kept}. Lower --lr or check "
                               "the data") from None
    bar.close()
    flush()
    save()

    paths = {"run": run_dir, "checkpoint": ckpt_path, "config": os.path.join(run_dir, "config.json"),
             "metrics": metrics_path}
    paths["samples"] = write_grid(os.path.join(run_dir, "samples.png"))
    curves = draw_curves()
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
