"""gan_ext.nn layers against the torch modules they replace: BatchNormAct2d,
InstanceNormAct2d, Conv2dNormAct, ConvTranspose2dNormAct (and its eval fold)."""
from __future__ import annotations

import copy
import inspect
import io
import re

import pytest
import torch
from torch import nn

import gan_ext
from gan_ext.nn import BatchNormAct2d, Conv2dNormAct, ConvTranspose2dNormAct, InstanceNormAct2d

from conftest import ACT_IDS, ACTIVATIONS, make_input, tolerances

DTYPES = [torch.float32, torch.float64]
NORM_BIAS_KWARG = "bias" in inspect.signature(nn.BatchNorm2d.__init__).parameters


def torch_act(activation: str, negative_slope: float) -> nn.Module:
    return {"identity": nn.Identity(), "relu": nn.ReLU(),
            "leaky_relu": nn.LeakyReLU(negative_slope)}[activation]


@torch.no_grad()
def randomize_norm(norm: nn.Module) -> None:
    """Weights away from 0 with both signs, non-trivial bias and running stats."""
    C = norm.num_features
    if norm.weight is not None:
        sign = torch.where(torch.arange(C) % 3 == 1, -1.0, 1.0)
        norm.weight.copy_((torch.rand(C) + 0.5) * sign)
    if norm.bias is not None:
        norm.bias.copy_(0.5 * torch.randn(C))
    if norm.running_mean is not None:
        norm.running_mean.copy_(0.3 * torch.randn(C))
        norm.running_var.copy_(0.5 + torch.rand(C))


def _grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def assert_close(a, e, dtype=torch.float32, msg=""):
    torch.testing.assert_close(a, e, **tolerances(dtype), msg=lambda m: f"{msg}: {m}")


def assert_grads_close(ours, twin, dtype=torch.float32, msg=""):
    """Parameter gradients are sums over N*H*W terms of order 1, some of which
    cancel to ~0 (a conv bias under instance norm): absolute slack for those."""
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else tolerances(dtype)
    for (n, a), b in zip(_grads(ours).items(), _grads(twin).values()):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, n=n: f"{msg} grad {n}: {m}")


# ----------------------------------------------------------- BatchNormAct2d
BN_CONFIGS = {
    "default": {},
    "momentum-none": dict(momentum=None),
    "no-affine": dict(affine=False),
    "no-running-stats": dict(track_running_stats=False),
    "cumulative-no-affine": dict(momentum=None, affine=False),
}
if NORM_BIAS_KWARG:
    BN_CONFIGS["weight-no-bias"] = dict(bias=False)


def _run_norm_steps(ours, twin, C, dtype, device, layout, steps=3):
    """Trains both for a few steps (so the running stats and weights move), then
    compares in eval with and without grad. Returns nothing; asserts as it goes."""
    params_o, params_t = list(ours.parameters()), list(twin.parameters())
    opt_o = torch.optim.SGD(params_o, lr=0.1) if params_o else None
    opt_t = torch.optim.SGD(params_t, lr=0.1) if params_t else None
    for step in range(steps):
        x = make_input((4, C, 5, 6), dtype, device, layout, requires_grad=True,
                       offset=0.5 * step, scale=1.0 + step)
        x2 = x.detach().clone().requires_grad_()
        y, y2 = ours(x), twin(x2)
        assert_close(y, y2, dtype, f"step {step} out")
        g = torch.randn_like(y)
        y.backward(g)
        y2.backward(g)
        assert_close(x.grad, x2.grad, dtype, f"step {step} grad_input")
        assert_grads_close(ours, twin, dtype, msg=f"step {step}")
        if opt_o:
            opt_o.step(), opt_t.step(), opt_o.zero_grad(), opt_t.zero_grad()
        for (n, a), b in zip(ours.state_dict().items(), twin.state_dict().values()):
            if a.dtype == torch.long:
                assert torch.equal(a, b), n
            else:
                assert_close(a, b, dtype, f"step {step} {n}")
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours.eval(), twin.eval()
    x = make_input((3, C, 5, 6), dtype, device, layout, requires_grad=True, offset=1.0)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = ours(x), twin(x2)
    assert_close(y, y2, dtype, "eval out")
    y.sum().backward()
    y2.sum().backward()
    assert_close(x.grad, x2.grad, dtype, "eval grad_input")
    assert_grads_close(ours, twin, dtype, msg="eval")
    with torch.no_grad():
        assert_close(ours(x), twin(x), dtype, "eval no_grad out")
    for n, a in ours.state_dict().items():
        assert torch.equal(a, before[n]), f"eval changed {n}"


