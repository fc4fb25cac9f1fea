"""The fused op itself: torch.ops.gan_ext.norm_act / norm_act_backward, its
reference twin, and the functional forms in gan_ext.ops."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import gan_ext
from gan_ext import reference as ref

from conftest import (ACT_IDS, ACTIVATIONS, BACKENDS, LAYOUTS, LOW_PRECISION,
                      assert_within_2x_of_torch, make_input, requires_fused, saved_tensor_bytes,
                      skip_unless_fused_on, to_layout, tolerances, torch_norm_act)

NORMS = ["batch", "instance"]
MODES = ["train", "eval"]  # eval: use_input_stats=False with running statistics
EPS = 1e-5
MOMENTUM = 0.1
CODE = ref.ACTIVATIONS


def _params(C, dtype, device, affine="full", requires_grad=False):
    """Weight away from 0 (the leaky_relu path clamps |w| >= 1e-5), both signs."""
    w = b = None
    if affine in ("full", "weight"):
        sign = torch.where(torch.arange(C) % 3 == 1, -1, 1)
        w = (torch.rand(C, dtype=torch.float64) + 0.5) * sign
        w = w.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    if affine == "full":
        b = (0.5 * torch.randn(C, dtype=torch.float64)).to(device=device, dtype=dtype)
        b.requires_grad_(requires_grad)
    return w, b


def _running(C, dtype, device):
    rm = (0.3 * torch.randn(C, dtype=torch.float64)).to(device=device, dtype=dtype)
    rv = (0.5 + torch.rand(C, dtype=torch.float64)).to(device=device, dtype=dtype)
    return rm, rv


class _RefNormAct(torch.autograd.Function):
    """The reference forward with the reference's analytic backward, saving what
    the fused op saves (the output when the activation is invertible): gradcheck
    of this validates the oracle the kernel's backward is compared to. The
    backward op's grad_weight is the effective weight's; weight's goes through
    effective_weight_grad, as in the op's autograd."""

    @staticmethod
    def forward(ctx, x, w, b, rm, rv, uis, instance, act, slope):
        out, mean, invstd, _ = ref.norm_act(x, w, b, rm, rv, None, uis, instance, MOMENTUM, EPS,
                                            act, slope)
        saved_is_output = ref.output_is_invertible(act, slope)
        ctx.save_for_backward(out if saved_is_output else x, w, b, mean, invstd)
        ctx.args = (uis, instance, act, slope, saved_is_output)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        saved, w, b, mean, invstd = ctx.saved_tensors
        gi, gw, gb = ref.norm_act_backward(grad_out, saved, w, b, mean, invstd, *ctx.args)
        gw = ref.effective_weight_grad(w, gw, *ctx.args[2:4])
        return gi, (gw if w is not None else None), (gb if b is not None else None), *([None] * 6)


def _op_fn(impl, rm, rv, uis, instance, act, slope):
    if impl == "fused":
        return lambda x, w, b: torch.ops.gan_ext.norm_act(x, w, b, rm, rv, None, uis, instance,
                                                          MOMENTUM, EPS, act, slope)[0]
    return lambda x, w, b: _RefNormAct.apply(x, w, b, rm, rv, uis, instance, act, slope)


IMPLS = BACKENDS  # "fused": the C++ op; "reference": reference forward + analytic backward


def _named(name):
    return lambda m: f"{name}: {m}"


# ------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(device, impl, norm, act, slope, layout, mode):
    if impl == "fused":
        skip_unless_fused_on(device)
    C = 4
    x = make_input((3, C, 5, 5), torch.float64, device, layout, requires_grad=True)
    w, b = _params(C, torch.float64, device, requires_grad=True)
    rm, rv = _running(C, torch.float64, device)
    fn = _op_fn(impl, rm, rv, mode == "train", norm == "instance", CODE[act], slope)
    assert gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("affine", ["none", "weight"])
