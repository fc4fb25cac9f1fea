"""The loss ops: torch.ops.gan_ext.{d_loss, g_loss, bce_with_logits, l1_loss,
cycle_l1_loss} with their *_with_grad forms and l1_loss_backward, the reference
twins, the functional forms in gan_ext.ops and gan_ext.nn.GANLoss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gan_ext
from gan_ext import ops
from gan_ext import reference as ref
from gan_ext.nn import GANLoss
from gan_ext.ops._spec import away_from_kinks, l1_pair

from conftest import (LOW_PRECISION, assert_within_2x_of_torch, cuda_kernels, requires_cuda,
                      requires_fused, skip_unless_fused_on, to_layout)

L = torch.ops.gan_ext
RED = ref.REDUCTIONS  # "mean" -> 1, "sum" -> 2
REDUCTIONS = ["mean", "sum"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
D_MODES = ["vanilla", "lsgan", "hinge", "wasserstein"]
G_MODES = ["vanilla", "minimax", "lsgan", "hinge", "wasserstein"]
# Labels per mode: one-sided label smoothing for vanilla, the LSGAN paper's
# a=-1/b=1 for the discriminator, a non-default fake label for minimax (which
# must be the label it uses).
D_LABELS = {"vanilla": (0.9, 0.0), "lsgan": (1.0, -1.0), "hinge": (1.0, 0.0),
            "wasserstein": (1.0, 0.0)}
G_LABELS = {"vanilla": (0.9, 0.0), "minimax": (1.0, 0.1), "lsgan": (0.8, 0.0), "hinge": (1.0, 0.0),
            "wasserstein": (1.0, 0.0)}


# ------------------------------------------------------------------ helpers
def leaf(values64, dtype, device, layout="nchw", requires_grad=False):
    """A leaf with the given values, dtype and layout (the leaf itself has the layout)."""
    x = to_layout(values64.to(device=device, dtype=dtype), layout).detach()
    return x.requires_grad_(requires_grad)


def reduce_(t, reduction):
    return t.mean() if reduction == "mean" else t.sum()


def _bce_t(x, y_or_label, reduction):
    y = torch.full_like(x, y_or_label) if not isinstance(y_or_label, torch.Tensor) else y_or_label
    return F.binary_cross_entropy_with_logits(x, y, reduction=reduction)


def torch_d_loss(real, fake, mode, real_label, fake_label, reduction):
    """Plain PyTorch discriminator loss."""
    if mode == "vanilla":
        return _bce_t(real, real_label, reduction) + _bce_t(fake, fake_label, reduction)
    if mode == "lsgan":
        return (F.mse_loss(real, torch.full_like(real, real_label), reduction=reduction)
                + F.mse_loss(fake, torch.full_like(fake, fake_label), reduction=reduction))
    if mode == "wasserstein":  # the critic's estimate of -W(real, fake)
        return reduce_(fake, reduction) - reduce_(real, reduction)
    assert mode == "hinge"
    return reduce_(torch.relu(1 - real), reduction) + reduce_(torch.relu(1 + fake), reduction)


def torch_g_loss(fake, mode, real_label, fake_label, reduction):
    """Plain PyTorch generator loss."""
    if mode == "vanilla":
        return _bce_t(fake, real_label, reduction)
    if mode == "minimax":
        return -_bce_t(fake, fake_label, reduction)
    if mode == "lsgan":
        return F.mse_loss(fake, torch.full_like(fake, real_label), reduction=reduction)
    assert mode in ("hinge", "wasserstein")
    return reduce_(-fake, reduction)


# A loss case: (make float64 input values for a shape, our call, plain PyTorch).
# Every input requires grad in the parity tests.
def _d_case(mode):
    rl, fl = D_LABELS[mode]
    kink = mode == "hinge"

    def make(shape):
        r, f = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        return [away_from_kinks(r), away_from_kinks(f)] if kink else [r, f]

    return (make, lambda r, f, red: ops.d_loss(r, f, mode, rl, fl, red),
            lambda r, f, red: torch_d_loss(r, f, mode, rl, fl, red))


def _g_case(mode):
    rl, fl = G_LABELS[mode]
    m, minimax = ("vanilla", True) if mode == "minimax" else (mode, False)
    return (lambda shape: [torch.randn(shape, dtype=torch.float64)],
            lambda f, red: ops.g_loss(f, m, rl, fl, red, minimax=minimax),
            lambda f, red: torch_g_loss(f, mode, rl, fl, red))


def _bce_make(shape):
    return [2 * torch.randn(shape, dtype=torch.float64), torch.rand(shape, dtype=torch.float64)]


def _cycle_make(shape):
    return [*l1_pair(shape), *l1_pair(shape)]


CASES = {
    **{f"d_loss-{m}": _d_case(m) for m in D_MODES},
    **{f"g_loss-{m}": _g_case(m) for m in G_MODES},
    "bce_with_logits": (_bce_make, lambda x, y, red: ops.bce_with_logits(x, y, red),
                        lambda x, y, red: F.binary_cross_entropy_with_logits(x, y, reduction=red)),
    "l1_loss": (lambda shape: list(l1_pair(shape)), lambda a, b, red: ops.l1_loss(a, b, red),
                lambda a, b, red: F.l1_loss(a, b, reduction=red)),
    "cycle_l1_loss": (_cycle_make,
                      lambda a1, b1, a2, b2, red: ops.cycle_l1_loss(a1, b1, a2, b2, 10.0, 5.0, red),
                      lambda a1, b1, a2, b2, red: (10.0 * F.l1_loss(a1, b1, reduction=red)
                                                   + 5.0 * F.l1_loss(a2, b2, reduction=red))),
}


def loss_and_grads(fn, inputs, reduction):
    loss = fn(*inputs, reduction)
    grads = torch.autograd.grad(loss, inputs)
    return loss.detach(), [g.detach() for g in grads]


# -------------------------------------------------------------------- parity
# (id, shape, layout). "strided": a non-contiguous view (every other column).
SHAPES = [("64x1", (64, 1), "nchw"), ("1x1x30x30", (1, 1, 30, 30), "nchw"),
          ("16x1x30x30", (16, 1, 30, 30), "nchw"), ("7", (7,), "nchw"),
          ("cl-4x3x8x8", (4, 3, 8, 8), "channels_last"),
          ("strided-4x3x8x9", (4, 3, 8, 9), "strided")]


def _check_parity(ours, torch_lowp, exact, dtype, count, what):
    """ours/torch_lowp in `dtype`, exact in float64 from the same (rounded) inputs.
    count: how many terms the value sums (1 for a mean or an elementwise grad)."""
    assert ours.dtype == dtype and ours.shape == exact.shape, what
    if exact.abs().max().item() > torch.finfo(dtype).max:
        # Beyond the dtype's range (a float16 sum of many terms): inf, like torch.
        assert torch.isinf(ours).all() and torch.isinf(torch_lowp).all(), what
        return
    assert torch.isfinite(ours).all(), what
    if dtype in LOW_PRECISION:
        # ours rounds once from float32 math: within half an ulp of the exact value.
        floor = torch.finfo(dtype).eps * (exact.abs().max().item() if exact.numel() else 0.0)
        assert_within_2x_of_torch(ours, torch_lowp, exact, floor + 1e-6 * count, what)
    else:
        rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-10, 1e-12)
        torch.testing.assert_close(ours.double(), exact, rtol=rtol, atol=atol * count,
                                   msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_id,shape,layout", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_torch(backend, device, case, shape_id, shape, layout, dtype):
    """Loss and every input's gradient against plain PyTorch (float64 on the
    same rounded inputs; for bf16/f16 the 2x-of-torch rule)."""
    make, ours_fn, torch_fn = CASES[case]
    values = make(shape)
    inputs = [leaf(v, dtype, device, layout, True) for v in values]
    exact_in = [x.detach().double().requires_grad_() for x in inputs]
    lowp_in = [x.detach().clone().requires_grad_() for x in inputs]
    n = inputs[0].numel()
    for reduction in REDUCTIONS:
        loss, grads = loss_and_grads(ours_fn, inputs, reduction)
        e_loss, e_grads = loss_and_grads(torch_fn, exact_in, reduction)
        t_loss, t_grads = loss_and_grads(torch_fn, lowp_in, reduction)
        count = n if reduction == "sum" else 1
        _check_parity(loss, t_loss, e_loss, dtype, count, f"{reduction} loss")
        for i, (g, tg, eg) in enumerate(zip(grads, t_grads, e_grads)):
            assert g.shape == inputs[i].shape
            _check_parity(g, tg, eg, dtype, 1, f"{reduction} grad[{i}]")
            if backend == "fused" and layout == "channels_last":
                # The gradient comes back in the layout of the tensor it belongs to.
                assert g.is_contiguous(memory_format=torch.channels_last), f"grad[{i}] layout"


@pytest.mark.parametrize("case", list(CASES))
def test_parity_large_multi_chunk(backend, device, case):
    """More values than one kernel chunk (16384): the chunked, parallel sum."""
    make, ours_fn, torch_fn = CASES[case]
    inputs = [leaf(v, torch.float32, device, requires_grad=True) for v in make((5, 10001))]
    exact_in = [x.detach().double().requires_grad_() for x in inputs]
    for reduction in REDUCTIONS:
        loss, grads = loss_and_grads(ours_fn, inputs, reduction)
        e_loss, e_grads = loss_and_grads(torch_fn, exact_in, reduction)
        count = inputs[0].numel() if reduction == "sum" else 1
        _check_parity(loss, None, e_loss, torch.float32, count, f"{reduction} loss")
        for g, eg in zip(grads, e_grads):
            _check_parity(g, None, eg, torch.float32, 1, f"{reduction} grad")


@requires_fused
@pytest.mark.parametrize("case", list(CASES))
def test_fused_loss_independent_of_thread_count(case):
    make, ours_fn, _ = CASES[case]
    inputs = [leaf(v, torch.float32, "cpu", requires_grad=True) for v in make((4, 20001))]
    prev = torch.get_num_threads()
    results = []
    try:
        for threads in (1, max(2, prev)):
            torch.set_num_threads(threads)
            with gan_ext.use_backend("fused"):
                results.append(loss_and_grads(ours_fn, inputs, "sum"))
    finally:
        torch.set_num_threads(prev)
    (l1, g1), (l2, g2) = results
    assert torch.equal(l1, l2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_fused_matches_reference_twin_exactly_in_float64(device):
    """The op and its twin compute the same function: float64 agreement to
    rounding, for every plain op (not only through autograd)."""
    skip_unless_fused_on(device)
    r = leaf(1.5 * torch.randn(6, 1, 5, 5, dtype=torch.float64), torch.float64, device)
    f = leaf(1.5 * torch.randn(9, dtype=torch.float64), torch.float64, device)
    y = leaf(torch.rand(6, 1, 5, 5, dtype=torch.float64), torch.float64, device)
    a, b = (leaf(v, torch.float64, device) for v in l1_pair((6, 1, 5, 5)))
    for red in (1, 2):
        calls = [("d_loss", (r, f, m, *D_LABELS[name], red)) for name, m in
                 (("vanilla", 0), ("lsgan", 1), ("hinge", 2), ("wasserstein", 4))]
        calls += [("g_loss", (f, m, 0.9, 0.1, red)) for m in range(4)]
        calls += [("g_loss", (f, 4, 1.0, 0.0, red))]
        calls += [("bce_with_logits", (r, y, red)), ("l1_loss", (a, b, red)),
                  ("cycle_l1_loss", (a, b, r, y, 10.0, 5.0, red))]
        for name, args in calls:
            got, want = getattr(L, name)(*args), getattr(ref, name)(*args)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12,
                                       msg=lambda m: f"{name}{args[2:]}: {m}")


# --------------------------------------------------------- numerical safety
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_extreme_logits_finite(backend, device, dtype, reduction):
    """Logits of +-100 (a saturated discriminator): finite loss and gradients
    in every mode, and the right values (the BCE terms are 100 or ~0)."""
    x64 = torch.tensor([-100.0, 100.0], dtype=torch.float64)

    def check(fn, torch_fn, n_in, what):
        inputs = [leaf(x64, dtype, device, requires_grad=True) for _ in range(n_in)]
        loss, grads = loss_and_grads(fn, inputs, reduction)
        exact = torch_fn(*[x.detach().double() for x in inputs], reduction)
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads), what
        tol = 1e-2 if dtype in LOW_PRECISION else 1e-6
        torch.testing.assert_close(loss.double(), exact, rtol=tol, atol=tol,
                                   msg=lambda m: f"{what}: {m}")

    for mode in D_MODES:
        _, fn, tfn = _d_case(mode)
        check(fn, tfn, 2, f"d_loss {mode}")
    for mode in G_MODES:
        _, fn, tfn = _g_case(mode)
        check(fn, tfn, 1, f"g_loss {mode}")
    target = leaf(torch.tensor([1.0, 0.0], dtype=torch.float64), dtype, device)
    check(lambda x, red: ops.bce_with_logits(x, target, red),
          lambda x, red: F.binary_cross_entropy_with_logits(x, target.double(), reduction=red),
          1, "bce_with_logits")


# ------------------------------------------------------------------ empty input
EMPTY_CALLS = {
    "d_loss": (2, lambda r, f, red: ops.d_loss(r, f, "lsgan", reduction=red), "real_logits"),
    "g_loss": (1, lambda f, red: ops.g_loss(f, "vanilla", reduction=red), "fake_logits"),
    "bce_with_logits": (2, lambda x, y, red: ops.bce_with_logits(x, y, red), "input"),
    "l1_loss": (2, lambda a, b, red: ops.l1_loss(a, b, red), "input"),
    "cycle_l1_loss": (4, lambda a, b, c, d, red: ops.cycle_l1_loss(a, b, c, d, 10.0, 5.0, red),
                      "input1"),
}


@pytest.mark.parametrize("name", list(EMPTY_CALLS))
def test_empty_input(backend, device, name):
    """Documented: the sum over an empty tensor is 0 (with zero-size gradients);
    the mean over one is an error that says so."""
    n_in, fn, first = EMPTY_CALLS[name]
    inputs = [torch.zeros(0, 3, device=device, requires_grad=True) for _ in range(n_in)]
    loss, grads = loss_and_grads(fn, inputs, "sum")
    assert loss.shape == () and loss.item() == 0.0
    assert all(g.shape == (0, 3) for g in grads)
    with pytest.raises(ValueError, match=rf"{first} is empty: reduction='mean'"):
        fn(*inputs, "mean")


def test_d_loss_empty_fake_with_sum(backend, device):
    """One empty side of d_loss: the other side's sum alone."""
    real = torch.randn(4, device=device, requires_grad=True)
    fake = torch.zeros(0, device=device, requires_grad=True)
    loss, (gr, gf) = loss_and_grads(lambda r, f, red: ops.d_loss(r, f, "lsgan", reduction=red),
                                    [real, fake], "sum")
    torch.testing.assert_close(loss, ((real.detach() - 1) ** 2).sum())
    assert gf.shape == (0,) and gr.shape == (4,)


