"""Fused losses and the VAE reparameterization vs eager PyTorch vs torch.compile,
forward + backward, at the shapes the models use.

One pytest-benchmark group per (loss, shape, device, dtype), holding `fused`,
`eager` and `compile`. The cases and builders are those of gan_ext.bench
(`LOSS_CASES`, also behind `gan-ext bench -k d_bce`). Eager is what a training
script writes with torch.nn.functional (e.g. BCE against torch.ones_like), and
the backward is torch.autograd.grad of every output with respect to every input
that requires grad (the gradient of z is a fixed random tensor).

    pytest benchmarks/test_bench_losses.py --benchmark-json=out.json && python benchmarks/ratios.py out.json
"""
from __future__ import annotations

import pytest

from gan_ext import bench

from conftest import bench_case

CASES = bench.cases(kind="loss")


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_loss(benchmark, case, impl, device, dtype, rounds, warmup_rounds):
    bench_case(benchmark, case, impl, device, dtype, rounds, warmup_rounds)
