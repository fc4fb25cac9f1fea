#!/usr/bin/env python3
"""What the gradient all-reduces of a step cost on several processes.

    python benchmarks/allreduce.py                      # dcgan and cyclegan, 2 gloo ranks
    python benchmarks/allreduce.py --models dcgan,vae --ranks 2 --reps 50

Training on N processes (``gan-ext train --nproc-per-node N``) combines the
gradients of each optimizer before its step in one all-reduce of all of them
(gan_ext/train/distributed.py). This builds each model's default networks as
``gan-ext train`` does, takes the gradient sizes of every optimizer, and
times that all-reduce alone (a flat float32 tensor of the same size, as the
hook sends) on N gloo ranks of this machine: median and quartiles over
``--reps`` interleaved repetitions, plus the sum per training step (one
all-reduce per optimizer step). Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def sizes(model: str) -> dict:
    """{optimizer name: number of gradient elements} of the model's default build."""
    import torch
    from gan_ext.train import TrainOptions
    from gan_ext.train.base import trainer_class
    trainer = trainer_class(model)(TrainOptions(model=model), torch.device("cpu"))
    trainer.build()
    return {name: sum(p.numel() for g in opt.param_groups for p in g["params"])
            for name, opt in trainer.optimizers.items()}


def worker(rank: int, world: int, init: str, plan: list, reps: int, queue) -> None:
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    tensors = [torch.randn(n) for _, _, n in plan]
    for t in tensors:                       # warm-up: the connections, the buffers
        dist.all_reduce(t)
    times = [[] for _ in plan]
    for _ in range(reps):                   # interleaved: every size once per repetition
        for i, t in enumerate(tensors):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times[i].append(time.perf_counter() - t0)
    if rank == 0:
        queue.put(times)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="dcgan,cyclegan")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--reps", type=int, default=30)
    a = p.parse_args(argv)
    if a.ranks < 2:
        p.error("--ranks must be at least 2")
    import torch
    import torch.multiprocessing as mp
    plan = []
    for model in a.models.split(","):
        for name, n in sizes(model).items():
            plan.append((model, name, n))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = os.path.join(tempfile.mkdtemp(), "init")
    procs = [ctx.Process(target=worker, args=(r, a.ranks, init, plan, a.reps, queue))
             for r in range(a.ranks)]
    for proc in procs:
        proc.start()
    times = queue.get(timeout=600)
    for proc in procs:
        proc.join(60)
    from gan_ext._info import cpu_name
    print(f"gradient all-reduce, {a.ranks} gloo ranks on {cpu_name()}, torch {torch.__version__}, "
          f"{a.reps} reps")
    print("| model | optimizer | gradients | MiB (float32) | median ms | quartiles ms |")
    print("|---|---|---|---|---|---|")
    per_step = {}
    for (model, name, n), t in zip(plan, times):
        ms = sorted(x * 1e3 for x in t)
        q = statistics.quantiles(ms, n=4)
        per_step[model] = per_step.get(model, 0.0) + statistics.median(ms)
        print(f"| {model} | {name} | {n:,} | {n * 4 / 2**20:.2f} | {statistics.median(ms):.2f} "
              f"| {q[0]:.2f}-{q[2]:.2f} |")
    for model, ms in per_step.items():
        print(f"{model}: {ms:.2f} ms of gradient all-reduce per training step (one per optimizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