@pytest.mark.parametrize("act,slope", [("identity", 0.01), ("leaky_relu", 0.2)],
                         ids=["identity", "leaky0.2"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_without_affine(device, impl, norm, mode, act, slope, affine):
    if impl == "fused":
        skip_unless_fused_on(device)
    C = 4
    x = make_input((3, C, 5, 5), torch.float64, device, requires_grad=True)
    w, b = _params(C, torch.float64, device, affine=affine, requires_grad=True)
    rm, rv = _running(C, torch.float64, device)
    fn = _op_fn(impl, rm, rv, mode == "train", norm == "instance", CODE[act], slope)
    assert gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6, rtol=1e-5)


# ------------------------------------------- in-place ABN: the weight floor
# With an invertible leaky_relu the op multiplies by sign(w) * max(|w|, 1e-5)
# (sign(0) = +1). Its derivative in w is the clamp's: 0 where |w| < 1e-5.
_FLOOR = ref.MIN_ABS_WEIGHT
_BELOW_FLOOR = [0.0, -0.0, 1e-7, -3e-6, 9e-6, _FLOOR, -_FLOOR, 0.7, -1.2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_abn_weight_below_floor(device, impl, norm, mode):
    """Below the floor, 2e-6 or more from its kinks (|w| = 1e-5, and w = 0 where
    w_eff jumps): weight's gradient is 0, which finite differences confirm."""
    if impl == "fused":
        skip_unless_fused_on(device)
    x = make_input((3, 4, 5, 5), torch.float64, device, requires_grad=True)
    w = torch.tensor([3e-6, -4e-6, 0.8, -0.6], dtype=torch.float64, device=device,
                     requires_grad=True)
    b = (0.5 * torch.randn(4, dtype=torch.float64, device=device)).requires_grad_()
    rm, rv = _running(4, torch.float64, device)
    fn = _op_fn(impl, rm, rv, mode == "train", norm == "instance", CODE["leaky_relu"], 0.2)
    assert gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_abn_weight_below_floor_op_matches_twin(device, dtype, norm, mode, layout):
    """The fused op (its C++ autograd over the kernels) and the twin (the
    fallback, differentiated by autograd) agree on the output and on every
    gradient when |w| is below the floor (0, -0, both signs) or at it: weight's
    gradient is 0 below the floor and passes at and above it."""
    skip_unless_fused_on(device)
    # The kernels recover xhat from the output as (z - b) / w_eff, which keeps
    # about eps * |b| / |w_eff| of it: 7% in float32 at the floor itself (where
    # weight's gradient passes), 1e-11 in float64. Float32 checks the rest.
    weights = [v for v in _BELOW_FLOOR if dtype == torch.float64 or abs(v) != _FLOOR]
    C = len(weights)
    w0 = torch.tensor(weights, dtype=dtype, device=device)
    b0 = (0.5 * torch.randn(C, dtype=torch.float64)).to(device=device, dtype=dtype)
    x0 = make_input((2, C, 3, 4), dtype, device, layout)
    rm, rv = _running(C, dtype, device)
    g = to_layout(torch.randn(x0.shape, dtype=torch.float64).to(device=device, dtype=dtype), layout)
    rest = (None, mode == "train", norm == "instance", MOMENTUM, EPS, CODE["leaky_relu"], 0.2)
    results = []
    for fn in (torch.ops.gan_ext.norm_act, ref.norm_act):
        x, w, b = (t.detach().clone().requires_grad_() for t in (x0, w0, b0))
        out = fn(x, w, b, rm.clone(), rv.clone(), *rest)[0]
        results.append((out, *torch.autograd.grad(out, (x, w, b), g)))
    for name, a, e in zip(("out", "grad_input", "grad_weight", "grad_bias"), *results):
        torch.testing.assert_close(a, e, **tolerances(dtype), msg=_named(name))
    gw = results[0][2]
    below = w0.abs() < _FLOOR
    assert below.sum() == 5 and torch.equal(gw[below], torch.zeros_like(gw[below]))
    assert (gw[~below] != 0).all()
    # The floor, not w, scales those channels: their output is not bias alone.
    y = results[0][0].transpose(0, 1).reshape(C, -1)
    assert ((y[below] - y[below].median(dim=1, keepdim=True).values).abs().amax(dim=1) > 0).all()


# ------------------------------------------------------------ backward kernel
def _backward_case(dtype, device, layout, norm, act, slope, mode):
    C = 19  # not a multiple of any vector width: exercises the scalar tails
    x = make_input((3, C, 5, 7), dtype, device, layout)
    w, b = _params(C, dtype, device)
    rm, rv = _running(C, dtype, device)
    uis, inst = mode == "train", norm == "instance"
    out, mean, invstd, _ = ref.norm_act(x, w, b, rm.clone(), rv.clone(), None, uis, inst, MOMENTUM,
                                        EPS, CODE[act], slope)
    g = to_layout(torch.randn(x.shape, dtype=torch.float64).to(device=device, dtype=dtype), layout)
    return x, w, b, rm, rv, out, mean, invstd, g, uis, inst


@requires_fused
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act,slope,saved_is_output",
                         [("identity", 0.01, False), ("relu", 0.01, False),
                          ("leaky_relu", 0.2, False), ("leaky_relu", 0.2, True)],
                         ids=["identity", "relu", "leaky0.2-input", "leaky0.2-output"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_backward_op_matches_reference(device, dtype, norm, act, slope, saved_is_output, layout,
                                       mode):
    skip_unless_fused_on(device)
    x, w, b, rm, rv, out, mean, invstd, g, uis, inst = _backward_case(
        dtype, device, layout, norm, act, slope, mode)
    saved = out if saved_is_output else x
    args = (w, b, mean, invstd, uis, inst, CODE[act], slope, saved_is_output)
    got = torch.ops.gan_ext.norm_act_backward(g, saved, *args)
    want = ref.norm_act_backward(g, saved, *args)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        if dtype in LOW_PRECISION:
            # Same float32 math, rounded to bf16 once: within a couple of ulps.
            scale = e.float().abs().max().item()
            torch.testing.assert_close(a.float(), e.float(), rtol=2e-2, atol=2e-2 * scale,
                                       msg=_named(name))
        else:
            torch.testing.assert_close(a, e, **tolerances(dtype), msg=_named(name))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", NORMS)
def test_reference_backward_from_output_equals_from_input(norm, mode):
    """The In-Place-ABN inversion in the oracle: the backward from the saved
    output must equal the backward from the saved input."""
    x, w, b, rm, rv, out, mean, invstd, g, uis, inst = _backward_case(
        torch.float64, "cpu", "nchw", norm, "leaky_relu", 0.2, mode)
    common = (w, b, mean, invstd, uis, inst, CODE["leaky_relu"], 0.2)
    from_out = ref.norm_act_backward(g, out, *common, True)
    from_in = ref.norm_act_backward(g, x, *common, False)
    for a, e in zip(from_out, from_in):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


def _clone(t):
    return None if t is None else t.clone()


# -------------------------------------------------------------- torch.compile
@pytest.mark.compile
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compile_fullgraph_forward_backward(backend_name):
    C = 3

    def step(x, w, b, rm, rv):
        y = gan_ext.ops.batch_norm_act(x, rm, rv, w, b, training=True, momentum=0.1, eps=EPS,
                                       activation="leaky_relu", negative_slope=0.2)
        return (y * y).sum()

    def run(fn):
        torch.manual_seed(1)
        x = make_input((2, C, 4, 4), requires_grad=True)
        w, b = _params(C, torch.float32, "cpu", requires_grad=True)
        rm, rv = _running(C, torch.float32, "cpu")
        loss = fn(x, w, b, rm, rv)
        loss.backward()
        return loss.detach(), x.grad, w.grad, b.grad, rm, rv

    with gan_ext.use_backend(backend_name):
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)
        got, want = run(compiled), run(step)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------- parity
def _fn(norm):
    return gan_ext.ops.batch_norm_act if norm == "batch" else gan_ext.ops.instance_norm_act


def _call(norm, x, rm, rv, w, b, uis, act, slope, momentum=0.1):
    if norm == "batch":
        return gan_ext.ops.batch_norm_act(x, rm, rv, w, b, training=uis, momentum=momentum,
                                          eps=EPS, activation=act, negative_slope=slope)
    return gan_ext.ops.instance_norm_act(x, rm, rv, w, b, use_input_stats=uis, momentum=momentum,
                                         eps=EPS, activation=act, negative_slope=slope)


def _run_parity(impl, x0, w0, b0, rm0, rv0, uis, inst, act, slope, g):
    """Forward + backward of one implementation on fresh copies of the inputs.
    Returns (out, grad_x, grad_w, grad_b, running_mean, running_var)."""
    x = x0.detach().clone().requires_grad_()
    w = w0.detach().clone().requires_grad_()
    b = b0.detach().clone().requires_grad_()
    rm, rv = rm0.clone(), rv0.clone()
    if impl == "torch":
        out = torch_norm_act(x, rm, rv, w, b, uis, inst, 0.1, EPS, act, slope)
    else:
        out = _call("instance" if inst else "batch", x, rm, rv, w, b, uis, act, slope)
    out.backward(g)
    return out.detach(), x.grad, w.grad, b.grad, rm, rv


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=str)
def test_parity_with_torch(device, backend, dtype, layout, norm, act, slope, mode):
    C = 19
    x = make_input((3, C, 5, 7), dtype, device, layout)
    w, b = _params(C, dtype, device)
    rm, rv = _running(C, dtype, device)
    g = to_layout(torch.randn(x.shape, dtype=torch.float64).to(device=device, dtype=dtype), layout)
    uis, inst = mode == "train", norm == "instance"
    ours = _run_parity("ours", x, w, b, rm, rv, uis, inst, act, slope, g)
    assert ours[0].shape == x.shape and ours[0].dtype == dtype
    assert ours[1].shape == x.shape and ours[1].dtype == dtype
    names = ("out", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var")
    if dtype in LOW_PRECISION:
        lowp = _run_parity("torch", x, w, b, rm, rv, uis, inst, act, slope, g)
        exact = _run_parity("torch", x.double(), w.double(), b.double(), rm.double(),
                            rv.double(), uis, inst, act, slope, g.double())
        for name, a, t, e in zip(names, ours, lowp, exact):
            floor = 1e-3 * max(1.0, e.abs().max().item())
            assert_within_2x_of_torch(a, t, e, floor, name)
    else:
        want = _run_parity("torch", x, w, b, rm, rv, uis, inst, act, slope, g)
        for name, a, e in zip(names, ours, want):
            torch.testing.assert_close(a, e, **tolerances(dtype), msg=_named(name))
    if not uis:  # running statistics are read, never written
        torch.testing.assert_close(ours[4], rm, rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_float32_params_with_low_precision_input(device, backend, dtype, norm, mode):
    """Mixed precision: float32 weight/bias/running stats with bf16/f16 input."""
    C = 19
    x = make_input((3, C, 5, 7), dtype, device)
    w, b = _params(C, torch.float32, device)
    rm, rv = _running(C, torch.float32, device)
    g = torch.randn(x.shape, device=device).to(dtype)
    uis, inst = mode == "train", norm == "instance"
    ours = _run_parity("ours", x, w, b, rm, rv, uis, inst, "leaky_relu", 0.2, g)
    assert ours[0].dtype == dtype and ours[2].dtype == torch.float32
    exact = _run_parity("torch", x.double(), w.double(), b.double(), rm.double(), rv.double(),
                        uis, inst, "leaky_relu", 0.2, g.double())
    # float32 parameters and statistics: only the input/output rounding remains.
    eps_dt = torch.finfo(dtype).eps
    for name, a, e in zip(("out", "grad_input", "grad_weight", "grad_bias", "running_mean",
                           "running_var"), ours, exact):
        bound = 4 * eps_dt * max(1.0, e.abs().max().item())
        assert (a.double() - e).abs().max().item() <= bound, name


@requires_fused
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_op_matches_reference(device, dtype, layout, norm, act, slope, mode):
    """All four outputs of the kernel against the reference twin, and the layout
    rule the fake kernel promises (channels_last in, channels_last out)."""
    skip_unless_fused_on(device)
    C = 19
    x = make_input((3, C, 5, 7), dtype, device, layout)
    w, b = _params(C, dtype, device)
    rm, rv = _running(C, dtype, device)
    uis = mode == "train"
    nbt = torch.tensor(4, device=device) if uis else None
    ours_state, ref_state = (rm.clone(), rv.clone(), _clone(nbt)), (rm.clone(), rv.clone(), _clone(nbt))
    rest = (uis, norm == "instance", MOMENTUM, EPS, CODE[act], slope)
    got = torch.ops.gan_ext.norm_act(x, w, b, *ours_state, *rest)
    want = ref.norm_act(x, w, b, *ref_state, *rest)
    got, want = (*got, *ours_state[:2]), (*want, *ref_state[:2])
    if uis:
        assert ours_state[2].item() == ref_state[2].item() == 5
    cl = layout == "channels_last"
    assert got[0].is_contiguous(
        memory_format=torch.channels_last if cl else torch.contiguous_format)
    names = ("out", "mean", "invstd", "var", "running_mean", "running_var")
    for name, a, e in zip(names, got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        if dtype in LOW_PRECISION:
            torch.testing.assert_close(a.float(), e.float(), rtol=1.6e-2, atol=1e-2,
                                       msg=_named(name))
        else:
            torch.testing.assert_close(a, e, **tolerances(dtype), msg=_named(name))


@pytest.mark.parametrize("x_grad", [True, False], ids=["x-grad", "x-frozen"])
@pytest.mark.parametrize("running", [True, False], ids=["running-stats", "no-running-stats"])
@pytest.mark.parametrize("affine", ["full", "weight", "bias", "none"])
@pytest.mark.parametrize("norm", NORMS)
def test_autograd_with_absent_optional_tensors(backend, device, norm, affine, running, x_grad):
    """Every combination of absent weight / bias / running stats differentiates
    like torch (nn.InstanceNorm2d's default has none of them; nn.BatchNorm2d
    can have a weight without a bias)."""
    C = 3
    x = make_input((2, C, 4, 5), device=device, requires_grad=x_grad)
    w = b = None
    if affine in ("full", "weight"):
        w = (torch.rand(C, device=device) + 0.5).requires_grad_()
    if affine in ("full", "bias"):
        b = torch.randn(C, device=device).requires_grad_()
    rm, rv = _running(C, torch.float32, device) if running else (None, None)
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    y = _call(norm, x, rm, rv, w, b, True, "leaky_relu", 0.2)
    copies = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None
              for t in (x, w, b)]
    ref_w = copies[1]
    if ref_w is None and b is not None and torch.device(device).type == "cuda":
        # torch's CUDA batch/instance norm backward fails with a bias and no
        # weight ("tensor does not have a device", torch 2.11): a unit weight
        # without a gradient is the same function.
        ref_w = torch.ones(C, device=device)
    y2 = torch_norm_act(copies[0], None, None, ref_w, copies[2], True, norm == "instance", 0.1,
                        EPS, "leaky_relu", 0.2)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
    assert y.requires_grad == bool(inputs)
    if not inputs:
        return
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, inputs, g)
    want = torch.autograd.grad(y2, [t for t in copies if t is not None and t.requires_grad], g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_parity_larger_shape(backend, device, layout):
    """Big enough for the kernel's parallel/chunked paths."""
    x = make_input((8, 64, 24, 24), torch.float32, device, layout, requires_grad=True)
    w, b = _params(64, torch.float32, device, requires_grad=True)
    rm, rv = _running(64, torch.float32, device)
    rm2, rv2 = rm.clone(), rv.clone()
    y = gan_ext.ops.batch_norm_act(x, rm, rv, w, b, True, 0.1, EPS, "leaky_relu", 0.2)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y2 = torch_norm_act(x2, rm2, rv2, w2, b2, True, False, 0.1, EPS, "leaky_relu", 0.2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    for a, e in ((y, y2), (x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad), (rm, rm2),
                 (rv, rv2)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ numerical safety
OFFSET = 1e4  # x = 1e4 + randn: a naive E[x^2] - E[x]^2 in float32 loses every digit


def _offset_case(device, layout, norm):
    x = make_input((4, 3, 16, 16), torch.float32, device, layout, offset=OFFSET)
    dims = (2, 3) if norm == "instance" else (0, 2, 3)
    x64 = x.double()
    var64 = x64.var(dim=dims, correction=0, keepdim=True)
    y64 = (x64 - x64.mean(dim=dims, keepdim=True)) / torch.sqrt(var64 + EPS)
    return x, dims, x64, var64, y64


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("norm", NORMS)
def test_large_mean_offset_variance(backend, device, norm, layout):
    x, dims, x64, var64, _ = _offset_case(device, layout, norm)
    inst = norm == "instance"
    rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
    _call(norm, x, rm, rv, None, None, True, "identity", 0.0, momentum=1.0)
    n = x.shape[2] * x.shape[3] * (1 if inst else x.shape[0])
    unbiased = (var64.reshape(-1) * n / (n - 1)).reshape(-1, 3).mean(0)
    torch.testing.assert_close(rv.double(), unbiased, rtol=1e-3, atol=0)
    torch.testing.assert_close(rm.double(), x64.mean(dim=dims).reshape(-1, 3).mean(0),
                               rtol=1e-6, atol=0)
    if backend == "fused":
        _, mean, invstd, var = torch.ops.gan_ext.norm_act(x, None, None, None, None, None, True,
                                                          inst, MOMENTUM, EPS, 0, 0.0)
        torch.testing.assert_close(var.double(), var64.reshape(-1), rtol=1e-3, atol=0)
        torch.testing.assert_close(invstd.double(), torch.rsqrt(var64.reshape(-1) + EPS),
                                   rtol=1e-3, atol=0)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("norm", NORMS)
def test_large_mean_offset_output_within_2x_of_torch(backend, device, norm, layout):
    """The normalized output at a large offset: within 2x of plain PyTorch's
    float32 error, plus one ulp of the offset (the input's own resolution)."""
    x, _, _, _, y64 = _offset_case(device, layout, norm)
    y = _call(norm, x, None, None, None, None, True, "identity", 0.0)
    y_torch = torch_norm_act(x, None, None, None, None, True, norm == "instance", 0.1, EPS,
                             "identity", 0.0)
    ulp = torch.finfo(torch.float32).eps * 2.0 ** math.floor(math.log2(OFFSET))  # spacing at 1e4
    assert_within_2x_of_torch(y, y_torch, y64, ulp, "out")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("norm", NORMS)
def test_nan_propagates_like_torch(backend, device, norm, act, slope, mode):
    x = make_input((2, 3, 4, 5), torch.float32, device)
    x[1, 2, 3, 4] = float("nan")
    w, b = _params(3, torch.float32, device)
    rm, rv = _running(3, torch.float32, device)
    uis = mode == "train"
    ours = _call(norm, x, rm.clone(), rv.clone(), w, b, uis, act, slope)
    want = torch_norm_act(x, rm.clone(), rv.clone(), w, b, uis, norm == "instance", 0.1, EPS, act,
                          slope)
    assert want.isnan().any()  # the test means something
    assert torch.equal(ours.isnan(), want.isnan())
    finite = ~want.isnan()
    torch.testing.assert_close(ours[finite], want[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:var_mean.*degrees of freedom:UserWarning")  # reference, N=0
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", NORMS)
def test_empty_batch(backend, device, norm, mode, layout):
    x = make_input((0, 3, 4, 5), torch.float32, device, layout, requires_grad=True)
    w, b = _params(3, torch.float32, device, requires_grad=True)
    rm, rv = _running(3, torch.float32, device)
    rm0, rv0 = rm.clone(), rv.clone()
    y = _call(norm, x, rm, rv, w, b, mode == "train", "leaky_relu", 0.2)
    assert y.shape == (0, 3, 4, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)  # nothing to average


@pytest.mark.filterwarnings("ignore:var_mean.*degrees of freedom:UserWarning")  # reference
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape,instance", [((0, 3, 4, 5), False), ((2, 3, 0, 5), False),
                                            ((2, 3, 0, 5), True)],
                         ids=["batch-N0", "batch-HW0", "instance-HW0"])
@pytest.mark.parametrize("impl", ["op", "twin"])
def test_empty_training_statistics_are_nan(device, impl, shape, instance, layout):
    """Input statistics of no values are undefined: NaN mean, var and invstd
    from the CPU and CUDA kernels and the twin alike (torch.batch_norm skips an
    empty batch and hands back uninitialized save_mean/invstd). The backward
    op gives zero weight and bias gradients without reading them."""
    if impl == "op":
        skip_unless_fused_on(device)
    lib = torch.ops.gan_ext if impl == "op" else ref
    x = make_input(shape, torch.float32, device, layout)
    w, b = _params(3, torch.float32, device)
    out, mean, invstd, var = lib.norm_act(x, w, b, None, None, None, True, instance, MOMENTUM, EPS, 2,
                                                0.2)
    groups = shape[0] * 3 if instance else 3
    assert out.shape == shape
    for t in (mean, invstd, var):
        assert t.shape == (groups,) and t.isnan().all(), t
    gi, gw, gb = lib.norm_act_backward(torch.ones_like(out), out, w, b, mean, invstd, True,
                                       instance, 2, 0.2, False)
    assert gi.shape == shape
    assert torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))


# ---------------------------------------------------------- running statistics
def _torch_update(x, rm, rv, nbt, instance, momentum):
    """What nn.BatchNorm2d / nn.InstanceNorm2d do to the running statistics."""
    if nbt is not None:
        nbt.add_(1)
    f = momentum if momentum is not None else 1.0 / float(nbt)
    norm = F.instance_norm if instance else F.batch_norm
    norm(x, rm, rv, None, None, True, f, EPS)


def _op_update(x, rm, rv, nbt, instance, momentum):
    """The same through gan_ext.ops (the op or its twin, per the backend)."""
    if instance:
        if nbt is not None:  # instance_norm_act has no counter; the op does
            fn = torch.ops.gan_ext.norm_act if gan_ext.get_backend() == "fused" else ref.norm_act
            return fn(x, None, None, rm, rv, nbt, True, True, momentum, EPS, 0, 0.0)[0]
        return gan_ext.ops.instance_norm_act(x, rm, rv, None, None, True, momentum, EPS, "identity")
    return gan_ext.ops.batch_norm_act(x, rm, rv, None, None, True, momentum, EPS, "identity",
                                      num_batches_tracked=nbt)


@pytest.mark.parametrize("momentum", [0.1, None, 0.0, 1.0], ids=str)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype,buffers", [(torch.float32, torch.float32),
                                           (torch.float64, torch.float64),
                                           (torch.bfloat16, torch.float32),
                                           (torch.float16, torch.float16)],
                         ids=["f32", "f64", "bf16-f32buffers", "f16-f16buffers"])
def test_running_stats_updated_by_the_op(device, backend, dtype, buffers, layout, norm, momentum):
    """Three steps: running mean/var and num_batches_tracked as torch's norms
    update them (exact input values, so torch in float64 is the oracle)."""
    C, inst = 5, norm == "instance"
    rm, rv = _running(C, buffers, device)
    nbt = torch.tensor(2, device=device) if momentum is None or not inst else None
    want = (rm.double(), rv.double(), None if nbt is None else nbt.clone())
    for step in range(3):
        x = make_input((3, C, 4, 6), dtype, device, layout, offset=step, scale=1 + step)
        _op_update(x, rm, rv, nbt, inst, momentum)
        _torch_update(x.double(), *want, inst, momentum)
        tol = dict(rtol=2e-3, atol=1e-3) if buffers == torch.float16 else tolerances(buffers)
        torch.testing.assert_close(rm, want[0].to(buffers), **tol, msg=_named(f"step {step} mean"))
        torch.testing.assert_close(rv, want[1].to(buffers), **tol, msg=_named(f"step {step} var"))
        if nbt is not None:
            assert nbt.item() == want[2].item() == 3 + step


@pytest.mark.parametrize("momentum", [0.1, 0.0], ids=str)
@pytest.mark.parametrize("norm", NORMS)
def test_nan_reaches_running_stats_like_torch(device, backend, norm, momentum):
    """No fix-up: a NaN in channel 1 makes its running statistics NaN, as in
    torch, also with momentum 0 (0 * NaN); the other channels stay finite."""
    x = make_input((2, 3, 4, 5), torch.float32, device)
    x[1, 1, 2, 3] = float("nan")
    inst = norm == "instance"
    rm, rv = _running(3, torch.float32, device)
    trm, trv = rm.clone(), rv.clone()
    _op_update(x, rm, rv, None, inst, momentum)
    _torch_update(x, trm, trv, None, inst, momentum)
    assert trm.isnan().tolist() == [False, True, False]  # the test means something
    for a, e in ((rm, trm), (rv, trv)):
        assert torch.equal(a.isnan(), e.isnan())
        torch.testing.assert_close(a[~e.isnan()], e[~e.isnan()], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:var_mean.*degrees of freedom:UserWarning")  # reference, N=0
@pytest.mark.parametrize("momentum", [0.1, None], ids=str)
def test_empty_batch_counts_but_keeps_running_stats(device, backend, momentum):
    x = torch.empty(0, 3, 4, 5, device=device)
    rm, rv = _running(3, torch.float32, device)
    rm0, rv0, nbt = rm.clone(), rv.clone(), torch.tensor(7, device=device)
    _op_update(x, rm, rv, nbt, False, momentum)
    assert nbt.item() == 8  # nn.BatchNorm2d counts the call
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)


@pytest.mark.parametrize("norm", NORMS)
def test_running_stats_version_bumped_only_when_written(device, backend, norm):
    """The conv blocks' fold cache keys on these version counters."""
    inst = norm == "instance"
    rm, rv = _running(3, torch.float32, device)
    nbt = None if inst else torch.tensor(0, device=device)
    x = make_input((2, 3, 4, 5), torch.float32, device, requires_grad=True)
    versions = lambda: [t._version for t in (rm, rv, nbt) if t is not None]
    before = versions()
    _op_update(x, rm, rv, nbt, inst, 0.1)
    assert all(a > b for a, b in zip(versions(), before))
    before = versions()
    _call(norm, x, rm, rv, None, None, False, "relu", 0.01)  # eval: read only
    assert versions() == before


@pytest.mark.compile
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compile_fullgraph_updates_running_stats_in_place(backend_name):
    """Mutable op arguments under torch.compile(fullgraph=True): momentum=None
    (1 / num_batches_tracked read inside the graph) and a channels_last input."""
    def step(x, rm, rv, nbt):
        y = gan_ext.ops.batch_norm_act(x, rm, rv, training=True, momentum=None,
                                       num_batches_tracked=nbt)
        return y.sum()

    def run(fn):
        torch.manual_seed(2)
        state = (*_running(3, torch.float32, "cpu"), torch.tensor(4))
        for i in range(2):
            fn(make_input((2, 3, 4, 4), layout="channels_last", offset=i), *state)
        return state

    with gan_ext.use_backend(backend_name):
        torch._dynamo.reset()
        got, want = run(torch.compile(step, fullgraph=True)), run(step)
    assert got[2].item() == want[2].item() == 6
    for a, e in zip(got[:2], want[:2]):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)


