"""Memory: a process-wide CPU setting that makes training steps faster on
Linux (:func:`retain_freed_memory`), and the measure of what a forward keeps
for backward (:func:`saved_tensor_bytes`).

glibc's malloc serves big blocks (by default, anything above a threshold that
adapts up to 32 MiB) with mmap and gives them back to the kernel on free; the
top of the heap is trimmed back as well. A training step frees and allocates
the same activation-sized tensors every iteration, so each step faults every
page of them in again: on a 2-core VM that was up to 40 ms for one 16 MiB
tensor (about 10 us a page), tens of percent of a DCGAN-64 step, and the cause
of most of the step-to-step noise (benchmarks/RESULTS.md).

:func:`retain_freed_memory` keeps such memory in the process instead
(M_MMAP_THRESHOLD = 32 MiB, M_TRIM_THRESHOLD = 2 GiB - 1): after the first
steps, tensors reuse pages that are already mapped. The price is that the
process keeps its peak heap. It is one-way and process-wide, so gan_ext never
does it on import: the CLI's training and benchmark commands call it, and
scripts can. Set ``GAN_EXT_RETAIN_FREED_MEMORY=0`` to turn it off there.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any, Callable, Dict, Iterable, Tuple

import torch

__all__ = ["retain_freed_memory", "saved_tensor_bytes"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20        # glibc's maximum on 64-bit
_TRIM_THRESHOLD = (1 << 31) - 1   # the largest int
_applied = False


def retain_freed_memory() -> bool:
    """Asks glibc malloc to keep freed memory (see the module docstring).
    Returns True when the setting is in effect, False where it does not apply
    (not Linux/glibc, or ``GAN_EXT_RETAIN_FREED_MEMORY=0``). Idempotent."""
    global _applied
    if _applied:
        return True
    if os.environ.get("GAN_EXT_RETAIN_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    _applied = ok
    return ok


def saved_tensor_bytes(fn: Callable[[], Any], alive: Iterable[torch.Tensor] = ()) -> int:
    """Bytes kept alive for backward by ``fn()``: unique storages seen by the
    saved-tensor pack hook (a tensor saved twice, or an output saved by one op
    and the input of the next, counts once), less the storages of ``alive``,
    tensors that exist anyway (parameters, an input batch): keeping a
    reference to them for backward costs no memory. ``fn``'s result is
    dropped before counting ends, so only what its graph holds counts."""
    storages: Dict[Tuple[torch.device, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[(s.device, s.data_ptr())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    for t in alive:
        s = t.untyped_storage()
        storages.pop((s.device, s.data_ptr()), None)
    return sum(storages.values())
