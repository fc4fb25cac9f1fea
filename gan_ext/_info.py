from __future__ import annotations

import torch

from . import _backend
from ._version import __version__


def info() -> dict:
    """What was built and what runs: used by ``gan-ext info``."""
    return {
        "gan_ext": __version__,
        "extension_loaded": _backend.extension_loaded,
        "load_error": _backend.load_error,
        "compiled_backends": sorted(_backend.compiled_devices),
        "cpu_capability": _backend.cpu_capability,
        "active_backend": _backend.backend,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
    }
