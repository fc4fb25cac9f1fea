"""Second derivatives through every fused op (issue 13, section 1).

Gradient penalties (WGAN-GP, R1, path length) differentiate a gradient:
``torch.autograd.grad(..., create_graph=True)`` then a backward of it. The
fused ops' first-order backward runs fused kernels; with create_graph the C++
autograd takes the first derivative from the differentiable twins instead
(registered by each gan_ext/ops/<op>.py). Checked here: gradgradcheck in float64 for every op,
train and eval, batch and instance norm, every activation (leaky_relu with a
positive slope is the In-Place ABN mode, which keeps only the output), both
layouts; and the penalties through the fused DCGAN and PatchGAN
discriminators against the reference backend.
"""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import gan_ext
from gan_ext import ops
from gan_ext.models import DCGAN, DCGANConfig, NLayerDiscriminator

from conftest import skip_unless_fused_on

GG = dict(eps=1e-6, atol=1e-5, rtol=1e-4, nondet_tol=1e-10)


def _f64(*shape, scale=1.0, requires_grad=True, device="cpu"):
    return (scale * torch.randn(*shape, dtype=torch.float64, device=device)).requires_grad_(
        requires_grad)


ACTS = [("identity", 0.0), ("relu", 0.0), ("leaky_relu", 0.2), ("leaky_relu", 0.0)]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act,slope", ACTS, ids=["identity", "relu", "leaky0.2-abn", "leaky0"])
@pytest.mark.parametrize("kind", ["batch", "instance"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradgradcheck_norm_act(device, kind, train, act, slope, layout):
    skip_unless_fused_on(device)
    torch.manual_seed(0)
    x = _f64(3, 4, 3, 3, device=device)
    if layout == "channels_last":
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    w = (torch.rand(4, dtype=torch.float64, device=device) + 0.5).requires_grad_()
    b = _f64(4, scale=0.3, device=device)
    rm = torch.randn(4, dtype=torch.float64, device=device) * 0.2
    rv = torch.rand(4, dtype=torch.float64, device=device) + 0.5
    fn_op = ops.batch_norm_act if kind == "batch" else ops.instance_norm_act

    def f(x, w, b):
        if kind == "batch":
            return fn_op(x, None if train else rm, None if train else rv, w, b, train, 0.1, 1e-5,
                         act, slope)
        return fn_op(x, None if train else rm, None if train else rv, w, b, train, 0.1, 1e-5,
                     act, slope)

    with gan_ext.use_backend("fused"):
        assert gradcheck(f, (x, w, b), **GG)
        assert gradgradcheck(f, (x, w, b), **GG)


def test_gradgradcheck_norm_act_without_affine(device):
    skip_unless_fused_on(device)
    torch.manual_seed(1)
    x = _f64(2, 3, 4, 4, device=device)
    with gan_ext.use_backend("fused"):
        f = lambda x: ops.batch_norm_act(x, None, None, None, None, True, 0.1, 1e-5,  # noqa: E731
                                         "leaky_relu", 0.2)
        assert gradgradcheck(f, (x,), **GG)


D_MODES = ["vanilla", "lsgan", "hinge", "wasserstein"]
G_MODES = ["vanilla", "minimax", "lsgan", "hinge", "wasserstein"]


def _away_from(x, kinks=(-1.0, 1.0, 0.0), margin=0.05):
    x = x.detach().clone()
    for k in kinks:
        near = (x - k).abs() < margin
        x[near] = k + margin * 2
    return x.requires_grad_()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradgradcheck_losses(device, reduction):
    skip_unless_fused_on(device)
    torch.manual_seed(2)
    r, f = _away_from(_f64(5, 1, device=device)), _away_from(_f64(7, device=device))
    x, y = _f64(4, 3, device=device), torch.rand(4, 3, dtype=torch.float64, device=device)
    y.requires_grad_()
    a = _away_from(_f64(2, 5, device=device))
    t = _f64(2, 5, device=device)
    with torch.no_grad():
        t += torch.sign(t - a) * 0.1  # |a - t| away from the kink at 0
    with gan_ext.use_backend("fused"):
        for mode in D_MODES:
            assert gradgradcheck(lambda r, f: ops.d_loss(r, f, mode, reduction=reduction), (r, f),
                                 **GG), mode
        for mode in G_MODES:
            minimax = mode == "minimax"
            m = "vanilla" if minimax else mode
            assert gradgradcheck(lambda f: ops.g_loss(f, m, reduction=reduction, minimax=minimax),
                                 (f,), **GG), mode
        assert gradgradcheck(lambda x, y: ops.bce_with_logits(x, y, reduction), (x, y), **GG)
        assert gradgradcheck(lambda a, t: ops.l1_loss(a, t, reduction), (a, t), **GG)
        assert gradgradcheck(lambda a, t, x: ops.cycle_l1_loss(a, t, x, x.detach() + 0.3, 10.0,
                                                               5.0, reduction), (a, t, x), **GG)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradgradcheck_reparameterize(device, reduction):
    skip_unless_fused_on(device)
    torch.manual_seed(3)
    mu, lv = _f64(4, 6, device=device), _f64(4, 6, scale=0.5, device=device)

    def gen():  # the same noise on every call gradgradcheck makes
        return torch.Generator(device=device).manual_seed(7)

    with gan_ext.use_backend("fused"):
        def f(mu, lv):
            z, kl = ops.reparameterize_kl(mu, lv, reduction, generator=gen())
            return z, kl
        assert gradgradcheck(f, (mu, lv), **GG)
        assert gradgradcheck(lambda mu, lv: ops.reparameterize(mu, lv, generator=gen()),
                             (mu, lv), **GG)


@pytest.mark.parametrize("p", [0.0, 0.4])
@pytest.mark.parametrize("act,slope", ACTS[:3], ids=["identity", "relu", "leaky0.2"])
def test_gradgradcheck_act_dropout(device, act, slope, p):
    skip_unless_fused_on(device)
    torch.manual_seed(4)
    x = _away_from(_f64(5, 7, device=device), kinks=(0.0,))

    def f(x):
        g = torch.Generator(device=device).manual_seed(11)
        return ops.act_dropout(x, act, slope, p, training=True, generator=g)

    with gan_ext.use_backend("fused"):
        assert gradgradcheck(f, (x,), **GG)


def test_act_dropout_double_backward_in_eval(device):
    """In eval ActDropout is its activation alone: its double backward works
    (it raised before)."""
    skip_unless_fused_on(device)
    layer = gan_ext.nn.ActDropout("leaky_relu", 0.2, p=0.3).double().eval()
    x = _away_from(_f64(6, 5, device=device), kinks=(0.0,))
    with gan_ext.use_backend("fused"):
        assert gradgradcheck(layer, (x,), **GG)


# ------------------------------------------------------ penalties on models
def _penalty_grads(D, x, kind):
    """Parameter gradients of a WGAN-GP or R1 penalty through D."""
    D.zero_grad(set_to_none=True)
    out = D(x)
    g, = torch.autograd.grad(out.sum(), x, create_graph=True)
    if kind == "wgan-gp":
        penalty = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    else:  # R1
        penalty = g.pow(2).flatten(1).sum(1).mean()
    penalty.backward()
    return {n: p.grad.detach().clone() if p.grad is not None else None
            for n, p in D.named_parameters()}


def _interpolate(shape, seed):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(*shape, generator=g, dtype=torch.float64)
    fake = torch.randn(*shape, generator=g, dtype=torch.float64)
    t = torch.rand(shape[0], 1, 1, 1, generator=g, dtype=torch.float64)
    return (t * real + (1 - t) * fake).requires_grad_()


@pytest.mark.parametrize("kind", ["wgan-gp", "r1"])
@pytest.mark.parametrize("model", ["dcgan", "patchgan"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_penalty_through_fused_discriminator_matches_reference(model, kind, layout):
    skip_unless_fused_on("cpu")
    torch.manual_seed(5)
    if model == "dcgan":
        D = DCGAN(DCGANConfig(nc=1, image_size=32, ndf=8, ngf=8)).D.double()
        x = _interpolate((6, 1, 32, 32), 0)
    else:
        D = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2, norm="instance").double()
        x = _interpolate((2, 3, 32, 32), 1)
    D.train()
    if layout == "channels_last":
        D = D.to(memory_format=torch.channels_last)
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    state = {k: v.clone() for k, v in D.state_dict().items()}
    with gan_ext.use_backend("reference"):
        want = _penalty_grads(D, x, kind)
    D.load_state_dict(state)  # the same running statistics before the second run
    with gan_ext.use_backend("fused"):
        got = _penalty_grads(D, x, kind)
    assert want.keys() == got.keys()
    # A parameter the penalty does not depend on (the last conv's bias) has
    # no gradient in either; every other one has one in both.
    assert {n for n in want if want[n] is None} == {n for n in got if got[n] is None}
    want = {n: g for n, g in want.items() if g is not None}
    assert len(want) >= 4
    flat_w = torch.cat([want[n].flatten() for n in want])
    flat_g = torch.cat([got[n].flatten() for n in want])
    scale = flat_w.norm()
    assert scale > 0
    err = (flat_g - flat_w).norm() / scale
    assert err <= 1e-6, f"relative error over all parameter gradients {err:.3g}"
    for name in want:  # each tensor too; a gradient that is 0 in exact arithmetic
        diff = (got[name] - want[name]).norm()  # (a BN bias before a kink) is rounding noise
        assert diff <= 1e-6 * want[name].norm() + 1e-12 * scale, f"{name}: {diff:.3g}"


def test_penalty_matches_plain_pytorch_layers():
    """An independent oracle: fused BatchNormAct2d vs nn.BatchNorm2d +
    LeakyReLU (In-Place ABN mode), the R1 penalty's parameter gradients."""
    skip_unless_fused_on("cpu")
    torch.manual_seed(6)
    fused = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), gan_ext.nn.BatchNormAct2d(
        4, activation="leaky_relu", negative_slope=0.2), torch.nn.Conv2d(4, 1, 3)).double()
    plain = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(4, 1, 3)).double()
    with torch.no_grad():
        for (_, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
            b.copy_(a)
    x = _interpolate((5, 2, 9, 9), 2)
    with gan_ext.use_backend("fused"):
        got = _penalty_grads(fused, x, "r1")
    want = _penalty_grads(plain, x, "r1")
    for (n, g), w in zip(got.items(), want.values()):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9, msg=lambda m: f"{n}: {m}")


def test_first_order_backward_does_not_take_the_twin(monkeypatch):
    """The fast path: without create_graph the twins never run."""
    skip_unless_fused_on("cpu")
    import gan_ext.ops._norm_act_backward as mod  # the twin op looks the twin up there per call
    called = []
    real = mod.norm_act_backward_with_stats
    monkeypatch.setattr(mod, "norm_act_backward_with_stats",
                        lambda *a, **k: called.append(1) or real(*a, **k))
    layer = gan_ext.nn.BatchNormAct2d(3, activation="leaky_relu", negative_slope=0.2)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    with gan_ext.use_backend("fused"):
        layer(x).sum().backward()
    assert not called and x.grad is not None


def test_readme_r1_example_runs():
    """The R1 step the README shows runs as written (a smaller batch)."""
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        text = f.read()
    code = re.search(r"An R1 step.*?```python\n(.*?)```", text, re.S).group(1)
    code = code.replace("torch.rand(64,", "torch.rand(4,").replace("torch.randn(64,", "torch.randn(4,")
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert torch.isfinite(scope["loss"]) and scope["r1"].item() > 0
    assert all(p.grad is not None for p in scope["gan"].D.parameters())
