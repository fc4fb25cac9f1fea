"""``--amp``: whether a run's steps use bf16 autocast, on CUDA or the CPU.

On the CPU, bf16 pays off only where the hardware multiplies bf16 natively
(avx512_bf16 or AMX); elsewhere oneDNN emulates it and a step gets slower
and less precise, so such a CPU trains in float32 and says so.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._info import cpuinfo_field

__all__ = ["cpu_has_bf16", "use_amp", "autocast"]

_CPUINFO_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> Optional[set]:
    """The CPU flags the Linux kernel reports, or None where there is no
    /proc/cpuinfo (macOS, Windows) or it has no flags line."""
    flags = cpuinfo_field("flags", path)
    return None if flags is None else set(flags.split())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX).

    torch's own probes (cpuinfo, which also checks that the OS enabled the
    registers) come first; /proc/cpuinfo is the fallback for a torch without
    them. ``torch.ops.mkldnn._is_mkldnn_bf16_supported`` is not used: it is
    true on any AVX-512 CPU, where bf16 is emulated."""
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(bool(p()) for p in probes)
    flags = _cpuinfo_flags()
    return bool(flags and flags.intersection(_CPUINFO_FLAGS))


def use_amp(amp: bool, device: torch.device, log: Callable[[str], None]) -> bool:
    """Whether the steps run under bf16 autocast: ``amp`` on CUDA, or on a
    CPU with native bf16; a CPU without it trains in float32 with a note
    (never a silent change from what was asked)."""
    if not amp:
        return False
    if device.type == "cpu" and not cpu_has_bf16():
        log("note: --amp: this CPU has neither avx512_bf16 nor AMX (bf16 would be emulated, "
            "slower); training in float32")
        return False
    return True


def autocast(device: torch.device, enabled: bool):
    """The training step's autocast context: bf16 on ``device`` when enabled.
    Samples, grids and evaluation run outside it, in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
