"""What a run shows and leaves behind while it trains: ``metrics.jsonl``,
TensorBoard events (when tensorboard is installed), the progress bar and
``losses.png``."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .._atomic import atomic_write

__all__ = ["MetricsLog", "Progress", "plot_losses", "append_jsonl", "json_safe", "pyplot",
           "save_figure", "read_jsonl"]


def json_safe(v):
    """NaN/inf as null: JSON has no NaN (json.dumps would write a bare NaN,
    which JSON readers refuse)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def append_jsonl(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(json_safe(record), sort_keys=False, allow_nan=False) + "\n")


def read_jsonl(path: str) -> List[Tuple[str, dict]]:
    """(line, record) for each line of ``path`` that is JSON (none if the
    file is missing; a torn last line is skipped)."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append((line, json.loads(line)))
            except ValueError:
                continue
    return out


def _numbers(record: dict, prefix: str):
    """(tag, value) of the numbers of ``record``: top-level ones as
    ``prefix/key``, those of a nested dict (an evaluation's metrics) as
    ``prefix/metric``; booleans, strings and lists are left out."""
    for k, v in record.items():
        if isinstance(v, dict):
            yield from _numbers(v, prefix)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
            yield f"{prefix}/{k}", v


class MetricsLog:
    """One JSON object per line in ``metrics.jsonl``; the same numbers go to
    TensorBoard when ``torch.utils.tensorboard`` imports (else silently not),
    as do the sample pictures (:meth:`picture`)."""

    def __init__(self, run_dir: str, tensorboard: bool = True, enabled: bool = True) -> None:
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.writer = None
        self.tb_dir = None
        self.enabled = enabled   # False: a rank other than 0 of a distributed run writes nothing
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
                self.tb_dir = os.path.join(run_dir, "tensorboard")
                self.writer = SummaryWriter(self.tb_dir)
            except Exception:
                self.writer, self.tb_dir = None, None

    def log(self, record: dict, step: int, prefix: str = "train") -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self.writer is not None:
            for tag, v in _numbers(record, prefix):
                self.writer.add_scalar(tag, v, step)
            self.writer.flush()

    def picture(self, tag: str, path: Optional[str], step: int) -> None:
        """The PNG at ``path`` (a sample grid or scatter plot) as a
        TensorBoard image at ``step``."""
        if self.writer is None or not path:
            return
        import numpy as np
        from PIL import Image
        with Image.open(path) as img:
            self.writer.add_image(tag, np.asarray(img.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _SimpleBar:
    """The fallback when tqdm is missing: one line rewritten with ``\\r``."""

    def __init__(self, total: int, initial: int, desc: str) -> None:
        self.total, self.n, self.desc = total, initial, desc
        self.start, self.start_n, self.post = time.perf_counter(), initial, ""

    def update(self, k: int = 1) -> None:
        self.n += k
        rate = (self.n - self.start_n) / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\r{self.desc} {self.n}/{self.total} [{rate:.2f} it/s] {self.post}")
        sys.stderr.flush()

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.post = s

    def close(self) -> None:
        sys.stderr.write("\n")


class Progress:
    """tqdm when importable (it shows it/s), else a plain one-line bar."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train",
                 enabled: bool = True) -> None:
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True,
                            file=sys.stderr)
        except Exception:
            self.bar = _SimpleBar(total, initial, desc)

    def update(self, losses: Optional[Dict[str, float]] = None) -> None:
        if self.bar is None:
            return
        if losses:
            self.bar.set_postfix_str(" ".join(f"{k}={v:.3f}" for k, v in losses.items()),
                                     refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _smooth(values: Sequence[float], window: int) -> List[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(history: List[Dict[str, float]], groups: Dict[str, Sequence[str]],
                path: str, title: str = "") -> Optional[str]:
    """``losses.png``: one panel per group (e.g. {"GAN": ["d_loss", "g_loss"]}),
    the raw per-step values faint and a moving average on top. Returns the
    path, or None when there is nothing to plot."""
    if not history:
        return None
    plt = pyplot()

    steps = [h["step"] for h in history]
    groups = {g: [k for k in keys if any(k in h for h in history)] for g, keys in groups.items()}
    groups = {g: keys for g, keys in groups.items() if keys}
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.2 * len(groups)), squeeze=False)
    window = max(1, len(history) // 50)
    for ax, (name, keys) in zip(axes[:, 0], groups.items()):
        for key in keys:
            pts = [(s, h[key]) for s, h in zip(steps, history)
                   if key in h and math.isfinite(h[key])]
            if not pts:
                continue
            xs, ys = zip(*pts)
            line, = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)
            ax.plot(xs, _smooth(list(ys), window), color=line.get_color(), label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> str:
    """Writes ``fig`` as a PNG atomically (a run killed mid-draw keeps the
    previous picture) and closes it; returns the path."""
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=90, format="png"))
    finally:
        pyplot().close(fig)
    return path
