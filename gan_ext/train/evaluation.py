"""Evaluation during training: ``--eval-every N`` and ``--keep-best [METRIC]``.

Every N steps the run's evaluation (the final one's ``run_eval``, with
``--eval-n`` samples, split across the ranks on several processes) runs at
the same step on every rank, between two training steps. It draws only from
its own streams, and the global RNGs are saved and restored around it anyway,
with the model back in its training mode after it, so a run with evaluations
ends with the weights of the run without them, bit for bit.

Rank 0 appends each as ``{"step", "epoch", "eval": {...}, "final": false}``
to ``metrics.jsonl`` (the last evaluation, after training, has ``"final":
true`` and stays the last eval record) and draws the numeric metrics over the
steps in ``metrics.png``. With ``--keep-best`` an evaluation that improves
the criterion (a metric and its direction, per family
:attr:`gan_ext.train.base.Trainer.best_metric`; several metrics: the later
ones break ties) saves the checkpoint as ``best.pt`` too (atomically, and
``checkpoint.pt`` with it); both record ``best``: the criterion, its value
and the step, so a resumed run compares against the right best.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Tuple

from .base import trainer_class
from .checkpoint import rng_state, set_rng_state
from .monitor import pyplot, read_jsonl, save_figure
from .options import TrainOptions

__all__ = ["BEST", "METRIC_CURVES", "AUTO", "prepare", "check", "Evaluator", "plot_metrics",
           "eval_records"]

BEST = "best.pt"
METRIC_CURVES = "metrics.png"
AUTO = "auto"   # --keep-best without METRIC: the family's default criterion
# Numbers of an evaluation that are counts of the protocol, not results: not drawn.
_NOT_DRAWN = ("n", "max_modes", "A_to_B_n", "iw_k", "iw_n")


def prepare(opts: TrainOptions) -> TrainOptions:
    """Before the run folder is touched: ``--keep-best`` alone becomes the
    family's criterion by name (so a resume compares names), and a new run's
    evaluation options are checked."""
    if opts.keep_best == AUTO:
        opts.keep_best = ",".join(trainer_class(opts.model).default_best(opts))
    if not opts.resume:   # a resume's are checked once merged with the saved ones
        check(opts)
    return opts


def check(opts: TrainOptions) -> None:
    """One-line ValueErrors for evaluation options that cannot work."""
    eval_n = opts.eval_n if opts.eval_n is not None else 1
    if opts.eval_every is not None and eval_n == 0:
        raise ValueError("--eval-every N evaluates with --eval-n samples: --eval-n 0 leaves "
                         "nothing to evaluate")
    if opts.keep_best is None:
        return
    if opts.eval_every is None:
        raise ValueError("--keep-best needs --eval-every N (the evaluations it compares)")
    names = trainer_class(opts.model).metric_names(opts)
    if names is None:
        raise ValueError(f"--keep-best: {opts.model}'s evaluation gives no metrics on --data "
                         f"{opts.data} (only on its default MNIST data): there is no best to keep")
    if opts.data is not None and names is trainer_class(opts.model).data_metrics:
        from ..metrics import feature_extractor, installed_backend
        if feature_extractor() is None and installed_backend() is None:
            raise ValueError(f"--keep-best: {opts.model}'s evaluation gives no metrics on --data "
                             f"{opts.data} here: its FID/KID need torch-fidelity or clean-fid "
                             "installed, or GAN_EXT_FEATURE_EXTRACTOR set (README, Evaluation)")
    for metric in opts.keep_best.split(","):
        if metric not in names:
            raise ValueError(f"--keep-best: {opts.model}'s evaluation has no metric {metric!r}; "
                             f"it produces: {', '.join(names)}")


def eval_records(metrics_path: str) -> List[dict]:
    """The training's evaluation records in ``metrics.jsonl`` (not those of
    ``gan-ext eval``)."""
    return [rec for _, rec in read_jsonl(metrics_path)
            if isinstance(rec.get("eval"), dict) and "source" not in rec]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_metrics(records: List[dict], path: str, title: str = "") -> Optional[str]:
    """``metrics.png``: one panel per numeric metric over the steps (the
    final evaluation marked). None when no record has a number."""
    keys = list(dict.fromkeys(k for r in records for k, v in r["eval"].items()
                              if _number(v) and k not in _NOT_DRAWN))
    if not keys:
        return None
    plt = pyplot()
    cols = 2 if len(keys) > 1 else 1
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r["eval"][key], r.get("final", True)) for r in records
               if _number(r["eval"].get(key)) and math.isfinite(r["eval"][key])]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3)
            finals = [p for p in pts if p[2]]
            if finals:
                ax.plot([p[0] for p in finals], [p[1] for p in finals], "s", color="red",
                        label="final")
                ax.legend(loc="best")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


class Evaluator:
    """The evaluations of one run (``run``: the loop's ``_Run``): when they
    are due, their records and curves, and the best so far."""

    def __init__(self, run, ckpt: Optional[dict]) -> None:
        self.run = run
        opts, trainer = run.opts, run.trainer
        if opts.resume:   # merged with the saved options now; a new run's: prepare()
            check(opts)
        self.every = opts.eval_every
        self.n = opts.eval_n if opts.eval_n is not None else trainer.default_eval_n
        names = trainer.metric_names(opts) or {}
        self.criterion: List[Tuple[str, str]] = (
            [(m, names[m]) for m in opts.keep_best.split(",")] if opts.keep_best else [])
        self.best: Optional[dict] = (ckpt or {}).get("best")
        if self.best is not None and self.best.get("metric") != opts.keep_best:
            self.best = None
        self.best_path = os.path.join(run.run_dir, BEST)
        self.curves_path = os.path.join(run.run_dir, METRIC_CURVES)
        self.records = eval_records(run.metrics_path) if run.ctx.main else []

    def due(self, step: int) -> bool:
        """An evaluation during training at ``step`` (the last step has the final one)."""
        return self.every is not None and step % self.every == 0 and step < self.run.total

    def state(self) -> Dict[str, Any]:
        """What the checkpoint holds of the evaluations: the best so far."""
        return {"best": self.best} if self.best is not None else {}

    def evaluate(self, final: bool) -> Dict[str, Any]:
        """Evaluates now on every rank (the global RNGs untouched), logs the
        record, keeps the best and redraws the curves; returns the metrics."""
        run = self.run
        rng = rng_state(run.device.type == "cuda")
        try:
            metrics = run._evaluate(self.n)
        finally:
            set_rng_state(rng)
        rec = {"step": run.step, "epoch": run.epoch, "eval": metrics, "final": final}
        run.mlog.log(rec, run.step, prefix="eval")
        improved = self._improves(metrics)
        if improved:
            self.best = {"metric": run.opts.keep_best,
                         "value": [float(metrics[m]) for m, _ in self.criterion],
                         "step": run.step}
            run.flush()
            run.save(best=True)
        if run.ctx.main:
            self.records.append(rec)
        if run.ctx.main and self.every is not None:
            plot_metrics(self.records, self.curves_path,
                         title=f"{run.opts.model}: evaluation ({self.n} samples)")
        if run.ctx.main and not final:
            shown = " ".join(f"{k}={metrics[k]:.4g}" for k in run.trainer.eval_metrics
                             if _number(metrics.get(k)))
            run.log(f"eval at step {run.step}: {shown or metrics.get('note', '')}"
                    + (f" (best {run.opts.keep_best}: saved {BEST})" if improved else ""))
        return metrics

    def _improves(self, metrics: Dict[str, Any]) -> bool:
        if not self.criterion:
            return False
        values = [metrics.get(m) for m, _ in self.criterion]
        if not all(_number(v) and math.isfinite(v) for v in values):
            return False
        if self.best is None:
            return True
        def key(vals):
            return tuple(v if d == "max" else -v for v, (_, d) in zip(vals, self.criterion))
        return key(values) > key(self.best["value"])
