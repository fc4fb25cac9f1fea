"""What a run needs of its surroundings: the device it trains on, the seeds
of every RNG, the versions it records."""
from __future__ import annotations

import platform
import random
from typing import Dict

import numpy as np
import torch

from .._backend import get_backend
from .._version import __version__

__all__ = ["resolve_device", "seed_everything", "versions"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is a
    one-line ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise ValueError(f"--device cuda was requested but {why} (torch {torch.__version__}); "
                         "use --device cpu or --device auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def versions() -> Dict[str, str]:
    return {"gan_ext": str(__version__), "torch": str(torch.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(), "backend": str(get_backend())}
