"""Where gan_ext keeps downloaded or converted data, and how it writes files."""
from __future__ import annotations

import os
from pathlib import Path

from .._atomic import atomic_write

__all__ = ["cache_dir", "atomic_write_bytes"]


def cache_dir() -> Path:
    """The cache root: ``$GAN_EXT_CACHE`` if set, else ``~/.cache/gan_ext``.
    Not created here; writers create the sub-folder they need."""
    env = os.environ.get("GAN_EXT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gan_ext"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or
    the whole new one (:func:`gan_ext._atomic.atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))
