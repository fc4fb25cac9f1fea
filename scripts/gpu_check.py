"""The GPU check of issue 12, in two parts of under 7 minutes each, for a
machine lent for a few minutes (H200, the machine's own python3 and torch, no
network): every minute goes to running, none to debugging.

    python3 scripts/gpu_check.py --part 1     # build in place, gan-ext info, every CUDA test
    python3 scripts/gpu_check.py --part 2     # sanitizers, benchmarks, training, profiles, ncu
    python3 scripts/gpu_check.py --dry-run    # the same control flow on the CPU, small
    python3 scripts/gpu_check.py --merge A/results.json B/results.json --out DIR

(`make gpu-check PART=1|2`.) Everything lands in --out (default $OUT when set,
else gpu-check-out/), at most five files so that it all comes back from the
device machine: report.md (tables for benchmarks/RESULTS.md), results.json
(every figure), logs.tar.gz (every log, the junit XML, the raw ncu CSV), and
after part 1 the built extension with its stamp (_C*.so, build.json).
Part 2 reuses that build when its stamp matches the sources and torch
(--reuse-build DIR, default .gpu-check-build/ when it exists: copy the two
files there and carry the folder), and rebuilds otherwise.

Each section has a time budget and runs in its own process (a device fault or
a hang in one loses only that section); the GPU-side sections write their
figures after every case, so a section stopped at its budget keeps what it
measured. The report and results are rewritten after every section.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.abspath(__file__)
SANITIZE_DRIVER = os.path.join(ROOT, "scripts", "cuda_sanitize.py")
NORM_ENV = "GAN_EXT_CUDA_NORM_ACT"
# The two norm_act designs: the default (new) paths and today's ("legacy").
SETTINGS = ("default", "legacy")
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
# Six minutes per part: with the machine's start and the transfers each call
# stays under 7 minutes, and the whole check near the 12.
PART_BUDGET_S = 360.0
OUT_FILES_MAX = 8      # what comes back from $OUT
LOG_CAP_BYTES = 2 << 20

# (name, parts, budget in seconds, kind): "host" sections run here and start
# their own tools; "py" sections are this script re-run with --section in a
# child process that touches the GPU. Part 2 starts with env and build too: a
# fresh machine holds no build (build reuses part 1's when it is carried).
SECTIONS: Tuple[Tuple[str, Tuple[int, ...], float, str], ...] = (
    ("env", (1, 2), 20, "host"),
    ("build", (1, 2), 330, "host"),
    ("info", (1,), 30, "host"),
    ("tests", (1,), 300, "host"),
    ("tests_legacy", (1,), 90, "host"),
    ("device", (2,), 15, "py"),
    ("sanitize", (2,), 90, "host"),
    ("bench_norm", (2,), 110, "py"),
    # Not in a part since session 26: bench_norm times the legacy design
    # interleaved in-process (--sections bench_norm_legacy still runs it apart).
    ("bench_norm_legacy", (), 40, "py"),
    ("bench_loss", (2,), 35, "py"),
    ("bench_steps", (2,), 50, "py"),
    ("train", (2,), 30, "host"),
    ("profile", (2,), 15, "py"),
    ("graphs", (2,), 20, "py"),
    ("ncu", (2,), 35, "host"),
    ("dist", (2,), 40, "host"),   # last: it must not push issue 12's sections out
)
SECTION_NAMES = tuple(s[0] for s in SECTIONS)

# Targets of issue 12 on the H200.
TARGET_BN_EAGER = 1.4
TARGET_BN_COMPILE = 1.0
TARGET_BN_BW_PCT = 60.0
TARGET_GAN_LOSS = 5.0
TARGET_REPARAM = 3.0
TARGET_DCGAN_STEP = 1.15

NCU_METRICS = (
    "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__warps_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread",
    "launch__grid_size", "launch__block_size", "launch__waves_per_multiprocessor")
# If this ncu rejects a metric name, the check retries with these.
NCU_METRICS_SAFE = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
                    "launch__registers_per_thread", "launch__grid_size")
# Marks the boundary between two ncu cases: torch.cuda._sleep's kernel.
NCU_MARKER = "spin_kernel"


# =================================================================== arguments
def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return v


def _budget_override(text: str) -> Tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in SECTION_NAMES:
        raise argparse.ArgumentTypeError(
            f"--budget takes SECTION=SECONDS with SECTION one of {', '.join(SECTION_NAMES)}; got {text!r}")
    try:
        return name, _positive_float(value)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"--budget {name}: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("1", "2", "all"), default="all",
                   help="1: build, info, CUDA tests; 2: sanitizers, benchmarks, training, "
                        "profiles, ncu; all: both (over 10 minutes: two calls on the device)")
    p.add_argument("--out", default=None,
                   help="output folder (default: $OUT when set, else gpu-check-out)")
    p.add_argument("--work", default=None,
                   help="scratch folder for logs and runs (default: gpu-check-work/ in the repo)")
    p.add_argument("--sections", default=None, metavar="A,B",
                   help=f"only these sections, in their usual order ({', '.join(SECTION_NAMES)})")
    p.add_argument("--budget", action="append", type=_budget_override, default=[],
                   metavar="SECTION=SECONDS", help="override one section's time budget (repeatable)")
    p.add_argument("--part-budget", type=_positive_float, default=PART_BUDGET_S, metavar="S",
                   help=f"seconds for a whole part (default {PART_BUDGET_S:.0f}); sections past it "
                        "are skipped, the last ones get what is left")
    p.add_argument("--python", default=None,
                   help="interpreter for builds, tests and children (default: this one)")
    p.add_argument("--reuse-build", default=None, metavar="DIR",
                   help="folder holding a part-1 build (_C*.so + build.json) to reuse when its "
                        "stamp matches (default: .gpu-check-build/ when it exists)")
    p.add_argument("--jobs", type=int, default=16, help="build jobs (MAX_JOBS), default 16")
    p.add_argument("--test-workers", type=int, default=8,
                   help="pytest-xdist workers for the CUDA tests (when xdist is importable)")
    p.add_argument("--sanitize-jobs", type=int, default=8,
                   help="sanitizer runs at a time (4 tools x 2 settings)")
    p.add_argument("--sanitizer", default="compute-sanitizer", help="compute-sanitizer executable")
    p.add_argument("--ncu", default="ncu", help="Nsight Compute CLI executable")
    p.add_argument("--mnist-dir", default=None,
                   help="MNIST IDX files for the training run (default: synthetic IDX files; "
                        "the speed does not depend on the pictures)")
    p.add_argument("--dry-run", action="store_true",
                   help="run the control flow on the CPU with tiny cases and no build (checks the "
                        "script, not the GPU)")
    p.add_argument("--merge", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="merge results.json files (part 1, part 2, reruns) into one report in --out")
    # Internal: one section in this process (the parent's child).
    p.add_argument("--section", default=None, choices=SECTION_NAMES, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--ncu-target", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.environ.get("OUT") or os.path.join(ROOT, "gpu-check-out")
    if args.work is None:
        args.work = os.path.join(ROOT, "gpu-check-work")
    if args.python is None:
        args.python = sys.executable
    if args.sections is not None:
        wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in SECTION_NAMES]
        if unknown or not wanted:
            p.error(f"--sections: unknown {', '.join(unknown) or '(empty)'}; "
                    f"choose from {', '.join(SECTION_NAMES)}")
        args.sections = wanted
    for opt in ("jobs", "test_workers", "sanitize_jobs"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    if args.reuse_build is None:
        default = os.path.join(ROOT, ".gpu-check-build")
        args.reuse_build = default if os.path.isdir(default) else None
    args.budgets = dict(SECTION_BUDGETS)
    args.budgets.update(dict(args.budget))
    return args


SECTION_BUDGETS = {name: budget for name, _, budget, _ in SECTIONS}


def plan(args) -> List[Tuple[str, int]]:
    """(section, part) in running order; a section of both parts runs once
    with --part all."""
    out: List[Tuple[str, int]] = []
    for part in {"1": (1,), "2": (2,), "all": (1, 2)}[args.part]:
        for name, parts, _, _ in SECTIONS:
            if part in parts and name not in [n for n, _ in out]:
                out.append((name, part))
    if args.sections is not None:
        # Chosen by name: each in its first part, in the usual order.
        # (A section of no part, as bench_norm_legacy, runs as part 2.)
        out = [(n, next((p for m, ps, _, _ in SECTIONS if m == n for p in ps), 2))
               for n in SECTION_NAMES if n in args.sections]
    return out


def planned_sections(args) -> List[str]:
    return [n for n, _ in plan(args)]


# ======================================================= results and the report
def load_results(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def merge_results(items: Sequence[dict]) -> dict:
    """Later files win section by section (a rerun replaces its section)."""
    merged = {"meta": {"merged_from": []}, "sections": {}}
    for r in items:
        merged["meta"]["merged_from"].append(r.get("meta", {}))
        merged["sections"].update(r.get("sections", {}))
    return merged


def _fmt(v, spec=".1f", none="n/a") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)


def _ratio(a, b) -> Optional[float]:
    return a / b if a is not None and b else None


def _mark(value: Optional[float], target: float) -> str:
    if value is None:
        return "n/a"
    return "met" if value >= target else "**missed**"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _data(results: dict, name: str) -> dict:
    return results.get("sections", {}).get(name, {}).get("data") or {}


def bench_targets(row: dict) -> Dict[str, Tuple[Optional[float], float]]:
    """The issue's targets that apply to one benchmark row: name -> (value, target)."""
    out = {}
    block, mode = row.get("block"), row.get("mode")
    eager_ratio = _ratio(row.get("eager_us"), row.get("fused_us"))
    if block in ("bn_relu", "bn_lrelu") and mode == "fwd+bwd" and row.get("dcgan_shape"):
        out["eager/fused >= 1.4"] = (eager_ratio, TARGET_BN_EAGER)
        if row.get("compile_us") is not None:
            out["compile/fused >= 1.0"] = (_ratio(row["compile_us"], row["fused_us"]),
                                           TARGET_BN_COMPILE)
        out["copy BW >= 60%"] = (row.get("bw_pct"), TARGET_BN_BW_PCT)
    elif block in ("d_bce", "d_lsgan", "g_bce") and mode == "fwd+bwd":
        out["eager/fused >= 5"] = (eager_ratio, TARGET_GAN_LOSS)
    elif block == "reparam_kl" and mode == "fwd+bwd":
        out["eager/fused >= 3"] = (eager_ratio, TARGET_REPARAM)
    elif block == "step_dcgan64":
        out["plain/fused >= 1.15"] = (eager_ratio, TARGET_DCGAN_STEP)
    return out