@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("cfg", list(BN_CONFIGS))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_norm_act_matches_torch(backend, device, dtype, layout, cfg, act, slope):
    C = 6
    kw = BN_CONFIGS[cfg]
    bn = nn.BatchNorm2d(C, **kw).to(device, dtype)
    randomize_norm(bn)
    ours = BatchNormAct2d(C, **kw, activation=act, negative_slope=slope).to(device, dtype)
    ours.load_state_dict(bn.state_dict())
    _run_norm_steps(ours, nn.Sequential(bn, torch_act(act, slope)), C, dtype, device, layout)


IN_CONFIGS = {
    "default": {},
    "affine": dict(affine=True),
    "running-stats": dict(track_running_stats=True),
    "affine-running-stats": dict(affine=True, track_running_stats=True),
    "momentum-none-running-stats": dict(momentum=None, track_running_stats=True, affine=True),
}


@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("cfg", list(IN_CONFIGS))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_instance_norm_act_matches_torch(backend, device, dtype, layout, cfg, act, slope):
    C = 6
    kw = IN_CONFIGS[cfg]
    inorm = nn.InstanceNorm2d(C, **kw).to(device, dtype)
    randomize_norm(inorm)
    ours = InstanceNormAct2d(C, **kw, activation=act, negative_slope=slope).to(device, dtype)
    ours.load_state_dict(inorm.state_dict())
    _run_norm_steps(ours, nn.Sequential(inorm, torch_act(act, slope)), C, dtype, device, layout)


def test_instance_norm_act_unbatched_input(backend, device):
    ours = InstanceNormAct2d(4, affine=True, activation="leaky_relu", negative_slope=0.2).to(device)
    twin = nn.InstanceNorm2d(4, affine=True).to(device)
    randomize_norm(twin)
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(4, 5, 6, device=device)
    y = ours(x)
    assert y.shape == (4, 5, 6)
    assert_close(y, nn.functional.leaky_relu(twin(x), 0.2))


@pytest.mark.filterwarnings("ignore:var_mean.*degrees of freedom:UserWarning")  # reference
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("shape", [(0, 4, 5, 6), (3, 4, 0, 6)], ids=["N0", "HW0"])
def test_empty_batch_in_training_keeps_running_stats(backend, device, shape, momentum):
    """An empty training batch has NaN statistics (test_norm_act_op); as in
    nn.BatchNorm2d (torch.batch_norm skips it), the running statistics stay as
    they were and only num_batches_tracked counts the call, so a later
    cumulative average is torch's too. nn.InstanceNorm2d with
    track_running_stats writes NaN into them; InstanceNormAct2d keeps them."""
    torch_bn = nn.BatchNorm2d(4, momentum=momentum).to(device)
    randomize_norm(torch_bn)
    ours = BatchNormAct2d(4, momentum=momentum, activation="relu").to(device)
    ours.load_state_dict(torch_bn.state_dict())
    inorm = InstanceNormAct2d(4, momentum=momentum, track_running_stats=True).to(device)
    randomize_norm(inorm)
    inorm_before = copy.deepcopy(inorm.state_dict())
    x = torch.empty(shape, device=device, requires_grad=True)
    for m in (torch_bn, ours, inorm):
        m.train()
        y = m(x)
        assert y.shape == shape
        y.sum().backward()
    for k, v in torch_bn.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    assert int(ours.num_batches_tracked) == 1
    for k, v in inorm_before.items():
        assert torch.equal(inorm.state_dict()[k], v), k
    # A following non-empty batch updates both alike.
    x = torch.randn(3, 4, 5, 6, device=device)
    assert_close(ours(x), torch.relu(torch_bn(x)))
    for k, v in torch_bn.state_dict().items():
        assert_close(ours.state_dict()[k], v)