# ------------------------------------------- CUDA: default vs legacy paths
CUDA_PATH_SHAPES = [  # the split/finalize shapes of issue 12's first-run list, and small ones
    ("batch", (2, 3, 256, 256), "nchw"), ("batch", (16, 64, 64, 64), "channels_last"),
    ("instance", (64, 32, 8, 8), "nchw"), ("instance", (2, 3, 512, 512), "nchw"),
    ("batch", (3, 19, 5, 7), "channels_last"), ("batch", (8, 64, 1, 1), "nchw"),
    ("instance", (2, 264, 9, 9), "channels_last"),
]


def _cuda_norm_act_run(monkeypatch, path, norm, x, w, b, rm, rv, nbt, uis, g):
    """Forward + backward of the op with GAN_EXT_CUDA_NORM_ACT=path (read per call)."""
    if path == "default":
        monkeypatch.delenv("GAN_EXT_CUDA_NORM_ACT", raising=False)
    else:
        monkeypatch.setenv("GAN_EXT_CUDA_NORM_ACT", path)
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    state = [_clone(t) for t in (rm, rv, nbt)]
    out, mean, invstd, var = torch.ops.gan_ext.norm_act(
        x, w, b, *state, uis, norm == "instance", None if nbt is not None else MOMENTUM, EPS,
        CODE["leaky_relu"], 0.2)
    out.backward(g)
    return [out.detach(), mean, invstd, var, x.grad, w.grad, b.grad,
            *[t for t in state if t is not None]]


