"""The review's first-run list (issue 12) as tests: what the CUDA kernels must
get right the first time they run, each compared with the float64 twin
(gan_ext.reference) and, on CUDA, with the CPU kernel. Cases that mean
something on the CPU too (odd shapes, unaligned views, 2^24 + 3 values) also
run there; the split/finalize shapes and the CUDA-graph cases are CUDA only.

Tolerances follow the house rule: float32/float64 against the float64 twin;
float16/bfloat16 within 2x of plain PyTorch's error in the same precision.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from gan_ext import ops
from gan_ext import reference as ref

from conftest import (HAS_CUDA, LOW_PRECISION, assert_within_2x_of_torch, requires_cuda,
                      skip_unless_fused_on, to_layout, torch_norm_act)

L = torch.ops.gan_ext
EPS = 1e-5
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
CUDA_ONLY = [pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, requires_cuda])]
BOTH = [pytest.param("cpu", id="cpu")] + CUDA_ONLY


@pytest.fixture(autouse=True)
def _fused_kernel(request):
    device = request.node.callspec.params.get("device") if hasattr(request.node, "callspec") else None
    if device is not None:
        skip_unless_fused_on(device)
        skip_unless_fused_on("cpu")  # the CUDA results are compared with the CPU kernel


def _close(name, got, exact, dtype, lowp=None, floor_rel=1e-3, tol=None, floor_abs=0.0):
    """got (any device/dtype) against the float64 exact value: a relative
    tolerance scaled by the largest |exact| for float32/64 results, the 2x rule
    against plain PyTorch's lowp result for float16/bfloat16 results."""
    got = got.detach().double().cpu()
    exact = exact.detach().double().cpu()
    assert got.shape == exact.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(exact.shape)}"
    assert not got.isnan().any(), f"{name}: NaN"
    scale = max(1.0, exact.abs().max().item()) if exact.numel() else 1.0
    if dtype in LOW_PRECISION and lowp is not None:
        assert_within_2x_of_torch(got, lowp.detach().double().cpu(), exact,
                                  floor_rel * scale + floor_abs, name)
        return
    if tol is None:
        tol = {torch.float64: 1e-9, torch.float32: 2e-5}.get(dtype, 2e-5)
    err = (got - exact).abs().max().item() if got.numel() else 0.0
    assert err <= tol * scale, f"{name}: error {err:.3g} > {tol:g} x {scale:.3g}"


def _same_kernel_result(name, cuda_val, cpu_val, dtype):
    """CUDA and CPU kernels: the same float32/64 math, summed in another order
    and rounded once to the output dtype."""
    a, b = cuda_val.detach().double().cpu(), cpu_val.detach().double().cpu()
    scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
    tol = {torch.float64: 1e-9, torch.float32: 2e-5}.get(dtype, 4 * torch.finfo(dtype).eps)
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol * scale, f"{name}: CUDA vs CPU kernel differ by {err:.3g} (scale {scale:.3g})"


# ================================================================= norm_act
NORM_SHAPES = [(2, 3, 5, 7), (4, 8, 16, 16), (8, 64, 1, 1), (2, 1, 33, 33)]
# (activation, slope, saved_is_output): the flag on and off with the same
# activation, and relu (which never saves its output).
NORM_ACTS = [("leaky_relu", 0.2, True), ("leaky_relu", 0.2, False), ("relu", 0.01, False)]
ALL_COMBOS = list(itertools.product((False, True), (True, False), NORM_ACTS))  # instance, train, act
# The CPU share (its kernels have their own parity tests): both norms, both
# modes and every activation/saved choice, in four combinations.
CPU_COMBOS = [(False, True, NORM_ACTS[0]), (True, True, NORM_ACTS[1]), (False, False, NORM_ACTS[2]),
              (True, False, NORM_ACTS[0])]