# ----------------------------------------------------------------- state_dict
@pytest.mark.parametrize("kind", ["batch", "batch-no-stats", "instance", "instance-affine-stats"])
def test_state_dict_interchangeable_with_torch(kind):
    C = 5
    kw = {"batch-no-stats": dict(track_running_stats=False),
          "instance-affine-stats": dict(affine=True, track_running_stats=True)}.get(kind, {})
    torch_cls, ours_cls = ((nn.BatchNorm2d, BatchNormAct2d) if kind.startswith("batch")
                           else (nn.InstanceNorm2d, InstanceNormAct2d))
    theirs = torch_cls(C, **kw)
    randomize_norm(theirs)
    if theirs.num_batches_tracked is not None:
        theirs.num_batches_tracked.fill_(7)
    ours = ours_cls(C, **kw, activation="leaky_relu", negative_slope=0.2)
    sd = theirs.state_dict()
    assert list(ours.state_dict()) == list(sd)
    assert ours.state_dict()._metadata[""] == sd._metadata[""]  # same format version
    ours.load_state_dict(sd, strict=True)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # and back, into a fresh torch module
    randomize_norm(ours)
    back = torch_cls(C, **kw)
    back.load_state_dict(ours.state_dict(), strict=True)
    for k, v in back.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k


def test_old_checkpoint_without_num_batches_tracked_loads():
    """Inherited from _NormBase: version-1 checkpoints lack num_batches_tracked."""
    sd = nn.BatchNorm2d(3).state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1
    for m in (BatchNormAct2d(3), nn.BatchNorm2d(3)):
        m.num_batches_tracked.fill_(5)
        m.load_state_dict(sd, strict=True)  # strict: the missing key is filled in
        # torch keeps the module's own count; ours must do the same
        assert m.num_batches_tracked.item() == 5
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        sd._metadata[""]["version"] = 2
        BatchNormAct2d(3).load_state_dict(sd, strict=True)


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize("cls", [BatchNormAct2d, InstanceNormAct2d])
def test_unknown_activation_is_rejected(cls):
    with pytest.raises(ValueError, match="activation must be one of"):
        cls(4, activation="swish")
    with pytest.raises(ValueError, match="activation"):
        Conv2dNormAct(3, 4, 3, activation="gelu")
    with pytest.raises(TypeError, match="negative_slope"):
        cls(4, activation="leaky_relu", negative_slope="steep")


def test_batch_norm_act_input_checks():
    m = BatchNormAct2d(4)
    with pytest.raises(ValueError, match=re.escape("expected 4D input (got 3D input)")):
        m(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match="input has 3 channels .* num_features=4"):
        m(torch.randn(2, 3, 5, 5))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        m([[1.0]])


def test_instance_norm_act_input_checks():
    with pytest.raises(ValueError, match=re.escape("expected 3D or 4D input (got 2D input)")):
        InstanceNormAct2d(4)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="input has 3 channels .* num_features=4"):
        InstanceNormAct2d(4, affine=True)(torch.randn(2, 3, 5, 5))
    # Like torch: with nothing stored per channel, a mismatch only warns.
    x = torch.randn(2, 3, 5, 5)
    with pytest.warns(UserWarning, match="does not match num_features"):
        y = InstanceNormAct2d(4, activation="identity")(x)
    assert_close(y, nn.functional.instance_norm(x))


def test_extra_repr_shows_activation():
    assert "activation=leaky_relu, negative_slope=0.2" in repr(
        BatchNormAct2d(4, activation="leaky_relu", negative_slope=0.2))
    assert repr(InstanceNormAct2d(4)).endswith("activation=relu)")
    assert "activation=identity" in repr(BatchNormAct2d(4, activation=None))
    assert "activation=relu" in repr(Conv2dNormAct(3, 4, 3, norm=None))


