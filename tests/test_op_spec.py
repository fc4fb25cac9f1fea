"""Every op, every check, from its spec (gan_ext/ops/_spec.py): gradcheck and
gradgradcheck in float64, torch.library.opcheck, one torch.compile(fullgraph)
test per op, parity with the twin and with plain torch over dtype x layout x
device, the same message from kernel and twin for each bad input, NaN in ->
NaN out, empty input, and the reference-backend (fallback) path.

Op-specific test files hold what a spec cannot say (Philox known answers,
in-place ABN memory, running-statistics semantics, CUDA launch plans)."""
from __future__ import annotations

import re

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import gan_ext
from gan_ext import ops
from gan_ext.ops._spec import Sample

from conftest import requires_fused, skip_unless_fused_on

SPECS = {s.name: s for m in ops.OP_MODULES for s in getattr(m, "SPECS", ())}
# The backend's name for each spec's op module (what use_fused is asked about).
BACKEND_OP = {s.name: m.OP for m in ops.OP_MODULES for s in getattr(m, "SPECS", ())}
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _ids(fn):
    return [(spec, s if isinstance(s, str) else s.name) for spec in SPECS for s in fn(SPECS[spec])]


def _matrix():
    return [(n, dt, lay) for n, s in SPECS.items() for dt in s.dtypes for lay in s.layouts]


def _build(make, *args, seed=0):
    """The samples of make(*args), built from a fixed seed: two builds give equal tensors."""
    torch.manual_seed(seed)
    return make(*args)


def _op(spec):
    return getattr(torch.ops.gan_ext, spec.name)


def _reseed(sample):
    # Random ops draw from the default generator or the sample's own: the
    # same state before every call gives the same noise to op, twin and gradcheck.
    torch.manual_seed(123)
    for v in sample.kwargs.values():
        if isinstance(v, torch.Generator):
            v.manual_seed(123)


def _call(fn, spec, sample, args=None, reseed=True):
    if spec.random and reseed:
        _reseed(sample)
    out = fn(*(sample.args if args is None else args), **sample.kwargs)
    return out if isinstance(out, (tuple, list)) else (out,)


