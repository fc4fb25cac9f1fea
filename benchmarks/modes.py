"""The mode-collapse table in one command: every benchmark's baseline and
cures, trained with `gan-ext train` over several seeds, evaluated by the
papers' protocols (gan_ext.metrics.modes), beside the published numbers.

    python benchmarks/modes.py                      # the whole table (hours on 2 cores)
    python benchmarks/modes.py --only ring,grid --seeds 3 --jobs 2
    python benchmarks/modes.py --quick              # CI: tiny runs + the metric checks, < 1 min

Each run is `gan-ext train MODEL ARGS --seed S --out OUT/ROW/seedS`; a
finished run (its metrics.jsonl holds the final evaluation) is reused, so
an interrupted table continues. Results: OUT/modes.json and a Markdown
table on stdout (method, ours mean +- std over seeds, published).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# Run lengths that fit the 20-minute budget on 2 CPU cores (the papers ran
# 100,000-500,000 iterations).
RING_STEPS = ["--steps", "30000"]
GRID_STEPS = ["--steps", "40000"]
SMNIST_STEPS = ["--steps", "6000"]
VEEGAN_SETTING = ["--arch", "veegan", "--batch-size", "64", "--g-steps", "2", "--amp",
                  "--steps", "3600"]


@dataclass
class Row:
    """One line of the table: ``gan-ext train MODEL ARGS``, and the published
    numbers under the same protocol (modes / high-quality % or KL) by source."""
    key: str
    model: str
    method: str
    args: List[str]
    published: Dict[str, str] = field(default_factory=dict)
    quick: bool = False      # one of the rows --quick runs (tiny): a baseline or a cheap cure

ROWS = [
    Row("ring-gan", "ring", "GAN", RING_STEPS, {"VEEGAN Table 1": "1 / 99.3%"}, quick=True),
    Row("ring-pack2-ema", "ring", "PacGAN2 + G EMA 0.999",
        RING_STEPS + ["--pack", "2", "--ema", "0.999"],
        {"PacGAN Table 1 (PacGAN2, radius 1, sigma 0.01)": "7.9 / 95.6%"}, quick=True),
    Row("ring-unrolled5", "ring", "unrolled, 5 steps", RING_STEPS + ["--unrolled", "5"],
        {"VEEGAN Table 1": "7.6 / 35.6%"}),
    Row("ring-mbstd", "ring", "minibatch stddev", RING_STEPS + ["--minibatch-stddev"]),
    # 20 kernels, not improved-gan's 100: at the batch of 500 the fused op's
    # three calls a step take ~85 ms at 100 kernels on one thread (42 minutes
    # a run); the sum lets D win at once here, the mean does not.
    Row("ring-mbd", "ring", "minibatch discrimination 20,5",
        RING_STEPS + ["--minibatch-discrimination", "20,5"]),
    Row("ring-mbd-mean", "ring", "minibatch discrimination 20,5, mean",
        RING_STEPS + ["--minibatch-discrimination", "20,5,mean"]),
    Row("grid-gan", "grid", "GAN", GRID_STEPS, quick=True),
    Row("grid-pack4-ema", "grid", "PacGAN4 + G EMA 0.999",
        GRID_STEPS + ["--pack", "4", "--ema", "0.999"],
        {"PacGAN Table 1 (PacGAN4)": "24.8 / 93.6%", "VEEGAN": "24.6 / 40%",
         "GDPP": "24.8 / 68.5%"}, quick=True),
    Row("grid-pack4-ema-60k", "grid", "PacGAN4 + G EMA 0.999, 60k steps",
        ["--steps", "60000", "--pack", "4", "--ema", "0.999"],
        {"PacGAN Table 1 (PacGAN4)": "24.8 / 93.6%"}),
    Row("grid-unrolled5", "grid", "unrolled, 5 steps", GRID_STEPS + ["--unrolled", "5"],
        {"VEEGAN Table 1": "23.6 / 16%"}),
    Row("grid-mbstd", "grid", "minibatch stddev", GRID_STEPS + ["--minibatch-stddev"]),
    Row("grid-mbd", "grid", "minibatch discrimination 20,5",
        GRID_STEPS + ["--minibatch-discrimination", "20,5"]),
    Row("grid-mbd-mean", "grid", "minibatch discrimination 20,5, mean",
        GRID_STEPS + ["--minibatch-discrimination", "20,5,mean"]),
    # Stacked MNIST, the Unrolled-GAN setting: the papers' two D calls per
    # step (one per batch), then --joint-batch (one call on real and fake).
    Row("smnist-q-dcgan", "stacked-mnist", "DCGAN, D = 1/4 G", SMNIST_STEPS,
        {"PacGAN Table 3": "30.6 / 5.99"}, quick=True),
    Row("smnist-q-dcgan-joint", "stacked-mnist", "DCGAN, D = 1/4 G, joint batch",
        SMNIST_STEPS + ["--joint-batch"]),
    Row("smnist-q-pack4-joint", "stacked-mnist", "PacDCGAN4, D = 1/4 G, joint batch",
        SMNIST_STEPS + ["--pack", "4", "--joint-batch"], {"PacGAN Table 3": "667.4 / 1.81"},
        quick=True),
    Row("smnist-q-pack4", "stacked-mnist", "PacDCGAN4, D = 1/4 G",
        ["--steps", "8000", "--pack", "4"], {"PacGAN Table 3": "667.4 / 1.81"}),
    Row("smnist-q-unrolled10", "stacked-mnist", "unrolled 10 steps, D = 1/4 G",
        ["--steps", "1500", "--unrolled", "10"], {"PacGAN Table 3": "327.2 / 4.66"}),
    Row("smnist-h-dcgan", "stacked-mnist", "DCGAN, D = 1/2 G", SMNIST_STEPS + ["--d-width", "0.5"],
        {"PacGAN Table 3": "628.0 / 2.58"}),
    Row("smnist-h-dcgan-joint", "stacked-mnist", "DCGAN, D = 1/2 G, joint batch",
        SMNIST_STEPS + ["--d-width", "0.5", "--joint-batch"]),
    Row("smnist-h-pack3-joint", "stacked-mnist", "PacDCGAN3, D = 1/2 G, joint batch",
        SMNIST_STEPS + ["--d-width", "0.5", "--pack", "3", "--joint-batch"],
        {"PacGAN Table 3": "866.6 / 0.90"}),
    # The VEEGAN setting as PacGAN's code trains it (batch 64, two G steps per
    # D step), in bf16 autocast where the CPU has native bf16 (avx512_bf16 or
    # AMX; 1.4x faster here): 3,600 steps fit the 20 minutes.
    Row("smnist-v-dcgan", "stacked-mnist", "DCGAN (VEEGAN setting)", VEEGAN_SETTING,
        {"PacGAN Table 2": "99 / 3.40", "VEEGAN": "150 / 2.95"}),
    Row("smnist-v-pack2", "stacked-mnist", "PacDCGAN2 (VEEGAN setting)",
        VEEGAN_SETTING + ["--pack", "2"], {"PacGAN Table 2": "1000 / 0.06"}),
    Row("smnist-v-pack2-ema", "stacked-mnist", "PacDCGAN2 + G EMA 0.999 (VEEGAN setting)",
        VEEGAN_SETTING + ["--pack", "2", "--ema", "0.999"], {"PacGAN Table 2": "1000 / 0.06"}),
]

QUICK = {"ring": ["--steps", "40", "--batch-size", "20", "--eval-n", "500"],
         "grid": ["--steps", "40", "--batch-size", "20", "--eval-n", "500"],
         "stacked-mnist": ["--steps", "3", "--batch-size", "16", "--limit", "256",
                           "--eval-n", "200"]}


def run_dir(out: str, row: Row, seed: int) -> str:
    return os.path.join(out, row.key, f"seed{seed}")


def final_metrics(path: str) -> Optional[dict]:
    """The final evaluation of the run in ``path`` (metrics.jsonl), or None."""
    from gan_ext.train.evaluation import eval_records
    evals = [e for e in eval_records(os.path.join(path, "metrics.jsonl")) if e.get("final", True)]
    return evals[-1]["eval"] if evals else None


def train(row: Row, seed: int, out: str, quick: bool, threads: int) -> dict:
    path = run_dir(out, row, seed)
    extra = [*_cure_args(row.args), *QUICK[row.model]] if quick else row.args
    recipe = {"model": row.model, "args": list(extra), "seed": seed}
    found = final_metrics(path)
    stamp = os.path.join(path, "benchmark_row.json")
    if found is not None and os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            done = json.load(f)
        if {k: done.get(k) for k in recipe} == recipe:   # the same row: reuse the run
            return {**found, "minutes": done.get("minutes", float("nan"))}
    args = [sys.executable, "-m", "gan_ext.cli", "train", row.model, *extra]
    args += ["--seed", str(seed), "--out", path, "--overwrite", "--no-progress",
             "--log-every", "500", "--sample-every", "2000", "--threads", str(threads)]
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{row.key} seed {seed} failed ({r.returncode}): "
                           f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
    m = final_metrics(path)
    m["minutes"] = (time.perf_counter() - t0) / 60
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump({**recipe, "minutes": m["minutes"]}, f)
    return m


def _cure_args(args: List[str]) -> List[str]:
    """The cure and setting options of a row, without its length and batch."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--steps", "--batch-size"):
            skip = True
            continue
        out.append(a)
    return out