@pytest.mark.cuda
@requires_fused
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("norm,shape,layout", CUDA_PATH_SHAPES,
                         ids=[f"{n}-{'x'.join(map(str, s))}-{l}" for n, s, l in CUDA_PATH_SHAPES])
def test_cuda_default_and_legacy_paths_agree(monkeypatch, norm, shape, layout, dtype, mode):
    """GAN_EXT_CUDA_NORM_ACT=legacy keeps the first release's launch plans and
    finalize kernels: both paths must give the reference's results, and the
    default one must be deterministic (the last block's merge order is fixed)."""
    skip_unless_fused_on("cuda")
    C, uis = shape[1], mode == "train"
    x = make_input(shape, dtype, "cuda", layout)
    w, b = _params(C, torch.float32, "cuda")
    rm, rv = _running(C, torch.float32, "cuda")
    nbt = torch.tensor(3, device="cuda") if uis and norm == "batch" else None
    g = torch.randn(shape, device="cuda").to(dtype)
    default = _cuda_norm_act_run(monkeypatch, "default", norm, x, w, b, rm, rv, nbt, uis, g)
    again = _cuda_norm_act_run(monkeypatch, "default", norm, x, w, b, rm, rv, nbt, uis, g)
    legacy = _cuda_norm_act_run(monkeypatch, "legacy", norm, x, w, b, rm, rv, nbt, uis, g)
    for a, e in zip(default, again):
        assert torch.equal(a, e)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)
    for i, (a, e) in enumerate(zip(default, legacy)):
        torch.testing.assert_close(a.float(), e.float(), **tol, msg=_named(f"output {i}"))