# ---------------------------------------------------------------- conv blocks
KINDS = {  # name: (block class, conv kwargs)
    "conv": (Conv2dNormAct, dict(kernel_size=3, stride=1, padding=1)),
    "conv-g3-reflect": (Conv2dNormAct, dict(kernel_size=3, stride=2, padding=1, groups=3,
                                            padding_mode="reflect")),
    "convT": (ConvTranspose2dNormAct, dict(kernel_size=4, stride=2, padding=1)),
    "convT-g3": (ConvTranspose2dNormAct, dict(kernel_size=3, stride=2, padding=1, groups=3,
                                              output_padding=1, dilation=1)),
}


def make_block(kind, norm="batch", act="relu", slope=0.01, cin=6, cout=9, **kw):
    cls, conv_kw = KINDS[kind]
    block = cls(cin, cout, **conv_kw, norm=norm, activation=act, negative_slope=slope, **kw)
    if block.norm is not None:
        randomize_norm(block.norm)
    return block


def torch_twin(block) -> nn.Sequential:
    """The block as plain torch modules with the same parameters and buffers."""
    layers = [copy.deepcopy(block.conv)]
    n = block.norm
    if n is not None:
        cls = nn.BatchNorm2d if isinstance(n, BatchNormAct2d) else nn.InstanceNorm2d
        tn = cls(n.num_features, n.eps, n.momentum, n.affine, n.track_running_stats,
                 **({} if not n.affine or n.bias is not None else {"bias": False}))
        tn.load_state_dict(n.state_dict())
        layers.append(tn.to(block.conv.weight))
    layers.append(torch_act(block.activation, block.negative_slope))
    twin = nn.Sequential(*layers)
    twin.train(block.training)
    return twin


def test_conv_block_structure_and_bias_default():
    b = Conv2dNormAct(3, 8, 3)
    assert isinstance(b.conv, nn.Conv2d) and isinstance(b.norm, BatchNormAct2d)
    assert b.conv.bias is None  # batch norm's shift makes a conv bias redundant
    assert list(b.state_dict()) == ["conv.weight", "norm.weight", "norm.bias", "norm.running_mean",
                                    "norm.running_var", "norm.num_batches_tracked"]
    assert Conv2dNormAct(3, 8, 3, bias=True).conv.bias is not None
    i = ConvTranspose2dNormAct(3, 8, 4, 2, 1, norm="instance", activation="leaky_relu",
                               negative_slope=0.2)
    assert isinstance(i.conv, nn.ConvTranspose2d) and isinstance(i.norm, InstanceNormAct2d)
    assert i.conv.bias is not None and i.norm.weight is None and i.norm.running_mean is None
    assert (i.conv.stride, i.conv.padding) == ((2, 2), (1, 1))
    assert i.activation == "leaky_relu" and i.negative_slope == 0.2
    n = Conv2dNormAct(3, 8, 3, norm=None, activation="leaky_relu")
    assert n.norm is None and n.conv.bias is not None and n.activation == "leaky_relu"
    assert list(n.state_dict()) == ["conv.weight", "conv.bias"]
    # torch's positional order: Conv2d(in, out, k, stride, padding, dilation, groups, bias)
    p = Conv2dNormAct(4, 8, 3, 1, 2, 2, 2, True)
    assert (p.conv.dilation, p.conv.groups, p.conv.bias is not None) == ((2, 2), 2, True)
    t = ConvTranspose2dNormAct(4, 8, 3, 2, 1, 1, 2, True, 1)
    assert (t.conv.output_padding, t.conv.groups, t.conv.bias is not None) == ((1, 1), 2, True)
    with pytest.raises(ValueError, match="norm must be 'batch', 'instance' or None"):
        Conv2dNormAct(3, 8, 3, norm="layer")


