from __future__ import annotations

import os
import platform

import torch

from . import _backend
from ._version import __version__


def cpu_name() -> str:
    """The CPU model (/proc/cpuinfo's "model name" on Linux) and its logical
    core count, for the header of every timing table."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine() or 'unknown CPU'}, {os.cpu_count()} cores"


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
