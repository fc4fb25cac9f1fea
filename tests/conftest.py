"""Shared fixtures and helpers for the gan_ext tests.

Parametrization axes: device (cpu, cuda: skipped without a GPU), backend
(fused: skipped when gan_ext._C did not load or has no kernel for the device;
reference), dtype and memory layout. A skipped fused case is not a pass: CI
builds the extension, so there every fused case runs.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gan_ext
from gan_ext import _backend
from gan_ext.memory import saved_tensor_bytes  # noqa: F401  (the memory tests import it from here)
from gan_ext.ops._spec import to_layout as spec_layout

HAS_CUDA = torch.cuda.is_available()
if HAS_CUDA:
    # The float32 tests compare with float32 references at ~1e-5; cuDNN's
    # default TF32 convolutions round operands to 10 bits (~5e-4: seen on the
    # H200, session 26), so they run in IEEE float32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
requires_fused = pytest.mark.skipif(
    not _backend.extension_loaded,
    reason=f"gan_ext._C did not load ({_backend.load_error}); fused kernels untested")

DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, requires_cuda])]
BACKENDS = [pytest.param("fused", id="fused", marks=requires_fused),
            pytest.param("reference", id="reference")]
# "strided": a non-contiguous view (every other column of a wider tensor).
LAYOUTS = ["nchw", "channels_last", "strided"]
ACTIVATIONS = [("identity", 0.01), ("relu", 0.01), ("leaky_relu", 0.2)]
ACT_IDS = ["identity", "relu", "leaky0.2"]
LOW_PRECISION = (torch.float16, torch.bfloat16)


def fused_kernel_for(device: str) -> bool:
    return torch.device(device).type in _backend.compiled_devices


def skip_unless_fused_on(device: str) -> None:
    if not _backend.extension_loaded:
        pytest.skip(f"gan_ext._C did not load ({_backend.load_error})")
    if not fused_kernel_for(device):
        pytest.skip(f"gan_ext._C has no {device} kernel (built without it)")


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=BACKENDS)
def backend(request, device):
    """Runs the test with gan_ext's backend switched to the parameter."""
    name = request.param
    if name == "fused":
        skip_unless_fused_on(device)
    with gan_ext.use_backend(name):
        yield name


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values as x, in the requested memory layout (gradients flow back to x)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    # The op specs' layouts ("nchw" is their "contiguous").
    out = spec_layout(x, "contiguous" if layout == "nchw" else layout)
    if layout == "strided":
        assert not out.is_contiguous() and not out.is_contiguous(memory_format=torch.channels_last)
    return out


def make_input(shape, dtype=torch.float32, device="cpu", layout="nchw", requires_grad=False,
               offset=0.0, scale=1.0):
    """A leaf tensor with the requested layout (the leaf itself has it, so .grad is comparable)."""
    x = (torch.randn(shape, dtype=torch.float64) * scale + offset).to(dtype)
    x = to_layout(x.to(device), layout).detach()
    return x.requires_grad_(requires_grad)


def torch_activation(y: torch.Tensor, activation: str, negative_slope: float) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(y)
    if activation == "leaky_relu":
        return F.leaky_relu(y, negative_slope)
    assert activation == "identity"
    return y


def torch_norm_act(x, running_mean, running_var, weight, bias, use_input_stats, instance,
                   momentum, eps, activation, negative_slope):
    """Plain PyTorch: F.batch_norm / F.instance_norm followed by the activation."""
    if instance:
        y = F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum,
                            eps)
    else:
        y = F.batch_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    return torch_activation(y, activation, negative_slope)


def max_err(a: torch.Tensor, ref64: torch.Tensor) -> float:
    return (a.detach().double() - ref64.detach().double()).abs().max().item() if a.numel() else 0.0


def assert_within_2x_of_torch(ours, torch_lowp, ref64, floor: float, what: str = "") -> None:
    """Low-precision rule: our error against a float64 reference is at most twice
    plain PyTorch's error in the same precision, plus a tiny absolute floor."""
    e_ours, e_torch = max_err(ours, ref64), max_err(torch_lowp, ref64)
    assert e_ours <= 2 * e_torch + floor, (
        f"{what}: error {e_ours:.3g} vs float64 exceeds 2x torch's {e_torch:.3g} + {floor:g}")


def tolerances(dtype: torch.dtype) -> dict:
    return {torch.float64: dict(rtol=1e-10, atol=1e-10),
            torch.float32: dict(rtol=1e-5, atol=2e-5)}[dtype]


def cuda_kernels(fn) -> list[str]:
    """Names of the CUDA kernels one call of fn() launches (after a warm-up
    call, so one-time allocations and lazy initialization are not counted)."""
    fn()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def one_line_error(capsys, code: int, expected: int = 2) -> str:
    """The one ``gan-ext: error:`` line a refused command printed (and its exit status)."""
    err = capsys.readouterr().err
    assert code == expected, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gan-ext: error:"), err
    assert "Traceback" not in err and "\x1b[" not in err   # no traceback, no colour codes
    return lines[0]
