from __future__ import annotations

import os
import platform
from typing import Optional

import torch

from . import _backend
from ._version import __version__


def cpuinfo_field(name: str, path: str = "/proc/cpuinfo") -> Optional[str]:
    """The value of the first ``name : value`` line of /proc/cpuinfo (Linux),
    or None where there is no such file (macOS, Windows) or no such line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_name() -> str:
    """The CPU model (/proc/cpuinfo's "model name" on Linux) and its logical
    core count, for the header of every timing table."""
    name = cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def info() -> dict:
    """What was built and what runs: used by ``gan-ext info``."""
    return {
        "gan_ext": __version__,
        "extension_loaded": _backend.extension_loaded,
        "load_error": _backend.load_error,
        "compiled_backends": sorted(_backend.compiled_devices),
        "cpu": cpu_name(),
        "cpu_capability": _backend.cpu_capability,
        "active_backend": _backend.backend,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
    }
