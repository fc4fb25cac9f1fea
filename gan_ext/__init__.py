"""gan_ext: fused CPU/CUDA kernels, layers and models for generative models."""
from __future__ import annotations

from ._version import __version__  # noqa: E402

from ._backend import get_backend, set_backend, use_backend  # noqa: E402
from . import ops, reference  # noqa: E402
from . import nn  # noqa: E402
from .nn.fuse import fuse  # noqa: E402
from ._info import info  # noqa: E402
from .memory import retain_freed_memory  # noqa: E402

__all__ = ["ops", "reference", "nn", "fuse", "info", "get_backend", "set_backend", "use_backend",
           "retain_freed_memory", "__version__"]