# ------------------------------------------------------------------ bad input
def _bad_cases(device):
    """name -> (call, exception, regex naming the argument)."""
    def t(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=device).to(dtype)

    ints = torch.ones(4, dtype=torch.int64, device=device)
    return {
        "l1-shape": (lambda: ops.l1_loss(t(2, 3), t(2, 4)), ValueError,
                     r"input has shape \[2, 3\] but target has shape \[2, 4\]"),
        "bce-shape": (lambda: ops.bce_with_logits(t(2, 3), torch.rand(3, 2, device=device)),
                      ValueError, r"input has shape \[2, 3\] but target has shape \[3, 2\]"),
        "cycle-shape": (lambda: ops.cycle_l1_loss(t(4), t(4), t(3), t(2)), ValueError,
                        r"input2 has shape \[3\] but target2 has shape \[2\]"),
        "d-real-label": (lambda: ops.d_loss(t(4), t(4), "vanilla", real_label=1.5), ValueError,
                         r"real_label must lie in \[0, 1\]"),
        "d-fake-label": (lambda: ops.d_loss(t(4), t(4), "vanilla", fake_label=-0.1), ValueError,
                         r"fake_label must lie in \[0, 1\]"),
        "g-minimax-fake-label": (lambda: ops.g_loss(t(4), fake_label=2.0, minimax=True),
                                 ValueError, r"fake_label must lie in \[0, 1\]"),
        "lsgan-inf-label": (lambda: ops.d_loss(t(4), t(4), "lsgan", real_label=float("inf")),
                            ValueError, r"real_label must be finite"),
        "d-mode": (lambda: ops.d_loss(t(4), t(4), "wgan"), ValueError, r"mode must be one of"),
        "d-mode-minimax": (lambda: ops.d_loss(t(4), t(4), "minimax"), ValueError,
                           r"mode must be one of 'vanilla', 'lsgan', 'hinge', 'wasserstein', got "
                           r"'minimax'"),
        "g-mode": (lambda: ops.g_loss(t(4), "LSGAN"), ValueError, r"mode must be one of"),
        "d-int-real": (lambda: ops.d_loss(ints, t(4)), TypeError,
                       r"real_logits must be a floating point tensor"),
        "d-int-fake": (lambda: ops.d_loss(t(4), ints), TypeError,
                       r"fake_logits must be a floating point tensor"),
        "g-int": (lambda: ops.g_loss(ints), TypeError, r"fake_logits must be a floating point"),
        "bce-int": (lambda: ops.bce_with_logits(ints, ints), TypeError,
                    r"input must be a floating point"),
        "l1-int-target": (lambda: ops.l1_loss(t(4), ints), TypeError,
                          r"target must be a floating point"),
        "minimax-lsgan": (lambda: ops.g_loss(t(4), "lsgan", minimax=True), ValueError,
                          r"minimax=True is the BCE \('vanilla'\) generator loss"),
        "hinge-labels-d": (lambda: ops.d_loss(t(4), t(4), "hinge", real_label=0.9), ValueError,
                           r"real_label and fake_label have no meaning for the hinge loss"),
        "hinge-labels-g": (lambda: ops.g_loss(t(4), "hinge", fake_label=0.1), ValueError,
                           r"real_label and fake_label have no meaning for the hinge loss"),
        "wasserstein-labels-d": (lambda: ops.d_loss(t(4), t(4), "wasserstein", fake_label=0.1),
                                 ValueError, r"real_label and fake_label have no meaning for the "
                                             r"wasserstein loss"),
        "wasserstein-labels-g": (lambda: ops.g_loss(t(4), "wasserstein", real_label=0.9),
                                 ValueError, r"real_label and fake_label have no meaning for the "
                                             r"wasserstein loss"),
        "minimax-wasserstein": (lambda: ops.g_loss(t(4), "wasserstein", minimax=True), ValueError,
                                r"minimax=True is the BCE \('vanilla'\) generator loss"),
        "d-dtype": (lambda: ops.d_loss(t(4), t(4, dtype=torch.float64)), TypeError,
                    r"real_logits has dtype .* but fake_logits has dtype"),
        "l1-dtype": (lambda: ops.l1_loss(t(4), t(4, dtype=torch.float16)), TypeError,
                     r"input has dtype .* but target has dtype"),
        "cycle-dtype-across-pairs": (
            lambda: ops.cycle_l1_loss(t(4), t(4), t(4, dtype=torch.float64),
                                      t(4, dtype=torch.float64)),
            TypeError, r"input1 has dtype .* but input2 has dtype"),
        "reduction": (lambda: ops.l1_loss(t(4), t(4), "avg"), ValueError,
                      r"reduction must be one of 'mean', 'sum', got 'avg'"),
        "reduction-d": (lambda: ops.d_loss(t(4), t(4), reduction="avg"), ValueError,
                        r"reduction must be one of"),
        "not-a-tensor": (lambda: ops.bce_with_logits([0.5], t(1)), TypeError,
                         r"input must be a torch.Tensor"),
    }