def _masters(shape, seed):
    """float64 CPU values of every input of one norm_act case."""
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    sign = torch.where(torch.arange(C) % 3 == 1, -1.0, 1.0).double()
    return dict(x=torch.randn(shape, dtype=torch.float64, generator=g) * 1.5 + 0.3,
                w=(torch.rand(C, dtype=torch.float64, generator=g) + 0.5) * sign,
                b=0.5 * torch.randn(C, dtype=torch.float64, generator=g),
                rm=0.3 * torch.randn(C, dtype=torch.float64, generator=g),
                rv=0.5 + torch.rand(C, dtype=torch.float64, generator=g),
                dy=torch.randn(shape, dtype=torch.float64, generator=g))


def _placed(m, dtype, device, layout, x=None):
    """The masters rounded to dtype, on device, x and dy in the layout (x may
    be given: a view with the same values)."""
    t = {k: v.to(dtype).to(device) for k, v in m.items()}
    t["x"] = x if x is not None else to_layout(t["x"], layout)
    t["dy"] = to_layout(t["dy"], "channels_last" if layout == "channels_last" else "nchw")
    return t


def _fused_norm(t, train, instance, act, slope, sio):
    code = ref.ACTIVATIONS[act]
    # Copies of the running statistics: in training the op updates them in place.
    out, mean, invstd, var = L.norm_act(t["x"], t["w"], t["b"], t["rm"].clone(), t["rv"].clone(),
                                        None, train, instance, 0.1, EPS, code, slope)
    saved = out if sio else t["x"]
    gi, gw, gb = L.norm_act_backward(t["dy"], saved, t["w"], t["b"], mean, invstd, train, instance,
                                     code, slope, sio)
    return dict(out=out, mean=mean, invstd=invstd, var=var, gi=gi, gw=gw, gb=gb)


def _twin64(t, train, instance, act, slope, sio, saved_out=None):
    """The float64 twin on the CPU, of the values t holds; backward from
    saved_out when given (the output the kernel saved, rounded to its dtype)."""
    t64 = {k: v.detach().double().cpu() for k, v in t.items()}
    code = ref.ACTIVATIONS[act]
    out, mean, invstd, var = ref.norm_act(t64["x"], t64["w"], t64["b"], t64["rm"], t64["rv"], None,
                                          train, instance, 0.1, EPS, code, slope)
    saved = (out if saved_out is None else saved_out.detach().double().cpu()) if sio else t64["x"]
    gi, gw, gb = ref.norm_act_backward(t64["dy"], saved, t64["w"], t64["b"], mean, invstd, train,
                                       instance, code, slope, sio)
    return dict(out=out, mean=mean, invstd=invstd, var=var, gi=gi, gw=gw, gb=gb)


def _eager(t, train, instance, act, slope):
    """Plain PyTorch in t's dtype and device (the 2x rule's baseline)."""
    x, w, b = (t[k].detach().clone().requires_grad_(True) for k in ("x", "w", "b"))
    y = torch_norm_act(x, t["rm"].clone(), t["rv"].clone(), w, b, train, instance, 0.1, EPS, act,
                       slope)
    gi, gw, gb = torch.autograd.grad(y, (x, w, b), t["dy"])
    return dict(out=y, gi=gi, gw=gw, gb=gb)


