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

__all__ = ["Result", "interleaved", "time_case"]


@dataclass
class Result:
    case: Case
    seconds: Dict[str, List[float]] = field(default_factory=dict)  # impl -> per-call time of each rep
    errors: Dict[str, str] = field(default_factory=dict)            # impl -> why it did not run
    saved: Dict[str, int] = field(default_factory=dict)             # impl -> bytes saved for backward
    number: int = 1                                                 # calls per timed repetition

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
                warmup: int, min_rep_seconds: float) -> Tuple[Dict[str, List[float]], int]:
    """({name: per-call seconds of each repetition}, calls per repetition).

    A repetition runs a step ``number`` times, with ``number`` chosen after
    warm-up so that a repetition of the fastest step lasts ``min_rep_seconds``
    (timer and launch jitter would dominate single calls of the small shapes).
    """
    _check_counts(reps, warmup)
    for step in steps.values():
        for _ in range(warmup):
            step()
        sync()

    # Calibrate the calls per repetition on the fastest step.
    fastest = math.inf
    for step in steps.values():
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
    result.seconds, result.number = interleaved(
        {impl: p.step for impl, p in prepared.items()}, sync, reps, warmup, min_rep_seconds)

    if measure_memory and case.mode == "fwd+bwd":
        for impl in prepared:
            if impl != "compile":
                result.saved[impl] = saved_bytes(case, impl, device, dtype, seed)
    return result
