"""The table ``gan-ext bench`` prints: one row per case as it finishes."""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence, TextIO

import torch

from .. import _backend
from .._info import cpu_name
from .registry import Case
from .timing import Result, time_case

__all__ = ["fused_path", "run"]


def fused_path(device="cpu") -> str:
    """What the 'fused' side really runs on ``device``: the compiled kernel or
    the pure-PyTorch reference (so a table is never misread)."""
    dev = torch.device(device).type
    if not _backend.extension_loaded:
        return "reference (extension not loaded)"
    if _backend.backend != "fused":
        return f"reference (backend set to {_backend.backend!r})"
    if dev not in _backend.compiled_devices:
        return f"reference (no compiled {dev} kernel)"
    return f"compiled {dev} kernel"


def _fmt_ms(s: Optional[float]) -> str:
    return "n/a" if s is None else f"{s * 1e3:.3f}"


def _fmt_ratio(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def _fmt_mib(saved: Dict[str, int]) -> str:
    if "fused" not in saved or "eager" not in saved:
        return ""
    return f"{saved['fused'] / 2**20:.1f}/{saved['eager'] / 2**20:.1f}"


def run(selected: Sequence[Case], device="cpu", dtype: torch.dtype = torch.float32, reps: int = 50,
        warmup: int = 5, compile: bool = False, out: TextIO = sys.stdout) -> List[Result]:
    """Time every case and print one table row per case as it finishes."""
    impls = ("fused", "eager", "compile") if compile else ("fused", "eager")
    device = torch.device(device)
    threads = ""
    if device.type == "cpu":
        variant = f", {_backend.cpu_capability} kernels" if _backend.cpu_capability else ""
        threads = f" ({cpu_name()}{variant}), {torch.get_num_threads()} threads"
    print(f"device {device}{threads} | dtype {str(dtype).replace('torch.', '')} | "
          f"fused = {fused_path(device)} | median of {reps} reps", file=out)
    cols = ["case", "fused ms", "eager ms", "eager/fused"]
    if compile:
        cols += ["compile ms", "compile/fused"]
    cols += ["saved MiB f/e", "floor ms", "floor %"]
    w0 = max([len(cols[0])] + [len(c.group) for c in selected])
    widths = [w0] + [max(len(c), 9) for c in cols[1:]]

    def line(cells):
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    print(line(cols), file=out)
    out.flush()
    results, notes = [], []
    for case in selected:
        r = time_case(case, impls, device, dtype, reps=reps, warmup=warmup)
        cells = [case.group, _fmt_ms(r.median("fused")), _fmt_ms(r.median("eager")),
                 _fmt_ratio(r.ratio("eager"))]
        if compile:
            cells += [_fmt_ms(r.median("compile")), _fmt_ratio(r.ratio("compile"))]
        cells.append(_fmt_mib(r.saved))
        pct = r.floor_percent()
        cells += [_fmt_ms(r.floor) if r.floor is not None else "", f"{pct:.0f}%" if pct is not None else ""]
        print(line(cells).rstrip(), file=out)
        out.flush()
        for impl, err in r.errors.items():
            if err not in notes:
                notes.append(err)
        results.append(r)
    print("ratio = other median / fused median (> 1: fused is faster); "
          "saved MiB f/e = memory kept for backward, fused/eager", file=out)
    print("floor = the bytes the case must move (see Block.floor) at the bandwidth of a copy of its "
          "tensor timed in the same interleaved loop; floor % = floor / fused median", file=out)
    for n in notes:
        print(f"note: compile: {n}", file=out)
    return results
