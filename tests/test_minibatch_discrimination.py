"""What the op spec cannot say about minibatch discrimination: non-finite
values in every vector lane and the tail, precision in bfloat16/float16,
results independent of the thread count, C = 0, the backward op's checks,
the nn layer (gan_ext.nn.MinibatchDiscrimination) and its benchmark case.
The spec-driven checks (gradcheck, gradgradcheck, opcheck, compile, parity,
bad input, NaN, empty) are in tests/test_op_spec.py."""
from __future__ import annotations

import re

import pytest
import torch

import gan_ext
from gan_ext import bench, ops
from gan_ext.nn import MinibatchDiscrimination
from gan_ext.reference import (check_minibatch_discrimination_grad, distinct_features,
                               minibatch_discrimination as mbd_ref)

from conftest import assert_within_2x_of_torch, requires_cuda, skip_unless_fused_on

# 37 samples: two AVX-512 float vectors (four AVX2 ones) and a tail of 5.
RUN = 37


def _fused_and_twin(M, grad_out):
    """(output, dM) of the fused op and of the twin for the same M."""
    outs = {}
    for name in ("fused", "reference"):
        leaf = M.detach().clone().requires_grad_()
        with gan_ext.use_backend(name):
            o = ops.minibatch_discrimination(leaf)
        (g,) = torch.autograd.grad(o, leaf, grad_out)
        outs[name] = (o.detach(), g)
    return outs["fused"], outs["reference"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
def test_nonfinite_in_every_lane(value, dtype):
    """A non-finite M[pos, 1, c] at every sample position pos (vector lanes and
    tail): NaN reaches every o[i, 1], i != pos, and no other kernel; the fused
    output and gradient are NaN exactly where the twin's are, and equal elsewhere."""
    skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    base = distinct_features((RUN, 3, 4)).to(dtype)
    grad_out = torch.randn(RUN, 3, dtype=dtype)
    for pos in range(RUN):
        M = base.clone()
        M[pos, 1, pos % 4] = value
        (o, g), (o_ref, g_ref) = _fused_and_twin(M, grad_out)
        where = f"position {pos}"
        if value != value:
            others = torch.arange(RUN) != pos
            assert torch.isnan(o[others, 1]).all(), where
            assert not torch.isnan(o[:, 0]).any() and not torch.isnan(o[:, 2]).any(), where
        else:
            assert torch.isfinite(o).all(), where  # an infinite distance gives exp(-inf) = 0
        assert torch.equal(torch.isnan(o), torch.isnan(o_ref)), where
        assert torch.equal(torch.isnan(g), torch.isnan(g_ref)), where
        torch.testing.assert_close(o, o_ref, equal_nan=True, msg=lambda m: f"{where}: {m}")
        torch.testing.assert_close(g, g_ref, equal_nan=True, msg=lambda m: f"{where} grad: {m}")


def test_nan_gradient_at_a_tie():
    """M[j] holds a NaN in one coordinate and ties M[i] in another: torch's
    abs backward gives NaN * sign(0) = NaN there, and so must the kernel (a
    sign() that short-cuts ties to 0 would drop it)."""
    skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    M = distinct_features((RUN, 1, 2))
    M[7, 0, 0] = float("nan")
    M[7, 0, 1] = M[3, 0, 1]
    (_, g), (_, g_ref) = _fused_and_twin(M, torch.ones(RUN, 1, dtype=M.dtype))
    assert torch.isnan(g_ref[3, 0, 1])
    assert torch.equal(torch.isnan(g), torch.isnan(g_ref))


def test_one_sample_has_no_pairs_even_when_nan():
    """N = 1: o = 0 and its gradient 0, whatever M holds (the pair of i with
    itself is never formed, so a NaN there cannot leak into the gradient)."""
    skip_unless_fused_on("cpu")
    M = torch.full((1, 2, 3), float("nan"))
    (o, g), (o_ref, g_ref) = _fused_and_twin(M, torch.ones(1, 2))
    for t in (o, g, o_ref, g_ref):
        assert torch.equal(t, torch.zeros_like(t)), t


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_low_precision_accumulates_in_float32(dtype):
    """Error against float64 within 2x that of plain torch run in the same
    dtype (flash-attention's rule), output and gradient."""
    skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    M64 = torch.randn(64, 8, 5, dtype=torch.float64) * 0.3
    g64 = torch.randn(64, 8, dtype=torch.float64)

    def plain(M):
        d = (M.unsqueeze(1) - M.unsqueeze(0)).abs().sum(-1)
        return torch.exp(-d).sum(1) - 1

    def run(fn, dt):
        M = M64.to(dt).requires_grad_()
        o = fn(M)
        (g,) = torch.autograd.grad(o, M, g64.to(dt))
        return o.detach().double(), g.double()

    ref = run(plain, torch.float64)
    ours = run(torch.ops.gan_ext.minibatch_discrimination, dtype)
    low = run(plain, dtype)
    for k, what in enumerate(("output", "grad")):
        assert_within_2x_of_torch(ours[k], low[k], ref[k], 1e-6, what)


@pytest.mark.parametrize("shape", [(70, 1, 5), (200, 2, 3), (131, 5, 7), (96, 64, 2), (40, 3, 9)],
                         ids=["K2-C5", "K6-C3", "K4-C7", "K1-C2", "K1-C9"])
def test_triangle_blocks_match_the_twin(shape):
    """The CPU kernels compute each pair once and, for few kernels B, cut the
    pair triangle into K = min(ceil(64 / B), N // 32) row blocks whose column
    sums are merged afterwards; C = 1-6 and 8 are compiled for their C, other
    C run the generic loop. Every such case equals the float64 twin, and a
    NaN at a sample in the last block reaches every other sample's output."""
    skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    M = distinct_features(shape)
    grad_out = torch.randn(shape[:2], dtype=torch.float64)
    (o, g), (o_ref, g_ref) = _fused_and_twin(M, grad_out)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    bad = M.clone()
    bad[-2, 0, 0] = float("nan")
    (o, g), (o_ref, g_ref) = _fused_and_twin(bad, grad_out)
    others = torch.arange(shape[0]) != shape[0] - 2
    assert torch.isnan(o[others, 0]).all() and torch.equal(torch.isnan(g), torch.isnan(g_ref))
    torch.testing.assert_close(o, o_ref, equal_nan=True, rtol=1e-12, atol=1e-12)


def test_result_does_not_depend_on_the_thread_count():
    skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    M = torch.randn(70, 9, 5, requires_grad=True)
    g = torch.randn(70, 9)
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            o = torch.ops.gan_ext.minibatch_discrimination(M)
            results.append((o, torch.autograd.grad(o, M, g)[0]))
    finally:
        torch.set_num_threads(before)
    for o, g in results[1:]:
        assert torch.equal(o, results[0][0]) and torch.equal(g, results[0][1])


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_zero_kernel_dimension_gives_n_minus_one(backend):
    if backend == "fused":
        skip_unless_fused_on("cpu")
    M = torch.randn(4, 3, 0, requires_grad=True)
    with gan_ext.use_backend(backend):
        o = ops.minibatch_discrimination(M)
    torch.testing.assert_close(o, torch.full((4, 3), 3.0))
    (g,) = torch.autograd.grad(o.sum(), M)
    assert g.shape == (4, 3, 0)


@pytest.mark.parametrize("make,error,match", [
    (lambda: (torch.randn(4, 2), torch.randn(4, 3, 5)), ValueError,
     "grad must have the output's shape [N, B] = [4, 3], got [4, 2]"),
    (lambda: (torch.ones(4, 3, dtype=torch.int32), torch.randn(4, 3, 5)), TypeError,
     "grad must be a floating point tensor"),
    (lambda: (torch.randn(4, 3), torch.randn(4, 15)), ValueError, "M must be a 3-D tensor"),
], ids=["grad-shape", "grad-int", "M-2d"])
def test_backward_op_checks_its_arguments(make, error, match):
    """The backward op's kernel and the Python check its fake kernel runs
    refuse the same input with the same one-line message."""
    skip_unless_fused_on("cpu")
    msgs = []
    for fn in (torch.ops.gan_ext.minibatch_discrimination_backward, check_minibatch_discrimination_grad):
        with pytest.raises(error, match=re.escape(match)) as info:
            fn(*make())
        msgs.append(str(info.value).splitlines()[0].replace("torch.int32", "Int"))
    assert msgs[0] == msgs[1]


def test_backward_check_names_a_device_mix():
    with pytest.raises(ValueError, match=re.escape("grad is on meta but M is on cpu")):
        check_minibatch_discrimination_grad(torch.randn(4, 3, device="meta"), torch.randn(4, 3, 5))


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("shape", [(300, 7, 5), (37, 3, 11), (130, 2, 8), (1, 2, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=["float32", "float64", "bfloat16"])
def test_cuda_kernel_against_the_float64_twin(shape, dtype):
    """The CUDA kernel over more than one block of rows (N = 300), C over
    its 8 register coordinates (11: two backward passes) and at exactly 8,
    output and gradient, and a NaN reaching every other row of its kernel."""
    skip_unless_fused_on("cuda")
    torch.manual_seed(0)
    M64 = distinct_features(shape)
    g64 = torch.randn(shape[:2], dtype=torch.float64).to(dtype).double()  # representable in dtype
    M = M64.to("cuda", dtype).requires_grad_()
    o = torch.ops.gan_ext.minibatch_discrimination(M)
    (g,) = torch.autograd.grad(o, M, g64.to("cuda", dtype))
    M_ref = M.detach().cpu().double().requires_grad_()
    o_ref = mbd_ref(M_ref)
    (g_ref,) = torch.autograd.grad(o_ref, M_ref, g64)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o.cpu().double(), o_ref, **tol)
    torch.testing.assert_close(g.cpu().double(), g_ref, **tol)
    if shape[0] > 1:
        bad = M.detach().clone()
        bad[shape[0] - 1, shape[1] - 1, 0] = float("nan")
        o_bad = torch.ops.gan_ext.minibatch_discrimination(bad).cpu()
        assert torch.isnan(o_bad[:-1, -1]).all() and not torch.isnan(o_bad[:, :-1]).any()


# ----------------------------------------------------------------- the layer
def _layer_by_hand(f, T, B, C):
    """cat([f, o]) from the paper's formula in plain float64 torch."""
    M = (f.flatten(1) @ T).view(f.shape[0], B, C)
    d = (M.unsqueeze(1) - M.unsqueeze(0)).abs().sum(-1)  # (N, N, B)
    o = torch.exp(-d).sum(1) - 1
    return torch.cat([f.flatten(1), o], 1)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_layer_equals_the_formula_and_trains_T_and_f(backend):
    if backend == "fused":
        skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(12, num_kernels=6, kernel_dim=3, dtype=torch.float64)
    layer.T.data.mul_(10)  # distances of O(1): every exp(-d) matters
    f = torch.randn(9, 3, 4, dtype=torch.float64, requires_grad=True)  # (N, ...) is flattened
    with gan_ext.use_backend(backend):
        out = layer(f)
    want = _layer_by_hand(f, layer.T, 6, 3)
    assert out.shape == (9, 12 + 6)
    torch.testing.assert_close(out, want)
    g = torch.randn(out.shape, dtype=torch.float64)
    got_f, got_T = torch.autograd.grad(out, (f, layer.T), g)
    want_f, want_T = torch.autograd.grad(want, (f, layer.T), g)
    assert got_T.abs().sum() > 0 and got_f.abs().sum() > 0
    torch.testing.assert_close(got_f, want_f)
    torch.testing.assert_close(got_T, want_T)


def test_layer_fused_and_reference_agree_with_a_gradient_penalty():
    """Same output and the same double backward (an R1-style penalty on f)."""
    skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(16, num_kernels=4, kernel_dim=5)
    layer.T.data.mul_(5)
    x = torch.randn(10, 16)
    res = {}
    for name in ("fused", "reference"):
        f = x.clone().requires_grad_()
        with gan_ext.use_backend(name):
            out = layer(f)
            (gf,) = torch.autograd.grad(out.pow(2).sum(), f, create_graph=True)
            (gT,) = torch.autograd.grad(gf.pow(2).sum(), layer.T)
        res[name] = (out.detach(), gT)
    torch.testing.assert_close(res["fused"][0], res["reference"][0])
    torch.testing.assert_close(res["fused"][1], res["reference"][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 9])
def test_layer_mean_reduction_divides_by_the_other_samples(n):
    """reduction="mean": o / (N - 1), the same T and the same gradients up to
    that factor; N = 1 gives zeros (no other sample), as the sum does."""
    torch.manual_seed(0)
    summed = MinibatchDiscrimination(6, 4, 3).double()
    mean = MinibatchDiscrimination(6, 4, 3, reduction="mean").double()
    mean.load_state_dict(summed.state_dict())
    x = torch.randn(n, 6, dtype=torch.float64)
    o_sum, o_mean = summed(x)[:, 6:], mean(x)[:, 6:]
    torch.testing.assert_close(o_mean, o_sum / max(n - 1, 1))
    torch.testing.assert_close(mean(x)[:, :6], x)
    (g_sum,) = torch.autograd.grad(summed(x)[:, 6:].sum(), summed.T)
    (g_mean,) = torch.autograd.grad(mean(x)[:, 6:].sum(), mean.T)
    torch.testing.assert_close(g_mean, g_sum / max(n - 1, 1))
    assert "reduction='mean'" in repr(mean) and "reduction" not in repr(summed)
    with pytest.raises(ValueError, match="reduction must be one of sum, mean, got 'max'"):
        MinibatchDiscrimination(6, 4, 3, reduction="max")


def test_layer_init_and_state_dict():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(512, num_kernels=100, kernel_dim=5)
    assert list(layer.state_dict()) == ["T"] and layer.T.shape == (512, 500)
    assert abs(layer.T.std().item() - 0.05) < 1e-3 and abs(layer.T.mean().item()) < 1e-3
    assert "num_kernels=100" in repr(layer)


@pytest.mark.parametrize("make,error,match", [
    (lambda: MinibatchDiscrimination(8, 4, 3)(torch.randn(5, 9)), ValueError,
     "input has 9 features per sample (shape [5, 9]) but in_features=8"),
    (lambda: MinibatchDiscrimination(8, 4, 3)(torch.randn(5)), ValueError,
     "input must be (N, in_features) or (N, ...)"),
    (lambda: MinibatchDiscrimination(8, 4, 3)(torch.randn(5, 8, device="meta")), ValueError,
     "input is on meta but T is on cpu"),
    (lambda: MinibatchDiscrimination(8, 0, 3), ValueError, "num_kernels must be >= 1, got 0"),
    (lambda: MinibatchDiscrimination(8, 4, 2.5), TypeError, "kernel_dim must be an int"),
], ids=["features", "1d", "device", "kernels", "kernel-dim-type"])
def test_layer_refuses_bad_input(make, error, match):
    with pytest.raises(error, match=re.escape(match)):
        make()


# ------------------------------------------------------------- the benchmark
def test_benchmark_cases_run_fused_and_eager():
    """The registered cases (gan-ext bench -k minibatch_disc) build and run one
    step of each side; the eager side computes the same values (no timing here)."""
    cases = bench.select(bench.cases(kind="loss"), "minibatch_disc")
    assert sorted(c.shape for c in cases) == [(64, 100, 5), (256, 100, 5)]
    block = bench.BLOCKS["minibatch_disc"]
    small = bench.Case("minibatch_disc", (6, 3, 2), "nchw", "fwd+bwd")
    M = torch.randn(6, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(block.eager(M)[0], mbd_ref(M))
    assert block.floor(small, torch.float32) is None  # compute-bound: no memory floor
    for impl in ("fused", "eager"):
        if impl == "fused":
            skip_unless_fused_on("cpu")
        bench.prepare(small, impl).step()
