"""gan_ext.fuse on existing models: the PyTorch-examples DCGAN generator and
discriminator, and the edge cases of the pattern match."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gan_ext
from gan_ext.nn import BatchNormAct2d, InstanceNormAct2d


# The DCGAN of pytorch/examples (dcgan/main.py), with small widths so the test is fast.
class Generator(nn.Module):
    def __init__(self, nz=16, ngf=8, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # (B, 8ngf, 4, 4)
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # (B, 4ngf, 8, 8)
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # (B, 2ngf, 16, 16)
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # (B, ngf, 32, 32)
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # (B, nc, 64, 64)
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self, nc=3, ndf=8):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),  # (B, ndf, 32, 32)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # (B, 2ndf, 16, 16)
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # (B, 4ndf, 8, 8)
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),  # (B, 8ndf, 4, 4)
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # (B, 1, 1, 1)
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m):
    """As in the example, plus random running stats so eval mode is not trivial."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.normal_(m.bias.data, 0.0, 0.1)
        m.running_mean.data.normal_(0.0, 0.1)
        m.running_var.data.uniform_(0.5, 1.5)


def _inputs(kind, batch=4, device="cpu"):
    shape = (batch, 16, 1, 1) if kind == "G" else (batch, 3, 64, 64)
    return torch.randn(shape).to(device)


def _build(kind):
    model = Generator() if kind == "G" else Discriminator()
    model.apply(weights_init)
    return model


N_FUSED = {"G": 4, "D": 3}


def _assert_all_close(a, b, what, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _assert_grads_close(model, original, what, floor=1e-7):
    """Conv weight gradients sum many terms that partly cancel: the absolute
    slack scales with the largest gradient of the tensor."""
    for (n, p), p_ref in zip(model.named_parameters(), original.parameters()):
        scale = p_ref.grad.abs().max().item()
        _assert_all_close(p.grad, p_ref.grad, f"{what} grad {n}", atol=1e-3 * scale + floor)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kind", ["G", "D"])
def test_fuse_dcgan_matches_original(backend, device, kind, mode):
    model = _build(kind).to(device)
    original = copy.deepcopy(model)
    bn_params = {id(p) for m in model.modules() if type(m) is nn.BatchNorm2d
                 for p in (m.weight, m.bias, m.running_mean, m.running_var, m.num_batches_tracked)}
    # SGD, not Adam: Adam's first step is lr * sign(g) and turns rounding noise
    # in a near-zero gradient into a full-size difference.
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_ref = torch.optim.SGD(original.parameters(), lr=0.05, momentum=0.9)
    keys = list(model.state_dict())

    fused = gan_ext.fuse(model)

    assert fused is model  # in place
    assert list(fused.state_dict()) == keys
    assert sum(isinstance(m, BatchNormAct2d) for m in fused.modules()) == N_FUSED[kind]
    unfused = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU)
    left = [i for i, m in enumerate(fused.main) if type(m) in unfused]
    assert left == ([] if kind == "G" else [1])  # D's first LeakyReLU follows a conv
    fused_tensors = {id(t) for m in fused.modules() if isinstance(m, BatchNormAct2d)
                     for t in (m.weight, m.bias, m.running_mean, m.running_var,
                               m.num_batches_tracked)}
    assert fused_tensors == bn_params  # the same objects, not copies
    assert [id(p) for g in opt.param_groups for p in g["params"]] == \
        [id(p) for p in fused.parameters()]

    fused.train(mode == "train"), original.train(mode == "train")
    for step in range(2):  # the second step runs on weights the optimizers updated
        x = _inputs(kind, device=device)
        y, y_ref = fused(x), original(x.clone())
        _assert_all_close(y, y_ref, f"step {step} output")
        y.square().mean().backward()
        y_ref.square().mean().backward()
        _assert_grads_close(fused, original, f"step {step}")
        opt.step(), opt_ref.step(), opt.zero_grad(), opt_ref.zero_grad()
        for (n, t), t_ref in zip(fused.state_dict().items(), original.state_dict().values()):
            _assert_all_close(t, t_ref, f"step {step} {n}", atol=1e-6)


def test_fuse_dcgan_in_no_grad_sampling():
    model = _build("G").eval()
    original = copy.deepcopy(model)
    gan_ext.fuse(model)
    z = _inputs("G", 8)
    with torch.no_grad():
        _assert_all_close(model(z), original(z), "sample")


