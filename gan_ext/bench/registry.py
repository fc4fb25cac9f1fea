"""What a benchmark case is, and the one registry of them.

A *block* is a registered object (:class:`Block`) that knows how to build its
fused and eager callables and their inputs; :mod:`.layers`, :mod:`.losses` and
:mod:`.models` define and register them. A :class:`Case` names a block with a
shape, a memory layout and a pass; :func:`prepare` turns (case, impl) into a
ready-to-time :class:`Prepared`, and :func:`saved_bytes` measures what its
forward keeps for backward. torch.compile failures become
:class:`CompileUnavailable` in one place (:func:`compiled`, :func:`prepare`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, Iterator, Optional, Tuple, TypeVar

import torch
from torch import nn

__all__ = ["IMPLS", "LAYOUTS", "MODES", "KINDS", "Stream", "Block", "BLOCKS", "register", "Case",
           "Prepared", "CompileUnavailable", "compiled", "memory_format", "sync_fn", "prepare",
           "saved_bytes"]

IMPLS = ("fused", "eager", "compile")
LAYOUTS = ("nchw", "channels_last")
MODES = ("fwd", "fwd+bwd", "eval")
KINDS = ("norm", "loss", "model")


class Stream:
    """Random streams of a case: each is a generator seeded with
    ``seed + Stream.X``, so a case's modules, inputs and gradient seeds stay the
    same when another stream draws more. The figures in benchmarks/RESULTS.md
    were taken with these offsets: changing one changes every case's data."""
    WEIGHTS = 0      # torch.manual_seed: the modules' default initialization
    NORM_STATE = 1   # layer cases: norm affine parameters and running statistics
    MODEL_DATA = 1   # model cases (which draw no norm state): the data batch
    INPUTS = 2       # layer and loss inputs
    GRADS = 3        # gradients fed to backward


class CompileUnavailable(RuntimeError):
    """torch.compile could not build or run the eager block on this machine."""


@dataclass
class Prepared:
    """A ready-to-time case: ``step()`` runs one repetition (no sync)."""
    case: "Case"
    impl: str
    module: nn.Module
    step: Callable[[], None]
    sync: Callable[[], None]


@dataclass(frozen=True)
class Block:
    """A registered kind of benchmark case. Subclasses build, for a
    :class:`Case`, the fused side (gan_ext), the eager side (plain PyTorch,
    also what "compile" compiles) and the inputs both take."""
    kind: ClassVar[str]   # one of KINDS: which suite (``cases(kind=...)``) it belongs to
    name: str
    description: str

    def prepare(self, case: "Case", impl: str, device: torch.device, dtype: torch.dtype,
                seed: int) -> Prepared:
        """The step of ``impl``; for "compile", the eager side wrapped by :func:`compiled`."""
        raise NotImplementedError

    def saved_bytes(self, case: "Case", impl: str, device: torch.device, dtype: torch.dtype,
                    seed: int) -> int:
        """Bytes a training forward of ``impl`` ("fused" or "eager") keeps for backward."""
        raise NotImplementedError

    def floor(self, case: "Case", dtype: torch.dtype) -> Optional[Tuple[int, int]]:
        """The memory floor of a bandwidth-bound case: (bytes the fused step
        must move, bytes of the tensor a reference copy moves), or None where
        the case is not bandwidth-bound (a convolution). The timing loop copies
        a tensor of the second size, interleaved with the steps, and the floor
        is the first size at that copy's bandwidth (see ``timing.time_case``)."""
        return None


BLOCKS: Dict[str, Block] = {}
B = TypeVar("B", bound=Block)


def register(block: B) -> B:
    if block.name in BLOCKS:
        raise ValueError(f"benchmark block {block.name!r} is registered twice")
    if block.kind not in KINDS:
        raise ValueError(f"block kind must be one of {KINDS}, got {block.kind!r}")
    BLOCKS[block.name] = block
    return block


@dataclass(frozen=True)
class Case:
    block: str                      # a key of BLOCKS
    shape: Tuple[int, ...]          # input: (N, C, H, W) for the norm blocks
    layout: str                     # "nchw" | "channels_last"
    mode: str                       # "fwd" | "fwd+bwd" | "eval"

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    @property
    def spec(self) -> Block:
        return BLOCKS[self.block]

    @property
    def group(self) -> str:
        """Human-readable name, also the pytest-benchmark group."""
        return f"{self.block} {'x'.join(map(str, self.shape))} {self.layout} {self.mode}"

    @property
    def id(self) -> str:
        """Identifier without spaces (pytest parameter ids)."""
        return self.group.replace(" ", "-")

    @property
    def training(self) -> bool:
        return self.mode != "eval"

    @property
    def kind(self) -> str:
        return self.spec.kind


def memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def sync_fn(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


T = TypeVar("T")


def compiled(build: Callable[[], T]) -> T:
    """``build()`` (the torch.compile calls of a block) after a dynamo reset.
    Every case compiles the same forward code objects; the reset keeps earlier
    cases from filling dynamo's recompile budget, past which it silently runs
    eager."""
    import torch._dynamo as dynamo

    dynamo.reset()
    try:
        return build()
    except Exception as e:  # noqa: BLE001  (e.g. unsupported Python/platform)
        raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def _first_compiled_run() -> Iterator[None]:
    """Failures of the first compiled run (no C++ compiler, an unsupported op,
    ...) as CompileUnavailable, with the first line of the error."""
    try:
        yield
    except CompileUnavailable:
        raise
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {msg}") from e


def prepare(case: Case, impl: str, device="cpu", dtype: torch.dtype = torch.float32,
            seed: int = 0) -> Prepared:
    """Build the module, input and step function of one (case, impl).

    For ``impl="compile"`` the eager block is compiled and run once here, so a
    machine where torch.compile cannot work raises :class:`CompileUnavailable`
    up front instead of failing mid-measurement.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    device = torch.device(device)
    if impl != "compile":
        return case.spec.prepare(case, impl, device, dtype, seed)
    # A block may call the compiled code while it prepares (a loss draws its
    # gradient seeds from a first call), so that is guarded too.
    with _first_compiled_run():
        prepared = case.spec.prepare(case, impl, device, dtype, seed)
        prepared.step()
        prepared.sync()
    return prepared


def saved_bytes(case: Case, impl: str, device="cpu", dtype: torch.dtype = torch.float32,
                seed: int = 0) -> int:
    """Bytes the forward of (case, impl) keeps alive for backward, counted once
    per storage with ``torch.autograd.graph.saved_tensors_hooks``
    (:func:`gan_ext.memory.saved_tensor_bytes`; for the losses and the model
    steps: beyond the storages alive anyway). Shows the In-Place ABN saving:
    fused BN+LeakyReLU keeps only its output, eager keeps the BatchNorm input
    and the activation output."""
    if impl == "compile":
        raise ValueError("saved_bytes measures the eager and fused blocks; compiled graphs "
                         "do not report their saved tensors to saved_tensors_hooks")
    return case.spec.saved_bytes(case, impl, torch.device(device), dtype, seed)