GROUP_BLOCK_SHAPES = [  # taken by the one-block-per-group kernels (test_norm_act_plan.py)
    ("batch", (64, 128, 16, 16)), ("batch", (64, 512, 4, 4)), ("batch", (4, 100, 8, 8)),
    ("instance", (16, 64, 128, 128)), ("instance", (2, 64, 16, 16)),
    ("instance", (40, 8, 16, 16)),  # >= 32 samples: the last block merges a channel per pass
]


@pytest.mark.cuda
@requires_fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("norm,shape", GROUP_BLOCK_SHAPES,
                         ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in GROUP_BLOCK_SHAPES])
def test_cuda_group_block_path_matches_legacy_and_cpu(monkeypatch, norm, shape, dtype):
    """One block per group (plane_group_*_kernel): outputs, statistics, running
    statistics and gradients as the legacy CUDA path and the CPU kernel give
    them, and bitwise the same on a second run."""
    skip_unless_fused_on("cuda")
    N, C, H, W = shape
    assert torch.ops.gan_ext._norm_act_plan_group(N, C, H * W, dtype.itemsize, False,
                                                  norm == "instance", True, 1, False), shape
    x = make_input(shape, dtype, "cuda", "nchw")
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    w, b = _params(C, param_dtype, "cuda")
    rm, rv = _running(C, param_dtype, "cuda")
    nbt = torch.tensor(3, device="cuda") if norm == "batch" else None
    g = torch.randn(shape, device="cuda").to(dtype)
    args = (norm, x, w, b, rm, rv, nbt, True, g)
    default = _cuda_norm_act_run(monkeypatch, "default", *args)
    again = _cuda_norm_act_run(monkeypatch, "default", *args)
    legacy = _cuda_norm_act_run(monkeypatch, "legacy", *args)
    cpu = _cuda_norm_act_run(monkeypatch, "default",
                             *(t.cpu() if isinstance(t, torch.Tensor) else t for t in args))
    for a, e in zip(default, again):
        assert torch.equal(a, e)
    tol = (dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else
           dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10))
    for name, other in (("legacy", legacy), ("cpu", cpu)):
        assert len(default) == len(other)
        for i, (a, e) in enumerate(zip(default, other)):
            torch.testing.assert_close(a.cpu().double(), e.cpu().double(), **tol,
                                       msg=_named(f"{name} output {i}"))


