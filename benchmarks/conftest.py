"""pytest-benchmark fixtures (kornia style): device and dtype come from command
line options and parametrize every benchmark that asks for them.

    pytest benchmarks                                   # cuda if available, else cpu; float32
    pytest benchmarks --bench-device all --bench-dtype float32,bfloat16
    pytest benchmarks --bench-rounds 50 -k "bn_lrelu and not compile"

The options are prefixed (--bench-*) so that they can never clash with options
of tests/conftest.py when both folders are collected together.
"""
from __future__ import annotations

import pytest
import torch

from gan_ext.memory import retain_freed_memory

retain_freed_memory()  # as `gan-ext bench`: both sides of every ratio run with it

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def pytest_addoption(parser):
    group = parser.getgroup("gan_ext benchmarks")
    group.addoption("--bench-device", default="auto",
                    help="comma list of cpu, cuda; 'all' for both; 'auto' (default): cuda when "
                         "available, else cpu")
    group.addoption("--bench-dtype", default="float32",
                    help=f"comma list of {', '.join(DTYPES)}, or 'all' (default: float32)")
    group.addoption("--bench-rounds", type=int, default=30,
                    help="timed rounds per benchmark, at least 20 (default: 30)")
    group.addoption("--bench-warmup", type=int, default=3,
                    help="warm-up rounds per benchmark, at least 3 (default: 3)")


def _split(value: str, allowed, name: str):
    if value == "all":
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise pytest.UsageError(f"--bench-{name}: expected a comma list of {', '.join(allowed)} "
                                f"or 'all', got {value!r}")
    return items


def _devices(config):
    value = config.getoption("--bench-device")
    if value == "auto":
        return ["cuda" if torch.cuda.is_available() else "cpu"]
    return _split(value, ("cpu", "cuda"), "device")


def pytest_configure(config):
    if config.getoption("--bench-rounds") < 20 or config.getoption("--bench-warmup") < 3:
        raise pytest.UsageError("--bench-rounds must be >= 20 and --bench-warmup >= 3 "
                                "(fewer makes the medians noise)")


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "device" in metafunc.fixturenames:
        params = []
        for d in _devices(config):
            marks = [] if d != "cuda" or torch.cuda.is_available() else [
                pytest.mark.skip(reason="CUDA is not available")]
            params.append(pytest.param(d, id=d, marks=marks))
        metafunc.parametrize("device", params)
    if "dtype" in metafunc.fixturenames:
        names = _split(config.getoption("--bench-dtype"), tuple(DTYPES), "dtype")
        metafunc.parametrize("dtype", [pytest.param(DTYPES[n], id=n) for n in names])


@pytest.fixture
def rounds(request) -> int:
    return request.config.getoption("--bench-rounds")


@pytest.fixture
def warmup_rounds(request) -> int:
    return request.config.getoption("--bench-warmup")


@pytest.fixture(autouse=True)
def _seed():
    # The case builders seed their own generators; this covers anything else.
    torch.manual_seed(0)


def bench_case(benchmark, case, impl, device, dtype, rounds, warmup_rounds) -> None:
    """Times one (gan_ext.bench case, impl) with pytest-benchmark: the group
    holds fused, eager and compile side by side; training passes record the
    bytes kept for backward in extra_info["saved_bytes"]."""
    from gan_ext import bench

    dtype_name = str(dtype).replace("torch.", "")
    benchmark.group = f"{case.group} {device} {dtype_name}"
    try:
        prepared = bench.prepare(case, impl, device=device, dtype=dtype)
    except bench.CompileUnavailable as e:
        pytest.skip(str(e))
    benchmark.extra_info.update(case=case.group, impl=impl, device=device, dtype=dtype_name,
                                fused_path=bench.fused_path(device))
    if case.mode == "fwd+bwd" and impl != "compile":
        benchmark.extra_info["saved_bytes"] = bench.saved_bytes(case, impl, device=device, dtype=dtype)

    step, sync = prepared.step, prepared.sync

    def timed():
        step()
        sync()  # inside the timed region: CUDA work must be finished, not just queued

    # setup syncs before every round (untimed) so a round never pays for the last one.
    benchmark.pedantic(timed, setup=sync, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