BAD_IDS = list(_bad_cases("cpu"))


@pytest.mark.parametrize("case", BAD_IDS)
def test_functional_rejects_bad_input(backend, device, case):
    call, exc, msg = _bad_cases(device)[case]
    with pytest.raises(exc, match=msg):
        call()


GAN_LOSS_BAD = {
    "mode": (dict(mode="wgan"), ValueError, r"mode must be one of"),
    "mode-minimax": (dict(mode="minimax"), ValueError, r"mode must be one of"),
    "real-label": (dict(real_label=1.5), ValueError, r"real_label must lie in \[0, 1\]"),
    "fake-label": (dict(fake_label=-0.5), ValueError, r"fake_label must lie in \[0, 1\]"),
    "hinge-labels": (dict(mode="hinge", real_label=0.9), ValueError,
                     r"real_label and fake_label have no meaning"),
    "wasserstein-labels": (dict(mode="wasserstein", real_label=0.9), ValueError,
                           r"real_label and fake_label have no meaning for the wasserstein loss"),
    "minimax-wasserstein": (dict(mode="wasserstein", minimax=True), ValueError, r"minimax=True"),
    "minimax-lsgan": (dict(mode="lsgan", minimax=True), ValueError, r"minimax=True"),
    "reduction": (dict(reduction="none"), ValueError, r"reduction must be one of"),
}