def check_norm_case(m, dtype, device, layout, x=None, combos=None, floor_rel=1e-3):
    """Every (norm, mode, activation/saved) combination of one input: the
    fused kernel against the float64 twin (2x rule in low precision), its
    output layout, and on CUDA against the CPU kernel."""
    combos = combos or (CPU_COMBOS if device == "cpu" else ALL_COMBOS)
    for instance, train, (act, slope, sio) in combos:
        if instance and train and m["x"].shape[2] * m["x"].shape[3] == 1:
            continue  # refused: instance statistics of one value (tested elsewhere)
        what = f"{'instance' if instance else 'batch'} {'train' if train else 'eval'} {act} " \
               f"saved_is_output={sio}"
        t = _placed(m, dtype, device, layout, x)
        got = _fused_norm(t, train, instance, act, slope, sio)
        exact = _twin64(t, train, instance, act, slope, sio)
        lowp = _eager(t, train, instance, act, slope) if dtype in LOW_PRECISION else {}
        if t["x"].is_contiguous(memory_format=torch.channels_last) and not t["x"].is_contiguous():
            assert got["out"].is_contiguous(memory_format=torch.channels_last), what
        _close(f"{what} out", got["out"], exact["out"], dtype, lowp.get("out"), floor_rel)
        if sio and dtype in LOW_PRECISION:
            # Backward from the saved output: it is rounded to dtype, and the
            # normalized input recovered from it carries that rounding into
            # every sum (In-Place ABN's price in low precision, which plain
            # PyTorch, saving its input, does not pay). Check the kernel's
            # math from what it saved: float32 sums rounded once.
            given = _twin64(t, train, instance, act, slope, sio, saved_out=got["out"])
            for k in ("gi", "gw", "gb"):
                _close(f"{what} {k}", got[k], given[k], got[k].dtype,
                       tol=4 * torch.finfo(dtype).eps)
        else:
            for k in ("gi", "gw", "gb"):
                _close(f"{what} {k}", got[k], exact[k], dtype, lowp.get(k), floor_rel)
        for k in ("mean", "invstd", "var"):  # float32 statistics for half input
            _close(f"{what} {k}", got[k], exact[k], got[k].dtype, tol=1e-4 if dtype in LOW_PRECISION
                   else None)
        if device != "cpu":
            cpu = _fused_norm(_placed(m, dtype, "cpu", layout, None if x is None else x.cpu()),
                              train, instance, act, slope, sio)
            for k in got:
                _same_kernel_result(f"{what} {k}", got[k], cpu[k], got[k].dtype)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", BOTH)
def test_norm_act_shapes_layouts_modes(device, dtype, shape, layout):
    """Tails (H*W = 35, 1089), vectorized planes (256), H*W = 1 (row kernels),
    one channel; batch/instance x train/eval x saved_is_output on/off."""
    check_norm_case(_masters(shape, 1), dtype, device, layout)


@pytest.mark.parametrize("shape", [(3, 19, 5, 7), (2, 264, 9, 9)], ids=["3x19x5x7", "2x264x9x9"])
@pytest.mark.parametrize("device", BOTH)
def test_norm_act_channels_last_half(device, shape):
    """C = 19: no 8-wide vector; C = 264: more channel vectors than a warp."""
    if device == "cpu" and shape[1] == 264:
        pytest.skip("CPU share: (3, 19, 5, 7) only (half channels_last is slow in eager CPU PyTorch)")
    check_norm_case(_masters(shape, 2), torch.float16, device, "channels_last")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", BOTH)
def test_norm_act_unaligned_views(device, dtype):
    """x[1:] of a contiguous tensor, and a tensor one element into its storage
    with vectorizable planes (H*W = 256): no 16-byte load may assume alignment."""
    m = _masters((5, 3, 5, 7), 3)
    base = m["x"].to(dtype).to(device)
    m1 = {k: (v[1:] if k in ("x", "dy") else v) for k, v in m.items()}
    check_norm_case(m1, dtype, device, "nchw", x=base[1:])
    m2 = _masters((2, 8, 16, 16), 4)
    flat = torch.cat([torch.zeros(1, dtype=torch.float64), m2["x"].reshape(-1)]).to(dtype).to(device)
    x = flat[1:].view(2, 8, 16, 16)
    assert x.data_ptr() % 16 != 0
    check_norm_case(m2, dtype, device, "nchw", x=x)


