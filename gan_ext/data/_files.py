"""Where gan_ext keeps downloaded or converted data, and how it writes files."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["cache_dir", "atomic_write_bytes"]


def cache_dir() -> Path:
    """The cache root: ``$GAN_EXT_CACHE`` if set, else ``~/.cache/gan_ext``.
    Not created here; writers create the sub-folder they need."""
    env = os.environ.get("GAN_EXT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gan_ext"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or
    the whole new one: a temp file in the same folder, fsync, then os.replace.
    On any failure the temp file is removed and the old file is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would stick to the final file; 0666 & ~umask as open() gives.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
