"""What ``fit`` finds in a run folder before it trains: the checkpoint a
``--resume`` continues, with the saved options merged with the given ones,
or a fresh start (``--overwrite`` clearing a previous run)."""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple

from .checkpoint import check_complete, load_checkpoint
from .monitor import read_jsonl
from .options import RESUMABLE_OVERRIDES, TrainOptions, check_resume
from .run_dir import CHECKPOINT, clear_run, run_in

__all__ = ["open_run", "merge_resume", "drop_records_after"]

def open_run(opts: TrainOptions, explicit: Sequence[str], run_dir: str,
             log: Callable[[str], None]) -> Tuple[TrainOptions, Optional[dict]]:
    """(the options to train with, the checkpoint to continue or None). A
    resume reads and checks the checkpoint; a new run refuses a folder that
    holds another run unless ``--overwrite``, which clears it."""
    ckpt_path = os.path.join(run_dir, CHECKPOINT)
    ckpt = None
    if opts.resume:
        if not os.path.isfile(ckpt_path):
            raise ValueError(f"--resume: there is no checkpoint at {ckpt_path}; train without "
                             "--resume first or point --out at the run folder")
        ckpt = load_checkpoint(ckpt_path, model=opts.model)
        check_complete(ckpt, ckpt_path)
        opts = merge_resume(opts, ckpt["options"], explicit)
    else:
        existing = run_in(run_dir)
        if existing is not None and not opts.overwrite:
            raise ValueError(f"{run_dir} already holds {existing}: continue it with --resume, "
                             "replace it with --overwrite, or choose another --out")
        if existing is not None:
            clear_run(run_dir)
            log(f"note: --overwrite: removed the previous run's files from {run_dir}")
    opts.out = run_dir
    return opts, ckpt


def merge_resume(opts: TrainOptions, saved: dict, explicit: Sequence[str]) -> TrainOptions:
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


def drop_records_after(metrics_path: str, step: int) -> None:
    """Removes from ``metrics.jsonl`` the training records and the
    evaluations during training (``"final": false``) logged after the
    checkpoint at ``step`` (the resumed run logs them again); final
    evaluations and those of ``gan-ext eval`` stay."""
    if not os.path.isfile(metrics_path):
        return
    keep = [line for line, rec in read_jsonl(metrics_path)
            if ("eval" in rec and rec.get("final", True)) or rec.get("step", 0) <= step]
    with open(metrics_path, "w", encoding="utf-8") as f:
        f.writelines(keep)