# ------------------------------------------------------------------ bad input
def _base():
    return dict(input=torch.randn(2, 3, 4, 4), weight=torch.ones(3), bias=torch.zeros(3),
                running_mean=torch.zeros(3), running_var=torch.ones(3), num_batches_tracked=None,
                use_input_stats=True, instance=False, momentum=MOMENTUM, eps=EPS, activation=1,
                negative_slope=0.01)


BAD_INPUTS = {
    "3d-input": (dict(input=torch.randn(3, 4, 4)), ValueError, "input must be a 4-D"),
    "weight-channels": (dict(weight=torch.ones(4)), ValueError,
                        "weight must be a 1-D tensor of size 3"),
    "bias-channels": (dict(bias=torch.zeros(2)), ValueError, "bias must be a 1-D tensor of size 3"),
    "running-var-channels": (dict(running_var=torch.ones(5), use_input_stats=False), ValueError,
                             "running_var must be a 1-D tensor of size 3"),
    "weight-dtype": (dict(input=torch.randn(2, 3, 4, 4, dtype=torch.float64)), TypeError,
                     "weight has dtype"),
    "integer-input": (dict(input=torch.ones(2, 3, 4, 4, dtype=torch.int64)), TypeError,
                      "input must be a floating point"),
    "batch1-1x1-train": (dict(input=torch.randn(1, 3, 1, 1)), ValueError,
                         "Expected more than 1 value per channel"),
    "instance-1x1-train": (dict(input=torch.randn(4, 3, 1, 1), instance=True), ValueError,
                           "Expected more than 1 value per channel"),
    "eval-without-running-stats": (dict(running_mean=None, running_var=None, use_input_stats=False),
                                   ValueError, "running_mean and running_var are required"),
    "negative-eps": (dict(eps=-1e-5), ValueError, "eps must be >= 0"),
    "nan-eps": (dict(eps=float("nan")), ValueError, "eps must be >= 0"),
    "counter-dtype": (dict(num_batches_tracked=torch.tensor(0.0)), TypeError,
                      "num_batches_tracked must be a one-element int64 tensor"),
    "counter-shape": (dict(num_batches_tracked=torch.zeros(2, dtype=torch.long)), TypeError,
                      "num_batches_tracked must be a one-element int64 tensor"),
    "counter-in-eval": (dict(num_batches_tracked=torch.tensor(0), use_input_stats=False),
                        ValueError, "num_batches_tracked is only counted when use_input_stats"),
    "cumulative-without-counter": (dict(momentum=None), ValueError,
                                   "momentum=None (a cumulative average) requires "
                                   "num_batches_tracked"),
}


