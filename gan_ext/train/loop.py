"""The one training loop every family shares (:func:`fit`).

A family trainer (:class:`gan_ext.train.base.Trainer`) only knows how to
build its model, optimizers, schedulers and data, and how to do one step;
:func:`fit` does the rest: seeding, device, backend and autocast, batches
across epochs, logging, sample grids, the loss plot, atomic checkpoints with
every RNG state (so ``--resume`` continues bit for bit), Ctrl-C, and the
final evaluation. The run folder's safety is in ``run_dir.py``, what a
resume restores in ``resume.py``, what changes on several processes
(torchrun) in ``distributed.py``.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._backend import set_backend
from ..data import ImageSource, make_loader
from ..memory import retain_freed_memory
from ..models.schedule import step_decay_factor
from . import distributed, evaluation
from .amp import autocast, use_amp
from .base import Trainer, trainer_class  # Trainer: also importable from here, as before
from .checkpoint import FORMAT, atomic_save, rng_state, set_rng_state
from .init_weights import apply_init
from .distributed import Context, PeerFailed
from .monitor import MetricsLog, Progress, json_safe, plot_losses
from .options import TrainOptions, check_applicable
from .resume import drop_records_after, open_run
from .run_dir import CHECKPOINT, RunLock, StopFlag, remove_stale_temporaries
from .runtime import resolve_device, seed_everything, versions

__all__ = ["Trainer", "fit", "TrainingInterrupted", "TrainingDiverged", "CheckpointSaveError",
           "resolve_device", "seed_everything", "versions", "RunResult", "PeerFailed"]


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during :func:`fit`: the checkpoint was saved at
    ``path``. ``exit_code``: 130 for SIGINT, 143 for SIGTERM (128 + signal)."""

    def __init__(self, path: str, step: int, signum: Optional[int] = None) -> None:
        what = "terminated (SIGTERM)" if signum == getattr(signal, "SIGTERM", -1) else "interrupted"
        super().__init__(f"{what} at step {step}; checkpoint saved to {path} "
                         "(continue with --resume)")
        self.path, self.step = path, step
        self.exit_code = 128 + (signum if signum is not None else int(signal.SIGINT))


class RunResult(dict):
    """What :func:`fit` wrote (``paths``) and measured (``metrics``)."""


class TrainingDiverged(ValueError):
    """A loss or a weight became NaN/inf: the run stopped without saving the
    broken state (the last checkpoint on disk is the last finite one)."""


class CheckpointSaveError(OSError):
    """The checkpoint could not be written (disk full, no permission); the
    previous checkpoint is intact."""


def _mean(values: List[float]) -> float:
    return sum(values) / len(values)


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
    opts = evaluation.prepare(opts)   # --keep-best's criterion by name; --eval-every's checks
    if opts.resume and opts.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: "
                         "give one of them")
    if opts.mnist_dir is not None and not os.path.isdir(opts.mnist_dir):
        raise ValueError(f"--mnist-dir {opts.mnist_dir!r} is not a folder")
    run_dir = opts.out or os.path.join("runs", opts.model)
    device = resolve_device(opts.device)
    ctx, device = distributed.from_env(device)
    if not ctx.main:   # rank 0 alone writes and speaks; the others follow it
        log = lambda message: None  # noqa: E731
    os.makedirs(run_dir, exist_ok=True)
    with ctx, RunLock(run_dir) if ctx.main else nullcontext():   # ctx: the group's teardown
        if ctx.main:
            remove_stale_temporaries(run_dir, log)
        retain_freed_memory()
        opts, ckpt = _open(ctx, opts, explicit, run_dir, log)   # restore
        run = _Run(opts, ckpt, run_dir, log, ctx, device)
        run.train()
        return run.finish()


