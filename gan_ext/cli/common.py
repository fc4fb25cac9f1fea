"""What the ``gan-ext`` commands share: the command record, the one-line
usage error, the argument types and options several commands take, and the
output helpers."""
from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..train.options import IW_K, IW_N, MAX_SEED

PROG = "gan-ext"


class UsageError(Exception):
    """An error the user caused and can fix: printed as one line, exit code 2."""


@dataclass
class Command:
    help: str                                          # one line, shown in `gan-ext --help`
    examples: str                                      # shown at the end of `gan-ext NAME --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]           # returns the exit code
    description: Optional[str] = None


# ------------------------------------------------------------ argument types
def _whole_number_at_least(minimum: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        try:
            n = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n
    return parse


positive_int = _whole_number_at_least(1)
nonneg_int = _whole_number_at_least(0)


def bounded_int(maximum: int) -> Callable[[str], int]:
    """A positive whole number of at most ``maximum``."""
    def parse(s: str) -> int:
        n = positive_int(s)
        if n > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {n:,}")
        return n
    return parse


def seed(s: str) -> int:
    n = nonneg_int(s)
    if n > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1, got {n}")
    return n


# ------------------------------------------------------------ shared options
def best_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--best", action="store_true",
                   help="use the run's best.pt (kept by 'train --eval-every N --keep-best') "
                        "instead of its checkpoint.pt; CKPT: the run folder or its checkpoint.pt")


def best_checkpoint(args: argparse.Namespace) -> str:
    """CKPT, or with ``--best`` the best.pt beside it (in the run folder)."""
    if not getattr(args, "best", False):
        return args.checkpoint
    folder = (args.checkpoint if os.path.isdir(args.checkpoint)
              else os.path.dirname(os.path.abspath(args.checkpoint)))
    path = os.path.join(folder, "best.pt")
    if not os.path.isfile(path):
        raise UsageError(f"--best: there is no best.pt in {folder} (a run trained with "
                         "--eval-every N --keep-best keeps one)")
    return path


def run_arguments(p: argparse.ArgumentParser) -> None:
    """--best, --device and --threads: what the commands reading a run share."""
    best_argument(p)
    device_argument(p)
    threads_argument(p)


def open_run(args: argparse.Namespace) -> str:
    """The common start of those commands: one-line warnings, --threads, and
    the checkpoint (best.pt with --best)."""
    one_line_warnings()
    apply_threads(args)
    return best_checkpoint(args)


def threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help=f"CPU threads for torch (default: {torch.get_num_threads()}, what torch "
                        "uses on this machine)")


def iw_arguments(p) -> None:
    """``--iw-k``/``--iw-n``: the VAE's importance-weighted NLL (train and eval)."""
    p.add_argument("--iw-k", type=positive_int, default=None, metavar="K",
                   help=f"vae: draws from q(z|x) per image of the importance-weighted NLL "
                        f"(default {IW_K}; eval: the run's)")
    p.add_argument("--iw-n", type=nonneg_int, default=None, metavar="N",
                   help=f"vae: test images (the first ones) of the importance-weighted NLL "
                        f"(default min({IW_N}, the evaluated images); eval: the run's; 0: "
                        f"none). --iw-k 1000 --iw-n 10000: the papers' full measure")


def apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)


def device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the model runs (default auto: cuda when available)")


# ------------------------------------------------------------------- output
def one_line_warnings() -> None:
    """Data warnings (a skipped non-image file) as one 'gan-ext: warning:' line each."""
    def fmt(message, category, filename, lineno, line=None):
        return f"{PROG}: warning: {message}\n"
    warnings.formatwarning = fmt


def _fmt_metric(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_metric(x) for x in v) + "]"
    return str(v)


def print_metrics(metrics: dict) -> None:
    """An aligned two-column table; warnings after it."""
    rows = [(k, _fmt_metric(v)) for k, v in metrics.items()
            if k not in ("coverage_warnings", "warnings")]
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    for w in list(metrics.get("warnings", [])) + list(metrics.get("coverage_warnings", [])):
        print(f"  warning: {w}")