@pytest.mark.parametrize("case", list(GAN_LOSS_BAD))
def test_gan_loss_rejects_bad_config_at_construction(case):
    kwargs, exc, msg = GAN_LOSS_BAD[case]
    with pytest.raises(exc, match=msg):
        GANLoss(**kwargs)


def test_gan_loss_rejects_bad_input(backend, device):
    crit = GANLoss("vanilla", real_label=0.9)
    x = torch.randn(4, device=device)
    ints = torch.ones(4, dtype=torch.int64, device=device)
    with pytest.raises(TypeError, match=r"real_logits must be a floating point"):
        crit.d_loss(ints, x)
    with pytest.raises(TypeError, match=r"fake_logits must be a floating point"):
        crit.g_loss(ints)
    with pytest.raises(TypeError, match=r"real_logits has dtype .* but fake_logits has dtype"):
        crit.d_loss(x, x.double())
    with pytest.raises(ValueError, match=r"real_logits is empty"):
        crit.d_loss(x[:0], x)
    with pytest.raises(TypeError, match=r"\.d_loss\(real_logits, fake_logits\)"):
        crit(x, x)


def test_gan_loss_matches_functional(backend, device):
    real, fake = torch.randn(5, 1, device=device), torch.randn(3, 1, 4, 4, device=device)
    for kwargs in (dict(mode="vanilla", real_label=0.9), dict(mode="vanilla", minimax=True),
                   dict(mode="lsgan", reduction="sum"), dict(mode="hinge"),
                   dict(mode="wasserstein", reduction="sum")):
        crit = GANLoss(**kwargs)
        mode, minimax = kwargs.get("mode"), kwargs.get("minimax", False)
        rl, red = kwargs.get("real_label", 1.0), kwargs.get("reduction", "mean")
        torch.testing.assert_close(crit.d_loss(real, fake),
                                   torch_d_loss(real, fake, mode, rl, 0.0, red))
        tmode = "minimax" if minimax else mode
        torch.testing.assert_close(crit.g_loss(fake), torch_g_loss(fake, tmode, rl, 0.0, red))