def _bench_rows(rows: List[dict], with_setting: bool) -> List[str]:
    header = ["case", "dtype"] + (["norm_act"] if with_setting else []) + [
        "fused us", "eager us", "compile us", "eager/fused", "compile/fused", "% copy BW", "targets",
        "note"]
    out = []
    for r in rows:
        marks = [f"{k}: {_mark(v, t)} ({_fmt(v, '.2f')})" for k, (v, t) in bench_targets(r).items()]
        out.append([r["case"], r["dtype"]] + ([r.get("setting", "")] if with_setting else []) + [
            _fmt(r.get("fused_us")), _fmt(r.get("eager_us")), _fmt(r.get("compile_us")),
            _fmt(_ratio(r.get("eager_us"), r.get("fused_us")), ".2f"),
            _fmt(_ratio(r.get("compile_us"), r.get("fused_us")), ".2f"),
            _fmt(r.get("bw_pct"), ".0f"), "; ".join(marks) or "-",
            "; ".join(f"{k}: {v}" for k, v in (r.get("errors") or {}).items())[:120].replace("|", "/")])
    return _table(header, out)


def _legacy_table(pairs) -> List[str]:
    """The new norm_act design against the legacy one: (new row, legacy us,
    legacy % of copy bandwidth) per case."""
    return _table(["case", "dtype", "new fused us", "legacy fused us", "legacy/new",
                   "new % BW", "legacy % BW"],
                  [[n["case"], n["dtype"], _fmt(n.get("fused_us")), _fmt(legacy_us),
                    _fmt(_ratio(legacy_us, n.get("fused_us")), ".2f"),
                    _fmt(n.get("bw_pct"), ".0f"), _fmt(legacy_bw, ".0f")]
                   for n, legacy_us, legacy_bw in pairs])


def write_report(results: dict) -> str:
    """One Markdown report: the tables to paste into benchmarks/RESULTS.md."""
    L: List[str] = ["# gan_ext GPU check", ""]
    meta = results.get("meta", {})
    if meta.get("dry_run"):
        L += ["**Dry run on the CPU: these figures say nothing about a GPU.**", ""]
    env, dev = _data(results, "env"), _data(results, "device")
    L += ["## Device and versions", ""]
    facts = [("GPU", dev.get("name") or env.get("gpu")), ("SMs", dev.get("sm_count")),
             ("L2", f"{dev['l2_bytes'] / 2**20:.0f} MiB" if dev.get("l2_bytes") else None),
             ("memory", f"{dev['total_memory'] / 2**30:.0f} GiB" if dev.get("total_memory") else None),
             ("measured copy bandwidth (read + write)",
              f"{dev['copy_GBps']:.0f} GB/s" if dev.get("copy_GBps") else None),
             ("driver", env.get("driver")), ("torch", dev.get("torch") or env.get("torch")),
             ("torch CUDA", dev.get("torch_cuda") or env.get("torch_cuda")),
             ("nvcc", env.get("nvcc")), ("python", env.get("python")),
             ("compute-sanitizer", env.get("compute_sanitizer")), ("ncu", env.get("ncu"))]
    L += _table(["", ""], [(k, v if v is not None else "n/a") for k, v in facts]) + [""]

    L += ["## Sections", ""]
    rows = []
    for name in SECTION_NAMES:
        s = results.get("sections", {}).get(name)
        if s is None:
            continue
        skipped = (s.get("data") or {}).get("skipped")  # the GPU sections' list of unmeasured cases
        note = (s.get("error") or "") + (f" {len(skipped)} cases not measured (budget)"
                                         if isinstance(skipped, list) and skipped else "")
        rows.append([name, s.get("status"), _fmt(s.get("seconds")), _fmt(s.get("budget_s"), ".0f"),
                     note.strip().replace("|", "/")[:160]])
    L += _table(["section", "status", "seconds", "budget s", "note"], rows) + [""]

    b = _data(results, "build")
    if b:
        L += ["## Build", "", f"{b.get('how', 'n/a')}: `{b.get('so', 'n/a')}` in "
              f"{_fmt(b.get('seconds'))} s; compiled backends: {b.get('compiled_backends', 'n/a')}; "
              f"command: `{b.get('command', 'n/a')}`" + (f"; {b['warning']}" if b.get("warning") else ""),
              ""]
    info = _data(results, "info")
    if info:
        L += ["`gan-ext info`: " + ", ".join(f"{k}={v}" for k, v in info.items()), ""]

    runs = [(n, _data(results, n)) for n in ("tests", "tests_legacy") if _data(results, n)]
    if runs:
        L += ["## CUDA tests", ""]
        rows = []
        for n, t in runs:
            verdict = ("**missed** (none passed)" if not t.get("passed") else
                       "met" if not t.get("failures") and not t.get("errors") else "**missed**")
            rows.append([n, t.get("tests"), t.get("passed"), t.get("failures"), t.get("errors"),
                         t.get("skipped"), _fmt(t.get("time")), verdict, f"`{t.get('command', '')}`"])
        L += _table(["run", "tests", "passed", "failed", "errors", "skipped", "seconds",
                     "every CUDA test passes", "command"], rows) + [""]
        for n, t in runs:
            for f in t.get("failed", [])[:30]:
                L.append(f"- {n}: `{f['id']}`: {f.get('message', '')[:200]}")
        if any(t.get("failed") for _, t in runs):
            L.append("")

    s = _data(results, "sanitize")
    if s:
        L += ["## compute-sanitizer over scripts/cuda_sanitize.py", ""]
        rows = []
        for r in s.get("runs", []):
            errs = r.get("errors")
            extra = f" ({r['hazards']} hazards)" if r.get("hazards") is not None else ""
            rows.append([r["tool"], r["setting"], _fmt(errs, "d", "no summary") + extra,
                         r.get("driver", "n/a"), _fmt(r.get("seconds")),
                         "met" if errs == 0 and r.get("driver_ok") else "**missed**"])
        L += _table(["tool", "norm_act", "errors", "driver", "seconds", "0 errors"], rows) + [""]

    dev_bw = dev.get("copy_GBps")
    norm_rows = _data(results, "bench_norm").get("rows", [])
    legacy_rows = _data(results, "bench_norm_legacy").get("rows", [])
    if norm_rows or legacy_rows:
        L += ["## Norm + activation blocks (median per call, CUDA events, interleaved)", ""]
        L += ["`% copy BW`: the fewest bytes (forward: read x, write y; forward+backward: "
              "also read dy and the saved tensor, write dx) over the time, against the measured "
              f"device copy ({_fmt(dev_bw, '.0f')} GB/s).", ""]
        L += _bench_rows(norm_rows, False) + [""]
    interleaved = [r for r in norm_rows if r.get("fused_legacy_us") is not None]
    if interleaved:
        L += ["### Today's paths (GAN_EXT_CUDA_NORM_ACT=legacy) against the new ones, "
              "interleaved in one process", "", "legacy/new > 1: the new design is faster.", ""]
        L += _legacy_table([(r, r["fused_legacy_us"],
                             r["bw_pct"] * r["fused_us"] / r["fused_legacy_us"]
                             if r.get("bw_pct") and r.get("fused_us") else None)
                            for r in interleaved]) + [""]
    if legacy_rows:
        L += ["### Today's paths (GAN_EXT_CUDA_NORM_ACT=legacy) against the new ones", ""]
        new_by_key = {(r["case"], r["dtype"]): r for r in norm_rows}
        L += _legacy_table([({**new_by_key.get((r["case"], r["dtype"]), {}), "case": r["case"],
                              "dtype": r["dtype"]}, r.get("fused_us"), r.get("bw_pct"))
                            for r in legacy_rows]) + [""]
    loss_rows = _data(results, "bench_loss").get("rows", [])
    if loss_rows:
        L += ["## Losses and VAE ops", ""] + _bench_rows(loss_rows, False) + [""]
    triton = [r for r in norm_rows + loss_rows if r.get("triton_kernels") is not None]
    if triton:
        L += ["### Kernels torch.compile (Inductor) generated", ""]
        L += _table(["case", "dtype", "distinct Triton kernels", "Triton launches per step",
                     "fused launches per step"],
                    [[r["case"], r["dtype"], r["triton_kernels"], r.get("triton_launches", "n/a"),
                      r.get("fused_launches", "n/a")] for r in triton]) + [""]
    step_rows = _data(results, "bench_steps").get("rows", [])
    if step_rows:
        L += ["## Whole training steps (float32)", ""]
        rows = []
        for r in step_rows:
            marks = [f"{k}: {_mark(v, t)} ({_fmt(v, '.2f')})" for k, (v, t) in bench_targets(r).items()]
            rows.append([r["case"], _fmt(r.get("fused_us") and r["fused_us"] / 1e3, ".2f"),
                         _fmt(r.get("eager_us") and r["eager_us"] / 1e3, ".2f"),
                         _fmt(r.get("compile_us") and r["compile_us"] / 1e3, ".2f"),
                         _fmt(_ratio(r.get("eager_us"), r.get("fused_us")), ".2f"),
                         _fmt(_ratio(r.get("compile_us"), r.get("fused_us")), ".2f"),
                         "; ".join(marks) or "-", r.get("note", "")])
        L += _table(["step", "fused ms", "plain ms", "compiled ms", "plain/fused", "compiled/fused",
                     "targets", "note"], rows) + [""]
    tr = _data(results, "train")
    if tr:
        L += ["## `gan-ext train dcgan`", "", f"`{tr.get('command', '')}`: exit {tr.get('returncode')}, "
              f"{_fmt(tr.get('seconds'))} s wall ({tr.get('data', 'n/a')}); last logged losses: "
              f"{tr.get('last_metrics', 'n/a')}", ""]
    dr = _data(results, "dist").get("attempts", [])
    if dr:
        L += ["## Several processes on one GPU: `gan-ext train dcgan --nproc-per-node 2 --sync-bn`",
              ""]
        L += _table(["backend", "device", "exit", "steps", "it/s", "seconds", "error"],
                    [[a["backend"], a["device"], a["returncode"], a.get("steps_done", "n/a"),
                      _fmt(a.get("it_per_s"), ".2f"), _fmt(a.get("seconds")), a.get("error", "-")]
                     for a in dr]) + [""]
    pr = _data(results, "profile").get("rows", [])
    if pr:
        L += ["## Where the time goes: torch.profiler, one step", ""]
        L += ["host us: the step's Python/dispatch time until it returns (no sync); device us: "
              "the sum of its kernels. Host-bound when host >= device.", ""]
        L += _table(["case", "impl", "kernels", "launches", "device us", "host us", "host-bound",
                     "top kernels"],
                    [[r["case"], r["impl"], r.get("distinct_kernels"), r.get("launches"),
                      _fmt(r.get("device_us")), _fmt(r.get("host_us")),
                      "yes" if r.get("host_bound") else "no",
                      ", ".join(f"{k['name'][:40]} x{k['count']}" for k in r.get("kernels", [])[:4])]
                     for r in pr]) + [""]
    gr = _data(results, "graphs").get("rows", [])
    if gr:
        L += ["## CUDA-graph replay (device-only time of one step)", ""]
        L += _table(["case", "impl", "graph replay us", "launched us", "launched/graph", "note"],
                    [[r["case"], r["impl"], _fmt(r.get("graph_us")), _fmt(r.get("launch_us")),
                      _fmt(_ratio(r.get("launch_us"), r.get("graph_us")), ".2f"),
                      r.get("error", "")[:120]] for r in gr]) + [""]
    nc = _data(results, "ncu")
    if nc.get("kernels"):
        L += ["## Nsight Compute (--cache-control none --clock-control none)", ""]
        L += _table(["norm_act", "case", "kernel", "us", "DRAM MB r/w", "L2 MB", "SM %", "mem %",
                     "warps active %", "regs", "grid", "waves/SM"],
                    [[k.get("setting"), k.get("case"), k.get("kernel", "")[:60],
                      _fmt(k.get("time_us")), f"{_fmt(k.get('dram_read_MB'))}/{_fmt(k.get('dram_write_MB'))}",
                      _fmt(k.get("l2_MB")), _fmt(k.get("sm_pct")), _fmt(k.get("mem_pct")),
                      _fmt(k.get("warps_active_pct")), _fmt(k.get("registers"), ".0f"),
                      _fmt(k.get("grid"), ".0f"), _fmt(k.get("waves"), ".2f")]
                     for k in nc["kernels"]]) + [""]
    failed = [(n, s) for n, s in results.get("sections", {}).items() if s.get("status") != "ok"]
    if failed:
        L += ["## Sections that did not finish", ""]
        L += [f"- {n}: {s.get('status')}: {s.get('error', '')}" for n, s in failed] + [""]
    return "\n".join(L)


