#!/usr/bin/env python3
"""Where a model step's speed-up comes from: the fused kernels, channels_last
weights, or PyTorch's fused Adam. Times one training step of each model case
in the five builds of ``gan_ext.bench.models.VARIANTS`` with the timing loop of
``gan-ext bench`` (warm-up, then one rep of every build per round, so machine
noise hits all alike), and prints the median of each with its ratio to
"plain" (> 1: faster than plain).

    python benchmarks/model_step_parts.py                       # all five model cases
    python benchmarks/model_step_parts.py -k dcgan28 --reps 20
    GAN_EXT_RETAIN_FREED_MEMORY=0 python benchmarks/model_step_parts.py   # glibc defaults

"plain+cl+adam" vs "gan_ext" isolates the kernels: both take the layout and
the optimizer, only the norm/activation/loss/sampling code differs.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from gan_ext import bench, retain_freed_memory
from gan_ext.bench import sync_fn
from gan_ext.bench.models import VARIANTS, variant_step
from gan_ext.bench.timing import interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", "--filter", default=None, help="words the case name must contain")
    ap.add_argument("--reps", type=int, default=10, help="timed rounds (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma list of {', '.join(VARIANTS)}; the first is the baseline")
    args = ap.parse_args()
    if args.reps < 1 or args.warmup < 0:
        ap.error(f"--reps must be at least 1 and --warmup at least 0, got {args.reps} and {args.warmup}")
    retained = retain_freed_memory()
    names = args.variants.split(",")
    for n in names:
        if n not in VARIANTS:
            ap.error(f"unknown variant {n!r}; choose from {', '.join(VARIANTS)}")
    cases = bench.select(bench.cases(kind="model"), args.filter)
    if not cases:
        ap.error(f"no model case matches {args.filter!r}")
    dev = torch.device("cpu")
    print(f"cpu, {torch.get_num_threads()} threads, float32, retain_freed_memory={retained}, "
          f"median of {args.reps} interleaved rounds; ratio = {names[0]} / variant")
    for case in cases:
        steps = {n: variant_step(case, n, dev, torch.float32, seed=0) for n in names}
        # A step lasts milliseconds or more: one call per repetition.
        times, _ = interleaved(steps, sync_fn(dev), args.reps, args.warmup, min_rep_seconds=0.0)
        med = {n: statistics.median(t) for n, t in times.items()}
        cells = "  ".join(f"{n} {med[n] * 1e3:.1f} ms ({med[names[0]] / med[n]:.2f}x)" for n in names)
        print(f"{case.group}: {cells}", flush=True)


if __name__ == "__main__":
    main()