# Op-level codes: the kernel and its twin reject the same input with the same
# message (modulo dtype spelling).
def _op_bad_cases(device):
    def t(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=device).to(dtype)

    return {
        "d-mode-3": ("d_loss", (t(4), t(4), 3, 1.0, 0.0, 1), ValueError,
                     r"mode must be 0 \('vanilla'\), 1 \('lsgan'\), 2 \('hinge'\) or 4 "
                     r"\('wasserstein'\) for d_loss"),
        "g-mode-5": ("g_loss", (t(4), 5, 1.0, 0.0, 1), ValueError, r"mode must be 0 .* for g_loss"),
        "reduction-0": ("l1_loss", (t(4), t(4), 0), ValueError,
                        r"reduction must be 1 \('mean'\) or 2 \('sum'\), got 0"),
        "reduction-3-d": ("d_loss", (t(4), t(4), 0, 1.0, 0.0, 3), ValueError,
                          r"reduction must be 1 \('mean'\) or 2 \('sum'\), got 3"),
        "label-vanilla": ("d_loss", (t(4), t(4), 0, 1.0, 1.5, 1), ValueError,
                          r"fake_label must lie in \[0, 1\]"),
        "label-minimax": ("g_loss", (t(4), 3, 1.0, -0.5, 1), ValueError,
                          r"fake_label must lie in \[0, 1\]"),
        "bce-shape": ("bce_with_logits", (t(2, 3), t(3, 2), 1), ValueError,
                      r"input has shape \[2, 3\] but target has shape \[3, 2\]"),
        "cycle-shape": ("cycle_l1_loss", (t(4), t(4), t(3), t(4), 1.0, 1.0, 1), ValueError,
                        r"input2 has shape \[3\] but target2 has shape \[4\]"),
        "bce-dtype": ("bce_with_logits", (t(3), t(3, dtype=torch.float64), 1), TypeError,
                      r"input has dtype .* but target has dtype"),
        "int-fake": ("g_loss", (torch.ones(3, dtype=torch.int32, device=device), 0, 1.0, 0.0, 1),
                     TypeError, r"fake_logits must be a floating point"),
        "empty-mean": ("l1_loss", (t(0), t(0), 1), ValueError, r"input is empty"),
    }


