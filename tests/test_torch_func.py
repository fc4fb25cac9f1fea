"""torch.func through the fused ops and layers (issue 13, section 2).

The fused ops' autograd is C++, which functorch cannot transform; under a
torch.func transform gan_ext runs the twin (plain PyTorch ops) instead, which
grad, vjp, jacrev and vmap (with PyTorch's batching rules, no per-sample
loop) all handle. Checked against ordinary autograd on the fused backend.
"""
import warnings

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vjp, vmap

import gan_ext
from gan_ext import ops
from gan_ext.nn import ActDropout, BatchNormAct2d, InstanceNormAct2d

from conftest import skip_unless_fused_on


@pytest.fixture(autouse=True)
def fused():
    skip_unless_fused_on("cpu")
    with gan_ext.use_backend("fused"):
        yield


def _autograd_grad(f, x):
    x = x.detach().requires_grad_()
    g, = torch.autograd.grad(f(x), x)
    return g


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("layer", ["batch", "instance"])
def test_grad_through_norm_act_layers(layer, train):
    torch.manual_seed(0)
    m = (BatchNormAct2d(3, activation="leaky_relu", negative_slope=0.2) if layer == "batch"
         else InstanceNormAct2d(3, affine=True, activation="relu")).double()
    if m.running_mean is not None:
        m.running_mean.uniform_(-0.2, 0.2)
    m.train(train)
    if train:
        # As for nn.BatchNorm2d: a transform cannot update captured running
        # statistics; torch's recipe turns the tracking off.
        torch.func.replace_all_batch_norm_modules_(m)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    f = lambda x: (m(x) ** 2).sum()  # noqa: E731
    want = _autograd_grad(f, x)
    m.load_state_dict(state)
    got = grad(f)(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_vjp_and_jacrev_through_ops():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    w, b = torch.rand(3, dtype=torch.float64) + 0.5, torch.randn(3, dtype=torch.float64)
    f = lambda x, w, b: ops.batch_norm_act(x, None, None, w, b, True, 0.1, 1e-5,  # noqa: E731
                                           "leaky_relu", 0.2)
    out, pull = vjp(f, x, w, b)
    v = torch.randn_like(out)
    xs = [t.clone().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(f(*xs), xs, v)
    for g, h in zip(pull(v), want):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)
    real, fake = torch.randn(5, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    jr = jacrev(lambda r: ops.d_loss(r, fake, "vanilla"))(real)
    want = _autograd_grad(lambda r: ops.d_loss(r, fake, "vanilla"), real)
    torch.testing.assert_close(jr, want, rtol=1e-10, atol=1e-12)
    for mode in ("vanilla", "lsgan", "hinge"):
        got = grad(lambda f: ops.g_loss(f, mode))(fake)
        torch.testing.assert_close(got, _autograd_grad(lambda f: ops.g_loss(f, mode), fake))
    y = torch.rand(4, 3, dtype=torch.float64)
    xb = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(grad(lambda x: ops.bce_with_logits(x, y))(xb),
                               _autograd_grad(lambda x: ops.bce_with_logits(x, y), xb))
    torch.testing.assert_close(grad(lambda x: ops.l1_loss(x, y))(xb),
                               _autograd_grad(lambda x: ops.l1_loss(x, y), xb))


def test_grad_through_random_ops_uses_the_same_noise():
    mu, lv = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)

    def f(mu):
        z, kl = ops.reparameterize_kl(mu, lv, "sum", generator=torch.Generator().manual_seed(3))
        return z.sum() + kl
    torch.testing.assert_close(grad(f)(mu), _autograd_grad(f, mu))
    x = torch.randn(6, 7, dtype=torch.float64)

    def h(x):
        g = torch.Generator().manual_seed(4)
        return (ops.act_dropout(x, "leaky_relu", 0.2, 0.5, generator=g) ** 2).sum()
    torch.testing.assert_close(grad(h)(x), _autograd_grad(h, x))


def test_functional_call_grad_over_parameters():
    """Per-parameter gradients the functorch way (as in meta-learning and the
    exact unrolled GAN), through a fused layer in eval."""
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), BatchNormAct2d(3)).double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    g = grad(lambda p: functional_call(model, p, (x,)).sum())(params)
    model.zero_grad()
    model(x).sum().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(g[k], p.grad)


def test_vmap_eval_layer_and_losses_without_a_per_sample_loop():
    torch.manual_seed(6)
    m = BatchNormAct2d(3, activation="leaky_relu", negative_slope=0.2).eval()
    m.running_mean.uniform_(-0.5, 0.5)
    xs = torch.randn(5, 2, 3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch warns when it falls back to a loop
        got = vmap(m)(xs)
        want = torch.stack([m(x) for x in xs])
        torch.testing.assert_close(got, want)
        real, fake = torch.randn(5, 8), torch.randn(5, 8)
        got = vmap(lambda r, f: ops.d_loss(r, f, "hinge"))(real, fake)
        want = torch.stack([ops.d_loss(r, f, "hinge") for r, f in zip(real, fake)])
        torch.testing.assert_close(got, want)


def test_vmap_train_mode_without_running_stats_gives_per_slice_statistics():
    torch.manual_seed(7)
    xs = torch.randn(3, 4, 2, 5, 5)
    f = lambda x: ops.batch_norm_act(x, None, None, None, None, True, 0.1, 1e-5,  # noqa: E731
                                     "relu")
    torch.testing.assert_close(vmap(f)(xs), torch.stack([f(x) for x in xs]))


def test_vmap_train_mode_with_running_stats_is_a_clear_error():
    m = BatchNormAct2d(2).train()
    with pytest.raises(ValueError, match="torch.func.vmap.*running statistics"):
        vmap(m)(torch.randn(3, 4, 2, 5, 5))


def test_vmap_act_dropout_eval():
    layer = ActDropout("leaky_relu", 0.2, p=0.5).eval()
    xs = torch.randn(4, 3, 6)
    torch.testing.assert_close(vmap(layer)(xs), torch.nn.functional.leaky_relu(xs, 0.2))


def test_the_fused_kernels_run_outside_transforms():
    """The switch is per call: outside a transform the fused op runs."""
    from gan_ext import _backend
    x = torch.randn(3)
    assert _backend.use_fused(x)
    seen = []
    grad(lambda t: seen.append(_backend.use_fused(t)) or t.sum())(x)
    assert seen == [False]


def test_train_mode_layer_under_grad_fails_as_torch_does():
    """Updating captured running statistics inside a transform is refused by
    functorch, for nn.BatchNorm2d and BatchNormAct2d alike (not silently)."""
    ours, theirs = BatchNormAct2d(3).train(), torch.nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5)
    for m in (ours, theirs):
        with pytest.raises(RuntimeError, match="mutate a captured Tensor"):
            grad(lambda x: m(x).sum())(x)