def _open(ctx: Context, opts: TrainOptions, explicit, run_dir: str, log):
    """:func:`open_run` on rank 0 (it may clear the folder), then on the
    other ranks only to read the checkpoint a resume continues."""
    if not ctx.active:
        return open_run(opts, explicit, run_dir, log)
    opened, error = None, None
    if ctx.main:
        try:
            opened = open_run(opts, explicit, run_dir, log)
        except ValueError as e:
            error = e
    ctx.agree_on_error(error)
    if ctx.main:
        return opened
    if opts.resume:
        return open_run(opts, explicit, run_dir, log)
    opts.out = run_dir
    return opts, None


class _Run:
    """One run in progress, from the built trainer to the final evaluation:
    the state its steps, saves, grids and curves share."""

    def __init__(self, opts: TrainOptions, ckpt: Optional[dict], run_dir: str,
                 log: Callable[[str], None], ctx: Context, device: torch.device) -> None:
        self.opts, self.run_dir, self.log, self.ctx = opts, run_dir, log, ctx
        self.ckpt_path = os.path.join(run_dir, CHECKPOINT)
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.curves_path = os.path.join(run_dir, "losses.png")
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        self.device = device
        self.amp = use_amp(opts.amp, device, log)
        set_backend(opts.backend)

        seed_everything(opts.seed)
        self.trainer = trainer = trainer_class(opts.model)(opts, device)
        if ckpt is not None:   # first: a resume on another world size would mislead below
            ctx.check_resume(ckpt, run_dir)
        ctx.check_options(opts, opts.batch_size or trainer.default_batch_size)
        trainer.build(ckpt["model_config"] if ckpt else None)
        if ckpt is None:   # a resume restores the run's own weights
            apply_init(trainer, log)   # --init-g / --init-d
        if ctx.active:
            self._distribute()
        data = trainer.train_data()
        # batch_multiple: samples per batch entry (PacGAN's packs of M samples).
        self.batch_size = batch_size = ((opts.batch_size or trainer.default_batch_size)
                                        * trainer.batch_multiple)
        n = len(data) if isinstance(data, ImageSource) else len(data[0])   # files or tensors
        if n < batch_size:
            packs = (f" ({batch_size // trainer.batch_multiple} packs of {trainer.batch_multiple})"
                     if trainer.batch_multiple > 1 else "")
            raise ValueError(f"the training set has {n} images, fewer than a batch "
                             f"of {batch_size}{packs}; lower --batch-size or add data")
        self.loader = make_loader(data, batch_size=batch_size, seed=opts.seed,
                                  shard=(ctx.rank, ctx.world), workers=opts.workers)
        self.per_epoch = max(1, len(self.loader) // trainer.batches_per_step)
        self.epochs = opts.epochs if opts.epochs is not None else trainer.default_epochs
        self.decay = (opts.decay_epochs if opts.decay_epochs is not None
                      else trainer.default_decay_epochs)
        self.total = (opts.steps if opts.steps is not None
                      else (self.epochs + self.decay) * self.per_epoch)
        # GANs: the LR decays over the last decay_epochs' steps (per step).
        self.decay_steps = self.decay * self.per_epoch if trainer.step_decay else 0

        self.step, self.epoch = 0, 0
        self.history: List[Dict[str, float]] = []
        self.saved_step: Optional[int] = None   # the step of the checkpoint on disk
        if ckpt is not None:
            self._restore(ckpt)
        elif ctx.main:
            open(self.metrics_path, "w").close()
        if ctx.main:
            os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
            self._write_config()
        self.evaluator = evaluation.Evaluator(self, ckpt)   # --eval-every, --keep-best

    def _distribute(self) -> None:
        """Several processes: synced batch norms (--sync-bn), the shared
        latents, per-rank seeds, rank 0's weights everywhere, averaged
        gradients (distributed.py says why not DDP)."""
        ctx, trainer = self.ctx, self.trainer
        if self.opts.sync_bn:
            from ..nn import convert_sync_batchnorm
            trainer.model = convert_sync_batchnorm(trainer.model)
            ctx.check_sync_bn(trainer.model, self.opts.model, self.device)
        ctx.share_latents(self.device)
        trainer.distribute(ctx)
        seed_everything(distributed.rank_seed(self.opts.seed, ctx.rank))
        ctx.broadcast_(trainer.model)
        for opt in trainer.optimizers.values():
            ctx.average_gradients(opt, trainer.grad_reduction)

    # ------------------------------------------------------------- restore
    def _restore(self, ckpt: dict) -> None:
        """Continues the checkpoint's run: trainer, loader, history and every
        RNG as they were when it was saved."""
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        if self.step >= self.total:
            raise ValueError(f"--resume: the run in {self.run_dir} is already at step "
                             f"{self.step} and the length asked for is {self.total} steps; ask "
                             f"for more with --steps N (N > {self.step}) or a larger --epochs")
        self.trainer.load_state(ckpt)
        self.loader.load_state_dict(ckpt["loader"])
        self.history = list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        if self.ctx.active:
            shared = ckpt["distributed"]
            set_rng_state(shared["rng"][self.ctx.rank])
            if shared.get("ranks"):   # absent from earlier checkpoints (gan/dcgan/cgan: none)
                self.trainer.load_rank_state(shared["ranks"][self.ctx.rank])
            self.ctx.latents.set_state(shared["latents"])
            self.ctx.broadcast_(self.trainer.model)
        self.log(f"resuming {self.opts.model} from {self.ckpt_path} at step {self.step} (epoch "
                 f"{self.epoch}) to step {self.total}")
        drop_records_after(self.metrics_path, self.step)
        self.saved_step = self.step

    def _write_config(self) -> None:
        config = {"options": self.opts.to_dict(), "model_config": self.trainer.model_config(),
                  "batch_size": self.batch_size, "steps": self.total,
                  "steps_per_epoch": self.per_epoch, "epochs": self.epochs,
                  "decay_epochs": self.decay, "device": str(self.device), "amp": self.amp,
                  "world_size": self.ctx.world, "versions": versions()}
        with open(os.path.join(self.run_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(json_safe(config), f, indent=2, default=str)

    # ------------------------------------------------------ what steps share
    def save(self, best: bool = False) -> None:
        """checkpoint.pt (and, ``best``, best.pt) at this step."""
        step = self.step
        bad = [n for n, p in self.trainer.model.named_parameters()
               if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"training diverged by step {step}: weight {bad[0]} holds "
                                   "NaN/inf")
        ctx, rng = self.ctx, rng_state(self.device.type == "cuda")
        extra = {}
        if ctx.active:   # every rank's RNG: a resume continues each rank's stream
            ranks = ctx.gather_state({"rng": rng, "trainer": self.trainer.rank_state()})
            extra["distributed"] = {"world_size": ctx.world,
                                    "rng": ranks and [r["rng"] for r in ranks],
                                    "ranks": ranks and [r["trainer"] for r in ranks],
                                    "latents": ctx.latents.get_state()}
        try:
            if ctx.main:
                state = {"format": FORMAT, "model_name": self.opts.model,
                             "options": self.opts.to_dict(),
                             "model_config": self.trainer.model_config(), **self.trainer.state(),
                             "loader": self.loader.state_dict(), "rng": rng,
                             "step": step, "epoch": self.epoch, "history": self.history,
                             "versions": versions(), **self.evaluator.state(), **extra}
                atomic_save(state, self.ckpt_path, *([self.evaluator.best_path] if best else []))
        except OSError as e:
            prev = (f"the previous checkpoint (step {self.saved_step}) is intact"
                    if self.saved_step is not None else "no earlier checkpoint exists")
            raise CheckpointSaveError(f"could not save the checkpoint to {self.ckpt_path} at "
                                      f"step {step} ({e.strerror or e}); {prev}") from None
        ctx.barrier()   # no rank ends (and has the launcher stop rank 0) mid-save
        self.saved_step = step

    def write_grid(self, path: str) -> Optional[str]:
        if not self.ctx.main:
            return None
        images, nrow = self.trainer.grid()
        path = self.trainer.write_picture(images, path, nrow)
        self.mlog.picture("samples", path, self.step)   # TensorBoard
        return path

    def draw_curves(self) -> Optional[str]:
        self.last_curves = time.perf_counter()
        if not self.ctx.main:
            return None
        return plot_losses(self.history, self.trainer.loss_groups, self.curves_path,
                           title=f"{self.opts.model}: {self.step} steps")

    def flush(self) -> None:
        """Moves the pending step losses into the history; a NaN/inf loss
        stops the run here, before anything is saved."""
        for s, p in self.pending:
            rec = {"step": s, **{k: float(v) for k, v in p.items()}}
            _check_finite(rec, s)
            self.history.append(rec)
            self.interval.append(rec)
        self.pending.clear()

    # --------------------------------------------------------------- train
    def train(self) -> None:
        """Steps until the asked length; on Ctrl-C/SIGTERM saves and raises
        :class:`TrainingInterrupted`, on NaN/inf raises
        :class:`TrainingDiverged` without saving."""
        opts = self.opts
        self.last_curves = time.perf_counter()
        self.mlog = MetricsLog(self.run_dir, enabled=self.ctx.main)
        self.trainer.model.train()
        self.bar = Progress(self.total, initial=min(self.step, self.total), desc=f"{opts.model}",
                            enabled=opts.progress and self.ctx.main)
        self.pending: List[Tuple[int, Dict[str, Tensor]]] = []
        self.interval: List[Dict[str, float]] = []
        self.t_last, self.n_last = time.perf_counter(), self.step
        batches = self.loader.batches()  # (epoch, batch) across epochs; resumes mid-epoch exactly
        where = (f" x {self.ctx.world} processes ({self.batch_size // self.ctx.world} each)"
                 if self.ctx.active else "")
        self.log(f"training {opts.model} on {self.device}{where} for {self.total} steps "
                 f"({self.per_epoch} per epoch, batch {self.batch_size}); run folder "
                 f"{self.run_dir}")
        self.stopping = False   # agreed by every rank after each step
        try:
            with StopFlag(escalate=not self.ctx.active) as stop:
                try:
                    while self.step < self.total:
                        if self.stopping or (stop.set and not self.ctx.active):
                            raise KeyboardInterrupt
                        try:
                            self._step(batches, stop)
                        except RuntimeError as e:   # a synced batch norm's collective, say
                            if (isinstance(e, PeerFailed) or not self.ctx.active
                                    or not distributed.in_collective(e)):
                                raise
                            raise distributed.peer_failed(e) from e
                except KeyboardInterrupt:
                    raise self._stopped(stop.signum) from None
        except (TrainingDiverged, PeerFailed) as e:
            self.bar.close()
            self.mlog.close()
            diverged = isinstance(e, TrainingDiverged)
            kept = (f"the last checkpoint, {self.ckpt_path} (step {self.saved_step}), is the "
                    f"{'last finite state' if diverged else 'last saved state'}"
                    if self.saved_step is not None else "no checkpoint was written")
            hint = ("Lower --lr or check the data" if diverged
                    else f"continue with --resume on {self.ctx.world} processes")
            raise type(e)(f"{e}; stopped without saving it: {kept}. {hint}") from None

    def _step(self, batches, stop: StopFlag) -> None:
        opts, trainer = self.opts, self.trainer
        self.ctx.maybe_fail(self.step + 1)
        group = []
        for _ in range(trainer.batches_per_step):
            e, b = next(batches)
            while self.epoch < e:  # a new epoch began: per-epoch LR schedules step
                self.epoch += 1
                trainer.end_epoch()
            group.append(tuple(t.to(self.device, non_blocking=True) for t in b))
        if self.decay_steps:
            trainer.decay_lr(step_decay_factor(self.step, self.total, self.decay_steps))
        with autocast(self.device, self.amp):
            stats = trainer.step(group)
        stats, self.stopping = self.ctx.reduce_stats(stats, stop.set, trainer.summed_stats)
        self.step += 1
        self.pending.append((self.step, stats))
        if self.step % opts.log_every == 0 or self.step == self.total:
            self._log_interval()
        else:
            self.bar.update()
        if self.step % opts.sample_every == 0:
            self.write_grid(os.path.join(self.run_dir, "samples", f"step_{self.step:06d}.png"))
            self.flush()
            self.draw_curves()
        if self.evaluator.due(self.step):   # first: the checkpoint then holds the best so far
            self.evaluator.evaluate(final=False)
        if (self.step % opts.checkpoint_every == 0 and self.step < self.total
                and self.saved_step != self.step):   # not saved by a new best just now
            self.flush()
            self.save()

    def _log_interval(self) -> None:
        """One metrics.jsonl record (the means since the last one), the bar
        or a log line, and the curves every 30 s."""
        self.flush()
        step, now = self.step, time.perf_counter()
        interval = self.interval
        # A stat some steps lack (lazy R1's "r1"): the mean over the steps that have it.
        keys = list(dict.fromkeys(k for r in interval for k in r if k != "step"))
        rec = {"step": step, "epoch": self.epoch,
               **{k: _mean([r[k] for r in interval if k in r]) for k in keys},
               "lr": self.trainer.lr(),
               "it_per_s": (step - self.n_last) / max(now - self.t_last, 1e-9)}
        self.mlog.log(rec, step)
        interval.clear()
        self.t_last, self.n_last = now, step
        shown = {k: rec[k] for k in self.trainer.progress_keys if k in rec}
        self.bar.update(shown)
        if not self.opts.progress:
            self.log(f"step {step}/{self.total} epoch {self.epoch} "
                     + " ".join(f"{k}={v:.4g}" for k, v in shown.items())
                     + f" ({rec['it_per_s']:.2f} it/s)")
        if now - self.last_curves >= 30.0:
            self.draw_curves()

    def _stopped(self, signum: Optional[int]) -> TrainingInterrupted:
        self.loader.close()
        self.bar.close()
        self.flush()
        self.save()
        self.draw_curves()
        self.mlog.close()
        return TrainingInterrupted(self.ckpt_path, self.step, signum)

    # -------------------------------------------------------------- finish
    def _evaluate(self, n: int) -> Dict[str, Any]:
        """The final evaluation; on several processes the samples (or
        translations) are made by all ranks, each its share, and every rank
        computes the metrics of all of them (rank 0 reports them)."""
        self.trainer.eval_split = self.ctx if self.ctx.active else None
        try:
            return self.trainer.run_eval(n)
        finally:
            self.trainer.eval_split = None

    def finish(self) -> RunResult:
        """The final checkpoint, grid, curves and evaluation."""
        self.loader.close()
        self.bar.close()
        self.flush()
        self.save()
        # Every rank evaluates (and saves a new best); rank 0 alone draws, plots and reports.
        metrics = self.evaluator.evaluate(final=True) if self.evaluator.n > 0 else {}
        if not self.ctx.main:
            self.mlog.close()
            return RunResult(paths={}, metrics={}, step=self.step, epoch=self.epoch)
        run_dir = self.run_dir
        paths = {"run": run_dir, "checkpoint": self.ckpt_path,
                 "config": os.path.join(run_dir, "config.json"), "metrics": self.metrics_path}
        paths["samples"] = self.write_grid(os.path.join(run_dir, "samples.png"))
        curves = self.draw_curves()
        if curves:
            paths["losses"] = curves
        if self.mlog.tb_dir:
            paths["tensorboard"] = self.mlog.tb_dir
        for name, path in (("metric_curves", self.evaluator.curves_path),
                           ("best", self.evaluator.best_path)):
            if os.path.isfile(path):
                paths[name] = path
        self.mlog.close()
        return RunResult(paths=paths, metrics=metrics, step=self.step, epoch=self.epoch)
