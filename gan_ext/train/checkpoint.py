"""Training checkpoints: written atomically, read safely, and the RNG states
that make ``--resume`` continue exactly where a run stopped.

A checkpoint is a plain dict saved with ``torch.save`` holding only tensors,
numbers, strings, lists and dicts, so it loads with ``weights_only=True``: a
foreign pickle cannot run code here. ``FORMAT`` tags it as ours.
"""
from __future__ import annotations

import io
import os
import random
import re
from typing import Any, Dict, Optional

import numpy as np
import torch

from .._atomic import atomic_write

__all__ = ["FORMAT", "CheckpointError", "atomic_save", "load_checkpoint", "rng_state",
           "set_rng_state", "read_torch_file", "check_config_sizes", "check_complete",
           "MAX_CONFIG_INT"]

FORMAT = "gan_ext.train.checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a usable gan_ext training checkpoint (user error)."""


def atomic_save(obj: Any, path: str, *more_paths: str) -> None:
    """``torch.save(obj)`` to a temporary file in the same directory, flushed
    and fsynced, then ``os.replace`` onto ``path``: a crash at any point
    leaves either the previous file or the new one, never a torn one. Each
    of ``more_paths`` gets the same bytes (``obj`` serialised once)."""
    if not more_paths:
        atomic_write(path, lambda f: torch.save(obj, f))
        return
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()
    for p in (path, *more_paths):
        atomic_write(p, lambda f: f.write(data))


def read_torch_file(path: str, map_location="cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for a missing,
    unreadable or non-torch file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        cand = os.path.join(path, "checkpoint.pt")
        if not os.path.isfile(cand):
            raise CheckpointError(f"{path!r} is a folder without a checkpoint.pt; "
                                  "pass the checkpoint file")
        path = cand
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise CheckpointError(f"{path!r} is too large to load into memory") from None
    except Exception as e:  # pickle, zip and torch errors differ by version: all mean "not ours"
        raise CheckpointError(f"{path!r} {_why_unreadable(e)}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _why_unreadable(e: Exception) -> str:
    """One plain sentence for a failed ``torch.load(weights_only=True)``;
    torch's own text is several paragraphs (with terminal colour codes)."""
    text = _ANSI.sub("", str(e))
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return (f"holds Python objects ({m.group(1)}) that safe loading refuses because they "
                "could run code; gan_ext loads only files of tensors and plain values")
    if isinstance(e, EOFError) or "zip archive" in text or "central directory" in text:
        return "is empty or truncated: not a complete PyTorch checkpoint"
    return "is not a PyTorch checkpoint (corrupt or another format)"


# Every checkpoint key fit() writes, with its type: a file with the format tag
# but other content is refused here with one line, not deep in the loader.
_CHECKPOINT_KEYS = {"model_name": str, "options": dict, "model_config": dict, "models": dict,
                    "optimizers": dict, "schedulers": dict, "extra": dict, "loader": dict,
                    "rng": dict, "step": int, "epoch": int, "history": list}
# A crafted config could ask for a model of any size (memory denial of service):
# widths, depths and sizes above these are refused before anything is built.
MAX_CONFIG_INT = 4096


def check_config_sizes(config: dict, where: str) -> None:
    for k, v in config.items():
        if isinstance(v, bool):
            continue
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if isinstance(x, int) and not 0 <= x <= MAX_CONFIG_INT:
                raise CheckpointError(f"{where}: model setting {k} = {x} is outside "
                                      f"[0, {MAX_CONFIG_INT}]; the file is damaged or crafted")


def load_checkpoint(path: str, model: Optional[str] = None, map_location="cpu") -> Dict[str, Any]:
    """Loads a checkpoint written by :func:`atomic_save` in a training run.
    ``model``: the family name the caller expects (``--resume`` into another
    MODEL is refused with a message naming both)."""
    ckpt = read_torch_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{os.fspath(path)!r} is a PyTorch file but not a gan_ext training "
                              "checkpoint (no gan_ext format tag); train with 'gan-ext train'")
    if model is not None and ckpt.get("model_name") != model:
        raise CheckpointError(f"{os.fspath(path)!r} is a {ckpt.get('model_name')!r} checkpoint, "
                              f"not {model!r}: resume it with 'gan-ext train "
                              f"{ckpt.get('model_name')} --resume' or choose another --out")
    return ckpt


def check_complete(ckpt: Dict[str, Any], path: str) -> None:
    """A training checkpoint about to be resumed, sampled or evaluated holds
    every entry fit() writes, of the right type, and plausible model sizes:
    otherwise one CheckpointError line, not a KeyError deep in a loader."""
    for key, kind in _CHECKPOINT_KEYS.items():
        if not isinstance(ckpt.get(key), kind) or (kind is int and isinstance(ckpt[key], bool)):
            raise CheckpointError(f"{os.fspath(path)!r} has the gan_ext format tag but its "
                                  f"{key!r} entry is missing or malformed; the file is damaged")
    check_config_sizes(ckpt["model_config"], repr(os.fspath(path)))


# -------------------------------------------------------------------- RNG
def rng_state(cuda: bool = False) -> Dict[str, Any]:
    """Every global random state a training step may draw from. numpy's
    key array is stored as a tensor so the checkpoint stays weights_only-safe."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