# Split statistics and backward sums (several blocks per group, merged by a
# finalize kernel) at the sizes where an H100/H200 splits them.
SPLIT_CASES = [("batch", (2, 3, 256, 256), "nchw"), ("batch", (16, 64, 64, 64), "channels_last"),
               ("instance", (64, 32, 8, 8), "nchw"), ("instance", (2, 3, 512, 512), "nchw")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("norm,shape,layout", SPLIT_CASES,
                         ids=[f"{n}-{'x'.join(map(str, s))}-{l}" for n, s, l in SPLIT_CASES])
@pytest.mark.parametrize("device", CUDA_ONLY)
def test_norm_act_split_finalize_paths(device, norm, shape, layout, dtype):
    instance = norm == "instance"
    combos = [(instance, True, NORM_ACTS[0]), (instance, True, NORM_ACTS[2]),
              (instance, False, NORM_ACTS[1])]
    check_norm_case(_masters(shape, 5), dtype, device, layout, combos=combos)


# ====================================================================== losses
def _reduce(t, reduction):
    return t.mean() if reduction == "mean" else t.sum()


def _plain_d(real, fake, mode, reduction):
    if mode == "vanilla":
        return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9), reduction=reduction)
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction=reduction))
    if mode == "lsgan":
        return _reduce((real - 1) ** 2, reduction) + _reduce(fake ** 2, reduction)
    if mode == "wasserstein":
        return _reduce(fake, reduction) - _reduce(real, reduction)
    return _reduce(torch.relu(1 - real), reduction) + _reduce(torch.relu(1 + fake), reduction)


def _plain_g(fake, mode, reduction):
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake), reduction=reduction)
    if mode == "minimax":
        return -F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction=reduction)
    if mode == "lsgan":
        return _reduce((fake - 1) ** 2, reduction)
    return -_reduce(fake, reduction)


def _fused_d(real, fake, mode, reduction):
    return ops.d_loss(real, fake, mode, **({"real_label": 0.9} if mode == "vanilla" else {}),
                      reduction=reduction)


def _fused_g(fake, mode, reduction):
    return ops.g_loss(fake, "vanilla" if mode == "minimax" else mode, reduction=reduction,
                      minimax=mode == "minimax")


def _offset_leaves(tensors):
    """(leaves, inputs): each input a view of a fresh leaf buffer at the same
    storage offset as the given (contiguous) tensor, so that a misaligned
    tensor stays misaligned (a clone would realign it)."""
    leaves, inputs = [], []
    for t in tensors:
        assert t.is_contiguous()
        off = t.storage_offset()
        buf = torch.zeros(off + t.numel(), dtype=t.dtype, device=t.device)
        buf[off:] = t.detach().reshape(-1)
        leaves.append(buf.requires_grad_(True))
        inputs.append(buf[off:].view(t.shape))
    return leaves, inputs


def _grads_of_inputs(outputs, leaves, inputs, grad_outputs=None):
    grads = torch.autograd.grad(outputs, leaves, grad_outputs, allow_unused=True)
    return [(g if g is not None else torch.zeros_like(b))[b.numel() - i.numel():].view(i.shape)
            for g, b, i in zip(grads, leaves, inputs)]


def _loss_and_grads(fn, tensors):
    leaves, inputs = _offset_leaves(tensors)
    loss = fn(*inputs)
    return [loss] + _grads_of_inputs(loss, leaves, inputs)


def _check_loss(name, fused_fn, plain_fn, tensors, dtype, device, floor_rel=1e-3):
    """Loss and gradients: fused (on tensors' device) against float64 plain
    PyTorch, the 2x rule in low precision, and on CUDA the CPU kernel."""
    got = _loss_and_grads(fused_fn, tensors)
    exact = _loss_and_grads(plain_fn, [t.detach().double().cpu() for t in tensors])
    lowp = _loss_and_grads(plain_fn, tensors) if dtype in LOW_PRECISION else [None] * len(got)
    for i, (a, e, p) in enumerate(zip(got, exact, lowp)):
        _close(f"{name} {'loss' if i == 0 else f'grad{i}'}", a, e, dtype, p, floor_rel)
    if device != "cpu":
        cpu = _loss_and_grads(fused_fn, [t.detach().cpu() for t in tensors])
        for i, (a, c) in enumerate(zip(got, cpu)):
            _same_kernel_result(f"{name} {i}", a, c, dtype)


def _logits(shape, dtype, device, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, dtype=torch.float64, generator=g) * scale).to(dtype).to(device)


