"""The safety of a run folder: one ``train`` at a time (:class:`RunLock`),
a Ctrl-C or SIGTERM that stops between steps (:class:`StopFlag`), what
``--overwrite`` removes, and the temporaries a killed save leaves behind."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import threading
from typing import Any, Callable, Dict, Optional

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked
    fcntl = None

__all__ = ["StopFlag", "RunLock", "CHECKPOINT", "RUN_FILES", "run_in", "clear_run", "remove_stale_temporaries"]


class StopFlag:
    """SIGINT and SIGTERM (docker stop, Slurm preemption) set a flag the loop
    checks between steps, so a checkpoint never holds a half-done step; a
    second signal interrupts at once, unless ``escalate=False``: under
    torchrun a Ctrl-C reaches each rank twice (from the terminal and
    forwarded by the launcher), and the launcher kills a rank that does not
    stop within 30 s anyway."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))

    def __init__(self, escalate: bool = True) -> None:
        self.escalate = escalate
        self.set = False
        self.signum: Optional[int] = None
        self.prev: Dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.set and self.escalate:
                    raise KeyboardInterrupt
                self.set, self.signum = True, signum
            for sig in self.SIGNALS:
                self.prev[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, prev in self.prev.items():
            signal.signal(sig, prev)
        return False


class RunLock:
    """An exclusive lock on the run folder (``.lock``, flock): two ``train``
    runs never write into one folder at once. Released when the process ends,
    however it ends, so a killed run leaves no stale lock."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, ".lock")
        self.fd: Optional[int] = None

    def __enter__(self):
        if fcntl is None:  # not POSIX: no lock
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise ValueError(f"{os.path.dirname(self.path)} is in use by another 'gan-ext train' "
                             f"(pid {other}); wait for it or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None
        return False


# The files a run writes into its folder (what --overwrite removes).
CHECKPOINT = "checkpoint.pt"   # a run's checkpoint, in its folder
RUN_FILES = (CHECKPOINT, "config.json", "metrics.jsonl", "losses.png", "samples.png", "best.pt",
             "metrics.png")


def run_in(run_dir: str) -> Optional[str]:
    """A description of the run already in ``run_dir``, or None."""
    ckpt = os.path.join(run_dir, CHECKPOINT)
    if os.path.isfile(ckpt):
        return "a run (its checkpoint.pt)"
    for name in RUN_FILES[1:]:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            return f"a run's files ({name})"
    return None


def clear_run(run_dir: str) -> None:
    for name in RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.unlink(path)
    samples = os.path.join(run_dir, "samples")
    if os.path.isdir(samples):
        for name in os.listdir(samples):
            if name.startswith("step_") and name.endswith(".png"):
                os.unlink(os.path.join(samples, name))
    shutil.rmtree(os.path.join(run_dir, "tensorboard"), ignore_errors=True)


def remove_stale_temporaries(run_dir: str, log: Callable[[str], None]) -> None:
    """A save killed between the temporary write and the rename (kill -9,
    power loss) leaves ``.checkpoint.pt.*.tmp`` behind; under the run lock no
    save is in flight, so every such file is stale."""
    for path in (glob.glob(os.path.join(glob.escape(run_dir), ".checkpoint.pt.*.tmp"))
                 + glob.glob(os.path.join(glob.escape(run_dir), ".best.pt.*.tmp"))):
        try:
            os.unlink(path)
            log(f"note: removed {path}, left by an interrupted save")
        except OSError:
            pass