@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("norm", ["batch", "instance", None], ids=str)
@pytest.mark.parametrize("kind", list(KINDS))
def test_conv_block_matches_torch(backend, device, kind, norm, act, slope):
    block = make_block(kind, norm, act, slope).to(device)
    twin = torch_twin(block).to(device)
    opt_b = torch.optim.SGD(block.parameters(), lr=0.05)
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.05)
    for step in range(2):
        x = make_input((3, 6, 7, 8), device=device, requires_grad=True, offset=0.3 * step)
        x2 = x.detach().clone().requires_grad_()
        y, y2 = block(x), twin(x2)
        assert_close(y, y2, msg=f"train step {step}")
        g = torch.randn_like(y)
        y.backward(g)
        y2.backward(g)
        assert_close(x.grad, x2.grad, msg="grad_input")
        assert_grads_close(block, twin, msg="train")
        opt_b.step(), opt_t.step(), opt_b.zero_grad(), opt_t.zero_grad()
    for (n, a), b in zip(block.state_dict().items(), twin.state_dict().values()):
        if a.dtype == torch.long:
            assert torch.equal(a, b), n
        else:
            assert_close(a, b, msg=n)
    # Eval is compared at identical parameters: the two training runs agree to
    # rounding per step (checked above), and SGD compounds that rounding.
    with torch.no_grad():
        for a, b in zip(block.state_dict().values(), twin.state_dict().values()):
            b.copy_(a)
    block.eval(), twin.eval()
    x = make_input((2, 6, 7, 8), device=device, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = block(x), twin(x2)  # grad enabled: unfolded, gradients reach the norm
    assert_close(y, y2, msg="eval out")
    y.sum().backward()
    y2.sum().backward()
    assert_grads_close(block, twin, msg="eval")
    with torch.no_grad():
        assert_close(block(x), twin(x), msg="eval no_grad out (folded for batch norm)")


# ----------------------------------------------------------------------- fold
@pytest.fixture
def no_norm_op(monkeypatch):
    """Makes any call of the norm op fail: proves a forward took the folded path."""
    def boom(*a, **k):
        raise AssertionError("the norm op ran although the fold should have replaced it")
    monkeypatch.setattr(gan_ext.ops, "batch_norm_act", boom)
    monkeypatch.setattr(gan_ext.ops, "instance_norm_act", boom)


def _unfolded(block, x, output_size=None):
    """Ground truth from the current parameters: conv, then the fused norm op."""
    with torch.no_grad():
        if isinstance(block, ConvTranspose2dNormAct):
            return block.norm(block.conv(x, output_size))
        return block.norm(block.conv(x))


@pytest.mark.parametrize("variant", ["plain", "conv-bias-no-affine"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act,slope", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_eval_fold_matches_unfolded(device, kind, act, slope, dtype, layout, variant):
    kw = dict(bias=True, affine=False) if variant != "plain" else {}
    block = make_block(kind, "batch", act, slope, **kw).to(device, dtype).eval()
    x = make_input((2, 6, 7, 8), dtype, device, layout)
    if layout == "channels_last":
        block = block.to(memory_format=torch.channels_last)
    want = _unfolded(block, x)
    twin = torch_twin(block).eval()
    with torch.no_grad():
        got = block(x)
    assert block._fold_cache is not None
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(got, twin(x).detach(), **tol)


@pytest.mark.usefixtures("no_norm_op")
@pytest.mark.parametrize("kind", list(KINDS))
def test_eval_fold_replaces_the_norm_op(kind):
    block = make_block(kind, "batch", "leaky_relu", 0.2).eval()
    x = torch.randn(2, 6, 7, 8)
    twin = torch_twin(block).eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), twin(x), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), twin(x), rtol=1e-5, atol=1e-5)


def test_fold_skipped_when_autograd_needs_the_parameters():
    block = make_block("convT", "batch", "relu").eval()
    x = torch.randn(2, 6, 5, 5)
    y = block(x)  # grad mode, params require grad: unfolded
    assert block._fold_cache is None
    y.sum().backward()
    assert block.norm.weight.grad is not None and block.conv.weight.grad is not None
    twin = torch_twin(block).eval()
    twin(x).sum().backward()
    assert_close(block.norm.weight.grad, twin[1].weight.grad)
    assert_close(block.conv.weight.grad, twin[0].weight.grad)


