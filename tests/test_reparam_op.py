"""torch.ops.gan_ext.reparameterize / reparameterize_kl / reparameterize_backward,
the in-kernel Philox noise (csrc/common/philox.h), the reference twins and the
functional forms in gan_ext.ops."""
from __future__ import annotations

import math
import struct

import pytest
import torch

import gan_ext
from gan_ext import ops
from gan_ext import reference as ref

from conftest import (LOW_PRECISION, assert_within_2x_of_torch, cuda_kernels, requires_cuda,
                      requires_fused, saved_tensor_bytes, skip_unless_fused_on, to_layout)

L = torch.ops.gan_ext
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
KL_REDUCTIONS = ["none", "mean", "sum"]


def leaf(values64, dtype, device, layout="nchw", requires_grad=False):
    x = to_layout(values64.to(device=device, dtype=dtype), layout).detach()
    return x.requires_grad_(requires_grad)


def mu_logvar(shape, dtype=torch.float64, device="cpu", layout="nchw", requires_grad=False):
    mu = leaf(torch.randn(shape, dtype=torch.float64), dtype, device, layout, requires_grad)
    lv = leaf(0.5 * torch.randn(shape, dtype=torch.float64), dtype, device, layout, requires_grad)
    return mu, lv


def _fused(device):
    skip_unless_fused_on(device)
    return gan_ext.use_backend("fused")


def seed_of_next_call(device, seed):
    """(seed, offset) the next op call draws after torch.manual_seed(seed),
    without disturbing the caller's generator state (it reseeds after)."""
    torch.manual_seed(seed)
    s = ref.generator_seed_offset(torch.device(device))
    torch.manual_seed(seed)
    return s


def explicit_kl(mu, lv, reduction):
    """KL(N(mu, exp(lv)) || N(0, 1)) summed over every dim but the first, in
    plain PyTorch (in mu's dtype)."""
    per = (-0.5 * (1 + lv - mu * mu - torch.exp(lv))).reshape(mu.shape[0], -1).sum(1)
    return {"none": per, "mean": per.mean(), "sum": per.sum()}[reduction]


# -------------------------------------------------------------- torch.compile
@pytest.mark.compile
@requires_fused
def test_compile_reparameterize_kl_matches_eager():
    """fullgraph compile, forward + backward: the op reads the generator at run
    time, so the same seed gives the same z as eager, and a second call fresh
    noise (the seed is not baked into the graph)."""

    def step(mu, lv):
        z, kl = ops.reparameterize_kl(mu, lv, "mean")
        return z, kl, (z * z).sum() + kl

    def run(fn, seed):
        torch.manual_seed(3)
        mu, lv = mu_logvar((4, 6), torch.float32, requires_grad=True)
        torch.manual_seed(seed)
        z, kl, loss = fn(mu, lv)
        loss.backward()
        return z.detach(), kl.detach(), loss.detach(), mu.grad, lv.grad

    with gan_ext.use_backend("fused"):
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)
        got, want = run(compiled, 7), run(step, 7)
        other = run(compiled, 8)
    for name, a, e in zip(("z", "kl", "loss", "grad_mu", "grad_logvar"), got, want):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
    assert not torch.allclose(other[0], got[0])


# -------------------------------------------------------------------- parity
SHAPES = [("64x1", (64, 1), "nchw"), ("1x1x30x30", (1, 1, 30, 30), "nchw"),
          ("16x1x30x30", (16, 1, 30, 30), "nchw"), ("7", (7,), "nchw"),
          ("cl-4x3x8x8", (4, 3, 8, 8), "channels_last"),
          ("strided-4x3x8x9", (4, 3, 8, 9), "strided")]