# ========================================================== output management
class Run:
    """The results of this invocation, flushed to --out after every section."""

    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        os.makedirs(self.out, exist_ok=True)
        # Each invocation's logs are its own; only a folder this script made
        # (it holds the marker) is emptied.
        marker = os.path.join(self.work, ".gpu-check-work")
        if os.path.exists(marker):
            shutil.rmtree(self.work)
        os.makedirs(self.work, exist_ok=True)
        open(marker, "w").close()
        self.results = {"meta": {"argv": sys.argv[1:], "part": args.part, "dry_run": args.dry_run,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                 "python": args.python},
                        "sections": {}}
        self.extra_out: List[str] = []  # files copied to --out besides the three below

    def record(self, name: str, entry: dict) -> None:
        self.results["sections"][name] = entry
        self.flush()

    def flush(self) -> None:
        _atomic_write(os.path.join(self.out, "results.json"),
                      json.dumps(self.results, indent=1, default=str))
        try:
            report = write_report(self.results)
        except Exception:  # noqa: BLE001  (the figures are in results.json; never lose the run)
            import traceback

            report = ("# gan_ext GPU check\n\nThe report writer failed; every figure is in "
                      f"results.json.\n\n```\n{traceback.format_exc()}```\n")
        _atomic_write(os.path.join(self.out, "report.md"), report)
        pack_logs(self.work, os.path.join(self.out, "logs.tar.gz"))


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def pack_logs(work: str, dest: str, cap: int = LOG_CAP_BYTES) -> None:
    """Every file under work except run folders' binaries, each cut to its
    first and last cap/2 bytes: one file back from the device, never over
    its size limit."""
    tmp = dest + ".tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for dirpath, dirnames, filenames in os.walk(work):
            dirnames[:] = sorted(d for d in dirnames if d not in ("mnist", "cache"))
            for fn in sorted(filenames):
                path = os.path.join(dirpath, fn)
                if fn.endswith((".pt", ".so", ".png", ".tmp")) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                if len(data) > cap:
                    data = (data[: cap // 2] + b"\n... [cut by gpu_check] ...\n" + data[-cap // 2:])
                info = tarfile.TarInfo(os.path.relpath(path, work))
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, dest)


# ============================================================ process helpers
def run_cmd(cmd: Sequence[str], log_path: str, timeout: float, env: Optional[dict] = None,
            cwd: str = ROOT) -> dict:
    """Runs cmd in its own process group with stdout+stderr into log_path;
    kills the whole group at timeout. Returns returncode (None when killed),
    seconds, timed_out, the log's tail."""
    t0 = time.monotonic()
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                    env=full_env, start_new_session=True)
        except OSError as e:
            return {"returncode": None, "seconds": 0.0, "timed_out": False,
                    "error": f"cannot start {cmd[0]}: {e}", "tail": ""}
        timed_out = False
        try:
            rc = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = None
    return {"returncode": rc, "seconds": time.monotonic() - t0, "timed_out": timed_out,
            "tail": _tail(log_path)}


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _py_env(args, setting: Optional[str] = None) -> dict:
    env = {"PYTHONPATH": ROOT + (os.pathsep + os.environ["PYTHONPATH"]
                                 if os.environ.get("PYTHONPATH") else ""),
           "PYTHONUNBUFFERED": "1", "GAN_EXT_OFFLINE": "1"}
    if setting is not None:
        env[NORM_ENV] = "legacy" if setting == "legacy" else None
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


# ========================================================== host sections
def section_env(run: Run, budget: float) -> dict:
    args = run.args
    log = os.path.join(run.work, "env.log")

    def out(cmd, timeout=15.0) -> Optional[str]:
        if shutil.which(cmd[0]) is None:
            return None
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            with open(log, "a") as f:
                f.write(f"$ {' '.join(cmd)}\n{type(e).__name__}: {e}\n")
            return None
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
        return r.stdout.strip() if r.returncode == 0 else None

    data = {"tools": {t: shutil.which(t) for t in ("nvidia-smi", "nvcc", args.sanitizer, args.ncu)}}
    smi = out(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
               "clocks.mem", "--format=csv,noheader"])
    if smi:
        parts = [p.strip() for p in smi.splitlines()[0].split(",")]
        data.update(gpu=parts[0], driver=parts[1] if len(parts) > 1 else None, nvidia_smi=smi)
    nvcc = out(["nvcc", "--version"])
    data["nvcc"] = nvcc.splitlines()[-1] if nvcc else None
    san = out([args.sanitizer, "--version"])
    data["compute_sanitizer"] = san.splitlines()[-1] if san else None
    ncu = out([args.ncu, "--version"])
    data["ncu"] = ncu.splitlines()[-1] if ncu else None
    py = out([args.python, "-c", "import json, sys, torch; print(json.dumps({'python': "
              "sys.version.split()[0], 'torch': torch.__version__, 'torch_cuda': torch.version.cuda, "
              "'cuda_available': torch.cuda.is_available()}))"], timeout=max(budget - 5, 5))
    if py:
        data.update(json.loads(py.splitlines()[-1]))
    data["cpus"] = os.cpu_count()
    return data


