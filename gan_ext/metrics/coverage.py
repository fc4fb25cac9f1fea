"""The mode-collapse report: which digits a generator draws, and how often.

MNIST's classes are near balanced (8.9% to 11.4% of the test set), so a class
the classifier almost never sees in samples (< 2%) is a dropped mode and one
that takes over (> 20%) is a collapse onto it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from ._checks import check_int
from .classifier import MNISTClassifier
from .scores import class_log_probs

__all__ = ["CoverageReport", "class_coverage"]


@dataclass
class CoverageReport:
    fractions: List[float]       # fraction of images predicted as each class 0..9
    counts: List[int]            # the same as counts, summing to n
    n: int
    low: float                   # thresholds the warnings used
    high: float
    warnings: List[str] = field(default_factory=list)

    @property
    def min_frac(self) -> float:
        return min(self.fractions)

    @property
    def max_frac(self) -> float:
        return max(self.fractions)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict:
        return dict(fractions=self.fractions, counts=self.counts, n=self.n, low=self.low,
                    high=self.high, min_frac=self.min_frac, max_frac=self.max_frac,
                    warnings=list(self.warnings))

    def __str__(self) -> str:
        bars = "  ".join(f"{c}:{f * 100:4.1f}%" for c, f in enumerate(self.fractions))
        lines = [f"class coverage of {self.n} images: {bars}"]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def class_coverage(images, classifier: Optional[MNISTClassifier] = None, low: float = 0.02,
                   high: float = 0.20, batch_size: int = 500) -> CoverageReport:
    """Classify ``images`` (float (N, 1, 28, 28) or (N, 28, 28) in [0, 1]) and
    report the fraction predicted as each digit, with a warning for every
    class under ``low`` (dropped) or over ``high`` (collapsed onto)."""
    low, high = _check_fraction(low, "low"), _check_fraction(high, "high")
    if low >= high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")
    check_int("batch_size", batch_size)
    pred = class_log_probs(images, classifier, batch_size).argmax(1)
    n = pred.shape[0]
    counts = torch.bincount(pred, minlength=10).tolist()
    fractions = [c / n for c in counts]
    warnings = []
    for c, f in enumerate(fractions):
        if f < low:
            warnings.append(f"class {c} is {f * 100:.1f}% of the samples (< {low * 100:g}%): "
                            f"a dropped mode")
        elif f > high:
            warnings.append(f"class {c} is {f * 100:.1f}% of the samples (> {high * 100:g}%): "
                            f"mode collapse onto it")
    return CoverageReport(fractions, counts, n, low, high, warnings)