def _close(ours, torch_lowp, exact, dtype, count, what):
    """float32/64: tolerances; bf16/f16: the 2x-of-torch rule (ours rounds once
    from float32 math, so it is within half an ulp of the exact value)."""
    assert ours.dtype == dtype and ours.shape == exact.shape, what
    assert torch.isfinite(ours).all(), what
    if dtype in LOW_PRECISION:
        floor = torch.finfo(dtype).eps * exact.abs().max().item()
        assert_within_2x_of_torch(ours, torch_lowp, exact, floor + 1e-6 * count, what)
    else:
        rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-10, 1e-12)
        atol *= max(count, exact.abs().max().item())  # per summed term, or per |value|
        torch.testing.assert_close(ours.double(), exact, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_id,shape,layout", SHAPES, ids=[s[0] for s in SHAPES])
def test_parity_with_torch(backend, device, shape_id, shape, layout, dtype):
    """z, kl and both gradients against plain PyTorch autograd on the same noise
    (the reference stream for the same seed), for every KL reduction."""
    mu, lv = mu_logvar(shape, dtype, device, layout, requires_grad=True)
    kl_ok = mu.dim() >= 2
    seed, offset = seed_of_next_call(device, 11)
    # The op's noise, in its compute precision (float32 for bf16/f16).
    eps = ref.normal_noise(mu.numel(), dtype, device, seed, offset).reshape(shape)
    gz = torch.randn(shape, dtype=torch.float64).to(device)

    def plain(m, l, reduction):
        """z = mu + exp(0.5 * logvar) * eps and the explicit KL, in m's dtype."""
        z = m + torch.exp(0.5 * l) * eps.to(m.dtype)
        return z, (explicit_kl(m, l, reduction) if kl_ok else None)

    for reduction in KL_REDUCTIONS if kl_ok else [None]:
        torch.manual_seed(11)
        if kl_ok:
            z, kl = ops.reparameterize_kl(mu, lv, reduction)
        else:
            z, kl = ops.reparameterize(mu, lv), None
        m64, l64 = (t.detach().double().requires_grad_() for t in (mu, lv))
        mlp, llp = (t.detach().clone().requires_grad_() for t in (mu, lv))
        z64, kl64 = plain(m64, l64, reduction)
        zlp, kllp = plain(mlp, llp, reduction)
        B = shape[0]
        _close(z.detach(), zlp.detach(), z64.detach(), dtype, 1, f"{reduction} z")
        outs, outs64, outslp = [z], [z64], [zlp]
        grads_out = [gz.to(dtype)]
        if kl_ok:
            # Terms summed per kl value: one sample's latents, or all of them.
            count = math.prod(shape) if reduction == "sum" else math.prod(shape[1:])
            _close(kl.detach(), kllp.detach(), kl64.detach(), dtype, count, f"{reduction} kl")
            outs, outs64, outslp = [z, kl], [z64, kl64], [zlp, kllp]
            gk = torch.linspace(0.5, 1.5, B, dtype=torch.float64, device=device)
            grads_out.append((gk if reduction == "none" else gk[0]).to(dtype))
        got = torch.autograd.grad(outs, (mu, lv), grads_out)
        want64 = torch.autograd.grad(outs64, (m64, l64), [g.double() for g in grads_out])
        wantlp = torch.autograd.grad(outslp, (mlp, llp), grads_out)
        for name, a, e, t in zip(("grad_mu", "grad_logvar"), got, want64, wantlp):
            _close(a, t, e, dtype, 1, f"{reduction} {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_id,shape,layout", SHAPES, ids=[s[0] for s in SHAPES])
def test_fused_z_matches_reference_twin(device, shape_id, shape, layout, dtype):
    """Same torch.manual_seed -> the same noise in the kernel and its twin."""
    skip_unless_fused_on(device)
    mu, lv = mu_logvar(shape, dtype, device, layout)
    torch.manual_seed(21)
    z = L.reparameterize(mu, lv)
    torch.manual_seed(21)
    z_ref = ref.reparameterize(mu, lv)
    if mu.dim() >= 2:
        torch.manual_seed(21)
        z_kl, kl = L.reparameterize_kl(mu, lv, 0)
        torch.manual_seed(21)
        z_kl_ref, kl_ref = ref.reparameterize_kl(mu, lv, 0)
    else:
        z_kl, z_kl_ref = z, z_ref
    for a, e in ((z, z_ref), (z_kl, z_kl_ref)):
        assert a.dtype == dtype and a.shape == e.shape
        if dtype == torch.float64:
            torch.testing.assert_close(a, e, rtol=1e-13, atol=1e-14)
        elif dtype == torch.float32:
            scale = e.abs().max().item()
            torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6 * scale)
        else:
            # The same float32 value rounded once: at most one ulp apart.
            torch.testing.assert_close(a.float(), e.float(), rtol=torch.finfo(dtype).eps,
                                       atol=torch.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_z_matches_reference_twin_across_chunks(device, dtype):
    """Rows whose length is not a multiple of the Philox block (4 or 2 values)
    and longer than one task chunk (16384): tasks start mid-block."""
    skip_unless_fused_on(device)
    mu, lv = mu_logvar((3, 20001), dtype, device)
    torch.manual_seed(4)
    z, kl = L.reparameterize_kl(mu, lv, 0)
    torch.manual_seed(4)
    z_ref, kl_ref = ref.reparameterize_kl(mu, lv, 0)
    tol = dict(rtol=1e-13, atol=1e-13) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(z, z_ref, **tol)
    torch.testing.assert_close(kl, kl_ref, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)


@requires_fused
def test_fused_independent_of_thread_count():
    mu, lv = mu_logvar((5, 40001), torch.float32, requires_grad=True)
    prev = torch.get_num_threads()
    res = []
    try:
        for threads in (1, max(2, prev)):
            torch.set_num_threads(threads)
            torch.manual_seed(9)
            with gan_ext.use_backend("fused"):
                z, kl = ops.reparameterize_kl(mu, lv, "mean")
            res.append((z.detach(), kl.detach(), *torch.autograd.grad((z.sum() + kl), (mu, lv))))
    finally:
        torch.set_num_threads(prev)
    assert all(torch.equal(a, b) for a, b in zip(*res))


def test_kl_divergence_functional(backend, device):
    """ops.kl_divergence (no sampling) and the kl output of reparameterize_kl
    both equal torch.distributions' KL: on the reference backend both are the
    same twin, so each is compared with the independent formula, not with the other."""
    mu, lv = mu_logvar((4, 3, 5), torch.float64, device)
    normal = torch.distributions.Normal
    per_sample = torch.distributions.kl_divergence(
        normal(mu, torch.exp(0.5 * lv)), normal(torch.zeros_like(mu), torch.ones_like(mu))
    ).reshape(mu.shape[0], -1).sum(1)
    for red in KL_REDUCTIONS:
        want = {"none": per_sample, "mean": per_sample.mean(), "sum": per_sample.sum()}[red]
        _, kl = ops.reparameterize_kl(mu, lv, red)
        torch.testing.assert_close(ops.kl_divergence(mu, lv, red), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(kl, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(kl, explicit_kl(mu, lv, red), rtol=1e-12, atol=1e-12)


def test_empty(backend, device):
    """Empty latents: empty z; a batch of 0 sums to 0 and has no per-sample KL."""
    mu, lv = mu_logvar((0, 4), torch.float32, device, requires_grad=True)
    z = ops.reparameterize(mu, lv)
    assert z.shape == (0, 4)
    z, kl = ops.reparameterize_kl(mu, lv, "sum")
    assert z.shape == (0, 4) and kl.shape == () and kl.item() == 0.0
    gm, gl = torch.autograd.grad(z.sum() + kl, (mu, lv))
    assert gm.shape == (0, 4) and gl.shape == (0, 4)
    _, kl = ops.reparameterize_kl(mu, lv, "none")
    assert kl.shape == (0,)
    with pytest.raises(ValueError, match=r"mu has batch size 0"):
        ops.reparameterize_kl(mu, lv, "mean")


# --------------------------------------------------------------- RNG statistics
# 10^6 draws of eps (z with mu = 0, logvar = 0 is eps itself). For n i.i.d.
# N(0, 1) values:
#   sample mean:      std 1/sqrt(n) = 1e-3               -> |mean| < 5e-3 is 5 sigma;
#   sample variance:  std sqrt(2/n) ~= 1.41e-3            -> |var - 1| < 7.1e-3 is 5 sigma;
#   mean of z^4 (= 3): std sqrt((E z^8 - 9)/n) = sqrt(96/n) ~= 9.8e-3 -> |m4 - 3| < 0.049;
#   fraction in [-1, 1]: p = 0.682689, std sqrt(p(1-p)/n) ~= 4.65e-4 -> 5 sigma = 2.33e-3;
#   sample correlation of two independent sequences: std 1/sqrt(n) -> |corr| < 5/sqrt(n).
# The seeds are fixed, so these are deterministic checks with a 5-sigma margin.
N_SIDE = 1000
N = N_SIDE * N_SIDE
P_1SIGMA = math.erf(1 / math.sqrt(2))


def _eps(device, dtype, generator=None):
    zeros = torch.zeros(N_SIDE, N_SIDE, dtype=dtype, device=device)
    return ops.reparameterize(zeros, zeros, generator=generator).double().reshape(-1)


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return ((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_noise_moments(device, dtype):
    with _fused(device):
        torch.manual_seed(1234)
        z = _eps(device, dtype)
        z2 = _eps(device, dtype)
    assert z.numel() == N and torch.isfinite(z).all()
    mean, var = z.mean().item(), z.var().item()
    assert abs(mean) < 5 / math.sqrt(N), mean
    assert abs(var - 1) < 5 * math.sqrt(2 / N), var
    m4 = (z ** 4).mean().item()
    assert abs(m4 - 3) < 5 * math.sqrt(96 / N), m4
    frac = (z.abs() <= 1).double().mean().item()
    assert abs(frac - P_1SIGMA) < 5 * math.sqrt(P_1SIGMA * (1 - P_1SIGMA) / N), frac
    # Tails: P(|z| > 3) = 2.70e-3 (std of the fraction 5.2e-5).
    tail = (z.abs() > 3).double().mean().item()
    assert abs(tail - 2.6998e-3) < 5 * math.sqrt(2.6998e-3 / N), tail
    bound = 5 / math.sqrt(N)
    # Two consecutive calls: fresh, uncorrelated noise.
    assert abs(_corr(z, z2)) < bound
    # Neighbours within one call: element i and i+1 (Box-Muller partners and
    # block boundaries), i and i+2, i and i+4 (next Philox block for float).
    for lag in (1, 2, 3, 4):
        assert abs(_corr(z[:-lag], z[lag:])) < bound, lag
    # The Box-Muller partners (cos, sin of one radius) are independent: not
    # even their squares correlate.
    assert abs(_corr(z[0::2] ** 2, z[1::2] ** 2)) < 5 / math.sqrt(N // 2)
    # Rows of the (1000, 1000) tensor (element i and i + 1000).
    assert abs(_corr(z[:-N_SIDE], z[N_SIDE:])) < bound


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_seeding(backend, device, dtype):
    """Same seed -> identical z; a different seed or the next call -> different
    z; a torch.Generator gives reproducible z and leaves the default one alone."""
    mu, lv = mu_logvar((8, 33), dtype, device)

    def draw(seed=None, generator=None):
        if seed is not None:
            torch.manual_seed(seed)
        return ops.reparameterize(mu, lv, generator=generator)

    a, b = draw(5), draw(5)
    assert torch.equal(a, b)
    c = draw(6)
    assert not torch.allclose(a, c)
    torch.manual_seed(5)
    first, second = draw(), draw()
    assert torch.equal(first, a) and not torch.allclose(first, second)
    # reparameterize_kl draws the same noise as reparameterize.
    torch.manual_seed(5)
    zk, _ = ops.reparameterize_kl(mu, lv, "sum")
    torch.testing.assert_close(zk, a, rtol=1e-6, atol=1e-6)
    # An explicit generator.
    state = (torch.cuda.get_rng_state(device) if device == "cuda" else torch.get_rng_state())
    g1 = torch.Generator(device=device).manual_seed(77)
    g2 = torch.Generator(device=device).manual_seed(77)
    x1, x2 = draw(generator=g1), draw(generator=g2)
    assert torch.equal(x1, x2)
    assert not torch.allclose(draw(generator=g1), x1)  # g1 advanced
    after = (torch.cuda.get_rng_state(device) if device == "cuda" else torch.get_rng_state())
    assert torch.equal(state, after), "the default generator was advanced"
    assert not torch.allclose(x1, a)


def test_generator_statistics(device):
    """Noise from an explicit generator is N(0, 1) too (same 5-sigma bounds)."""
    with _fused(device):
        z = _eps(device, torch.float32, torch.Generator(device=device).manual_seed(2024))
    assert abs(z.mean().item()) < 5 / math.sqrt(N)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / N)


# ---------------------------------------------------------------- Philox KAT
# Random123's published known-answer vectors for Philox-4x32-10
# (kat_vectors: counter, key -> output).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_philox_known_answers():
    counters = torch.tensor([c for c, _, _ in PHILOX_KAT], dtype=torch.int64)
    for i, (_, key, want) in enumerate(PHILOX_KAT):
        got = ref.philox4x32_10(counters[i:i + 1], key)[0].tolist()
        assert got == list(want), [hex(v) for v in got]
    # Batched: one call on all counters with the same key equals per-row calls.
    key = PHILOX_KAT[2][1]
    rows = torch.cat([ref.philox4x32_10(counters[i:i + 1], key) for i in range(3)])
    assert torch.equal(ref.philox4x32_10(counters, key), rows)


@requires_fused
def test_cpu_kernel_philox_known_answer():
    """Random123's first vector (counter 0, key 0) through the C++ Philox
    (the AVX2 path where built with it): act_dropout_backward regenerates the
    mask from a given rng = (seed, offset) = (0, 0), whose block 0 is that
    counter; element 8 k keeps iff the top 23 bits of word k are >= the
    threshold, so thresholds W and W + 1 pin those bits. (The other two
    vectors need offset / 4 >= 2^63 or block >= 2^58: out of an op's reach;
    the twin checks them above.)"""
    ones = torch.ones(32)
    rng = torch.zeros(2, dtype=torch.int64)
    for k, word in enumerate(PHILOX_KAT[0][2]):
        top = word >> 9
        kept = [L.act_dropout_backward(ones, ones, rng, 0, 0.0, t / 2.0 ** 23)[8 * k].item() != 0
                for t in (top, top + 1)]
        assert kept == [True, False], (k, hex(word))


def _cpu_generator_drawing_seed_zero():
    """A CPU generator whose next random64() is 0, so the next CPU kernel call
    runs at (seed, offset) = (0, 0). Its state (CPUGeneratorImplState) starts
    with the Mersenne Twister's (initial seed: u64, left: i32, seeded: i32,
    next: u64, state: u64[624]); with `left` > 2 the next two outputs are the
    tempered state[next], state[next + 1], and tempering maps 0 to 0."""
    g = torch.Generator().manual_seed(5)
    state = bytearray(g.get_state().numpy().tobytes())
    seeded = struct.unpack_from("<i", state, 12)[0]
    struct.pack_into("<iiQQQ", state, 8, 10, seeded, 0, 0, 0)
    g.set_state(torch.frombuffer(state, dtype=torch.uint8).clone())
    probe = torch.Generator()
    probe.set_state(g.get_state())
    assert ref.generator_seed_offset(torch.device("cpu"), probe) == (0, 0)
    return g


def _box_muller(words, double):
    """The normals of one Philox block (csrc/common/philox.h), in Python floats."""
    if double:
        u = [((words[0] << 21 ^ words[1] >> 11) + 0.5) * 2.0 ** -53,
             ((words[2] << 21 ^ words[3] >> 11) + 0.5) * 2.0 ** -53]
        pairs = [u]
    else:
        u = [((w >> 9) + 0.5) * 2.0 ** -23 for w in words]  # uniform23: exact in float
        pairs = [(u[0], u[1]), (u[2], u[3])]
    out = []
    for u1, u2 in pairs:
        r, t = math.sqrt(-2 * math.log(u1)), 2 * math.pi * u2
        out += [r * math.cos(t), r * math.sin(t)]
    return out


@requires_fused
@pytest.mark.parametrize("numel", [1, 64], ids=["scalar-path", "vector-path"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_reparameterize_philox_known_answer(dtype, numel):
    """Random123's first vector through the CPU reparameterize kernel: at
    (seed, offset) = (0, 0) block 0 has counter 0 and key 0, so the first eps
    are the Box-Muller normals of 6627e8d5 e169c58d bc57ac4c 9b00dbd8. One
    element runs philox.h's scalar block_for; 64 run the AVX2 path."""
    zeros = torch.zeros(numel, dtype=dtype)
    eps = L.reparameterize(zeros, zeros, generator=_cpu_generator_drawing_seed_zero())
    want = _box_muller(PHILOX_KAT[0][2], dtype == torch.float64)
    k = min(numel, len(want))
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == torch.float64 else dict(rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(eps[:k].double(), torch.tensor(want[:k], dtype=torch.float64), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kl", [False, True], ids=["reparameterize", "reparameterize_kl"])
def test_kernel_noise_equals_twin_noise(device, dtype, kl):
    """eps itself (mu = 0, logvar = 0): the kernel's stream is the twin's
    normal_noise for the same (seed, offset), element for element; sizes that
    are not a multiple of a Philox block, and KL rows that start mid-block."""
    skip_unless_fused_on(device)
    shape = (7, 5003) if kl else (1000, 37)
    zeros = torch.zeros(shape, dtype=dtype, device=device)
    seed, offset = seed_of_next_call(device, 41)
    eps = L.reparameterize_kl(zeros, zeros, 2)[0] if kl else L.reparameterize(zeros, zeros)
    want = ref.normal_noise(zeros.numel(), dtype, device, seed, offset).reshape(shape).to(dtype)
    tol = dict(rtol=1e-13, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-6, atol=5e-7)
    torch.testing.assert_close(eps, want, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_kernel_noise_is_philox_box_muller(device, dtype):
    """The first values of the kernel's eps, rebuilt in Python scalars from the
    KAT-checked Philox: ties the C++ Philox and Box-Muller to the definition in
    csrc/common/philox.h (not only to the twin)."""
    skip_unless_fused_on(device)
    zeros = torch.zeros(2, 5, dtype=dtype, device=device)
    seed, offset = seed_of_next_call(device, 31)
    eps = L.reparameterize(zeros, zeros).reshape(-1).double().cpu()
    want = []
    per_block = 2 if dtype == torch.float64 else 4
    for q in range(-(-10 // per_block)):
        step = offset // 4  # counter = (offset / 4, block): curand's layout
        counter = torch.tensor([[step & 0xFFFFFFFF, step >> 32, q, 0]], dtype=torch.int64)
        x = ref.philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))[0].tolist()
        want += _box_muller(x, dtype == torch.float64)
    want = torch.tensor(want[:10], dtype=torch.float64)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == torch.float64 else dict(rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(eps, want, **tol)


# ------------------------------------------- no counters shared with PyTorch
def curand_counters(offset, subsequences, steps):
    """The Philox counters (c0, c1, c2, c3) a PyTorch CUDA RNG kernel reads:
    curand_init(seed, subsequence, offset) adds the subsequence to the
    counter's high 64 bits (skipahead_sequence) and offset / 4 to its low 64
    bits (skipahead; PyTorch's offsets are multiples of 4), and each curand4()
    call steps the low 64 bits by one."""
    out = set()
    for sub in subsequences:
        for k in range(steps):
            low = offset // 4 + k
            out.add((low & 0xFFFFFFFF, low >> 32 & 0xFFFFFFFF, sub & 0xFFFFFFFF, sub >> 32))
    return out


@pytest.mark.parametrize("offset", [0, 4, 8, 4 * 1000, 4 * 2 ** 32])
def test_noise_counters_disjoint_from_torch_cuda_rng(offset):
    """The counters of a call at `offset` (it reserved offset .. offset + 3
    through philox_cuda_state(4)) meet none of those PyTorch's CUDA kernels
    read just before it (offsets up to `offset`) or after it (from offset + 4
    on): here a randn of 4 counter steps per thread over 4096 threads on either
    side, and the call's 20001 float32 normals (5001 blocks, more than the
    threads, so the blocks reach every thread's subsequence)."""
    blocks = torch.arange(-(-20001 // 4), dtype=torch.int64)
    ours = {tuple(c) for c in ref.philox_counters(blocks, offset).tolist()}
    assert len(ours) == len(blocks)
    threads, steps = range(4096), 4
    after = curand_counters(offset + 4, threads, steps)
    assert not ours & after
    if offset >= 4 * steps:
        before = curand_counters(offset - 4 * steps, threads, steps)
        assert not ours & before
    # ...and a call at the next offset (our next call) uses other counters too.
    assert not ours & {tuple(c) for c in ref.philox_counters(blocks, offset + 4).tolist()}


def _matching_blocks(ours, theirs, tol=4e-6):
    """How many of our Box-Muller blocks (rows of 4 normals) reappear in
    theirs, within tol per value: curand's normals from the same 4 Philox
    words differ from ours only by its uniform's lower bits and its fast
    sincos, and it may order each pair (sin, cos) where we give (cos, sin)."""
    found = torch.zeros(len(ours), dtype=torch.bool, device=ours.device)
    for perm in ([0, 1, 2, 3], [1, 0, 3, 2]):
        th = theirs[:, perm]
        key, order = torch.sort(th[:, 0])
        at = torch.searchsorted(key, ours[:, 0].contiguous())
        window = (at[:, None] + torch.arange(-64, 65, device=ours.device)).clamp(0, len(key) - 1)
        cand = th[order[window]]  # (blocks, window, 4)
        close = ((cand - ours[:, None, :]).abs() <= tol).all(dim=2).any(dim=1)
        found |= close
    return int(found.sum())


def _curand_normal4(seed, counters):
    """curand_normal4 of Philox blocks, emulated in float32: uniforms
    x 2^-32 + 2^-33, Box-Muller pairs (r sin, r cos)."""
    x = ref.philox4x32_10(counters, (seed & 0xFFFFFFFF, seed >> 32)).float()
    u = x * 2.0 ** -32 + 2.0 ** -33
    r1, r2 = torch.sqrt(-2 * torch.log(u[:, 0])), torch.sqrt(-2 * torch.log(u[:, 2]))
    v1, v2 = 2 * math.pi * u[:, 1], 2 * math.pi * u[:, 3]
    return torch.stack([r1 * torch.sin(v1), r1 * torch.cos(v1), r2 * torch.sin(v2), r2 * torch.cos(v2)], 1)


def test_block_matcher_sees_shared_counters():
    """The CUDA test's matcher, on the CPU: curand's normals from our own
    counters (what a torch.randn at our offset would make) are found, those
    of the next counter step (what a randn after our call makes) are not."""
    seed, offset, nb = 987654321, 40, 256
    torch.manual_seed(3)
    ours = ref.normal_noise(4 * nb, torch.float32, "cpu", seed, offset).reshape(-1, 4)
    threads = torch.arange(4096, dtype=torch.int64)
    shared = _curand_normal4(seed, ref.philox_counters(threads, offset))
    after = _curand_normal4(seed, ref.philox_counters(threads, offset + 4))
    assert _matching_blocks(ours, shared) >= 0.9 * nb
    assert _matching_blocks(ours, after) == 0


@pytest.mark.cuda
@requires_cuda
@requires_fused
def test_cuda_noise_shares_no_counters_with_torch_randn():
    """reparameterize, then torch.randn on the same generator: none of our eps
    blocks reappears in torch's stream. The check is shown able to see shared
    counters: with the generator's offset rewound to our call's, torch's thread
    q reads our block q, and the same matcher must find (nearly) all of them."""
    skip_unless_fused_on("cuda")
    dev = torch.device("cuda", torch.cuda.current_device())
    props = torch.cuda.get_device_properties(dev)
    # A randn this large runs ATen's full grid (256-thread blocks, as many as
    # fit on the device): every thread makes 4 normals per counter step.
    threads = 256 * props.multi_processor_count * (props.max_threads_per_multi_processor // 256)
    n = 4 * threads * 4
    gen = torch.cuda.default_generators[dev.index]
    torch.cuda.manual_seed(123)
    offset = gen.get_offset()
    zeros = torch.zeros(1024, device=dev)  # 256 Philox blocks
    with gan_ext.use_backend("fused"):
        eps = L.reparameterize(zeros, zeros).reshape(-1, 4)
    after = torch.randn(n, device=dev)
    gen.set_offset(offset)
    control = torch.randn(n, device=dev)

    def groupings(r):  # the 4 values of one curand_normal4 call: strided or adjacent
        return [r.reshape(-1, 4, threads).transpose(1, 2).reshape(-1, 4), r.reshape(-1, 4)]

    seen = max(_matching_blocks(eps, t) for t in groupings(control))
    assert seen >= 0.9 * len(eps), f"control: only {seen} of {len(eps)} blocks found"
    for t in groupings(after):
        assert _matching_blocks(eps, t) == 0


# ------------------------------------------------------------------ bad input
def _bad_cases(device):
    def t(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=device).to(dtype)

    return {
        "kl-1d-mu": (lambda: ops.reparameterize_kl(t(5), t(5)), ValueError,
                     r"mu must have a batch dimension and a latent dimension"),
        "shape": (lambda: ops.reparameterize(t(3, 4), t(3, 5)), ValueError,
                  r"logvar has shape \[3, 5\] but mu has shape \[3, 4\]"),
        "shape-kl": (lambda: ops.reparameterize_kl(t(3, 4), t(4, 3)), ValueError,
                     r"logvar has shape \[4, 3\] but mu has shape \[3, 4\]"),
        "dtype": (lambda: ops.reparameterize(t(3, 4), t(3, 4, dtype=torch.float64)), TypeError,
                  r"logvar has dtype .* but mu has dtype"),
        "int-mu": (lambda: ops.reparameterize(t(3, 4, dtype=torch.int64), t(3, 4)), TypeError,
                   r"mu must be a floating point tensor"),
        "reduction": (lambda: ops.reparameterize_kl(t(3, 4), t(3, 4), "batchmean"), ValueError,
                      r"reduction must be one of 'none', 'mean', 'sum', got 'batchmean'"),
        "kl-divergence-reduction": (lambda: ops.kl_divergence(t(3, 4), t(3, 4), "avg"), ValueError,
                                    r"reduction must be one of"),
        "kl-divergence-1d": (lambda: ops.kl_divergence(t(4), t(4)), ValueError,
                             r"mu must have a batch dimension"),
        "batch0-mean": (lambda: ops.reparameterize_kl(t(0, 3), t(0, 3), "mean"), ValueError,
                        r"mu has batch size 0"),
        "not-a-tensor": (lambda: ops.reparameterize(t(2), [0.0, 0.0]), TypeError,
                         r"logvar must be a torch.Tensor"),
    }


@pytest.mark.parametrize("case", list(_bad_cases("cpu")))
def test_functional_rejects_bad_input(backend, device, case):
    call, exc, msg = _bad_cases(device)[case]
    with pytest.raises(exc, match=msg):
        call()


@pytest.mark.parametrize("impl", ["op", "twin"])
def test_op_and_twin_reject_bad_codes(device, impl):
    if impl == "op":
        skip_unless_fused_on(device)
    lib = L if impl == "op" else ref
    x = torch.randn(3, 4, device=device)
    with pytest.raises(ValueError, match=r"reduction must be 0 \('none'\), 1 \('mean'\) or 2 "
                                         r"\('sum'\), got 3"):
        lib.reparameterize_kl(x, x, 3)
    with pytest.raises(ValueError, match=r"mu must have a batch dimension"):
        lib.reparameterize_kl(x[0], x[0], 1)
    with pytest.raises(ValueError, match=r"logvar has shape"):
        lib.reparameterize(x, x.t())


@requires_fused
def test_backward_op_rejects_bad_input():
    mu = torch.randn(3, 4)
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"grad_kl has 2 values; expected 3"):
        L.reparameterize_backward(None, torch.ones(2), z, mu, mu, 0)
    with pytest.raises(ValueError, match=r"grad_kl has 3 values; expected 1"):
        L.reparameterize_backward(None, torch.ones(3), z, mu, mu, 1)
    with pytest.raises(ValueError, match=r"z has shape \[4, 3\] but mu has shape \[3, 4\]"):
        L.reparameterize_backward(z, None, z.t(), mu, mu, 1)
    with pytest.raises(ValueError, match=r"grad_z has shape"):
        L.reparameterize_backward(torch.randn(12), None, z, mu, mu, 1)


@requires_fused
@pytest.mark.parametrize("kl", [False, True], ids=["reparameterize", "reparameterize_kl"])
def test_backward_keeps_no_eps(kl):
    """Saved for backward: z, mu and logvar only (d z / d logvar = 0.5 (z - mu)):
    no fourth tensor of mu's size (eps or sigma)."""
    mu, lv = mu_logvar((64, 128), torch.float32, requires_grad=True)
    nbytes = mu.numel() * mu.element_size()
    with gan_ext.use_backend("fused"):
        fn = (lambda: ops.reparameterize_kl(mu, lv)) if kl else (lambda: ops.reparameterize(mu, lv))
        saved = saved_tensor_bytes(fn)
    assert saved <= 3 * nbytes, saved / nbytes


# ------------------------------------------------------------ CUDA launches
# (shape, launches for mean/sum) in float32: one launch when the KL units fit
# one block (B * team <= 256; (256, 4) needs the most row blocks, 8), else
# z+partials, row sums and the total.
KL_LAUNCHES = [((128, 20), 1), ((256, 4), 1), ((1, 3), 1), ((129, 20), 3), ((4096, 512), 3)]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("shape,launches", KL_LAUNCHES, ids=[f"{b}x{d}" for (b, d), _ in KL_LAUNCHES])
def test_cuda_reparameterize_kl_launches_and_kl(shape, launches):
    """Launch count per reduction, and the KL (which does not depend on the
    noise) against the CPU kernel; 'none' with one unit per row is one launch."""
    skip_unless_fused_on("cuda")
    mu, lv = mu_logvar(shape, torch.float32, "cuda")
    for reduction, code in (("mean", 1), ("sum", 2), ("none", 0)):
        kernels = cuda_kernels(lambda: L.reparameterize_kl(mu, lv, code))
        assert len(kernels) == (1 if reduction == "none" else launches), (reduction, kernels)
        _, kl = L.reparameterize_kl(mu, lv, code)
        _, kl_cpu = L.reparameterize_kl(mu.cpu(), lv.cpu(), code)
        torch.testing.assert_close(kl.cpu(), kl_cpu, rtol=1e-5, atol=1e-5 * shape[1])