@requires_fused
@pytest.mark.parametrize("case", list(BAD_INPUTS) + ["activation-code"])
def test_op_rejects_bad_input(case):
    if case == "activation-code":
        change, exc, msg = dict(activation=7), ValueError, "activation must be 0 (identity)"
    else:
        change, exc, msg = BAD_INPUTS[case]
    kwargs = {**_base(), **change}
    with pytest.raises(exc, match=re.escape(msg)):
        torch.ops.gan_ext.norm_act(*kwargs.values())


@pytest.mark.parametrize("case", [c for c in BAD_INPUTS if not c.endswith("-eps")])
def test_functional_rejects_bad_input(backend, device, case):
    """gan_ext.ops raises the same error on both backends."""
    change, exc, msg = BAD_INPUTS[case]
    a = {k: v.to(device) if isinstance(v, torch.Tensor) else v
         for k, v in {**_base(), **change}.items()}
    with pytest.raises(exc, match=re.escape(msg)):
        if a["instance"]:
            gan_ext.ops.instance_norm_act(a["input"], a["running_mean"], a["running_var"],
                                          a["weight"], a["bias"], a["use_input_stats"])
        else:
            gan_ext.ops.batch_norm_act(a["input"], a["running_mean"], a["running_var"],
                                       a["weight"], a["bias"], a["use_input_stats"], a["momentum"],
                                       num_batches_tracked=a["num_batches_tracked"])


