"""``gan-ext bench``: time the fused layers, losses and model steps against
eager PyTorch (the harness is :mod:`gan_ext.bench`)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

import torch

from ..memory import retain_freed_memory
from .common import PROG, Command, UsageError, apply_threads, positive_int, threads_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a handful of cases with fewer repetitions (seconds, not minutes)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run (default auto: cuda when available, else cpu)")
    threads_argument(p)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="input and parameter dtype (default: float32)")
    p.add_argument("--reps", type=positive_int, default=None, metavar="N",
                   help="timed repetitions per case; the median is reported "
                        "(default: 50, 20 with --quick)")
    p.add_argument("--warmup", type=positive_int, default=None, metavar="N",
                   help="untimed repetitions before timing (default: 5, 3 with --quick)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of the eager block (compiles every case: slow)")
    p.add_argument("--models", action="store_true",
                   help="time whole training steps of the models (DCGAN, MLP GAN, VAE, "
                        "CycleGAN) instead of single blocks: fused model vs the plain-PyTorch "
                        "build (slow: use --reps 10)")
    p.add_argument("-k", "--filter", default=None, metavar="WORDS",
                   help="only cases whose name contains every word, e.g. 'bn_lrelu fwd+bwd'")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")


def run(args: argparse.Namespace) -> int:
    # Imported here, not with the CLI: only this command needs the harness
    # (and, through its model cases, every model family).
    from .. import bench as harness

    retain_freed_memory()  # both sides of every ratio run in this process with it

    kind = "model" if args.models else "all"
    selected = harness.select(harness.cases(quick=args.quick, kind=kind), args.filter)
    if not selected:
        raise UsageError(f"no benchmark case matches --filter {args.filter!r} "
                         f"(see '{PROG} bench --list')")
    if args.list:
        for c in selected:
            print(c.group)
        return 0

    apply_threads(args)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise UsageError(f"--device cuda was requested but {why} (torch {torch.__version__}); "
                         "use --device cpu")
    dtype = getattr(torch, args.dtype)
    reps = args.reps or (20 if args.quick else 50)
    warmup = args.warmup or (3 if args.quick else 5)
    print(f"{PROG} bench: {len(selected)} case{'s' if len(selected) != 1 else ''}"
          f"{' (quick)' if args.quick else ''}, fused gan_ext vs eager PyTorch"
          f"{' vs torch.compile' if args.compile else ''}")
    busy = _machine_busy()
    if busy:
        print(f"{PROG}: warning: {busy}: timings and ratios will be distorted", file=sys.stderr)
    harness.run(selected, device=device, dtype=dtype, reps=reps, warmup=warmup, compile=args.compile)
    busy = _machine_busy()
    if busy:
        print(f"{PROG}: warning: at the end, {busy}: these timings may be distorted",
              file=sys.stderr)
    return 0


def _cpu_busy_fraction(seconds: float = 0.5) -> float:
    """The share of all CPU time that other processes used over ``seconds``
    (Linux /proc/stat and /proc/self/stat; 0.0 where they cannot be read)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return sum(fields), fields[3] + fields[4], int(own[11]) + int(own[12])
    try:
        t0, idle0, me0 = sample()
        time.sleep(seconds)
        t1, idle1, me1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = max(t1 - t0, 1)
    return max(0.0, (total - (idle1 - idle0) - (me1 - me0)) / total)


def _machine_busy(threshold: float = 0.15) -> Optional[str]:
    """A phrase when other processes use more than ``threshold`` of the CPUs."""
    share = _cpu_busy_fraction()
    if share <= threshold:
        return None
    return (f"other processes are using {share:.0%} of this machine's {os.cpu_count()} CPUs")


COMMAND = Command(
    help="time the fused layers and losses against eager PyTorch",
    description="Time fused gan_ext blocks and losses against the same code in eager "
                "PyTorch (and torch.compile with --compile): norm+activation blocks at "
                "the DCGAN batch-64 shapes, GAN/L1 losses, the VAE reparameterization "
                "and minibatch discrimination at the shapes of the models. "
                "Repetitions are interleaved after warm-up; the median is reported. "
                "Ratios > 1 mean the fused block is faster.",
    examples=(f"  {PROG} bench --quick\n"
              f"  {PROG} bench --device cuda --dtype bfloat16\n"
              f"  {PROG} bench --compile -k 'bn_relu fwd+bwd'\n"
              f"  {PROG} bench -k reparam_kl\n"
              f"  {PROG} bench --models --reps 10 -k dcgan64\n"
              f"  {PROG} bench --list"),
    add_arguments=add_arguments,
    run=run,
)