def _as_function(fn, spec, sample, outputs, reseed=True):
    """fn as a function of the sample's grad-requiring tensors, returning `outputs`."""
    where = [i for i, a in enumerate(sample.args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def f(*tensors):
        args = list(sample.args)
        for i, t in zip(where, tensors):
            args[i] = t
        out = _call(fn, spec, sample, tuple(args), reseed)
        return tuple(out[i] for i in outputs)
    return f, tuple(sample.args[i] for i in where)


def _impl(spec, impl, device):
    if impl == "fused":
        skip_unless_fused_on(device)
        return _op(spec)
    return spec.twin


IMPLS = [pytest.param("fused", marks=requires_fused), "twin"]


def _assert_close(got, want, spec, dtype, what):
    rtol, atol = spec.tolerances[dtype]
    if dtype in LOW_PRECISION:
        atol = atol * max(want.detach().float().abs().max().item() if want.numel() else 0.0, 1.0)
    torch.testing.assert_close(got.detach().double(), want.detach().double(), rtol=rtol, atol=atol,
                               equal_nan=True, msg=lambda m: f"{what}: {m}")


# ------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op,case", _ids(lambda s: s.grad_cases("cpu")))
def test_gradcheck(device, op, case, impl):
    _check_grads(gradcheck, SPECS[op].grad_cases, device, op, case, impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op,case", _ids(lambda s: s.gradgrad_cases("cpu")))
def test_gradgradcheck(device, op, case, impl):
    _check_grads(gradgradcheck, SPECS[op].gradgrad_cases, device, op, case, impl)


def _check_grads(check, cases, device, op, case, impl):
    spec = SPECS[op]
    fn = _impl(spec, impl, device)
    sample = {s.name: s for s in _build(cases, device)}[case]
    f, inputs = _as_function(fn, spec, sample, sample.grad_outputs or spec.grad_outputs)
    assert check(f, inputs, **spec.gradcheck)


# -------------------------------------------------------------------- opcheck
@pytest.mark.parametrize("op,case", _ids(lambda s: s.opchecks("cpu") if s.opchecks else {}))
def test_opcheck(device, op, case):
    skip_unless_fused_on(device)
    entry = _build(SPECS[op].opchecks, device)[case]
    overload, args = entry[0], entry[1]
    kwargs = entry[2] if len(entry) > 2 else {}
    test_utils = entry[3] if len(entry) > 3 else None
    if test_utils is None:
        torch.library.opcheck(overload, args, kwargs)
    else:
        torch.library.opcheck(overload, args, kwargs, test_utils=test_utils)


# -------------------------------------------------------------- torch.compile
@pytest.mark.compile
@pytest.mark.parametrize("op", list(SPECS))
def test_compile_fullgraph_forward_backward(op):
    """The public call of the op's first sample, compiled whole, forward and
    backward, equals eager (one compile per op: a cold compile takes ~10 s)."""
    skip_unless_fused_on("cpu")
    spec = SPECS[op]
    sample = _build(spec.samples, torch.float32, "cpu", "contiguous")[0]

    f, inputs = _as_function(lambda *a, **k: spec.public(Sample(sample.name, a, k)), spec, sample,
                             spec.grad_outputs, reseed=False)  # no reseeding inside a graph

    def run(fn):
        leaves = tuple(t.detach().clone().requires_grad_() for t in inputs)
        if spec.random:
            _reseed(sample)
        out = fn(*leaves)
        sum(o.float().sum() for o in out).backward()
        return [o.detach() for o in out] + [t.grad for t in leaves]

    with gan_ext.use_backend("fused"):
        torch._dynamo.reset()
        got = run(torch.compile(f, fullgraph=True))
        want = run(f)
    for i, (a, e) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6, msg=lambda m: f"result {i}: {m}")


# ------------------------------------------------------------------- parity
def _grads(spec, outs, sample):
    inputs = [a for a in sample.args if isinstance(a, torch.Tensor) and a.requires_grad]
    used = [outs[i] for i in spec.grad_outputs if outs[i].requires_grad]
    if not inputs or not used:
        return []
    gen = torch.Generator().manual_seed(7)
    gos = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o) for o in used]
    return list(torch.autograd.grad(used, inputs, gos, allow_unused=True))


@pytest.mark.parametrize("op,dtype,layout", _matrix())
def test_parity_with_twin(device, op, dtype, layout):
    """Outputs and input gradients of the kernel against the twin."""
    skip_unless_fused_on(device)
    spec = SPECS[op]
    for s_op, s_twin in zip(_build(spec.samples, dtype, device, layout),
                            _build(spec.samples, dtype, device, layout)):
        got, want = _call(_op(spec), spec, s_op), _call(spec.twin, spec, s_twin)
        for i in spec.outputs:
            assert got[i].dtype == want[i].dtype and got[i].shape == want[i].shape, (s_op.name, i)
            _assert_close(got[i], want[i], spec, dtype, f"{s_op.name} output {i}")
        for k, (a, e) in enumerate(zip(_grads(spec, got, s_op), _grads(spec, want, s_twin))):
            assert (a is None) == (e is None), (s_op.name, k)
            if a is not None:
                assert a.shape == e.shape and a.dtype == e.dtype, (s_op.name, k)
                _assert_close(a, e, spec, dtype, f"{s_op.name} grad {k}")


@pytest.mark.parametrize("op,dtype,layout",
                         [(n, dt, lay) for n, dt, lay in _matrix()
                          if SPECS[n].baseline is not None and dt not in LOW_PRECISION])
