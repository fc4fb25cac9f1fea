"""Fused norm+activation blocks vs eager PyTorch vs torch.compile.

One pytest-benchmark group per (block, shape, layout, pass, device, dtype), each
holding `fused`, `eager` and `compile`. The cases and their builders are those
of gan_ext.bench (also behind `gan-ext bench`), so both report the same thing.
For training passes, extra_info["saved_bytes"] records what the forward keeps
alive for backward (saved_tensors_hooks): the In-Place ABN saving of the fused
BN+LeakyReLU shows there.

    make bench                                  # the suite + benchmarks/ratios.py
    pytest benchmarks -k "bn_lrelu" --benchmark-json=out.json && python benchmarks/ratios.py out.json
"""
from __future__ import annotations

import pytest

from gan_ext import bench

from conftest import bench_case

CASES = bench.cases(kind="norm")


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_norm_act(benchmark, case, impl, device, dtype, rounds, warmup_rounds):
    bench_case(benchmark, case, impl, device, dtype, rounds, warmup_rounds)


@pytest.mark.parametrize("shape", bench.DISCRIMINATOR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bn_lrelu_saved_memory(benchmark, shape, device, dtype):
    """Bytes kept for backward by BN+LeakyReLU(0.2): fused (In-Place ABN keeps
    only the output) vs eager (keeps the BatchNorm input and the output). The
    timed part is just the measuring forward; the figures are in extra_info."""
    case = bench.Case("bn_lrelu", shape, "nchw", "fwd+bwd")
    benchmark.group = f"saved for backward: {case.block} {'x'.join(map(str, shape))} {device}"
    sizes = {impl: bench.saved_bytes(case, impl, device=device, dtype=dtype) for impl in ("fused", "eager")}
    benchmark.extra_info.update(case=case.group, impl="memory", device=device,
                                dtype=str(dtype).replace("torch.", ""),
                                fused_path=bench.fused_path(device),
                                saved_bytes_fused=sizes["fused"], saved_bytes_eager=sizes["eager"],
                                saved_ratio_eager_over_fused=sizes["eager"] / sizes["fused"])
    benchmark.pedantic(bench.saved_bytes, args=(case, "fused"), kwargs={"device": device, "dtype": dtype},
                       rounds=20, warmup_rounds=3, iterations=1)
    if bench.fused_path(device).startswith("compiled"):
        # The point of the fused LeakyReLU path: the input is not kept.
        assert sizes["fused"] < sizes["eager"], sizes