@pytest.mark.parametrize("impl", ["op", "twin"])
@pytest.mark.parametrize("case", list(_op_bad_cases("cpu")))
def test_op_and_twin_reject_bad_codes(device, impl, case):
    if impl == "op":
        skip_unless_fused_on(device)
    name, args, exc, msg = _op_bad_cases(device)[case]
    fn = getattr(L, name) if impl == "op" else getattr(ref, name)
    with pytest.raises(exc, match=msg):
        fn(*args)


@requires_fused
def test_with_grad_ops_check_arguments():
    """The *_with_grad ops (what autograd calls) run the same checks."""
    x = torch.randn(4)
    with pytest.raises(ValueError, match=r"real_label must lie in \[0, 1\]"):
        L.d_loss_with_grad(x, x, 0, 1.5, 0.0, 1)
    with pytest.raises(ValueError, match=r"mode must be 0 .* for g_loss"):
        L.g_loss_with_grad(x, 7, 1.0, 0.0, 1)
    with pytest.raises(ValueError, match=r"input has shape \[4\] but target has shape \[3\]"):
        L.bce_with_logits_with_grad(x, x[:3], 1, True)


# -------------------------------------------------------------- double backward

@pytest.mark.parametrize("name", ["reference", "fused"])
def test_lsgan_second_derivative(device, name):
    """lsgan's second derivative is 2/n, on both backends (the fused op used to
    refuse create_graph; tests/test_double_backward.py has the gradgradchecks)."""
    if name == "fused":
        skip_unless_fused_on(device)
    x = torch.randn(3, 4, device=device, requires_grad=True)
    with gan_ext.use_backend(name):
        (g,) = torch.autograd.grad(ops.g_loss(x, "lsgan"), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(h, torch.full_like(x, 2 / x.numel()))


@requires_fused
def test_no_grad_runs_plain_op_and_saves_nothing():
    """Inputs that do not require grad: the plain loss op runs (no graph)."""
    x = torch.randn(4, 5)
    with gan_ext.use_backend("fused"):
        loss = ops.d_loss(x, x, "vanilla", 0.9)
    assert loss.grad_fn is None and not loss.requires_grad
    xg = x.clone().requires_grad_()
    with torch.no_grad(), gan_ext.use_backend("fused"):
        assert ops.g_loss(xg).grad_fn is None


# ----------------------------------------------------------- NaN in every lane
# 2 x 16 + 5 values: two whole AVX-512 float vectors (four AVX2 ones) and a
# scalar tail, so every lane position of the vector body and the tail is hit.
NAN_N = 37


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_nan_in_every_lane_gives_nan(device, case, dtype):
    """A NaN logit (or target) at any position makes the loss NaN, with and
    without grad, and gives the gradients the twin gives (NaN where its
    autograd gives NaN) (issue 13: hinge dropped NaN, the vector BCE gradient
    was finite at a NaN logit)."""
    skip_unless_fused_on(device)
    make, fn, _ = CASES[case]
    base = [v.reshape(-1)[:NAN_N] if v.numel() >= NAN_N else v for v in make((NAN_N,))]
    for pos in range(NAN_N):
        for which in range(len(base)):
            vals = [v.clone() for v in base]
            vals[which][pos] = float("nan")
            outs = {}
            for name in ("fused", "reference"):
                with gan_ext.use_backend(name):
                    with torch.no_grad():
                        plain = fn(*[leaf(v, dtype, device) for v in vals], "mean")
                    inputs = [leaf(v, dtype, device, requires_grad=True) for v in vals]
                    loss, grads = loss_and_grads(fn, inputs, "sum")
                outs[name] = (plain, loss, grads)
            where = f"{case} {dtype} input {which} position {pos}"
            plain, loss, grads = outs["fused"]
            assert torch.isnan(plain) and torch.isnan(loss), where
            for g, g_ref in zip(grads, outs["reference"][2]):
                assert torch.equal(torch.isnan(g), torch.isnan(g_ref)), where
                torch.testing.assert_close(g, g_ref, equal_nan=True, rtol=2e-2, atol=1e-3,
                                           msg=lambda m: f"{where}: {m}")


# ------------------------------------------- what torch computes, we compute
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_weight_pos_weight_and_none_as_torch(backend, reduction):
    """Issue 13: bce_with_logits had no weight/pos_weight and no 'none'."""
    torch.manual_seed(0)
    x = torch.randn(4, 5, requires_grad=True)
    y = torch.rand(4, 5)
    w, pw = torch.rand(5) + 0.5, torch.rand(5) + 0.5
    for kw in ({}, {"weight": w}, {"pos_weight": pw}, {"weight": w, "pos_weight": pw}):
        got = ops.bce_with_logits(x, y, reduction, **kw)
        want = F.binary_cross_entropy_with_logits(x, y, reduction=reduction, **kw)
        torch.testing.assert_close(got, want)
        gg, = torch.autograd.grad(got.sum(), x)
        gw, = torch.autograd.grad(want.sum(), x)
        torch.testing.assert_close(gg, gw)


def test_l1_none_as_torch(backend):
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    torch.testing.assert_close(ops.l1_loss(a, b, "none"), F.l1_loss(a, b, reduction="none"))
    with pytest.raises(ValueError, match="reduction must be one of"):
        ops.l1_loss(a, b, "average")


# ------------------------------------------------------------ scale_loss_grads
# The backward of the *_with_grad losses off the CPU: autograd calls it with
# the loss's grad_output and the saved gradients.
SCALE_SHAPES = [(1,), (7,), (64, 1), (3, 1, 31, 31)]  # n % 8 != 0: the tails of every vector width


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scale_loss_grads_is_grad_times_saved(device, dtype):
    """Bitwise the product autograd computed before (at::mul), in the layout of
    the saved gradient (dense layouts kept, others made contiguous); an absent
    saved gradient gives an empty tensor. Unaligned views (x[1:]) included."""
    skip_unless_fused_on(device)
    grad = torch.tensor(-0.37, dtype=dtype, device=device)
    for shape in SCALE_SHAPES:
        a = torch.randn(shape, device=device).to(dtype)
        b = torch.randn(1 + shape[0], *shape[1:], device=device).to(dtype)[1:]  # unaligned base
        ga, gb = L.scale_loss_grads(grad, a, b)
        assert torch.equal(ga, a * grad) and torch.equal(gb, b * grad), shape
        ga, gb = L.scale_loss_grads(grad, None, a)
        assert ga.shape == (0,) and torch.equal(gb, a * grad), shape
    cl = torch.randn(2, 3, 4, 5, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    strided = torch.randn(4, 6, device=device).to(dtype)[:, ::2]
    ga, gb = L.scale_loss_grads(grad, cl, strided)
    assert ga.is_contiguous(memory_format=torch.channels_last) and gb.is_contiguous()
    assert torch.equal(ga, cl * grad) and torch.equal(gb, strided * grad)


def test_scale_loss_grads_rejects_bad_input(device):
    """The kernel, the fake kernel and the twin's check give the same errors."""
    skip_unless_fused_on(device)
    x = torch.randn(4, device=device)
    cases = [((x[:2], x, None), ValueError,
              r"grad must hold the loss's gradient \(one value\), got shape \[2\]"),
             ((x[0].long(), None, None), TypeError, r"grad must be a floating point tensor"),
             ((x[0], None, x.double()), TypeError, r"saved_b has dtype .* but grad has dtype")]
    if device == "cuda":
        cases.append(((x[0], x.cpu(), None), ValueError, r"saved_a is on cpu but grad is on cuda"))
    for args, exc, msg in cases:
        for fn in (L.scale_loss_grads, ref.check_scale_loss_grads_args):
            with pytest.raises(exc, match=msg):
                fn(*args)
        meta = [None if t is None else t.to("meta") for t in args]
        if device == "cpu":  # the fake kernel (all on meta: no device mismatch to test)
            with pytest.raises(exc, match=msg):
                L.scale_loss_grads(*meta)


@pytest.mark.parametrize("case", ["d_loss-vanilla", "g_loss-minimax", "bce_with_logits"])
def test_backward_scales_by_grad_output(device, case):
    """A grad_output other than 1 (e.g. a loss weight applied by the caller's
    graph): the CPU multiplies on the host, CUDA reads it in scale_loss_grads.
    Also with only one input requiring grad."""
    skip_unless_fused_on(device)
    make, ours_fn, _ = CASES[case]
    inputs = [leaf(v, torch.float32, device, requires_grad=True) for v in make((6, 5))]
    with gan_ext.use_backend("fused"):
        loss = ours_fn(*inputs, "mean")
        unit = torch.autograd.grad(loss, inputs, retain_graph=True)
        go = torch.tensor(-2.5, device=device)
        scaled = torch.autograd.grad(loss, inputs, grad_outputs=go, retain_graph=True)
        for u, g in zip(unit, scaled):
            assert torch.equal(g, u * go)
        if len(inputs) == 2:
            (only,) = torch.autograd.grad(loss, inputs[1], grad_outputs=go)
            assert torch.equal(only, scaled[1])


# CUDA launch counts: the D loss of a DCGAN step is host-bound, so each launch
# is a large share of its time.
def _d_step_parts(reduction="mean", n=64):
    real = torch.randn(n, 1, device="cuda", requires_grad=True)
    fake = torch.randn(n, 1, device="cuda", requires_grad=True)
    go = torch.ones((), device="cuda")

    def forward():
        return ops.d_loss(real, fake, "vanilla", 0.9, reduction=reduction)

    loss = forward()
    return forward, lambda: torch.autograd.grad(loss, (real, fake), grad_outputs=go,
                                                retain_graph=True)


@pytest.mark.cuda
@requires_cuda
def test_cuda_small_losses_launch_one_kernel_each_way():
    """d_loss/g_loss/bce at (64, 1): forward one launch (one block reduces both
    segments and writes the loss), backward one launch (both saved gradients
    scaled by the grad_output read on the device): 2 launches, not 4."""
    skip_unless_fused_on("cuda")
    with gan_ext.use_backend("fused"):
        forward, backward = _d_step_parts()
        assert len(cuda_kernels(forward)) == 1, cuda_kernels(forward)
        kernels = cuda_kernels(backward)
        assert len(kernels) == 1 and "scale_grads" in kernels[0], kernels
        x = torch.randn(64, 1, device="cuda", requires_grad=True)
        y = torch.rand(64, 1, device="cuda", requires_grad=True)
        go = torch.ones((), device="cuda")
        for loss_fn, inputs in ((lambda: ops.g_loss(x, "vanilla"), (x,)),
                                (lambda: ops.bce_with_logits(x, y), (x, y))):
            assert len(cuda_kernels(loss_fn)) == 1
            loss = loss_fn()
            assert len(cuda_kernels(lambda: torch.autograd.grad(
                loss, inputs, grad_outputs=go, retain_graph=True))) == 1


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("n", [4099, 4100, 40000])
def test_cuda_one_block_and_two_launch_forms_match_cpu(n):
    """Around the one-block limit (1024 vectors of 4 float32 values per
    segment, plus a tail of up to 3) and above it (reduce + finalize): loss and
    gradients against the CPU kernel."""
    skip_unless_fused_on("cuda")
    real, fake = torch.randn(n, dtype=torch.float64), torch.randn(n + 5, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        want = L.d_loss_with_grad(real.to(dtype), fake.to(dtype), 0, 0.9, 0.0, 2)
        got = L.d_loss_with_grad(real.to(dtype).cuda(), fake.to(dtype).cuda(), 0, 0.9, 0.0, 2)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, **tol)
    forward, _ = _d_step_parts("sum", n)
    assert len(cuda_kernels(forward)) == (1 if n // 4 <= 1024 else 2)


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_replays_loss_forward_and_backward():
    """Forward and backward captured in a CUDA graph: grad_output is read on
    the device, so a new value written into it (and new logits) before a replay
    gives the new gradients."""
    skip_unless_fused_on("cuda")
    real = torch.randn(64, 1, device="cuda", requires_grad=True)
    fake = torch.randn(64, 1, device="cuda", requires_grad=True)
    go = torch.ones((), device="cuda")

    def step():
        loss = ops.d_loss(real, fake, "vanilla", 0.9)
        return (loss, *torch.autograd.grad(loss, (real, fake), grad_outputs=go))

    with gan_ext.use_backend("fused"):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, g_real, g_fake = step()
    for scale in (1.0, -0.5, 3.0):
        with torch.no_grad():
            real.copy_(torch.randn_like(real))
            fake.copy_(torch.randn_like(fake))
            go.fill_(scale)
        graph.replay()
        torch.cuda.synchronize()
        w_loss, w_real, w_fake = L.d_loss_with_grad(real.detach().cpu(), fake.detach().cpu(), 0, 0.9,
                                                    0.0, 1)
        torch.testing.assert_close(loss.cpu(), w_loss)
        torch.testing.assert_close(g_real.cpu(), w_real * scale)
        torch.testing.assert_close(g_fake.cpu(), w_fake * scale)