def source_stamp(python: str) -> dict:
    """What a build depends on: the sources, the build script, torch, the arch list."""
    h = hashlib.sha256()
    files = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "csrc")):
        dirnames.sort()
        files += [os.path.join(dirpath, f) for f in sorted(filenames)]
    files += [os.path.join(ROOT, "setup.py")]
    for path in files:
        h.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    torch_version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    return {"sources_sha256": h.hexdigest(), "torch": torch_version,
            "arch": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")}


def built_so() -> Optional[str]:
    found = sorted(f for f in os.listdir(os.path.join(ROOT, "gan_ext"))
                   if f.startswith("_C") and f.endswith(".so"))
    return os.path.join(ROOT, "gan_ext", found[0]) if found else None


def reusable_build(reuse_dir: Optional[str], stamp: dict) -> Optional[str]:
    """The .so in reuse_dir when its build.json matches stamp, else None."""
    if not reuse_dir or not os.path.isdir(reuse_dir):
        return None
    try:
        with open(os.path.join(reuse_dir, "build.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if any(saved.get(k) != v for k, v in stamp.items()):
        return None
    sos = [f for f in os.listdir(reuse_dir) if f.startswith("_C") and f.endswith((".so", ".so.gz"))]
    return os.path.join(reuse_dir, sos[0]) if len(sos) == 1 else None


RETURN_LIMIT = 15 << 20  # a file over 16 MiB does not come back from the device


def export_so(so: str, out_dir: str) -> Tuple[str, int]:
    """Copies the built extension into out_dir small enough to come back:
    without debug information (the build's -g makes it several times larger;
    code and symbols stay), gzipped if still too big. Returns (path, bytes)."""
    dest = os.path.join(out_dir, os.path.basename(so))
    for old in (dest, dest + ".gz"):
        if os.path.exists(old):
            os.remove(old)
    strip = shutil.which("strip") or shutil.which("objcopy")
    if strip is not None and subprocess.run([strip, "--strip-debug", "-o", dest, so],
                                            capture_output=True).returncode == 0:
        pass
    else:
        shutil.copy2(so, dest)
    if os.path.getsize(dest) > RETURN_LIMIT:
        import gzip

        with open(dest, "rb") as src, gzip.open(dest + ".gz", "wb") as gz:
            shutil.copyfileobj(src, gz)
        os.remove(dest)
        dest += ".gz"
    return dest, os.path.getsize(dest)


def install_so(path: str) -> str:
    """Puts a saved extension (.so or .so.gz) into gan_ext/, replacing any other."""
    for old in [f for f in os.listdir(os.path.join(ROOT, "gan_ext"))
                if f.startswith("_C") and f.endswith(".so")]:
        os.remove(os.path.join(ROOT, "gan_ext", old))
    name = os.path.basename(path)
    target = os.path.join(ROOT, "gan_ext", name[:-3] if name.endswith(".gz") else name)
    if name.endswith(".gz"):
        import gzip

        with gzip.open(path, "rb") as gz, open(target, "wb") as dst:
            shutil.copyfileobj(gz, dst)
    else:
        shutil.copy2(path, target)
    os.chmod(target, 0o755)
    return target


def _import_probe(args) -> dict:
    code = ("import json, gan_ext; from gan_ext import _backend; print(json.dumps({"
            "'loaded': _backend.extension_loaded, 'error': _backend.load_error, "
            "'compiled_backends': sorted(_backend.compiled_devices)}))")
    r = subprocess.run([args.python, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, **{k: v for k, v in _py_env(args).items() if v}},
                       timeout=120)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"loaded": False, "error": (r.stderr or r.stdout)[-500:]}


def section_build(run: Run, budget: float) -> dict:
    args = run.args
    stamp = source_stamp(args.python)
    # GAN_EXT_PORTABLE=1: the baseline CPU kernels alone (the check runs CUDA
    # tests; the AVX2/AVX-512 copies cost ~60 s of build on the H200).
    env = {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": stamp["arch"], "MAX_JOBS": str(args.jobs),
           "GAN_EXT_PORTABLE": os.environ.get("GAN_EXT_PORTABLE", "1")}
    cmd = [args.python, "setup.py", "build_ext", "--inplace"]
    data = {"stamp": stamp, "command": " ".join(f"{k}={v}" for k, v in env.items()) + " " +
            " ".join(cmd)}
    reuse = reusable_build(args.reuse_build, stamp)
    t0 = time.monotonic()
    if reuse:
        install_so(reuse)
        data["how"] = f"reused from {args.reuse_build}"
    elif args.dry_run:
        data["how"] = "dry run: not built (the command above is what part 1 runs)"
    else:
        r = run_cmd(cmd, os.path.join(run.work, "build.log"), budget, env)
        data.update(how="built", returncode=r["returncode"], timed_out=r["timed_out"])
        if r["returncode"] != 0:
            raise SectionError(f"build failed (exit {r['returncode']}, timed out: {r['timed_out']}): "
                               f"{_last_error_line(r['tail'])}", data)
    data["seconds"] = time.monotonic() - t0
    so = built_so()
    data["so"] = os.path.relpath(so, ROOT) if so else None
    probe = _import_probe(args)
    data["compiled_backends"] = probe.get("compiled_backends")
    if not probe.get("loaded"):
        raise SectionError(f"the extension does not load: {probe.get('error')}", data)
    if not args.dry_run and "cuda" not in (probe.get("compiled_backends") or []):
        raise SectionError("the extension loaded without CUDA kernels", data)
    if so:
        data["so_bytes"] = os.path.getsize(so)
        data["libstdcxx"] = libstdcxx_linkage(so)
    if so and data["how"] == "built":  # a reused build is already where it came from
        exported, size = export_so(so, run.out)
        data["exported"] = {"file": os.path.basename(exported), "bytes": size}
        if size > 16 << 20:
            data["warning"] = "over 16 MiB: it will not come back from the device machine's $OUT"
        _atomic_write(os.path.join(run.out, "build.json"), json.dumps(stamp, indent=1))
    return data


def libstdcxx_linkage(so: str) -> str:
    """'shared' when the extension needs libstdc++.so, 'static' when the C++
    runtime was copied into it (session 26: the image's compiler did that, and
    every error message holding a number segfaulted), else 'unknown'."""
    try:
        r = subprocess.run(["readelf", "-W", "-d", "--dyn-syms", so], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if r.returncode != 0:
        return "unknown"
    if any("(NEEDED)" in l and "libstdc++.so" in l for l in r.stdout.splitlines()):
        return "shared"
    return "static" if "_ZNSt6locale13_S_initializeEv" in r.stdout else "unknown"


def _last_error_line(text: str) -> str:
    lines = [l for l in text.splitlines() if "error" in l.lower()]
    return (lines[-1] if lines else (text.strip().splitlines() or [""])[-1])[:300]


def section_info(run: Run, budget: float) -> dict:
    args = run.args
    log = os.path.join(run.work, "info.log")
    r = run_cmd([args.python, "-m", "gan_ext.cli", "info", "--json"], log, budget, _py_env(args))
    if r["returncode"] != 0:
        raise SectionError(f"gan-ext info failed: {_last_error_line(r['tail'])}")
    text = r["tail"]
    start = text.rfind("{")
    end = text.rfind("}")
    while start >= 0:
        try:
            return json.loads(text[start:end + 1])
        except ValueError:
            start = text.rfind("{", 0, start)
    raise SectionError("gan-ext info printed no JSON")


def _importable(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def parse_junit(path: str) -> dict:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0, "failed": []}
    for s in suites:
        for k in ("tests", "failures", "errors", "skipped"):
            out[k] += int(s.get(k, 0))
        out["time"] += float(s.get("time", 0.0))
        for tc in s.iter("testcase"):
            for kind in ("failure", "error"):
                el = tc.find(kind)
                if el is not None:
                    out["failed"].append({"id": f"{tc.get('classname')}::{tc.get('name')}",
                                          "kind": kind, "message": (el.get("message") or "")[:500]})
    out["passed"] = out["tests"] - out["failures"] - out["errors"] - out["skipped"]
    return out


def parse_pytest_summary(text: str) -> dict:
    """Counts from pytest's last line ('3 failed, 120 passed, 4 skipped in 12.3s')."""
    lines = [l for l in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
    counts = {}
    if lines:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", lines[-1]):
            counts["errors" if what.startswith("error") else what] = int(n)
    return counts


# The norm_act CUDA tests again on today's paths (GAN_EXT_CUDA_NORM_ACT=legacy):
# the design a failing new path would fall back to must pass too.
LEGACY_TESTS = ("tests/test_norm_act_op.py", "tests/test_cuda_first_run.py", "-k", "norm_act")


def section_tests(run: Run, budget: float, legacy: bool = False) -> dict:
    args = run.args
    tag = "cuda-legacy" if legacy else "cuda"
    junit = os.path.join(run.work, f"junit-{tag}.xml")
    if os.path.exists(junit):
        os.remove(junit)
    cmd = [args.python, "-m", "pytest", *(LEGACY_TESTS if legacy else ("tests",)), "-m", "cuda",
           "-q", "-p", "no:cacheprovider", "-rfE", f"--junitxml={junit}"]
    if _importable(args.python, "xdist"):
        cmd += ["-n", str(args.test_workers)]
    if _importable(args.python, "pytest_timeout"):
        # A hung kernel fails its test instead of the whole run (and the junit file).
        cmd += ["--timeout", "240"]
    r = run_cmd(cmd, os.path.join(run.work, f"tests-{tag}.log"), budget,
                _py_env(args, "legacy" if legacy else "default"))
    data = {"command": ("GAN_EXT_CUDA_NORM_ACT=legacy " if legacy else "") + " ".join(cmd[1:]),
            "returncode": r["returncode"], "timed_out": r["timed_out"]}
    if os.path.exists(junit):
        data.update(parse_junit(junit))
    else:
        counts = parse_pytest_summary(r["tail"])
        data.update(counts)
        data["note"] = "no junit file (run stopped); counts from the log"
    if r["timed_out"]:
        raise SectionError(f"stopped at the budget ({budget:.0f} s)", data)
    if r["returncode"] not in (0, 1, 5):  # 1: tests failed (reported as such), 5: none collected
        raise SectionError(f"pytest exit {r['returncode']}: {_last_error_line(r['tail'])}", data)
    return data


def parse_sanitizer(text: str) -> dict:
    """The counts compute-sanitizer prints at exit, and the driver's own line."""
    out = {"errors": None, "hazards": None, "warnings": None, "driver": None, "driver_ok": False}
    m = re.findall(r"ERROR SUMMARY: (\d+) errors?", text)
    if m:
        out["errors"] = int(m[-1])
    m = re.findall(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)",
                   text)
    if m:  # racecheck prints this summary instead of an ERROR SUMMARY
        out["hazards"], errors, out["warnings"] = (int(v) for v in m[-1])
        if out["errors"] is None:
            out["errors"] = errors
    m = re.findall(r"cuda_sanitize: (\d+)/(\d+) cases ran.*?; (\d+) failed", text)
    if m:
        ran, total, failed = (int(v) for v in m[-1])
        out["driver"] = f"{ran}/{total}"
        out["driver_ok"] = failed == 0 and ran == total
    return out


def section_sanitize(run: Run, budget: float) -> dict:
    args = run.args
    have_tool = shutil.which(args.sanitizer) is not None
    if not have_tool and not args.dry_run:
        raise SectionError(f"{args.sanitizer} not found")
    device = "cpu" if args.dry_run else "cuda"
    jobs = []
    # Without the tool (a dry run) the driver runs bare, once per setting.
    for tool in SANITIZER_TOOLS if have_tool else SANITIZER_TOOLS[:1]:
        for setting in SETTINGS:
            driver = [args.python, SANITIZE_DRIVER, "--device", device, "--level", "paths"]
            # Without the caching allocator every tensor is its own allocation,
            # so memcheck sees an overrun past a tensor's end and initcheck a
            # read of memory nothing wrote.
            # API errors are PyTorch's own probing (e.g. of pointer attributes),
            # not kernel faults: the counts are the kernels' errors.
            cmd = ([args.sanitizer, "--tool", tool, "--print-limit", "100", "--report-api-errors", "no"]
                   if have_tool else []) + driver
            env = {**_py_env(args, setting), "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
            jobs.append((tool, setting, cmd, env))
    deadline = time.monotonic() + budget
    running: List[Tuple[str, str, subprocess.Popen, str, float, object]] = []
    runs = []
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < args.sanitize_jobs:
            tool, setting, cmd, env = pending.pop(0)
            log = os.path.join(run.work, f"sanitize-{tool}-{setting}.log")
            fh = open(log, "wb")
            fh.write(("$ " + " ".join(cmd) + "\n").encode())
            fh.flush()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
                                    start_new_session=True)
            running.append((tool, setting, proc, log, time.monotonic(), fh))
        time.sleep(0.2)
        for item in list(running):
            tool, setting, proc, log, t0, fh = item
            rc = proc.poll()
            late = time.monotonic() > deadline
            if rc is None and not late:
                continue
            if rc is None:
                _kill_group(proc)
            fh.close()
            running.remove(item)
            with open(log, errors="replace") as f:
                parsed = parse_sanitizer(f.read())
            runs.append({"tool": tool if have_tool else f"{tool} (absent: driver alone)",
                         "setting": setting, "returncode": rc, "timed_out": rc is None,
                         "seconds": time.monotonic() - t0, **parsed})
        if time.monotonic() > deadline and pending:
            for tool, setting, _, _ in pending:
                runs.append({"tool": tool, "setting": setting, "returncode": None,
                             "timed_out": True, "seconds": 0.0, "errors": None,
                             "driver": "not started (budget)", "driver_ok": False})
            pending = []
    order = {(t, s): i for i, (t, s, _, _) in enumerate(jobs)}
    runs.sort(key=lambda r: order.get((r["tool"].split()[0], r["setting"]), 0))
    data = {"runs": runs, "total_errors": sum(r["errors"] or 0 for r in runs)}
    bad = [f"{r['tool']}/{r['setting']}" for r in runs
           if (r["errors"] is None and have_tool) or not r["driver_ok"]]
    if bad:
        raise SectionError(f"incomplete runs: {', '.join(bad)}", data)
    return data


def write_synthetic_mnist(folder: str, n_train: int = 6400, n_test: int = 1000) -> None:
    """MNIST-format IDX files of random strokes: the training run's speed does
    not depend on the pictures, and the device has no network or MNIST."""
    import numpy as np

    sys.path.insert(0, ROOT)
    from gan_ext.data.idx import write_idx

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        img = np.zeros((n, 28, 28), np.uint8)
        img[:, 6:22, 6:22] = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte"), img)
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte"),
                  rng.integers(0, 10, n, dtype=np.uint8))


def section_train(run: Run, budget: float) -> dict:
    args = run.args
    mnist = args.mnist_dir
    data_note = f"MNIST from {mnist}" if mnist else "synthetic MNIST-format data"
    if not mnist:
        mnist = os.path.join(run.work, "mnist")
        write_synthetic_mnist(mnist)
    out_dir = os.path.join(run.work, "train_dcgan")
    shutil.rmtree(out_dir, ignore_errors=True)
    steps = 3 if args.dry_run else 300
    cmd = [args.python, "-m", "gan_ext.cli", "train", "dcgan", "--steps", str(steps), "--device",
           "cpu" if args.dry_run else "cuda", "--out", out_dir, "--mnist-dir", mnist, "--eval-n", "0",
           "--no-progress", "--sample-every", str(steps), "--checkpoint-every", str(steps),
           "--log-every", str(max(1, steps // 6))]
    if not args.dry_run:
        cmd.append("--amp")
    env = {**_py_env(args), "GAN_EXT_CACHE": os.path.join(run.work, "cache")}
    r = run_cmd(cmd, os.path.join(run.work, "train.log"), budget, env)
    data = {"command": "gan-ext " + " ".join(cmd[3:]), "returncode": r["returncode"],
            "seconds": r["seconds"], "data": data_note, "steps": steps}
    metrics = os.path.join(out_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        if lines:
            data["last_metrics"] = json.loads(lines[-1])
    if r["returncode"] != 0:
        raise SectionError(f"exit {r['returncode']} (timed out: {r['timed_out']}): "
                           f"{_last_error_line(r['tail'])}", data)
    return data


def section_dist(run: Run, budget: float) -> dict:
    """Issue 17's NCCL path: `gan-ext train dcgan --nproc-per-node 2 --sync-bn`
    on this one GPU, both ranks on it (GAN_EXT_SHARE_GPU=1). NCCL usually
    refuses two ranks on one device; then the same run over gloo with CUDA
    tensors still exercises the synced fused layers and the gradient
    all-reduce on the GPU. Each attempt's outcome is recorded."""
    args = run.args
    steps = 2 if args.dry_run else 20
    attempts = [("gloo", "cpu")] if args.dry_run else [("nccl", "cuda"), ("gloo", "cuda")]
    data: dict = {"steps": steps, "attempts": []}
    t0 = time.monotonic()
    mnist = args.mnist_dir
    if not mnist:
        mnist = os.path.join(run.work, "mnist")
        if not os.path.isdir(mnist):
            write_synthetic_mnist(mnist)
    for backend, device in attempts:
        out_dir = os.path.join(run.work, f"dist_{backend}")
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [args.python, "-m", "gan_ext.cli", "train", "dcgan", "--steps", str(steps),
               "--device", device, "--out", out_dir, "--batch-size", "64", "--eval-n", "0",
               "--no-progress", "--log-every", "1", "--sync-bn", "--nproc-per-node", "2",
               "--limit", "1280"]
        cmd += ["--mnist-dir", mnist]
        env = {**_py_env(args), "GAN_EXT_SHARE_GPU": "1", "GAN_EXT_DIST_BACKEND": backend,
               "GAN_EXT_CACHE": os.path.join(run.work, "cache")}
        left = budget - (time.monotonic() - t0)
        r = run_cmd(cmd, os.path.join(run.work, f"dist_{backend}.log"), max(left, 1.0), env)
        entry = {"backend": backend, "device": device, "returncode": r["returncode"],
                 "seconds": round(r["seconds"], 1), "timed_out": r["timed_out"]}
        metrics = os.path.join(out_dir, "metrics.jsonl")
        if os.path.exists(metrics):
            with open(metrics) as f:
                recs = [json.loads(l) for l in f.read().splitlines() if l.strip()]
            entry["steps_done"] = max((x.get("step", 0) for x in recs), default=0)
            entry["it_per_s"] = recs[-1].get("it_per_s") if recs else None
        if r["returncode"] != 0:
            entry["error"] = _last_error_line(r["tail"])
        data["attempts"].append(entry)
    if not any(a["returncode"] == 0 for a in data["attempts"]):
        raise SectionError("no 2-process run finished: " + "; ".join(
            f"{a['backend']}: {a.get('error', 'timed out')}" for a in data["attempts"]), data)
    return data


def parse_ncu_csv(text: str) -> List[dict]:
    """Rows of `ncu --csv --page raw`: a header with "Kernel Name", a units
    row, then one row per profiled kernel (ncu's own ==PROF== lines around)."""
    lines = [l for l in text.splitlines() if l.startswith('"')]
    rows = list(csv.reader(lines))
    for i, row in enumerate(rows):
        if "Kernel Name" in row:
            header = row
            body = rows[i + 1:]
            break
    else:
        return []
    if body and not any(c.strip().lstrip("-").replace(".", "", 1).isdigit() for c in body[0]):
        body = body[1:]  # the units row
    return [dict(zip(header, r)) for r in body if len(r) == len(header)]


def _num(v) -> Optional[float]:
    try:
        return float(str(v).replace(",", ""))
    except (TypeError, ValueError):
        return None


def ncu_kernels(rows: List[dict], cases: List[str], setting: str) -> List[dict]:
    """One entry per gan_ext kernel, attributed to its case by the marker
    kernels launched between cases."""
    out = []
    idx = -1
    for r in rows:
        name = r.get("Kernel Name", "")
        if NCU_MARKER in name:
            idx += 1
            continue
        case = cases[idx] if 0 <= idx < len(cases) else "?"
        t = _num(r.get("gpu__time_duration.sum"))
        short = re.sub(r"\(.*$", "", name.replace("(anonymous namespace)::", ""))
        out.append({
            "setting": setting, "case": case, "kernel": short.split("::")[-1] if short else name,
            "time_us": t / 1e3 if t is not None else None,  # ncu reports ns
            "dram_read_MB": _mb(r.get("dram__bytes_read.sum")),
            "dram_write_MB": _mb(r.get("dram__bytes_write.sum")),
            "l2_MB": _mb(r.get("lts__t_bytes.sum")),
            "sm_pct": _num(r.get("sm__throughput.avg.pct_of_peak_sustained_elapsed")),
            "mem_pct": _num(r.get("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed")),
            "warps_active_pct": _num(r.get("sm__warps_active.avg.pct_of_peak_sustained_active")),
            "registers": _num(r.get("launch__registers_per_thread")),
            "grid": _num(r.get("launch__grid_size")), "block": _num(r.get("launch__block_size")),
            "waves": _num(r.get("launch__waves_per_multiprocessor"))})
    return out


def _mb(v) -> Optional[float]:
    # The raw page reports bytes ("byte" unit) for these metrics with --print-units base.
    n = _num(v)
    return n / 1e6 if n is not None else None


def section_ncu(run: Run, budget: float) -> dict:
    args = run.args
    if shutil.which(args.ncu) is None:
        raise SectionError(f"{args.ncu} not found")
    deadline = time.monotonic() + budget
    data = {"kernels": [], "runs": []}
    for setting in SETTINGS:
        left = deadline - time.monotonic()
        if left < 5:
            data["runs"].append({"setting": setting, "skipped": "budget"})
            continue
        cases_file = os.path.join(run.work, f"ncu-cases-{setting}.json")
        for metrics in (NCU_METRICS, NCU_METRICS_SAFE):
            csv_path = os.path.join(run.work, f"ncu-{setting}.csv")
            if os.path.exists(csv_path):
                os.remove(csv_path)
            cmd = [args.ncu, "--cache-control", "none", "--clock-control", "none",
                   "--profile-from-start", "off", "--target-processes", "all",
                   "--kernel-name-base", "demangled", "-k", f"regex:gan_ext|{NCU_MARKER}",
                   "--metrics", ",".join(metrics), "--print-units", "base", "--csv", "--page", "raw",
                   "--log-file", csv_path,
                   args.python, SCRIPT, "--ncu-target", "--out", cases_file, "--work", run.work]
            r = run_cmd(cmd, os.path.join(run.work, f"ncu-{setting}.log"),
                        deadline - time.monotonic(), _py_env(args, setting))
            text = open(csv_path, errors="replace").read() if os.path.exists(csv_path) else ""
            if r["returncode"] != 0 and "metric" in (text + r["tail"]).lower() and metrics is NCU_METRICS:
                continue  # this ncu lacks a metric: again with the safe list
            break
        cases = json.load(open(cases_file)) if os.path.exists(cases_file) else []
        kernels = ncu_kernels(parse_ncu_csv(text), cases, setting)
        data["kernels"] += kernels
        data["runs"].append({"setting": setting, "returncode": r["returncode"],
                             "timed_out": r["timed_out"], "kernels": len(kernels),
                             "metrics": "full" if metrics is NCU_METRICS else "safe subset"})
    if not data["kernels"]:
        raise SectionError("ncu profiled no gan_ext kernel (see ncu-*.log)", data)
    return data


HOST_SECTIONS: Dict[str, Callable[[Run, float], dict]] = {
    "env": section_env, "build": section_build, "info": section_info, "tests": section_tests,
    "tests_legacy": lambda run, budget: section_tests(run, budget, legacy=True),
    "sanitize": section_sanitize, "train": section_train, "dist": section_dist,
    "ncu": section_ncu}


class SectionError(Exception):
    """A section failed; data holds what it measured before failing."""

    def __init__(self, message: str, data: Optional[dict] = None):
        super().__init__(message)
        self.data = data or {}


def run_py_section(run: Run, name: str, budget: float) -> dict:
    """This script with --section NAME in a child process: a hard budget and
    no shared CUDA context. The child writes its data file after every case."""
    args = run.args
    data_file = os.path.join(run.work, f"{name}.json")
    if os.path.exists(data_file):
        os.remove(data_file)
    setting = "legacy" if name.endswith("_legacy") else "default"
    # The child stops starting cases 3 s before its deadline; the hard kill
    # comes 10 s after it.
    cmd = [args.python, SCRIPT, "--section", name, "--out", data_file, "--work", run.work,
           "--deadline", str(time.time() + budget - 3)]
    if args.dry_run:
        cmd.append("--dry-run")
    r = run_cmd(cmd, os.path.join(run.work, f"{name}.log"), budget + 10, _py_env(args, setting))
    data = {}
    if os.path.exists(data_file):
        with open(data_file) as f:
            data = json.load(f)
    if r["returncode"] != 0:
        raise SectionError(("killed at the budget" if r["timed_out"] else f"exit {r['returncode']}")
                           + f": {_last_error_line(r['tail'])}", data)
    return data


def run_sections(args) -> Run:
    run = Run(args)
    part_start = time.monotonic()
    current_part = None
    for name, part in plan(args):
        if part != current_part:
            current_part, part_start = part, time.monotonic()
        left = args.part_budget - (time.monotonic() - part_start)
        budget = min(args.budgets[name], left)
        entry = {"budget_s": round(budget, 1), "status": "ok", "part": part}
        if budget < 3:
            entry.update(status="skipped", error=f"part {part}'s {args.part_budget:.0f} s were spent")
            run.record(name, entry)
            print(f"[gpu-check] {name}: skipped (part budget spent)", flush=True)
            continue
        print(f"[gpu-check] {name}: start (budget {budget:.0f} s)", flush=True)
        t0 = time.monotonic()
        try:
            if name in HOST_SECTIONS:
                entry["data"] = HOST_SECTIONS[name](run, budget)
            else:
                entry["data"] = run_py_section(run, name, budget)
        except SectionError as e:
            entry.update(status="failed", error=str(e), data=e.data)
        except Exception as e:  # noqa: BLE001  (a broken section must not lose the rest)
            entry.update(status="failed", error=f"{type(e).__name__}: {e}")
        entry["seconds"] = round(time.monotonic() - t0, 1)
        run.record(name, entry)
        print(f"[gpu-check] {name}: {entry['status']} in {entry['seconds']:.0f} s"
              + (f": {entry.get('error')}" if entry.get("error") else ""), flush=True)
    return run


def summary_lines(results: dict) -> List[str]:
    """The few lines the device tool's reply shows (it keeps the output's tail)."""
    out = []
    for name, s in results.get("sections", {}).items():
        d = s.get("data") or {}
        note = ""
        if name == "tests" and d:
            note = (f"{d.get('passed')} passed, {d.get('failures')} failed, {d.get('errors')} errors, "
                    f"{d.get('skipped')} skipped of {d.get('tests')}")
        elif name == "sanitize" and d:
            note = ", ".join(f"{r['tool'].split()[0]}/{r['setting']}={r.get('errors')}"
                             for r in d.get("runs", []))
        elif name == "build" and d:
            note = f"{d.get('how')}: {d.get('so')}"
        elif d.get("rows"):
            note = f"{len(d['rows'])} rows"
        out.append(f"{name:18s} {s.get('status'):8s} {s.get('seconds', 0):6.0f}s  "
                   f"{note or (s.get('error') or '')[:150]}")
    return out


# ================================================================ GPU side
# Everything below runs in a child process (--section), imports torch, and
# writes its data file after every case.
class Writer:
    def __init__(self, path: str, deadline: Optional[float]):
        self.path = path
        self.deadline = deadline if deadline is not None else time.time() + 3600
        self.data: dict = {"rows": []}

    def left(self) -> float:
        return self.deadline - time.time()

    def add(self, row: dict) -> None:
        self.data["rows"].append(row)
        self.flush()

    def flush(self) -> None:
        _atomic_write(self.path, json.dumps(self.data, indent=1, default=str))


def _torch():
    import torch

    sys.path.insert(0, ROOT)
    return torch


def copy_bandwidth(torch, device, nbytes: int, reps: int = 10) -> float:
    """Bytes read plus written per second by a device-to-device copy (median)."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    y = torch.empty_like(x)
    for _ in range(2):
        y.copy_(x)
    times = time_steps(torch, device, {"copy": lambda: y.copy_(x)}, warmup=1, reps=reps,
                       min_rep_s=0.0)["copy"]
    return 2 * x.numel() * 4 / statistics.median(times)


class _Environ:
    """Sets environment variables for a block (None: unset) and restores them."""

    def __init__(self, values: Optional[Dict[str, Optional[str]]]):
        self.values, self.saved = values or {}, {}

    @staticmethod
    def _set(values: Dict[str, Optional[str]]) -> None:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        self._set(self.values)

    def __exit__(self, *exc):
        self._set(self.saved)


def time_steps(torch, device, steps: Dict[str, Callable[[], None]], warmup: int = 3, reps: int = 15,
               min_rep_s: float = 3e-4, deadline: Optional[float] = None,
               envs: Optional[Dict[str, Dict[str, Optional[str]]]] = None) -> Dict[str, List[float]]:
    """Per-call seconds of each step: warm-up, then repetitions interleaved
    across the steps (a, b, c, a, b, c, ...), each repetition `number` calls
    timed with CUDA events after a synchronize (so a host-bound step shows
    its launch gaps), `number` chosen so one repetition lasts min_rep_s.
    envs[k]: environment variables set while step k runs (outside the timed
    region too), e.g. the norm_act design, read by the op at every call."""
    cuda = device.type == "cuda"
    envs = envs or {}

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for k, f in steps.items():
        with _Environ(envs.get(k)):
            for _ in range(warmup):
                f()
            sync()
    fastest = math.inf
    for k, f in steps.items():
        with _Environ(envs.get(k)):
            sync()
            t0 = time.perf_counter()
            f()
            sync()
        fastest = min(fastest, time.perf_counter() - t0)
    number = max(1, min(200, math.ceil(min_rep_s / max(fastest, 1e-7))))
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in range(reps):
        if deadline is not None and time.time() > deadline and all(times.values()):
            break
        for k, f in steps.items():
            with _Environ(envs.get(k)):
                sync()
                if cuda:
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(number):
                        f()
                    end.record()
                    end.synchronize()
                    times[k].append(start.elapsed_time(end) / 1e3 / number)
                else:
                    t0 = time.perf_counter()
                    for _ in range(number):
                        f()
                    times[k].append((time.perf_counter() - t0) / number)
    return times


DCGAN_BN = {  # DCGAN's norm inputs at batch 1 (times the batch): generator, discriminator
    "bn_relu": ((512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32)),
    "bn_lrelu": ((128, 16, 16), (256, 8, 8), (512, 4, 4)),
}
# CycleGAN-256's instance norms (batch 1) and a batch-16 one.
INSTANCE_SHAPES = ((1, 64, 256, 256), (1, 128, 128, 128), (1, 256, 64, 64), (16, 64, 128, 128))
# Inductor's kernel count for these four (block, shape, layout, mode, dtype).
TRITON_COUNT_CASES = {("bn_relu", (64, 128, 16, 16), "nchw", "fwd+bwd", "float32"),
                      ("bn_lrelu", (64, 256, 8, 8), "nchw", "fwd+bwd", "float32"),
                      ("in_relu", (16, 64, 128, 128), "nchw", "fwd+bwd", "float32"),
                      ("d_bce", (64, 1), "nchw", "fwd+bwd", "float32")}
# Fewest passes over the tensor (read x / write y / read dy / read saved / write dx).
MIN_PASSES = {("norm", "fwd"): 2, ("norm", "fwd+bwd"): 5, ("l1", "fwd+bwd"): 3,
              ("cycle_l1", "fwd+bwd"): 6, ("lrelu_dropout", "fwd"): 2,
              ("lrelu_dropout", "fwd+bwd"): 5, ("reparam_kl", "fwd"): 3,
              ("reparam_kl", "fwd+bwd"): 7}


def norm_bench_cases(dry_run: bool) -> List[dict]:
    """In priority order: the targets first (fused, eager and compile), then
    the other layouts and passes, instance norm, the conv block."""
    cases = []
    batches = (2,) if dry_run else (64, 256)
    for B in batches:
        for dtype in ("float32", "bfloat16"):
            for block, shapes in DCGAN_BN.items():
                for s in shapes:
                    cases.append(dict(block=block, shape=(B, *s), layout="nchw", mode="fwd+bwd",
                                      dtype=dtype, compile=True, dcgan_shape=True))
    for B in batches:
        for dtype in ("float32", "bfloat16"):
            for block, shapes in DCGAN_BN.items():
                for s in shapes:
                    # Forward alone at batch 64 only: every case's input is
                    # drawn on the CPU, seconds of a short budget at batch 256.
                    variants = (("channels_last", "fwd+bwd"),) + (
                        (("nchw", "fwd"), ("channels_last", "fwd")) if B == batches[0] else ())
                    for layout, mode in variants:
                        cases.append(dict(block=block, shape=(B, *s), layout=layout, mode=mode,
                                          dtype=dtype, compile=False, dcgan_shape=True))
    inst = ((1, 8, 16, 16),) if dry_run else INSTANCE_SHAPES
    for dtype in ("float32", "bfloat16"):
        for shape in inst:
            for layout in ("nchw", "channels_last"):
                for mode in ("fwd+bwd", "fwd"):
                    cases.append(dict(block="in_relu", shape=shape, layout=layout, mode=mode,
                                      dtype=dtype, compile=(layout, mode) == ("nchw", "fwd+bwd")
                                      and shape[0] == 16 and dtype == "float32"))
    for dtype in ("float32", "bfloat16"):
        for mode in ("fwd+bwd", "eval"):
            cases.append(dict(block="convT_bn_relu", shape=(batches[0], 128, 16, 16), layout="nchw",
                              mode=mode, dtype=dtype, compile=False))
    if dry_run:
        cases = cases[:2] + [c for c in cases if c["block"] == "in_relu"][:1]
    return cases


def loss_bench_cases(dry_run: bool) -> List[dict]:
    from gan_ext import bench

    cases = []
    for dtype in ("float32", "bfloat16"):
        for mode in ("fwd+bwd", "fwd"):
            for block, shape in bench.LOSS_CASES:
                cases.append(dict(block=block, shape=shape, layout="nchw", mode=mode, dtype=dtype,
                                  compile=(block, shape, dtype, mode) == ("d_bce", (64, 1), "float32",
                                                                         "fwd+bwd")))
    if dry_run:
        cases = [c for c in cases if c["compile"]] + cases[1:3]
    return cases


def case_name(c: dict) -> str:
    return f"{c['block']} {'x'.join(map(str, c['shape']))} {c['layout']} {c['mode']}"


def _instance_prepare(torch, c: dict, impl: str, device, dtype):
    """InstanceNormAct2d (CycleGAN's, affine=False) against nn.InstanceNorm2d + ReLU."""
    from torch import nn

    import gan_ext
    from gan_ext.bench import CompileUnavailable, Prepared, sync_fn

    C = c["shape"][1]
    mf = torch.channels_last if c["layout"] == "channels_last" else torch.contiguous_format
    if impl == "fused":
        m = gan_ext.nn.InstanceNormAct2d(C, activation="relu")
    else:
        m = nn.Sequential(nn.InstanceNorm2d(C), nn.ReLU(inplace=True))
    m = m.to(device=device, dtype=dtype).train()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(c["shape"], generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=mf)
    g = torch.randn(c["shape"], generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=mf)
    runner = m
    if impl == "compile":
        import torch._dynamo as dynamo

        dynamo.reset()
        runner = torch.compile(m)
    if c["mode"] == "fwd+bwd":
        x.requires_grad_(True)

        def step():
            torch.autograd.grad(runner(x), [x], g)
    else:
        def step():
            with torch.no_grad():
                runner(x)
    p = Prepared(None, impl, m, step, sync_fn(device))
    if impl == "compile":
        try:
            step()
            p.sync()
        except Exception as e:  # noqa: BLE001
            raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {e}") from e
    return p


def prepare_case(torch, c: dict, impl: str, device):
    from gan_ext import bench

    dtype = getattr(torch, c["dtype"])
    if c["block"] == "in_relu":
        return _instance_prepare(torch, c, impl, device, dtype)
    return bench.prepare(bench.Case(c["block"], tuple(c["shape"]), c["layout"], c["mode"]), impl,
                         device, dtype)


def kernel_profile(torch, device, step: Callable[[], None]) -> dict:
    """One step under torch.profiler: kernel names and launch counts, the
    device time they add up to, and the host time of the step alone."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    step()
    sync()
    hosts = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        step()
        hosts.append(time.perf_counter() - t0)
        sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        sync()
    kernels: Dict[str, List[float]] = {}
    for e in prof.events():
        if cuda and str(getattr(e, "device_type", "")).endswith("CUDA") and e.name not in (
                "cudaDeviceSynchronize",):
            dur = e.time_range.end - e.time_range.start if hasattr(e, "time_range") else 0
            kernels.setdefault(e.name, []).append(dur)
    ranked = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))
    device_us = sum(sum(v) for v in kernels.values())
    host_us = statistics.median(hosts) * 1e6
    return {"kernels": [{"name": k, "count": len(v), "us": sum(v)} for k, v in ranked],
            "distinct_kernels": len(kernels), "launches": sum(len(v) for v in kernels.values()),
            "device_us": device_us if cuda else None, "host_us": host_us,
            "host_bound": bool(cuda and host_us >= device_us)}


def _bench_section(torch, w: Writer, device, cases: List[dict], with_compile: bool,
                   dry_run: bool, copy_Bps: Optional[float], setting: str,
                   with_legacy: bool = False) -> None:
    from gan_ext.bench import CompileUnavailable

    reps = 2 if dry_run else 15
    for c in cases:
        if w.left() < 2:
            w.data.setdefault("skipped", []).append(case_name(c) + " " + c["dtype"])
            w.flush()
            continue
        row = {"case": case_name(c), "block": c["block"], "shape": list(c["shape"]),
               "layout": c["layout"], "mode": c["mode"], "dtype": c["dtype"], "setting": setting,
               "dcgan_shape": c.get("dcgan_shape", False)}
        steps, errors = {}, {}
        impls = ["fused", "eager"]
        # Compile costs seconds per case: only where asked and while the
        # section has time for it.
        if with_compile and c.get("compile") and w.left() > (5 if dry_run else 25):
            impls.append("compile")
        elif with_compile and c.get("compile"):
            errors["compile"] = "skipped: section budget"
        envs = {}
        if with_legacy and c["block"] in ("bn_relu", "bn_lrelu", "in_relu"):
            # Today's design, timed interleaved with the new one in this process
            # (the op reads GAN_EXT_CUDA_NORM_ACT at every call).
            impls.append("fused_legacy")
            envs = {"fused": {NORM_ENV: None}, "fused_legacy": {NORM_ENV: "legacy"}}
        for impl in impls:
            try:
                steps[impl] = prepare_case(torch, c, "fused" if impl == "fused_legacy" else impl,
                                           device).step
            except CompileUnavailable as e:
                errors[impl] = str(e)[:300]
            except Exception as e:  # noqa: BLE001
                errors[impl] = f"{type(e).__name__}: {str(e)[:300]}"
        if steps:
            try:
                times = time_steps(torch, device, steps, reps=reps, warmup=1 if dry_run else 3,
                                   deadline=w.deadline, envs=envs)
                for impl, t in times.items():
                    row[f"{impl}_us"] = statistics.median(t) * 1e6
            except Exception as e:  # noqa: BLE001
                errors["timing"] = f"{type(e).__name__}: {str(e)[:300]}"
        key = (c["block"], tuple(c["shape"]), c["layout"], c["mode"], c["dtype"])
        if "compile" in steps and key in TRITON_COUNT_CASES:
            try:
                prof = kernel_profile(torch, device, steps["compile"])
                triton = [k for k in prof["kernels"] if k["name"].startswith("triton")]
                row["triton_kernels"] = len(triton)
                row["triton_launches"] = sum(k["count"] for k in triton)
                row["fused_launches"] = kernel_profile(torch, device, steps["fused"])["launches"]
            except Exception as e:  # noqa: BLE001
                errors["triton_count"] = f"{type(e).__name__}: {str(e)[:300]}"
        kind = "norm" if c["block"] in ("bn_relu", "bn_lrelu", "in_relu") else c["block"]
        passes = MIN_PASSES.get((kind, c["mode"]))
        if passes and row.get("fused_us"):
            esize = 2 if c["dtype"] == "bfloat16" else 4
            numel = math.prod(c["shape"])
            row["min_bytes"] = passes * numel * esize
            gbps = row["min_bytes"] / (row["fused_us"] * 1e-6)
            row["GBps"] = gbps / 1e9
            if copy_Bps:
                row["bw_pct"] = 100 * gbps / copy_Bps
        if errors:
            row["errors"] = errors
        w.add(row)
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()


def gpu_section(name: str, out_path: str, deadline: Optional[float], dry_run: bool) -> int:
    torch = _torch()
    import gan_ext  # noqa: F401  (registers the ops)
    from gan_ext import _backend, bench

    device = torch.device("cpu" if dry_run else "cuda")
    w = Writer(out_path, deadline)
    setting = "legacy" if os.environ.get(NORM_ENV) == "legacy" else "default"
    w.data.update(setting=setting, device=str(device), fused_path=bench.fused_path(device))
    if not dry_run and "cuda" not in _backend.compiled_devices:
        w.data["error"] = f"no CUDA kernels in gan_ext._C ({_backend.load_error})"
        w.flush()
        return 1
    w.flush()
    copy_Bps = None
    if name in ("device", "bench_norm", "bench_norm_legacy", "bench_loss"):
        copy_Bps = copy_bandwidth(torch, device, (64 << 20) if dry_run else (2 << 30))
        w.data["copy_GBps"] = copy_Bps / 1e9
        w.flush()
    if name == "device":
        if device.type == "cuda":
            p = torch.cuda.get_device_properties(device)
            w.data.update(name=p.name, sm_count=p.multi_processor_count,
                          l2_bytes=getattr(p, "L2_cache_size", None), total_memory=p.total_memory,
                          capability=f"{p.major}.{p.minor}")
        w.data.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                      cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None)
        w.flush()
        return 0
    if name in ("bench_norm", "bench_norm_legacy"):
        _bench_section(torch, w, device, norm_bench_cases(dry_run), name == "bench_norm", dry_run,
                       copy_Bps, setting, with_legacy=name == "bench_norm" and setting == "default")
    elif name == "bench_loss":
        _bench_section(torch, w, device, loss_bench_cases(dry_run), True, dry_run, copy_Bps, setting)
    elif name == "bench_steps":
        bench_steps(torch, w, device, dry_run)
    elif name == "profile":
        profile_section(torch, w, device, dry_run)
    elif name == "graphs":
        graphs_section(torch, w, device, dry_run)
    return 0


def step_cases(dry_run: bool) -> List[Tuple[str, Tuple[int, ...], bool]]:
    """(block, shape, compile) in priority order."""
    if dry_run:
        return [("step_dcgan28", (4,), True)]
    return [("step_dcgan64", (64,), True), ("step_dcgan64", (256,), True),
            ("step_cyclegan256", (1,), True)]


def bench_steps(torch, w: Writer, device, dry_run: bool) -> None:
    from gan_ext.bench import CompileUnavailable

    from gan_ext import bench

    for block, shape, want_compile in step_cases(dry_run):
        if w.left() < 3:
            w.data.setdefault("skipped", []).append(f"{block} {shape}")
            w.flush()
            continue
        case = bench.Case(block, shape, "nchw", "fwd+bwd")
        row = {"case": f"{block} batch {shape[0]}", "block": block, "batch": shape[0],
               "mode": "step", "dtype": "float32"}
        steps, notes = {}, []
        for impl in ("fused", "eager") + (("compile",) if want_compile else ()):
            # A cold compile of a whole model takes tens of seconds.
            if impl == "compile" and w.left() < (10 if dry_run else 45):
                notes.append("compile skipped: section budget")
                continue
            try:
                steps[impl] = bench.prepare(case, impl, device, torch.float32).step
            except CompileUnavailable as e:
                notes.append(str(e)[:200])
            except Exception as e:  # noqa: BLE001
                notes.append(f"{impl}: {type(e).__name__}: {str(e)[:200]}")
        if steps:
            times = time_steps(torch, device, steps, warmup=1 if dry_run else 2,
                               reps=2 if dry_run else 8, min_rep_s=0.0, deadline=w.deadline)
            for impl, t in times.items():
                row[f"{impl}_us"] = statistics.median(t) * 1e6
        row["note"] = "; ".join(notes)
        w.add(row)
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()


def profile_cases(dry_run: bool) -> List[dict]:
    B = 2 if dry_run else 64
    cases = [dict(block="bn_relu", shape=(B, 128, 16, 16), layout="nchw", mode="fwd+bwd",
                  dtype="float32"),
             dict(block="bn_lrelu", shape=(B, 256, 8, 8), layout="channels_last", mode="fwd+bwd",
                  dtype="bfloat16"),
             dict(block="in_relu", shape=(2, 8, 16, 16) if dry_run else (16, 64, 128, 128),
                  layout="nchw", mode="fwd+bwd", dtype="float32"),
             dict(block="d_bce", shape=(64, 1), layout="nchw", mode="fwd+bwd", dtype="float32"),
             dict(block="reparam_kl", shape=(128, 20), layout="nchw", mode="fwd+bwd",
                  dtype="float32")]
    if not dry_run:
        cases.append(dict(block="step_dcgan64", shape=(64,), layout="nchw", mode="fwd+bwd",
                          dtype="float32"))
    return cases


def profile_section(torch, w: Writer, device, dry_run: bool) -> None:
    for c in profile_cases(dry_run):
        for impl in ("fused", "eager"):
            if w.left() < 2:
                w.data.setdefault("skipped", []).append(f"{case_name(c)} {impl}")
                w.flush()
                continue
            row = {"case": f"{case_name(c)} {c['dtype']}", "impl": impl}
            try:
                row.update(kernel_profile(torch, device, prepare_case(torch, c, impl, device).step))
                row["kernels"] = row["kernels"][:12]
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            w.add(row)


def graph_time(torch, device, step: Callable[[], None], reps: int = 20) -> Tuple[float, float]:
    """(us per replay of a CUDA graph of step, us per step launched normally)."""
    s = torch.cuda.Stream(device)
    s.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    times = time_steps(torch, device, {"graph": graph.replay, "launch": step}, reps=reps)
    return statistics.median(times["graph"]) * 1e6, statistics.median(times["launch"]) * 1e6


def graphs_section(torch, w: Writer, device, dry_run: bool) -> None:
    if device.type != "cuda":
        w.data["note"] = "CUDA graphs need a CUDA device (dry run: skipped)"
        w.flush()
        return
    for c in (dict(block="bn_relu", shape=(64, 128, 16, 16), layout="nchw", mode="fwd+bwd",
                   dtype="float32"),
              dict(block="d_bce", shape=(64, 1), layout="nchw", mode="fwd+bwd", dtype="float32")):
        for impl in ("fused", "eager"):
            if w.left() < 2:
                continue
            row = {"case": f"{case_name(c)} {c['dtype']}", "impl": impl}
            try:
                row["graph_us"], row["launch_us"] = graph_time(
                    torch, device, prepare_case(torch, c, impl, device).step)
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            w.add(row)


NCU_CASES = (dict(block="bn_relu", shape=(64, 128, 16, 16), layout="nchw", mode="fwd+bwd",
                  dtype="float32"),
             dict(block="bn_relu", shape=(64, 64, 32, 32), layout="channels_last", mode="fwd+bwd",
                  dtype="bfloat16"),
             dict(block="bn_lrelu", shape=(256, 128, 16, 16), layout="nchw", mode="fwd+bwd",
                  dtype="float32"),
             dict(block="in_relu", shape=(16, 64, 128, 128), layout="nchw", mode="fwd+bwd",
                  dtype="float32"),
             dict(block="d_bce", shape=(64, 1), layout="nchw", mode="fwd+bwd", dtype="float32"))


def ncu_target(cases_out: str) -> int:
    """The program ncu profiles: each case warmed up outside the profiled
    range, then one step inside it, after a marker kernel."""
    torch = _torch()
    import gan_ext  # noqa: F401

    device = torch.device("cuda")
    names = []
    for c in NCU_CASES:
        step = prepare_case(torch, c, "fused", device).step
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        torch.cuda._sleep(1000)  # the marker: NCU_MARKER
        step()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        names.append(f"{case_name(c)} {c['dtype']}")
        _atomic_write(cases_out, json.dumps(names))
    return 0


# ======================================================================= main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ncu_target:
        return ncu_target(args.out)
    if args.section is not None:
        return gpu_section(args.section, args.out, args.deadline, args.dry_run)
    if args.merge:
        os.makedirs(args.out, exist_ok=True)
        merged = merge_results([load_results(p) for p in args.merge])
        _atomic_write(os.path.join(args.out, "results.json"), json.dumps(merged, indent=1))
        _atomic_write(os.path.join(args.out, "report.md"), write_report(merged))
        print(f"[gpu-check] merged {len(args.merge)} files into {args.out}/report.md")
        return 0
    run = run_sections(args)
    print("\n".join(["", f"[gpu-check] results in {run.out}: report.md, results.json, logs.tar.gz"]
                    + summary_lines(run.results)))
    failed = [n for n, s in run.results["sections"].items() if s["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