def test_parity_with_torch(device, op, dtype, layout):
    """The public function against plain torch, outputs and input gradients."""
    spec = SPECS[op]
    for s_ours, s_torch in zip(_build(spec.samples, dtype, device, layout),
                               _build(spec.samples, dtype, device, layout)):
        got = spec.public(s_ours)
        got = got if isinstance(got, (tuple, list)) else (got,)
        want = _call(spec.baseline, spec, s_torch)
        for i in range(len(want)):
            _assert_close(got[i], want[i], spec, dtype, f"{s_ours.name} output {i}")


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("op,case", _ids(lambda s: s.bad_inputs))
def test_bad_input_same_error_from_kernel_and_twin(device, op, case):
    spec = SPECS[op]
    bad = {b.name: b for b in spec.bad_inputs}[case]
    msgs = {}
    kernel = torch.device(device).type in gan_ext._backend.op_devices.get(BACKEND_OP[op], ())
    impls = ["twin"] + (["fused"] if kernel else [])
    for impl in impls:
        fn = _op(spec) if impl == "fused" else spec.twin
        sample = bad.make(device)
        with pytest.raises(bad.error, match=re.escape(bad.match)) as info:
            fn(*sample.args, **sample.kwargs)
        msgs[impl] = _same_spelling(str(info.value).splitlines()[0])
    assert len(set(msgs.values())) == 1, msgs


# The twins print values as Python does, the kernels as C++ does: dtypes
# (torch.int64 / Long), norm_act's shapes ((2, 3) / [2, 3]) and floats (0.0 / 0).
# The texts themselves stay as they are (issue 14 changes no message).
_CPP_DTYPE = {"torch.int64": "Long", "torch.int32": "Int", "torch.float32": "Float",
              "torch.float64": "Double", "torch.bfloat16": "BFloat16", "torch.float16": "Half",
              "torch.bool": "Bool", "torch.uint8": "Byte", "torch.int16": "Short", "torch.int8": "Char"}


def _same_spelling(msg):
    msg = re.sub(r"torch\.\w+", lambda m: _CPP_DTYPE.get(m.group(0), m.group(0)), msg)
    msg = re.sub(r"\((\d+(?:, \d+)*),?\)|\(\)", lambda m: f"[{m.group(1) or ''}]", msg)
    return re.sub(r"\b(\d+)\.0\b", r"\1", msg)


# ------------------------------------------------------------- NaN and empty
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", [n for n, s in SPECS.items() if s.nan_sample is not None])
def test_nan_in_nan_out(device, op, impl):
    spec = SPECS[op]
    fn = _impl(spec, impl, device)
    sample = _build(spec.nan_sample, device)
    out = _call(fn, spec, sample)
    assert all(torch.isnan(out[i]).any() for i in spec.outputs), out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op,case", _ids(lambda s: s.empty_samples("cpu") if s.empty_samples else []))
def test_empty_input(device, op, case, impl):
    """Runs, and agrees with the twin (empty outputs, or the 0 of a sum)."""
    spec = SPECS[op]
    fn = _impl(spec, impl, device)
    sample = {s.name: s for s in _build(spec.empty_samples, device)}[case]
    twin_sample = {s.name: s for s in _build(spec.empty_samples, device)}[case]
    got, want = _call(fn, spec, sample), _call(spec.twin, spec, twin_sample)
    for i in spec.outputs:
        assert got[i].shape == want[i].shape
        torch.testing.assert_close(got[i], want[i], equal_nan=True)


# ------------------------------------------------------------------- fallback
@pytest.mark.parametrize("op", list(SPECS))
def test_reference_backend_runs_the_twin(device, op):
    """On the reference backend the public function is the twin, exactly."""
    spec = SPECS[op]
    with gan_ext.use_backend("reference"):
        for s_pub, s_twin in zip(_build(spec.samples, torch.float32, device, "contiguous"),
                                 _build(spec.samples, torch.float32, device, "contiguous")):
            if spec.random:
                _reseed(s_pub)
            got = spec.public(s_pub)
            got = got if isinstance(got, (tuple, list)) else (got,)
            want = _call(spec.twin, spec, s_twin)
            for i in range(len(got)):
                torch.testing.assert_close(got[i], want[i], rtol=0, atol=0, equal_nan=True)