def summarise(row: Row, results: List[dict]) -> dict:
    modes = [r["modes"] for r in results]
    q_key = "high_quality" if row.model in ("ring", "grid") else "kl"
    q = [r[q_key] * (100 if q_key == "high_quality" else 1) for r in results]

    def ms(v):
        v = [x for x in v if x is not None and math.isfinite(x)]
        if not v:
            return "n/a"
        return f"{statistics.mean(v):.1f} +- {statistics.stdev(v) if len(v) > 1 else 0.0:.1f}"
    steps = row.args[row.args.index("--steps") + 1] if "--steps" in row.args else "default"
    return {"row": row.key, "benchmark": row.model, "method": row.method, "steps": steps,
            "modes": ms(modes),
            q_key: ms(q), "seeds": len(results), "published": row.published,
            "minutes": ms([r.get("minutes", float("nan")) for r in results]), "runs": results}


def check_metrics() -> None:
    """The metrics on known inputs: a perfect sampler covers every mode, a
    single point covers one (the --quick form's assertions)."""
    import torch

    from gan_ext import metrics
    from gan_ext.train.modes import real_stacked
    g = torch.Generator().manual_seed(0)
    for mix in (metrics.RING, metrics.GRID):
        r = metrics.mixture_modes(mix.sample(2500, g), mix)
        assert r["modes"] == mix.modes and r["high_quality"] > 0.97, r
        one = metrics.mixture_modes(mix.centres[:1].float().repeat(2500, 1), mix)
        assert one["modes"] == 1 and abs(one["reverse_kl"] - math.log(mix.modes)) < 1e-9, one
        print(f"check {mix.name}: perfect sampler {r['modes']}/{mix.modes} modes, "
              f"{r['high_quality'] * 100:.1f}% high quality; one point {one['modes']} mode")
    x, _ = real_stacked(1000)
    r = metrics.stacked_mnist_modes(x)
    assert r["modes"] > 550, r["modes"]   # 1000 draws of 1000 modes: 632 expected
    one = metrics.stacked_mnist_modes(x[:1].repeat(200, 1, 1, 1))
    assert one["modes"] == 1
    print(f"check stacked-mnist: 1,000 real stacks cover {r['modes']} modes (KL {r['kl']:.3f}); "
          f"one image 1 mode")


