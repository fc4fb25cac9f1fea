"""Which cases a benchmark run takes: the suites of the case modules."""
from __future__ import annotations

from typing import Iterable, List, Optional

from . import layers, losses, models
from .registry import Case

__all__ = ["cases", "select"]


def cases(quick: bool = False, kind: str = "all") -> List[Case]:
    """The benchmark cases; ``quick`` is a handful that runs in seconds.
    ``kind``: "all" (blocks and losses), "norm" (norm + activation blocks),
    "loss" or "model" (whole training steps: slow, never part of "all")."""
    if kind not in ("all", "norm", "loss", "model"):
        raise ValueError(f"kind must be 'all', 'norm', 'loss' or 'model', got {kind!r}")
    if kind == "model":
        return list(models.CASES)
    norm = list(layers.QUICK_CASES if quick else layers.CASES)
    loss = list(losses.QUICK_CASES if quick else losses.CASES)
    return {"all": norm + loss, "norm": norm, "loss": loss}[kind]


def select(all_cases: Iterable[Case], pattern: Optional[str]) -> List[Case]:
    """Cases whose group name contains every whitespace-separated word of pattern."""
    words = (pattern or "").split()
    return [c for c in all_cases if all(w in c.group for w in words)]