def test_functional_rejects_unknown_activation(backend, device):
    with pytest.raises(ValueError, match="activation must be one of"):
        gan_ext.ops.batch_norm_act(torch.randn(2, 3, 4, 4, device=device), None, None,
                                   training=True, activation="swish")
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        gan_ext.ops.batch_norm_act([1.0, 2.0], None, None, training=True)


@requires_fused
@pytest.mark.parametrize("case", ["saved-is-output-relu", "grad-shape", "grad-dtype",
                                  "stats-shape"])
def test_backward_op_rejects_bad_input(case):
    x = torch.randn(2, 3, 4, 4)
    out, mean, invstd, _ = torch.ops.gan_ext.norm_act(x, None, None, None, None, None, True, False,
                                                      MOMENTUM, EPS, 1, 0.0)
    g, act, sio = torch.randn_like(x), 1, False
    exc, msg = ValueError, None
    if case == "saved-is-output-relu":
        sio, msg = True, "saved_is_output requires activation=2"
    elif case == "grad-shape":
        g, msg = torch.randn(2, 3, 4, 5), "grad_out has shape"
    elif case == "grad-dtype":
        g, exc, msg = g.double(), TypeError, "grad_out has dtype"
    else:
        invstd, msg = invstd[:2], "mean and invstd must be 1-D tensors of equal size"
    with pytest.raises(exc, match=msg):
        torch.ops.gan_ext.norm_act_backward(g, x, None, None, mean, invstd, True, False, act, 0.0,
                                            sio)


# ---------------------------------------------------------- saved for backward
@requires_fused
@pytest.mark.parametrize("act,slope", [("leaky_relu", 0.2), ("relu", 0.01)],
                         ids=["leaky0.2", "relu"])
def test_saved_bytes_for_backward(act, slope):
    C = 32
    x = make_input((8, C, 16, 16), requires_grad=True)
    activation_bytes = x.numel() * x.element_size()
    ours = gan_ext.nn.BatchNormAct2d(C, activation=act, negative_slope=slope)
    act_module = torch.nn.LeakyReLU(slope) if act == "leaky_relu" else torch.nn.ReLU()
    eager = torch.nn.Sequential(torch.nn.BatchNorm2d(C), act_module)
    with gan_ext.use_backend("fused"):
        ours_bytes = saved_tensor_bytes(lambda: ours(x))
    eager_bytes = saved_tensor_bytes(lambda: eager(x))
    # eager keeps the BN input and the activation's input: two activations' worth.
    assert eager_bytes >= 2 * activation_bytes
    assert activation_bytes <= ours_bytes <= 0.55 * eager_bytes, (ours_bytes, eager_bytes)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layer", ["batch", "instance"])
def test_eps_zero_computes_as_torch(backend, layer, train):
    """eps=0 is accepted where torch accepts it (issue 13: it was refused)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    if layer == "batch":
        ours = gan_ext.nn.BatchNormAct2d(3, eps=0.0, activation="relu")
        theirs = torch.nn.Sequential(torch.nn.BatchNorm2d(3, eps=0.0), torch.nn.ReLU())
    else:
        ours = gan_ext.nn.InstanceNormAct2d(3, eps=0.0, affine=True, track_running_stats=True,
                                            activation="relu")
        theirs = torch.nn.Sequential(torch.nn.InstanceNorm2d(3, eps=0.0, affine=True,
                                                             track_running_stats=True),
                                     torch.nn.ReLU())
    for m in (ours, theirs):
        m.train(train)
    if layer == "batch" and train:  # torch refuses this one; so do we, with its reason
        with pytest.raises(ValueError, match="eps must be positive for batch norm in training"):
            ours(x)
        return
    if not train:
        for m in (ours, theirs[0]):
            m.running_var.fill_(0.5)
    try:
        want = theirs(x)
    except ValueError as e:  # torch 2.11 refuses eps=0 in eval too: the formula
        assert layer == "batch" and not train and "eps must be positive" in str(e), e
        bn = theirs[0]
        want = torch.relu((x - bn.running_mean[:, None, None]) / bn.running_var[:, None, None].sqrt()
                          * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(ours(x), want, rtol=1e-5, atol=1e-5)