def table(summaries: List[dict]) -> str:
    lines = ["| benchmark | method | steps | modes (ours) | high-quality % / KL (ours) | seeds | "
             "minutes/run | published (modes / quality) |", "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        q = s.get("high_quality", s.get("kl"))
        pub = "; ".join(f"{k}: {v}" for k, v in s["published"].items()) or "-"
        lines.append(f"| {s['benchmark']} | {s['method']} | {s['steps']} | {s['modes']} | {q} | "
                     f"{s['seeds']} | "
                     f"{s['minutes']} | {pub} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None,
                   help="comma-separated row keys or benchmarks (ring, grid, stacked-mnist)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--out", default="runs/modes",
                   help="runs go to OUT/ROW/seedS (--quick: OUT/quick/...); a finished run of "
                        "the same row and seed is reused")
    p.add_argument("--quick", action="store_true",
                   help="tiny runs of one seed per benchmark's first rows + the metric checks")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    a = p.parse_args(argv)
    if a.seeds < 1 or a.jobs < 1 or a.threads < 1:
        p.error("--seeds, --jobs and --threads must be at least 1")
    rows = ROWS
    if a.only:
        want = set(a.only.split(","))
        rows = [r for r in ROWS if r.key in want or r.model in want]
        if not rows:
            p.error(f"--only {a.only!r} matches no row; see --list")
    if a.list:
        for r in rows:
            print(f"{r.key:22s} gan-ext train {r.model} {' '.join(r.args)}")
        return 0
    if a.quick:
        check_metrics()
        quick_rows = [r for r in rows if r.quick]
        rows, seeds = quick_rows, [0]
        a.out = os.path.join(a.out, "quick")   # never mixed with the full table's runs
    else:
        seeds = list(range(a.seeds))
    jobs = [(r, s) for r in rows for s in seeds]
    with ThreadPoolExecutor(max_workers=a.jobs) as ex:
        results = list(ex.map(lambda rs: train(rs[0], rs[1], a.out, a.quick, a.threads), jobs))
    by_row: Dict[str, List[dict]] = {}
    for (r, _), m in zip(jobs, results):
        by_row.setdefault(r.key, []).append(m)
    summaries = [summarise(r, by_row[r.key]) for r in rows]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "modes.json"), "w", encoding="utf-8") as f:
        json.dump(summaries, f, indent=1, default=str)
    print(table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
