"""Loads gan_ext._C and decides, per call and per op, whether a fused kernel
or the pure-PyTorch twin (gan_ext.reference) runs.

The choice is a set of op names per device type, rebuilt when the backend
switches, so that the per-call cost is a couple of attribute reads and a set
lookup: the ops are also called on tiny tensors, where Python overhead is what
a benchmark sees.
"""
from __future__ import annotations

import importlib
import os
import warnings

import torch

BACKENDS = ("fused", "reference")

_C = None
load_error: str | None = None
try:
    # import_module, not `from . import _C`: for a missing file the latter
    # reports a misleading "partially initialized module" circular import.
    _C = importlib.import_module(f"{__package__}._C")  # registers torch.ops.gan_ext.*
except ModuleNotFoundError:
    _C = None
    load_error = "gan_ext._C is not built"
except ValueError:  # a bad GAN_EXT_CPU_CAPABILITY: the user's setting, not a reason to fall back
    raise
except Exception as e:  # an undefined symbol from an ABI mismatch, a wrong torch, ...
    _C = None
    load_error = f"{type(e).__name__}: {e}"


# Device types whose kernels are probed, as (dispatch key, Tensor.device.type).
_DEVICE_KEYS = (("CPU", "cpu"), ("CUDA", "cuda"))


def kernel_devices(kernels) -> frozenset:
    """Device types on which every one of `kernels` (op names in the gan_ext
    namespace) has a registered kernel, as the dispatcher says: an op built
    without its CUDA kernel is never sent to CUDA, whatever the other ops have."""
    if _C is None:
        return frozenset()
    devs = set()
    for key, dev in _DEVICE_KEYS:
        try:
            if all(torch._C._dispatch_has_kernel_for_dispatch_key(f"gan_ext::{k}", key)
                   for k in kernels):
                devs.add(dev)
        except RuntimeError:  # "operator ... does not exist": an op missing from this build
            return frozenset()
    return frozenset(devs)


# Per op (the name gan_ext.ops passes to use_fused), the device types with
# kernels; filled by register_op as the op modules are imported.
op_devices: dict[str, frozenset] = {}
# Device types on which every registered op has a kernel (gan_ext.info, the tests).
compiled_devices = frozenset(dev for _, dev in _DEVICE_KEYS) if _C is not None else frozenset()
extension_loaded = _C is not None
# The CPU kernel variant that registered (default, avx2, avx512), chosen at load
# from the CPU, ATEN_CPU_CAPABILITY and GAN_EXT_CPU_CAPABILITY (csrc/cpu_dispatch.cpp).
cpu_capability: str | None = getattr(_C, "cpu_capability", None)

_warned = False


def _warn_fallback():
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "gan_ext: the C++/CUDA extension could not be loaded "
            f"({load_error}); every op falls back to the pure-PyTorch reference "
            "implementation (slower). Rebuild with `pip install --no-build-isolation .`",
            RuntimeWarning,
            stacklevel=3,
        )


def _initial_backend() -> str:
    requested = os.environ.get("GAN_EXT_BACKEND", "fused").strip().lower() or "fused"
    if requested not in BACKENDS:
        warnings.warn(f"GAN_EXT_BACKEND={requested!r} is not one of {BACKENDS}; using 'fused'",
                      RuntimeWarning)
        requested = "fused"
    if requested == "fused" and _C is None:
        _warn_fallback()
        return "reference"
    return requested


# The live switch, and per device type the ops it sends to a kernel. The sets
# are what gan_ext.ops reads on every call: Tensor.is_cpu is a few times
# cheaper than building Tensor.device, which was ~0.5 us of a ~6 us loss call.
backend = _initial_backend()
_fused_cpu = _fused_cuda = _fused_every = frozenset()


def _set(name: str) -> None:
    global backend, _fused_cpu, _fused_cuda, _fused_every
    backend = name
    on = name == "fused"
    _fused_every = compiled_devices if on else frozenset()
    _fused_cpu = frozenset(op for op, devs in op_devices.items() if on and "cpu" in devs)
    _fused_cuda = frozenset(op for op, devs in op_devices.items() if on and "cuda" in devs)


def register_op(op: str, kernels) -> None:
    """Called once per op module: `op` runs fused on the devices where all of
    its `kernels` (forward, backward and helper ops) are registered."""
    global compiled_devices
    op_devices[op] = kernel_devices(kernels)
    compiled_devices = compiled_devices & op_devices[op]
    _set(backend)


_set(backend)


def set_backend(name: str) -> None:
    """Force every gan_ext op onto the fused kernels or the PyTorch reference."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "fused" and _C is None:
        _warn_fallback()
        name = "reference"
    _set(name)


def get_backend() -> str:
    return backend


def use_fused(t: torch.Tensor, op: str | None = None) -> bool:
    """True when the fused kernel of `op` should run for a tensor on t's
    device; without `op`, when every registered op has a kernel there.

    Under a torch.func transform (grad, vjp, jacrev, vmap, ...) the twin runs
    instead: the kernels' autograd is C++, which functorch cannot transform,
    while the twin is plain PyTorch ops that every transform (and vmap's
    batching rules) handles. Under torch.compile the check is skipped (a
    compiled graph is not transformed this way)."""
    if op is None:
        return ((t.is_cpu and "cpu" in _fused_every) or (t.is_cuda and "cuda" in _fused_every)) \
            and not _transformed()
    return ((t.is_cpu and op in _fused_cpu) or (t.is_cuda and op in _fused_cuda)) and not _transformed()


_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active


def _transformed() -> bool:
    # is_compiling first: under torch.compile the functorch check would become
    # a graph value instead of a Python bool.
    return not _is_compiling() and _functorch_active()


def vmap_active() -> bool:
    """Whether a torch.func.vmap is running around the current call."""
    if not _transformed():
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


class use_backend:
    """Context manager: ``with gan_ext.use_backend("reference"): ...``."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.prev = backend
        set_backend(self.name)
        return self

    def __exit__(self, *exc):
        _set(self.prev)
        return False
