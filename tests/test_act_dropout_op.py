"""torch.ops.gan_ext.act_dropout / act_dropout_backward (activation + dropout
with an in-kernel Philox mask, csrc/ops/act_dropout/dropout.h), the reference twin, the
functional form, nn.ActDropout and its place in gan_ext.fuse."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gan_ext
from gan_ext import ops
from gan_ext import reference as ref
from gan_ext.nn import ActDropout

from conftest import requires_fused, skip_unless_fused_on, to_layout

L = torch.ops.gan_ext
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
ACTS = [("identity", 0.0), ("relu", 0.0), ("leaky_relu", 0.2)]
ACT_IDS = ["identity", "relu", "leaky0.2"]


def _fused(device):
    skip_unless_fused_on(device)
    return gan_ext.use_backend("fused")


def eager(x, act, slope, keep, p):
    """act(x) * keep / (1 - p) in plain PyTorch, in x's dtype."""
    y = {"identity": x, "relu": F.relu(x), "leaky_relu": F.leaky_relu(x, slope)}[act]
    return y * keep.to(x.dtype) * ref.dropout_scale(p)


def keep_of_next_call(device, seed, numel, p):
    """The keep mask the next call draws after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    s, o = ref.generator_seed_offset(torch.device(device))
    torch.manual_seed(seed)
    return ref.dropout_keep(numel, p, device, s, o)


# -------------------------------------------------------------- torch.compile
@pytest.mark.compile
@requires_fused
def test_compile_matches_eager():
    """fullgraph compile of Linear -> ActDropout, forward + backward: the mask
    is drawn at run time, so the same seed gives the same output as eager and
    a second call a fresh mask."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 64)
    layer = ActDropout("leaky_relu", 0.2, 0.3)

    def step(x):
        y = layer(lin(x))
        return y, (y * y).sum()

    def run(fn, seed):
        lin.zero_grad()
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(seed)
        y, loss = fn(x)
        loss.backward()
        return y.detach(), lin.weight.grad.clone()

    with gan_ext.use_backend("fused"):
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)
        got, want = run(compiled, 7), run(step, 7)
        other = run(compiled, 8)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    assert not torch.equal(other[0], got[0])


# -------------------------------------------------------------------- parity
SHAPES = [("128x1024", (128, 1024), "nchw"), ("7", (7,), "nchw"), ("3x5x33", (3, 5, 33), "nchw"),
          ("cl-4x3x8x8", (4, 3, 8, 8), "channels_last"),
          ("strided-4x3x8x9", (4, 3, 8, 9), "strided")]
TOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 1e-2, torch.float16: 1e-3}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_id,shape,layout", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("act,slope", ACTS, ids=ACT_IDS)
def test_parity_with_torch(backend, device, act, slope, shape_id, shape, layout, dtype):
    """Forward and backward equal act(x) * keep / (1 - p) in plain PyTorch
    for the mask the call draws (from the twin's Philox)."""
    p = 0.3
    x = to_layout(torch.randn(shape, device=device).to(dtype), layout).requires_grad_()
    keep = keep_of_next_call(device, 42, x.numel(), p).reshape(shape)
    y = ops.act_dropout(x, act, slope, p)
    assert y.dtype == dtype and y.shape == x.shape
    assert y.stride() == torch.empty_like(x).stride(), "not the input's memory layout"
    g = torch.randn(shape, device=device).to(dtype)
    (gx,) = torch.autograd.grad(y, x, g)
    xe = x.detach().clone().requires_grad_()
    ye = eager(xe, act, slope, keep, p)
    (gxe,) = torch.autograd.grad(ye, xe, g)
    tol = TOL[dtype]
    torch.testing.assert_close(y, ye.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(gx, gxe, rtol=tol, atol=tol)


@pytest.mark.parametrize("p", [0.0, 0.4])
@pytest.mark.parametrize("shape_id,shape,layout", SHAPES, ids=[s[0] for s in SHAPES])
def test_layout_of_output_and_grad(backend, device, shape_id, shape, layout, p):
    """out and grad input take the input's layout (channels_last stays
    channels_last), also when the incoming gradient has another layout."""
    x = to_layout(torch.randn(shape, device=device), layout).detach().requires_grad_()
    torch.manual_seed(5)
    y = ops.act_dropout(x, "leaky_relu", 0.2, p)
    assert y.stride() == torch.empty_like(x).stride()
    g = to_layout(torch.randn(shape, device=device), "nchw" if layout != "nchw" else "strided")
    (gx,) = torch.autograd.grad(y, x, g)
    assert gx.stride() == torch.empty_like(y).stride()
    torch.manual_seed(5)
    xe = x.detach().contiguous().requires_grad_()
    ye = ops.act_dropout(xe, "leaky_relu", 0.2, p)
    (gxe,) = torch.autograd.grad(ye, xe, g.contiguous())
    torch.testing.assert_close(y, ye, rtol=0, atol=0)
    torch.testing.assert_close(gx, gxe, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_kernel_mask_equals_twin_mask(device, dtype):
    """The kernel's mask is the stream of csrc/ops/act_dropout/dropout.h, element for element,
    across chunk and group boundaries and a ragged tail."""
    x = torch.rand(3 * 1024 + 45, dtype=dtype, device=device) + 0.5  # all positive
    for p in (0.1, 0.5, 0.9):
        keep = keep_of_next_call(device, 3, x.numel(), p)
        with _fused(device):
            y = ops.act_dropout(x, "identity", 0.0, p)
        assert torch.equal(y != 0, keep)


@requires_fused
def test_independent_of_thread_count():
    x = torch.randn(300_001)
    outs = []
    prev = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(9)
            with gan_ext.use_backend("fused"):
                outs.append(ops.act_dropout(x, "leaky_relu", 0.2, 0.4))
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(outs[0], outs[1])


def test_eval_and_p0_are_the_activation(backend, device):
    x = torch.randn(10, 20, device=device)
    state = torch.get_rng_state()
    for y in (ops.act_dropout(x, "leaky_relu", 0.2, 0.5, training=False),
              ops.act_dropout(x, "leaky_relu", 0.2, 0.0)):
        torch.testing.assert_close(y, F.leaky_relu(x, 0.2), rtol=0, atol=0)
    if device == "cpu":  # p = 0 / eval draw nothing from the generator
        assert torch.equal(torch.get_rng_state(), state)


def test_p1_drops_everything(backend, device):
    x = torch.randn(100, device=device, requires_grad=True)
    y = ops.act_dropout(x, "relu", 0.0, 1.0)
    y.sum().backward()
    assert torch.count_nonzero(y) == 0 and torch.count_nonzero(x.grad) == 0
    assert torch.isfinite(y).all()


def test_empty(backend, device):
    x = torch.empty(0, 5, device=device, requires_grad=True)
    y = ops.act_dropout(x, "relu", 0.0, 0.5)
    y.sum().backward()
    assert y.shape == (0, 5) and x.grad.shape == (0, 5)


@pytest.mark.parametrize("impl", ["op", "twin"])
def test_empty_with_p_returns_the_generator_state(device, impl):
    """An empty input with p > 0 still draws (seed, offset), returns it as rng
    and advances the generator, like any other call; p = 0 draws nothing and
    returns zeros."""
    if impl == "op":
        skip_unless_fused_on(device)
    lib = L if impl == "op" else ref
    x = torch.empty(0, 5, device=device)
    torch.manual_seed(21)
    want = ref.generator_seed_offset(torch.device(device))
    torch.manual_seed(21)
    out, rng = lib.act_dropout(x, 1, 0.0, 0.5)
    assert out.shape == (0, 5) and rng.device == x.device
    assert tuple(rng.tolist()) == want
    _, rng_next = lib.act_dropout(x, 1, 0.0, 0.5)
    assert tuple(rng_next.tolist()) != want, "the empty call did not advance the generator"
    _, rng0 = lib.act_dropout(x, 1, 0.0, 0.0)
    assert rng0.tolist() == [0, 0]


# NaN at every lane of the CPU kernel's vectors (up to 16 wide) in the first
# chunk, and at every position of the vector loop's tail in the last, partial
# chunk (1024-element chunks, csrc/ops/act_dropout/cpu.cpp): 61 = 3 * 16 + 13.
NAN_N = 1024 + 61
NAN_POSITIONS = list(range(16)) + list(range(1024 + 48, NAN_N))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("p", [0.0, 0.5])
@pytest.mark.parametrize("act,slope", ACTS, ids=ACT_IDS)
def test_nan_propagates(backend, device, act, slope, p, dtype):
    """A NaN input gives a NaN output there, dropped or kept, and nowhere else;
    a NaN gradient stays NaN (the derivative and the mask multiply, they never
    select); at a NaN output the derivative is 0 (relu), negative_slope (leaky)
    or 1, the same in both kernels and the twin."""
    base = torch.randn(NAN_N, device=device).to(dtype)
    g = torch.randn(NAN_N, device=device).to(dtype)
    keep = (keep_of_next_call(device, 8, NAN_N, p) if p > 0
            else torch.ones(NAN_N, dtype=torch.bool, device=device))
    mult = keep.double() * ref.dropout_scale(p)
    d_at_nan = {"identity": 1.0, "relu": 0.0, "leaky_relu": slope}[act]

    def call(x):
        torch.manual_seed(8)
        return ops.act_dropout(x, act, slope, p)

    for pos in NAN_POSITIONS:
        x = base.clone()
        x[pos] = float("nan")
        x.requires_grad_()
        y = call(x)
        want = eager(x.detach(), act, slope, keep, p)
        assert torch.equal(y.isnan(), x.isnan()), f"NaN at {pos}"
        torch.testing.assert_close(y, want, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True)
        (gx,) = torch.autograd.grad(y, x, g)
        assert torch.isfinite(gx).all(), f"NaN input at {pos} made a NaN gradient"
        want_at = g[pos].double() * d_at_nan * mult[pos]
        torch.testing.assert_close(gx[pos].double(), want_at, rtol=TOL[dtype], atol=TOL[dtype])

        xf = base.clone().requires_grad_()
        gn = g.clone()
        gn[pos] = float("nan")
        (gx,) = torch.autograd.grad(call(xf), xf, gn)
        assert torch.equal(gx.isnan(), gn.isnan()), f"NaN gradient at {pos}"


def test_float64_slope_is_not_rounded_to_float(backend, device):
    """negative_slope reaches the kernels as a double: 0.1 rounded to float
    (0.100000001490116) would be off by 1.5e-8 relative."""
    x = -torch.rand(4096, dtype=torch.float64, device=device) - 0.5
    x.requires_grad_()
    keep = keep_of_next_call(device, 4, x.numel(), 0.25)
    y = ops.act_dropout(x, "leaky_relu", 0.1, 0.25)
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad(y, x, g)
    xe = x.detach().clone().requires_grad_()
    ye = eager(xe, "leaky_relu", 0.1, keep, 0.25)
    (gxe,) = torch.autograd.grad(ye, xe, g)
    torch.testing.assert_close(y, ye.detach(), rtol=1e-15, atol=0)
    torch.testing.assert_close(gx, gxe, rtol=1e-15, atol=0)


def test_saves_only_the_output(device):
    """Backward keeps the output (shared with the next layer) and 16 bytes of
    rng; no mask, no input."""
    skip_unless_fused_on(device)
    x = torch.randn(64, 256, device=device, requires_grad=True)
    saved = []
    with gan_ext.use_backend("fused"), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        y = ops.act_dropout(x * 1.0, "leaky_relu", 0.2, 0.3)
    big = [t for t in saved if t.numel() > 2]
    assert len(big) == 1 and big[0].data_ptr() == y.data_ptr()


# ------------------------------------------------------------ mask statistics
def test_keep_rate_and_independence(device):
    """Over 10^6 draws the keep rate is 1 - p within 5 standard errors
    (sqrt(p(1-p)/n) = 4.6e-4 at p = 0.3), consecutive calls are uncorrelated
    (|r| < 5/sqrt(n)), the same seed repeats the mask and another seed does not."""
    skip_unless_fused_on(device)
    n, p = 1_000_000, 0.3
    x = torch.ones(n, device=device)
    with gan_ext.use_backend("fused"):
        torch.manual_seed(0)
        a = (ops.act_dropout(x, "identity", 0.0, p) != 0).double()
        b = (ops.act_dropout(x, "identity", 0.0, p) != 0).double()
        torch.manual_seed(0)
        a2 = (ops.act_dropout(x, "identity", 0.0, p) != 0).double()
        torch.manual_seed(1)
        c = (ops.act_dropout(x, "identity", 0.0, p) != 0).double()
    se = math.sqrt(p * (1 - p) / n)
    assert abs(a.mean().item() - (1 - p)) < 5 * se
    r = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(r) < 5 / math.sqrt(n)
    # neighbouring elements (within a group and across words) are uncorrelated
    r1 = torch.corrcoef(torch.stack([a[:-1], a[1:]]))[0, 1].item()
    r8 = torch.corrcoef(torch.stack([a[:-8], a[8:]]))[0, 1].item()
    assert abs(r1) < 5 / math.sqrt(n) and abs(r8) < 5 / math.sqrt(n)
    assert torch.equal(a, a2) and not torch.equal(a, c)


def test_threshold_formula():
    assert ref.dropout_threshold(0.0) == 0
    assert ref.dropout_threshold(1.0) == 2 ** 23
    assert ref.dropout_threshold(0.5) == 2 ** 22
    assert ref.dropout_scale(1.0) == 0.0 and ref.dropout_scale(0.5) == 2.0


# ----------------------------------------------------------------- bad input
def _bad_cases(device):
    x = torch.randn(4, 8, device=device)
    return {
        "integer input": ((torch.ones(4, dtype=torch.int64, device=device), "relu", 0.0, 0.5),
                          TypeError, "floating point"),
        "p > 1": ((x, "relu", 0.0, 1.5), ValueError, "p must be in"),
        "p < 0": ((x, "relu", 0.0, -0.1), ValueError, "p must be in"),
        "p nan": ((x, "relu", 0.0, float("nan")), ValueError, "p must be in"),
        "negative slope": ((x, "leaky_relu", -0.2, 0.5), ValueError, "negative_slope"),
        "unknown activation": ((x, "gelu", 0.0, 0.5), ValueError, "activation"),
        "not a tensor": (([1.0, 2.0], "relu", 0.0, 0.5), TypeError, "input"),
    }


@pytest.mark.parametrize("case", list(_bad_cases("cpu")))
def test_rejects_bad_input(backend, device, case):
    args, exc, match = _bad_cases(device)[case]
    with pytest.raises(exc, match=match):
        ops.act_dropout(*args)


@requires_fused
def test_backward_op_rejects_bad_input():
    out = torch.randn(4, 8)
    with pytest.raises(ValueError, match="grad has shape"):
        L.act_dropout_backward(torch.randn(4, 9), out, torch.zeros(2, dtype=torch.int64), 1, 0.0, 0.5)
    with pytest.raises(ValueError, match="rng must be"):
        L.act_dropout_backward(torch.randn(4, 8), out, torch.zeros(3), 1, 0.0, 0.5)


# ------------------------------------------------------------ module and fuse
def test_module_train_eval(backend):
    m = ActDropout("leaky_relu", 0.2, 0.5)
    x = torch.randn(64, 64)
    assert (m(x) == 0).float().mean() > 0.3
    m.eval()
    torch.testing.assert_close(m(x), F.leaky_relu(x, 0.2), rtol=0, atol=0)
    assert "p=0.5" in repr(m)


@pytest.mark.parametrize("kwargs,exc", [({"p": 2.0}, ValueError), ({"p": "x"}, TypeError),
                                        ({"negative_slope": -1.0}, ValueError),
                                        ({"activation": "tanh"}, ValueError)])
def test_module_rejects_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        ActDropout(**kwargs)


def test_fuse_mlp_discriminator():
    """Linear -> LeakyReLU -> Dropout becomes Linear -> ActDropout -> Identity:
    same keys, same eval output, and in training the fused model equals the
    reference twin for the same seed."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(12, 32), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.3),
                          nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1))
    fused = gan_ext.fuse(__import__("copy").deepcopy(plain))
    assert [type(m) for m in fused] == [nn.Linear, ActDropout, nn.Identity, nn.Linear, ActDropout,
                                        nn.Identity, nn.Linear]
    assert fused[1].negative_slope == 0.2 and fused[4].activation == "relu" and fused[4].p == 0.5
    assert list(fused.state_dict()) == list(plain.state_dict())
    x = torch.randn(8, 12)
    plain.eval(), fused.eval()
    torch.testing.assert_close(fused(x), plain(x))
    # slope < 0 and Dropout subclasses are left alone
    other = gan_ext.fuse(nn.Sequential(nn.LeakyReLU(-0.1), nn.Dropout(0.2), nn.ReLU(), nn.Dropout2d()))
    assert [type(m) for m in other] == [nn.LeakyReLU, nn.Dropout, nn.ReLU, nn.Dropout2d]