def _apart(x, seed):
    """A target at least 0.1 away from x everywhere: no tie, so every L1
    gradient is +-1 after rounding too."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(x.shape, generator=g) < 0.5, -1.0, 1.0).double()
    gap = 0.1 + torch.rand(x.shape, dtype=torch.float64, generator=g)
    return (x.double().cpu() + sign * gap).to(x.dtype).to(x.device)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", BOTH)
def test_losses_half_with_a_tail(device, dtype, reduction):
    """n % 8 != 0 (1001 and 999 values): the 8-wide half vectors and their tail."""
    real, fake = _logits((7, 11, 13), dtype, device, 1), _logits((999,), dtype, device, 2)
    for mode in ("vanilla", "lsgan", "hinge", "wasserstein"):
        _check_loss(f"d_loss {mode}", lambda r, f: _fused_d(r, f, mode, reduction),
                    lambda r, f: _plain_d(r, f, mode, reduction), [real, fake], dtype, device)
    for mode in ("vanilla", "minimax", "lsgan", "hinge", "wasserstein"):
        _check_loss(f"g_loss {mode}", lambda f: _fused_g(f, mode, reduction),
                    lambda f: _plain_g(f, mode, reduction), [fake], dtype, device)
    target = torch.rand(fake.shape, dtype=torch.float64).to(dtype).to(device)
    _check_loss("bce_with_logits", lambda x, y: ops.bce_with_logits(x, y, reduction),
                lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction),
                [fake, target], dtype, device)
    other = _apart(fake, 3)
    _check_loss("l1_loss", lambda x, y: ops.l1_loss(x, y, reduction),
                lambda x, y: _reduce((x - y).abs(), reduction), [fake, other], dtype, device)
    _check_loss("cycle_l1_loss",
                lambda a, b, c, d: ops.cycle_l1_loss(a, b, c, d, 10.0, 5.0, reduction),
                lambda a, b, c, d: 10.0 * _reduce((a - b).abs(), reduction)
                + 5.0 * _reduce((c - d).abs(), reduction),
                [fake, other, other.flip(0), fake.flip(0)], dtype, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("device", BOTH)
def test_losses_misaligned_views(device, dtype):
    """Inputs one element into their storage: the vector loads' unaligned head."""
    flat_r, flat_f = _logits((1002,), dtype, device, 4), _logits((1000,), dtype, device, 5)
    real, fake = flat_r[1:], flat_f[1:]
    assert real.data_ptr() % 16 and fake.data_ptr() % 16
    _check_loss("d_loss", lambda r, f: _fused_d(r, f, "vanilla", "mean"),
                lambda r, f: _plain_d(r, f, "vanilla", "mean"), [real, fake], dtype, device)
    target = torch.cat([fake[:1], _apart(fake, 6)])[1:]  # misaligned too
    _check_loss("l1_loss", lambda x, y: ops.l1_loss(x, y), lambda x, y: (x - y).abs().mean(),
                [fake, target], dtype, device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("device", BOTH)
def test_d_loss_empty_real_nonempty_fake_sum(device, dtype):
    real = torch.empty(0, 1, dtype=dtype, device=device)
    fake = _logits((13, 1), dtype, device, 7)
    for mode in ("vanilla", "lsgan", "hinge", "wasserstein"):
        _check_loss(f"d_loss {mode}", lambda r, f: _fused_d(r, f, mode, "sum"),
                    lambda r, f: _plain_d(r, f, mode, "sum"), [real, fake], dtype, device)


@pytest.mark.parametrize("device", CUDA_ONLY)
def test_losses_over_2_pow_24_plus_3_values(device):
    """More values than float32 counts exactly: the mean divides by n in
    float64 and the chunked sums stay exact enough (CUDA only: the float64
    reference of 2 x 16.7M values takes over ten seconds on a 2-core CPU)."""
    n = 2 ** 24 + 3
    real, fake = _logits((n,), torch.float32, device, 8), _logits((n,), torch.float32, device, 9)
    _check_loss("d_loss", lambda r, f: ops.d_loss(r, f, "lsgan"),
                lambda r, f: ((r - 1) ** 2).mean() + (f ** 2).mean(), [real, fake], torch.float32,
                device)
    _check_loss("l1_loss", lambda x, y: ops.l1_loss(x, y), lambda x, y: (x - y).abs().mean(),
                [real, fake], torch.float32, device)


# =================================================================== reparam
REPARAM_SHAPES = [(3, 20001), (7, 5003), (40000, 20)]


def _next_seed_offset(device, seed):
    """(seed, offset) the next op call on device will draw after
    torch.manual_seed(seed); reseeds so that the call draws exactly them."""
    torch.manual_seed(seed)
    s = ref.generator_seed_offset(torch.device(device))
    torch.manual_seed(seed)
    return s


def _plain_kl(m, l, reduction):
    kl = -0.5 * torch.sum(1 + l - m * m - l.exp(), dim=tuple(range(1, m.dim())))
    return kl if reduction == "none" else (kl.mean() if reduction == "mean" else kl.sum())


def _check_reparam(device, mu, lv, reduction, dtype, seed=11):
    """z, kl and both gradients: fused against plain PyTorch on the op's own
    noise (the reference stream for the same seed), float64 and in dtype."""
    shape = mu.shape
    s, offset = _next_seed_offset(device, seed)
    eps = ref.normal_noise(mu.numel(), dtype, device, s, offset).reshape(shape)
    g = torch.Generator().manual_seed(seed)
    gz = torch.randn(shape, dtype=torch.float64, generator=g).to(dtype).to(device)
    gk = torch.linspace(0.5, 1.5, shape[0], dtype=torch.float64).to(dtype).to(device)
    if reduction != "none":
        gk = gk[0]

    def plain(m, l):
        return m + torch.exp(0.5 * l) * eps.to(m.dtype), _plain_kl(m, l, reduction)

    def grads(fn, m, l, cast):
        leaves, (m, l) = _offset_leaves([m, l])
        z, kl = fn(m, l)
        return [z, kl] + _grads_of_inputs((z, kl), leaves, (m, l), (cast(gz), cast(gk)))

    got = grads(lambda m, l: ops.reparameterize_kl(m, l, reduction), mu, lv, lambda t: t)
    exact = grads(plain, mu.double(), lv.double(), lambda t: t.double())
    lowp = grads(plain, mu, lv, lambda t: t) if dtype in LOW_PRECISION else [None] * 4
    count = mu.numel() if reduction == "sum" else math.prod(shape[1:])
    for name, a, e, p in zip(("z", "kl", "grad_mu", "grad_logvar"), got, exact, lowp):
        # Low precision: ours rounds float32 math once (half an ulp); kl sums
        # `count` float32 terms.
        _close(f"{reduction} {name}", a, e, dtype, p, floor_rel=torch.finfo(dtype).eps,
               floor_abs=1e-6 * count if name == "kl" else 0.0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("shape", REPARAM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device", BOTH)
def test_reparameterize_kl_shapes(device, shape, dtype, reduction):
    if device == "cpu" and (shape != (7, 5003) or dtype == torch.float64 or reduction != "none"):
        # The twin's Philox runs in int64 tensor arithmetic: seconds per 10^5
        # values on a CPU. One shape (rows over 4096, a tail) keeps the CPU share.
        pytest.skip("CPU share: (7, 5003), 'none', float32/float16")
    if dtype == torch.float16 and reduction == "sum" and shape == (40000, 20):
        pytest.skip("the KL sum (~4.5e5) is beyond float16's range")
    """D = 20001 and 5003 (> 4096: rows split over blocks; KL 'none' per row)
    and D = 20 (<= 4096: many rows per block), every reduction."""
    g = torch.Generator().manual_seed(12)
    mu = torch.randn(shape, dtype=torch.float64, generator=g).to(dtype).to(device)
    lv = (0.5 * torch.randn(shape, dtype=torch.float64, generator=g)).to(dtype).to(device)
    _check_reparam(device, mu, lv, reduction, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", BOTH)
def test_reparameterize_unaligned_half(device, dtype):
    g = torch.Generator().manual_seed(13)
    full_mu = torch.randn(9, 37, dtype=torch.float64, generator=g).to(dtype).to(device)
    full_lv = (0.5 * torch.randn(9, 37, dtype=torch.float64, generator=g)).to(dtype).to(device)
    mu, lv = full_mu[1:], full_lv[1:]
    assert mu.data_ptr() % 16 != 0
    for reduction in ("none", "mean"):
        _check_reparam(device, mu, lv, reduction, dtype)


# ================================================================ CUDA graphs
def _replays(graph, n=3):
    """Replays graph n times; yields the default CUDA generator's (seed,
    offset) before each replay, after checking that the replay advanced it."""
    gen = torch.cuda.default_generators[torch.cuda.current_device()]
    for _ in range(n):
        before = gen.get_offset()
        graph.replay()
        torch.cuda.synchronize()
        assert gen.get_offset() > before, "a replay did not advance the generator"
        yield gen.initial_seed(), before


def _graph(fn):
    """Captures fn() (after warm-up on a side stream) and returns (graph, outputs)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = fn()
    return graph, outs


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_act_dropout_forward_backward():
    """Each replay draws a fresh mask (the generator advances, rng records it),
    the mask is the twin's for that (seed, offset), and backward regenerates
    the same mask."""
    skip_unless_fused_on("cuda")
    p, slope = 0.3, 0.2
    x = torch.randn(64, 1027, device="cuda").requires_grad_(True)
    gy = torch.randn(64, 1027, device="cuda")

    def step():
        y, rng = L.act_dropout(x, ref.ACTIVATIONS["leaky_relu"], slope, p)
        (gx,) = torch.autograd.grad(y, (x,), gy)
        return y, rng, gx

    graph, (y, rng, gx) = _graph(step)
    seen = []
    for gen_seed, before in _replays(graph):
        seed, offset = (int(v) for v in rng.cpu())
        assert (seed, offset) == (gen_seed, before), "rng does not record the replay's draw"
        keep = ref.dropout_keep(x.numel(), p, "cuda", seed, offset).reshape(x.shape)
        act_grad = torch.where(x.detach() > 0, 1.0, slope)
        scale = ref.dropout_scale(p)
        want_y = F.leaky_relu(x.detach(), slope) * keep * scale
        want_gx = gy * act_grad * keep * scale
        torch.testing.assert_close(y, want_y, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gx, want_gx, rtol=1e-6, atol=1e-6)
        seen.append(keep.clone())
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_reparameterize():
    """Each replay draws fresh noise, the twin's for the generator's offset at
    replay; the gradients match the replay's z."""
    skip_unless_fused_on("cuda")
    mu = torch.randn(7, 5003, device="cuda").requires_grad_(True)
    lv = (0.5 * torch.randn(7, 5003, device="cuda")).requires_grad_(True)
    gz = torch.randn(7, 5003, device="cuda")

    def step():
        z = ops.reparameterize(mu, lv)
        gmu, glv = torch.autograd.grad(z, (mu, lv), gz)
        return z, gmu, glv

    graph, (z, gmu, glv) = _graph(step)
    zs = []
    for seed, before in _replays(graph):
        eps = ref.normal_noise(mu.numel(), torch.float32, "cuda", seed, before).reshape(mu.shape)
        want = mu.detach() + torch.exp(0.5 * lv.detach()) * eps
        torch.testing.assert_close(z, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gmu, gz, rtol=0, atol=0)
        torch.testing.assert_close(glv, gz * (z - mu.detach()) / 2, rtol=1e-5, atol=1e-6)
        zs.append(z.clone())
    assert not torch.equal(zs[0], zs[1]) and not torch.equal(zs[1], zs[2])


def test_cuda_cases_are_marked_and_skipped_without_a_gpu(request):
    """Every CUDA parametrization carries the cuda marker (make gpu-check runs -m cuda)."""
    items = [i for i in request.session.items if i.module is request.module]
    cuda_items = [i for i in items if i.name.startswith("test_cuda_graph")
                  or getattr(i, "callspec", None) and i.callspec.params.get("device") == "cuda"]
    assert cuda_items and all(i.get_closest_marker("cuda") for i in cuda_items)
    if not HAS_CUDA:
        assert all(i.get_closest_marker("skipif") for i in cuda_items)