@pytest.mark.usefixtures("no_norm_op")
def test_fold_with_frozen_parameters_keeps_input_gradients():
    """GAN inversion: a frozen generator, gradients w.r.t. the latent only."""
    block = make_block("convT", "batch", "leaky_relu", 0.2).eval().requires_grad_(False)
    twin = torch_twin(block).eval()
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = block(x), twin(x2)
    assert_close(y, y2)
    y.square().sum().backward()
    y2.square().sum().backward()
    assert_close(x.grad, x2.grad)


def test_fold_made_in_inference_mode_is_not_reused_for_autograd():
    block = make_block("conv", "batch", "relu").eval().requires_grad_(False)
    x = torch.randn(2, 6, 7, 8)
    with torch.inference_mode():
        y0 = block(x)
    xg = x.clone().requires_grad_()
    y = block(xg)  # would fail saving an inference tensor for backward if reused
    y.sum().backward()
    assert_close(y.detach(), y0.clone())
    assert xg.grad is not None


def test_fold_with_instance_norm_running_stats():
    block = make_block("conv", "instance", "leaky_relu", 0.2, affine=True,
                       track_running_stats=True).eval()
    twin = torch_twin(block).eval()
    x = torch.randn(2, 6, 7, 8)
    with torch.no_grad():
        y = block(x)
    assert block._fold_cache is not None
    torch.testing.assert_close(y, twin(x).detach(), rtol=1e-5, atol=1e-5)


def test_no_fold_for_input_statistics():
    for block in (make_block("conv", "instance").eval(), make_block("conv", "batch")):
        with torch.no_grad():
            y = block(torch.randn(2, 6, 7, 8))
        assert block._fold_cache is None and y.shape == (2, 9, 7, 8)


def test_fold_respects_forward_hooks():
    block = make_block("conv", "batch", "relu").eval()
    seen = []
    block.norm.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(2, 6, 7, 8)
    with torch.no_grad():
        y = block(x)
    assert len(seen) == 1 and block._fold_cache is None
    torch.testing.assert_close(y, torch_twin(block).eval()(x))


@pytest.mark.parametrize("folded", [True, False])
def test_conv_transpose_output_size(folded):
    block = make_block("convT", "batch", "relu").eval()
    x = torch.randn(2, 6, 5, 5)
    twin = torch_twin(block).eval()
    with torch.set_grad_enabled(not folded):
        y = block(x, output_size=[11, 11])
        want = twin[2](twin[1](twin[0](x, output_size=[11, 11])))
    assert y.shape == (2, 9, 11, 11)
    assert (block._fold_cache is not None) == folded
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- stale fold
def _folded_eval_block(kind):
    block = make_block(kind, "batch", "leaky_relu", 0.2, bias=True).eval()
    x = torch.randn(2, 6, 7, 8)
    with torch.no_grad():
        y0 = block(x)
    assert block._fold_cache is not None
    return block, x, y0


def _assert_fresh(block, x, y_old, dtype=torch.float32):
    with torch.no_grad():
        y = block(x)
    want = _unfolded(block, x)
    assert not torch.allclose(y_old.to(want.dtype), want, rtol=1e-3, atol=1e-3), \
        "the change did not change the output: the test would not catch a stale fold"
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y, want, **tol)


@pytest.mark.parametrize("name", ["conv.weight", "conv.bias", "norm.weight", "norm.bias",
                                  "norm.running_mean", "norm.running_var"])
@pytest.mark.parametrize("kind", ["conv", "convT-g3"])
def test_fold_refreshes_after_in_place_update(kind, name):
    block, x, y0 = _folded_eval_block(kind)
    mod, attr = name.split(".")
    t = getattr(getattr(block, mod), attr)
    with torch.no_grad():
        t.mul_(1.5).add_(0.2 if "var" not in attr else 0.0)
    _assert_fresh(block, x, y0)


