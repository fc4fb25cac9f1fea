"""The IDX file format of MNIST (LeCun et al.): a big-endian header, then raw data.

Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C
int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
dimension as a big-endian uint32. Files may be gzip-compressed (recognised by
their content, not their name).
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ._files import atomic_write_bytes
from .errors import DataError

__all__ = ["read_idx", "write_idx", "parse_idx"]

_CODE_TO_DTYPE = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
                  0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_KIND_TO_CODE = {("u", 1): 0x08, ("i", 1): 0x09, ("i", 2): 0x0B, ("i", 4): 0x0C,
                 ("f", 4): 0x0D, ("f", 8): 0x0E}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array stored in the (uncompressed) IDX bytes ``data``, in native
    byte order and writable. ``name`` is used in error messages."""
    fix = "delete it (it is re-created or re-downloaded) or replace it with an intact copy"
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _CODE_TO_DTYPE:
        magic = data[:4].hex() or "empty"
        raise DataError(f"{name}: not an IDX file (magic number 0x{magic}); {fix}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{name}: corrupt IDX header ({ndim} dimensions, {len(data)} bytes); {fix}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _CODE_TO_DTYPE[data[2]]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{name}: corrupt IDX file: its header says shape {list(dims)} "
                        f"({expected} bytes) but it has {len(data)} bytes (truncated?); {fix}")
    # np.array copies: the result is writable (torch.from_numpy wants that) and native-endian.
    return np.array(np.frombuffer(data, dtype=dtype, offset=header).reshape(dims),
                    dtype=dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or not. Raises DataError naming the
    file when it is missing, not IDX, truncated or a broken gzip stream."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e}); delete it (it is re-created or "
                            f"re-downloaded) or replace it with an intact copy") from None
    return parse_idx(raw, str(path))


def write_idx(path, array) -> Path:
    """Writes ``array`` (numpy or a CPU tensor) as an IDX file, atomically;
    gzip-compressed when the name ends in ``.gz``. Returns the path."""
    path = Path(path)
    a = np.asarray(array.numpy() if hasattr(array, "numpy") else array)
    code = _KIND_TO_CODE.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        raise TypeError(f"write_idx: array dtype {a.dtype} has no IDX type code "
                        f"(use uint8, int8, int16, int32, float32 or float64)")
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"write_idx: array must have 1..255 dimensions, got {a.ndim}")
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    body = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder(">")).tobytes()
    data = header + body
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return path