def test_fused_state_dict_loads_into_original_and_back():
    fused = gan_ext.fuse(_build("D"))
    plain = Discriminator()
    plain.load_state_dict(fused.state_dict(), strict=True)
    again = gan_ext.fuse(Discriminator())
    again.load_state_dict(plain.state_dict(), strict=True)
    x = _inputs("D")
    fused.eval(), plain.eval(), again.eval()
    with torch.no_grad():
        _assert_all_close(again(x), plain(x), "reloaded")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fuse_instance_norm_with_affine_and_running_stats(backend, device, mode):
    def build():
        return nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.InstanceNorm2d(6, affine=True, track_running_stats=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.InstanceNorm2d(6),  # CycleGAN's default: no affine, no running stats
            nn.ReLU(True),
        )
    model = build()
    with torch.no_grad():
        m = model[1]
        m.weight.uniform_(0.5, 1.5), m.bias.normal_()
        m.running_mean.normal_(), m.running_var.uniform_(0.5, 1.5)
    model = model.to(device)
    original = copy.deepcopy(model)
    gan_ext.fuse(model)
    assert isinstance(model[1], InstanceNormAct2d) and isinstance(model[4], InstanceNormAct2d)
    assert (model[1].activation, model[1].negative_slope, model[4].activation) == \
        ("leaky_relu", 0.2, "relu")
    assert model[1].affine and model[1].track_running_stats and not model[4].affine
    model.train(mode == "train"), original.train(mode == "train")
    x = torch.randn(2, 3, 8, 8, device=device)
    y, y_ref = model(x), original(x)
    _assert_all_close(y, y_ref, "output")
    y.sum().backward()
    y_ref.sum().backward()
    # the conv biases feed instance norms, which cancel them: their true
    # gradient is 0 and both sides hold rounding noise of the 64-pixel sums
    _assert_grads_close(model, original, mode, floor=1e-4)
    for (n, t), t_ref in zip(model.state_dict().items(), original.state_dict().values()):
        _assert_all_close(t, t_ref, n)


def test_fuse_keeps_hyper_parameters():
    bn = nn.BatchNorm2d(5, eps=1e-3, momentum=None, affine=False, track_running_stats=True)
    model = gan_ext.fuse(nn.Sequential(bn.eval(), nn.LeakyReLU(0.1)))
    f = model[0]
    assert type(f) is BatchNormAct2d and isinstance(model[1], nn.Identity)
    assert (f.num_features, f.eps, f.momentum, f.affine, f.track_running_stats) == \
        (5, 1e-3, None, False, True)
    assert (f.activation, f.negative_slope, f.training) == ("leaky_relu", 0.1, False)
    assert f.running_mean is bn.running_mean


def test_fuse_walks_nested_containers():
    inner = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())
    in_act = nn.Sequential(nn.InstanceNorm2d(4), nn.LeakyReLU())
    model = nn.ModuleDict({"a": nn.Sequential(nn.Conv2d(4, 4, 1), inner),
                           "b": nn.ModuleList([in_act])})
    gan_ext.fuse(model)
    assert isinstance(model["a"][1][0], BatchNormAct2d)
    assert isinstance(model["b"][0][0], InstanceNormAct2d)


def test_fuse_leaves_non_matching_pairs_alone():
    class MyBN(nn.BatchNorm2d):
        pass

    hooked = nn.BatchNorm2d(4)
    hooked.register_forward_hook(lambda m, i, o: None)
    model = nn.Sequential(
        nn.BatchNorm2d(4), nn.Tanh(),              # activation not fusable
        MyBN(4), nn.ReLU(),                        # subclass: may mean something else
        nn.SyncBatchNorm(4), nn.ReLU(),            # subclass
        hooked, nn.ReLU(),                         # a hook would see different values
        nn.ReLU(), nn.BatchNorm2d(4),              # wrong order; last element
    )
    before = [type(m) for m in model]
    gan_ext.fuse(model)
    assert [type(m) for m in model] == before
    # a norm outside any Sequential (called from a custom forward) is left alone too
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.act = nn.BatchNorm2d(4), nn.ReLU()
    b = gan_ext.fuse(Block())
    assert type(b.bn) is nn.BatchNorm2d and type(b.act) is nn.ReLU


def test_fuse_is_idempotent_and_checks_its_argument():
    model = gan_ext.fuse(_build("G"))
    once = [type(m) for m in model.modules()]
    gan_ext.fuse(model)
    assert [type(m) for m in model.modules()] == once
    assert gan_ext.nn.fuse is gan_ext.fuse
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        gan_ext.fuse(lambda x: x)
