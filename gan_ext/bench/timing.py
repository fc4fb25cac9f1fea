"""The timing loop, one for every benchmark (``gan-ext bench``,
``benchmarks/model_step_parts.py``).

Method: each implementation is warmed up, then the repetitions are
interleaved (fused, eager, fused, eager, ...) so that drifting clocks and
caches hit both alike; the device is synchronized inside the timed region;
the figure reported is the median.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .registry import Case, CompileUnavailable, Prepared, prepare, saved_bytes

__all__ = ["Result", "interleaved", "time_case", "MIN_FLOOR_BYTES"]

# Cases whose tensors are smaller than this get no memory floor: they are
# bound by per-call overhead, and so is a copy of that size.
MIN_FLOOR_BYTES = 256 << 10


@dataclass
class Result:
    case: Case
    seconds: Dict[str, List[float]] = field(default_factory=dict)  # impl -> per-call time of each rep
    errors: Dict[str, str] = field(default_factory=dict)            # impl -> why it did not run
    saved: Dict[str, int] = field(default_factory=dict)             # impl -> bytes saved for backward
    number: int = 1                                                 # calls per timed repetition
    floor: Optional[float] = None   # memory floor, seconds: floor bytes at the interleaved copy's bandwidth

    def floor_percent(self) -> Optional[float]:
        """The floor as % of the fused median (100: fused runs at the floor)."""
        t = self.median("fused")
        return 100.0 * self.floor / t if self.floor is not None and t else None

    def median(self, impl: str) -> Optional[float]:
        t = self.seconds.get(impl)
        return statistics.median(t) if t else None

    def ratio(self, impl: str, base: str = "fused") -> Optional[float]:
        """median(impl) / median(base): > 1 means base is faster."""
        a, b = self.median(impl), self.median(base)
        return a / b if a is not None and b else None


def _check_counts(reps: int, warmup: int) -> None:
    if reps < 1 or warmup < 0:
        raise ValueError(f"reps must be >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")


def interleaved(steps: Mapping[str, Callable[[], None]], sync: Callable[[], None], reps: int,
                warmup: int, min_rep_seconds: float,
                references: Sequence[str] = ()) -> Tuple[Dict[str, List[float]], int]:
    """({name: per-call seconds of each repetition}, calls per repetition).

    A repetition runs a step ``number`` times, with ``number`` chosen after
    warm-up so that a repetition of the fastest step lasts ``min_rep_seconds``
    (timer and launch jitter would dominate single calls of the small shapes);
    the steps named in ``references`` are timed alike but not counted there.
    """
    _check_counts(reps, warmup)
    for step in steps.values():
        for _ in range(warmup):
            step()
        sync()

    # Calibrate the calls per repetition on the fastest step.
    fastest = math.inf
    for name, step in steps.items():
        if name in references:  # a reference (the floor's copy) does not set the count
            continue
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        fastest = min(fastest, time.perf_counter() - t0)
    number = max(1, min(1000, math.ceil(min_rep_seconds / max(fastest, 1e-9))))

    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():  # interleaved: fused, eager, [compile], fused, ...
            sync()
            t0 = time.perf_counter()
            for _ in range(number):
                step()
            sync()
            times[name].append((time.perf_counter() - t0) / number)
    return times, number


def time_case(case: Case, impls: Sequence[str] = ("fused", "eager"), device="cpu",
              dtype: torch.dtype = torch.float32, reps: int = 50, warmup: int = 5,
              min_rep_seconds: float = 1e-3, seed: int = 0, measure_memory: bool = True) -> Result:
    """Time one case for each impl, repetitions interleaved across impls
    (:func:`interleaved`); for training passes, also the bytes each keeps for
    backward."""
    _check_counts(reps, warmup)
    result = Result(case)
    prepared: Dict[str, Prepared] = {}
    for impl in impls:
        try:
            prepared[impl] = prepare(case, impl, device, dtype, seed)
        except CompileUnavailable as e:
            result.errors[impl] = str(e)
    if not prepared:
        return result
    sync = next(iter(prepared.values())).sync
    steps = {impl: p.step for impl, p in prepared.items()}
    floor = case.spec.floor(case, dtype)
    if floor is not None and floor[1] < MIN_FLOOR_BYTES:
        floor = None  # a copy this small times the call, not the memory
    if floor is not None:
        # The reference copy runs inside the same interleaved loop, so that it
        # meets the same caches and clocks as the steps it is the floor of.
        src = torch.randn(floor[1] // dtype.itemsize, device=device).to(dtype)
        dst = torch.empty_like(src)
        steps["copy"] = lambda: dst.copy_(src)
    result.seconds, result.number = interleaved(steps, sync, reps, warmup, min_rep_seconds,
                                                references=("copy",))
    copy_times = result.seconds.pop("copy", None)
    if floor is not None and copy_times:
        bandwidth = 2 * floor[1] / statistics.median(copy_times)  # a copy reads and writes
        result.floor = floor[0] / bandwidth

    if measure_memory and case.mode == "fwd+bwd":
        for impl in prepared:
            if impl != "compile":
                result.saved[impl] = saved_bytes(case, impl, device, dtype, seed)
    return result