@pytest.mark.parametrize("kind", ["conv", "convT-g3"])
def test_fold_refreshes_after_load_state_dict(kind):
    block, x, y0 = _folded_eval_block(kind)
    other = make_block(kind, "batch", "leaky_relu", 0.2, bias=True)
    block.load_state_dict(other.state_dict())
    _assert_fresh(block, x, y0)


def test_fold_refreshes_after_dtype_change():
    block, x, y0 = _folded_eval_block("convT-g3")
    block.double()
    with torch.no_grad():
        y = block(x.double())
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, _unfolded(block, x.double()), rtol=1e-10, atol=1e-10)
    block.float()
    with torch.no_grad():
        torch.testing.assert_close(block(x), y0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv", "convT-g3"])
def test_fold_refreshes_after_a_train_step(kind):
    block, x, y0 = _folded_eval_block(kind)
    opt = torch.optim.Adam(block.parameters(), lr=0.1)
    block.train()
    block(torch.randn(4, 6, 7, 8) * 2 + 1).square().mean().backward()
    opt.step()
    block.eval()
    _assert_fresh(block, x, y0)


@pytest.mark.parametrize("backend_name", ["fused", "reference"])
def test_fold_refreshes_after_the_op_updates_running_stats(backend_name):
    """The op writes the running statistics in place: the fold cache must see
    it (through their version counters) although the block stayed in eval mode."""
    if backend_name == "fused" and not gan_ext._backend.extension_loaded:
        pytest.skip("gan_ext._C did not load")
    with gan_ext.use_backend(backend_name):
        block, x, y0 = _folded_eval_block("conv")
        block.norm.train()
        with torch.no_grad():
            block(torch.randn(4, 6, 7, 8) * 3 + 2)
        block.norm.eval()
        _assert_fresh(block, x, y0)


@pytest.mark.skipif(not gan_ext._backend.extension_loaded, reason="gan_ext._C did not load")
@pytest.mark.parametrize("momentum", [0.1, None], ids=str)
def test_batch_norm_act_training_forward_is_one_op(momentum):
    """Running statistics and num_batches_tracked are updated inside the op:
    a training forward dispatches gan_ext::norm_act and nothing else."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    m = BatchNormAct2d(4, momentum=momentum)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    with gan_ext.use_backend("fused"), Log() as log:
        m(x)
    # Autograd detaches the differentiable mean and invstd outputs it saves for
    # a double backward (two aten.detach, no computation); nothing else runs.
    assert [op for op in log.ops if op != "aten.detach.default"] == ["gan_ext.norm_act.default"]
    assert log.ops.count("aten.detach.default") <= 2
    assert m.num_batches_tracked.item() == 1


def test_fold_refreshes_after_parameter_replacement_and_scalar_changes():
    block, x, y0 = _folded_eval_block("conv")
    block.conv.weight = nn.Parameter(torch.randn_like(block.conv.weight))
    _assert_fresh(block, x, y0)
    with torch.no_grad():
        y1 = block(x)
    block.norm.eps = 0.5
    _assert_fresh(block, x, y1)
    with torch.no_grad():
        y2 = block(x)
    block.norm.activation = "relu"
    _assert_fresh(block, x, y2)


def test_fold_after_writes_through_data():
    """`.data` writes bypass version counters; eval()/invalidate_fold() refold."""
    block, x, y0 = _folded_eval_block("conv")
    block.conv.weight.data.mul_(2.0)
    block.eval()
    _assert_fresh(block, x, y0)
    with torch.no_grad():
        y1 = block(x)
    block.norm.running_mean.data.add_(1.0)
    block.invalidate_fold()
    _assert_fresh(block, x, y1)


def test_folded_block_pickles_and_deepcopies():
    block, x, y0 = _folded_eval_block("convT-g3")
    buf = io.BytesIO()
    torch.save(block, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    clone = copy.deepcopy(block)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y0)
        torch.testing.assert_close(clone(x), y0)
        clone.conv.weight.mul_(3.0)
    _assert_fresh(clone, x, y0)
    with torch.no_grad():
        torch.testing.assert_close(block(x), y0)  # the original is untouched
