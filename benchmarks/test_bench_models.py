"""One full training step of each model (D update + G update for the GANs):
the fused gan_ext model vs the plain-PyTorch build of the same network
(`fused=False`, every op on its PyTorch twin) vs torch.compile of that build.

Cases (gan_ext.bench.MODEL_CASES, also `gan-ext bench --models`): DCGAN 64x64
batch 64, DCGAN MNIST 28x28 batch 128, MLP GAN batch 128, MLP VAE batch 128,
CycleGAN 128x128 batch 1. Each step takes 5 ms to 2 s on the 2-core CPU, so
run these alone:

    pytest benchmarks/test_bench_models.py --bench-rounds 20 --benchmark-json=.benchmarks/models.json
    python benchmarks/ratios.py .benchmarks/models.json

torch.compile of the larger models takes minutes to build on 2 cores; add
`-k "not compile"` to skip it.
"""
from __future__ import annotations

import pytest

from gan_ext import bench

from conftest import bench_case

CASES = bench.cases(kind="model")


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_model_step(benchmark, case, impl, device, dtype, rounds, warmup_rounds):
    bench_case(benchmark, case, impl, device, dtype, rounds, warmup_rounds)
