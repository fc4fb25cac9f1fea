"""CycleGAN and pix2pix: state_dicts of the official junyanz/pytorch-CycleGAN-and-pix2pix
networks (keys, shapes, parameter counts, old checkpoints), shapes, fused vs plain
vs reference parity, one training step against a plain-PyTorch transcription of
the official optimize_parameters, the image pool, the LR schedule, bad input."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gan_ext
from gan_ext.models._common import num_parameters
from gan_ext.models.cyclegan import CycleGAN, CycleGANConfig
from gan_ext.models.image_pool import ImagePool
from gan_ext.models.networks import NLayerDiscriminator, ResnetGenerator, UnetGenerator
from gan_ext.models.official import load_official_state_dict
from gan_ext.models.pix2pix import Pix2Pix, Pix2PixConfig
from gan_ext.models.schedule import LinearDecay
from gan_ext.nn import BatchNormAct2d, InstanceNormAct2d

from conftest import requires_fused

# ------------------------------------------------------------ official data
# resnet_9blocks (ngf=64, instance norm): every conv has a bias, the norms have
# no state. ConvTranspose2d weights are (C_in, C_out, k, k).
RESNET_9BLOCKS_STATE = (
    [("model.1.weight", (64, 3, 7, 7)), ("model.1.bias", (64,)),
     ("model.4.weight", (128, 64, 3, 3)), ("model.4.bias", (128,)),
     ("model.7.weight", (256, 128, 3, 3)), ("model.7.bias", (256,))]
    + [(f"model.{i}.conv_block.{j}.{p}", (256, 256, 3, 3) if p == "weight" else (256,))
       for i in range(10, 19) for j in (1, 5) for p in ("weight", "bias")]
    + [("model.19.weight", (256, 128, 3, 3)), ("model.19.bias", (128,)),
       ("model.22.weight", (128, 64, 3, 3)), ("model.22.bias", (64,)),
       ("model.26.weight", (3, 64, 7, 7)), ("model.26.bias", (3,))])
RESNET_9BLOCKS_PARAMS = 11_378_179
RESNET_6BLOCKS_PARAMS = 7_837_699
# Instance norms of resnet_9blocks: what a pre-0.4 checkpoint has stats for.
RESNET_9BLOCKS_NORMS = (["model.2", "model.5", "model.8", "model.20", "model.23"]
                        + [f"model.{i}.conv_block.{j}" for i in range(10, 19) for j in (2, 6)])

# basic PatchGAN (n_layers=3, ndf=64, instance norm).
PATCHGAN_STATE = [
    ("model.0.weight", (64, 3, 4, 4)), ("model.0.bias", (64,)),
    ("model.2.weight", (128, 64, 4, 4)), ("model.2.bias", (128,)),
    ("model.5.weight", (256, 128, 4, 4)), ("model.5.bias", (256,)),
    ("model.8.weight", (512, 256, 4, 4)), ("model.8.bias", (512,)),
    ("model.11.weight", (1, 512, 4, 4)), ("model.11.bias", (1,)),
]
PATCHGAN_PARAMS = 2_764_737
PATCHGAN6_BATCH_PARAMS = 2_768_705  # pix2pix: input_nc=6, batch norm
UNET_256_PARAMS = 54_413_955         # pix2pix unet_256, batch norm
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def unet_official_keys(num_downs: int = 8) -> list:
    """Keys of the official UnetGenerator with batch norm, spelled out from its
    nesting: a middle block's Sequential is (lrelu, downconv, downnorm,
    submodule, relu, upconv, upnorm), the innermost's (lrelu, downconv, relu,
    upconv, upnorm); keys come in module order, so the submodule's sit between."""
    def block(p: str, level: int) -> list:
        if level == num_downs - 1:
            return [p + "1.weight", p + "3.weight"] + [p + "4." + k for k in BN_KEYS]
        return ([p + "1.weight"] + [p + "2." + k for k in BN_KEYS]
                + block(p + "3.model.", level + 1)
                + [p + "5.weight"] + [p + "6." + k for k in BN_KEYS])

    return (["model.model.0.weight"] + block("model.model.1.model.", 1)
            + ["model.model.3.weight", "model.model.3.bias"])


def structure(m: nn.Module) -> list:
    return [(name, type(mod)) for name, mod in m.named_modules()]


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, what: str = "") -> None:
    """Max error relative to the larger tensor's scale (sums over big convs)."""
    scale = max(1.0, b.detach().abs().max().item())
    err = (a.detach() - b.detach()).abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def plain_copy(fused_model: nn.Module, **kw) -> nn.Module:
    """The fused=False twin of a model, holding the same weights."""
    plain = type(fused_model)(**kw, fused=False)
    plain.load_state_dict(fused_model.state_dict(), strict=True)
    return plain


# --------------------------------------------------------------- state_dicts
def test_resnet_9blocks_matches_official_state_dict():
    with torch.device("meta"):
        G = ResnetGenerator()
    assert [(k, tuple(v.shape)) for k, v in G.state_dict().items()] == RESNET_9BLOCKS_STATE
    assert len(RESNET_9BLOCKS_STATE) == 48
    assert num_parameters(G) == RESNET_9BLOCKS_PARAMS
    assert isinstance(G.model[2], InstanceNormAct2d) and isinstance(G.model[3], nn.Identity)
    assert isinstance(G.model[27], nn.Tanh)


def test_resnet_6blocks_and_batch_norm_keys():
    with torch.device("meta"):
        G6 = ResnetGenerator(n_blocks=6)
        Gb = ResnetGenerator(norm="batch")
    assert num_parameters(G6) == RESNET_6BLOCKS_PARAMS
    assert [k for k in G6.state_dict() if "conv_block" not in k] == [
        f"model.{i}.{p}" for i in (1, 4, 7, 16, 19, 23) for p in ("weight", "bias")]
    # Batch norm: no bias on convs feeding a norm (official use_bias), norm state present.
    sd = Gb.state_dict()
    assert "model.1.bias" not in sd and "model.10.conv_block.5.bias" not in sd
    assert "model.26.bias" in sd and all(f"model.2.{k}" in sd for k in BN_KEYS)
    assert all(f"model.10.conv_block.6.{k}" in sd for k in BN_KEYS)


def test_resnet_dropout_moves_second_conv():
    G = ResnetGenerator(ngf=4, n_blocks=1, use_dropout=True)
    block = G.model[10].conv_block
    assert isinstance(block[4], nn.Dropout) and isinstance(block[6], nn.Conv2d)


def test_patchgan_matches_official_state_dict():
    with torch.device("meta"):
        D = NLayerDiscriminator()
        D6 = NLayerDiscriminator(6, norm="batch")
    assert [(k, tuple(v.shape)) for k, v in D.state_dict().items()] == PATCHGAN_STATE
    assert num_parameters(D) == PATCHGAN_PARAMS
    assert num_parameters(D6) == PATCHGAN6_BATCH_PARAMS
    assert list(D6.state_dict()) == (
        ["model.0.weight", "model.0.bias", "model.2.weight"] + [f"model.3.{k}" for k in BN_KEYS]
        + ["model.5.weight"] + [f"model.6.{k}" for k in BN_KEYS]
        + ["model.8.weight"] + [f"model.9.{k}" for k in BN_KEYS]
        + ["model.11.weight", "model.11.bias"])
    assert type(D.model[1]) is nn.LeakyReLU  # no norm before it
    assert isinstance(D6.model[3], BatchNormAct2d) and D6.model[3].negative_slope == 0.2


def test_patchgan_70x70_output_is_30x30():
    D = NLayerDiscriminator(ndf=16)
    with torch.no_grad():
        assert D(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_unet_256_matches_official_state_dict():
    with torch.device("meta"):
        G = UnetGenerator()
    sd = G.state_dict()
    assert list(sd) == unet_official_keys(8)
    assert num_parameters(G) == UNET_256_PARAMS
    inner = "model.model.1.model." + "3.model." * 6  # level 7, the innermost
    assert sd["model.model.0.weight"].shape == (64, 3, 4, 4)
    assert sd["model.model.3.weight"].shape == (128, 3, 4, 4)  # outermost upconv: (2ngf, out)
    assert sd[inner + "1.weight"].shape == (512, 512, 4, 4)
    assert sd["model.model.1.model.5.weight"].shape == (256, 64, 4, 4)
    with torch.device("meta"):
        assert list(UnetGenerator(num_downs=7).state_dict()) == unet_official_keys(7)


# --------------------------------------------------------- official checkpoints
@pytest.fixture(scope="module")
def resnet_state():
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) for k, s in RESNET_9BLOCKS_STATE}


def old_style(state: dict, norms) -> dict:
    """As saved by torch < 0.4: running stats for every InstanceNorm."""
    old = dict(state)
    for n in norms:
        c = 256 if ".conv_block." in n or n == "model.8" else (64 if n in ("model.2", "model.23")
                                                              else 128)
        old.update({f"{n}.running_mean": torch.zeros(c), f"{n}.running_var": torch.ones(c),
                    f"{n}.num_batches_tracked": torch.tensor(0)})
    return old


def test_strict_load_of_official_keys(resnet_state):
    G = ResnetGenerator()
    assert G.load_state_dict(resnet_state, strict=True)
    assert torch.equal(G.model[26].weight, resnet_state["model.26.weight"])


@pytest.mark.parametrize("metadata", [False, True], ids=["no_metadata", "metadata"])
def test_strict_load_of_pre_0_4_checkpoint(resnet_state, tmp_path, metadata):
    old = old_style(resnet_state, RESNET_9BLOCKS_NORMS)
    assert len(old) == 48 + 3 * 23
    if metadata:  # a newer file: InstanceNorm version 1 in the metadata
        old = type(ResnetGenerator(ngf=4).state_dict())(old)
        old._metadata = {"model.2": {"version": 1}}
    torch.save(old, tmp_path / "latest_net_G.pth")
    G = ResnetGenerator()
    G.load_state_dict(torch.load(tmp_path / "latest_net_G.pth"), strict=True)
    assert torch.equal(G.model[1].bias, resnet_state["model.1.bias"])
    # And through the helper, from a DataParallel checkpoint.
    torch.save({"module." + k: v for k, v in old.items()}, tmp_path / "dp.pth")
    G2 = ResnetGenerator(fused=False)
    load_official_state_dict(G2, tmp_path / "dp.pth")
    assert torch.equal(G2.model[4].weight, resnet_state["model.4.weight"])


@pytest.mark.parametrize("extra", ["model.3.running_mean", "model.1.running_var", "model.2.foo",
                                   "model.2.running_mean.x", "foo"])
def test_unrelated_unexpected_keys_still_fail(resnet_state, extra):
    G = ResnetGenerator()
    bad = dict(resnet_state, **{extra: torch.zeros(64)})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        G.load_state_dict(bad, strict=True)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_official_state_dict(G, bad)


def test_missing_key_still_fails(resnet_state):
    bad = dict(resnet_state)
    del bad["model.7.bias"]
    with pytest.raises(RuntimeError, match="Missing key"):
        ResnetGenerator().load_state_dict(bad, strict=True)


def test_old_checkpoint_loads_into_discriminator_and_cyclegan():
    D = NLayerDiscriminator(ndf=8)
    old = old_style(D.state_dict(), [])
    for n, c in (("model.3", 16), ("model.6", 32), ("model.9", 64)):
        old.update({f"{n}.running_mean": torch.zeros(c), f"{n}.running_var": torch.ones(c),
                    f"{n}.num_batches_tracked": torch.tensor(0)})
    NLayerDiscriminator(ndf=8, fused=False).load_state_dict(old, strict=True)
    # Nested in CycleGAN, the hook sees the prefix.
    model = CycleGAN(CycleGANConfig(ngf=4, ndf=8, n_blocks=1))
    full = dict(model.state_dict())
    full.update({"D_A." + k: v for k, v in old.items()})
    model.load_state_dict(full, strict=True)


def test_instance_norm_with_running_stats_keeps_them():
    # A module that does track stats must not lose its keys to the hook.
    class Tracked(ResnetGenerator):
        def __init__(self):
            super().__init__(ngf=4, n_blocks=0, fused=False)
            self.model[2] = nn.InstanceNorm2d(4, track_running_stats=True)
    G = Tracked()
    sd = G.state_dict()
    assert "model.2.running_mean" in sd
    G.load_state_dict(sd, strict=True)
    del sd["model.2.running_mean"]
    with pytest.raises(RuntimeError, match="Missing key"):
        G.load_state_dict(sd, strict=True)


def test_load_official_state_dict_bad_input():
    with pytest.raises(TypeError, match="module"):
        load_official_state_dict("G", {})
    with pytest.raises(TypeError, match="path_or_state_dict"):
        load_official_state_dict(ResnetGenerator(ngf=4, n_blocks=0), [1, 2])


# -------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size,n_blocks", [(64, 2), (128, 6)])
def test_resnet_generator_shapes(size, n_blocks):
    G = ResnetGenerator(3, 1, ngf=4, n_blocks=n_blocks)
    with torch.no_grad():
        y = G(torch.randn(2, 3, size, size))
    assert y.shape == (2, 1, size, size) and y.abs().max() <= 1


@pytest.mark.parametrize("padding_type", ["reflect", "replicate", "zero"])
def test_resnet_padding_types(padding_type):
    G = ResnetGenerator(ngf=4, n_blocks=1, padding_type=padding_type)
    with torch.no_grad():
        assert G(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("num_downs,size", [(8, 256), (7, 128), (5, 64)])
def test_unet_shapes(num_downs, size):
    G = UnetGenerator(3, 2, num_downs=num_downs, ngf=4)
    with torch.no_grad():
        y = G(torch.randn(2, 3, size, size))
    assert y.shape == (2, 2, size, size) and y.abs().max() <= 1


# ------------------------------------------------------- fused vs plain nets
RESNET_VARIANTS = [dict(norm="instance"), dict(norm="batch"), dict(norm="none"),
                   dict(norm="instance", use_dropout=True), dict(padding_type="zero")]
PATCHGAN_VARIANTS = [dict(norm="instance"), dict(norm="batch"), dict(norm="none"),
                     dict(n_layers=1), dict(n_layers=0), dict(n_layers=5)]


@pytest.mark.parametrize("kw", RESNET_VARIANTS, ids=str)
def test_fuse_of_plain_resnet_is_the_fused_resnet(kw):
    fused = ResnetGenerator(ngf=4, n_blocks=2, **kw)
    plain = ResnetGenerator(ngf=4, n_blocks=2, fused=False, **kw)
    assert structure(plain) != structure(fused) or kw["norm"] == "none"
    assert list(plain.state_dict()) == list(fused.state_dict())
    assert structure(gan_ext.fuse(plain)) == structure(fused)


@pytest.mark.parametrize("kw", PATCHGAN_VARIANTS, ids=str)
def test_fuse_of_plain_patchgan_is_the_fused_patchgan(kw):
    fused = NLayerDiscriminator(ndf=4, **kw)
    plain = NLayerDiscriminator(ndf=4, fused=False, **kw)
    assert list(plain.state_dict()) == list(fused.state_dict())
    assert structure(gan_ext.fuse(plain)) == structure(fused)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_unet_fused_has_official_keys_and_plain_is_official(norm):
    fused = UnetGenerator(num_downs=6, ngf=4, norm=norm)
    plain = UnetGenerator(num_downs=6, ngf=4, norm=norm, fused=False)
    assert list(fused.state_dict()) == list(plain.state_dict())
    # The plain net is the official one: no fused norm, LeakyReLU first in every inner block.
    assert not any(isinstance(m, (BatchNormAct2d, InstanceNormAct2d)) for m in plain.modules())
    inner = plain.model.model[1]
    while True:
        assert type(inner.model[0]) is nn.LeakyReLU
        if len(inner.model) == 5:
            break
        inner = inner.model[3]
    # fuse() cannot see these pairs (they span two Sequentials): the net fuses them itself.
    assert structure(gan_ext.fuse(copy.deepcopy(plain))) == structure(plain)
    n_fused = sum(isinstance(m, (BatchNormAct2d, InstanceNormAct2d)) for m in fused.modules())
    assert n_fused == (0 if norm == "none" else 4)  # the down-norms of the 4 middle levels
    if norm != "none":
        assert type(fused.model.model[1].model[0]) is nn.LeakyReLU  # after a bare conv
        assert type(fused.model.model[1].model[3].model[0]) is nn.Identity


def _forward_backward(model, x, seed=7):
    """In float64: biases feeding an instance norm get gradients that are zero
    up to rounding, which float32 would compare as noise."""
    model.double()
    x = x.detach().double().requires_grad_()
    torch.manual_seed(seed)  # same dropout masks
    y = model(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y, x.grad, [p.grad for p in model.parameters()]


def assert_same_run(a, b, rtol=1e-9):
    (ya, gxa, gpa), (yb, gxb, gpb) = a, b
    assert_close(ya, yb, rtol, "output")
    assert_close(gxa, gxb, rtol, "input grad")
    for i, (ga, gb) in enumerate(zip(gpa, gpb)):
        assert_close(ga, gb, rtol, f"param grad {i}")


def _models(kind, norm, fused):
    if kind == "resnet":
        return ResnetGenerator(ngf=4, n_blocks=2, norm=norm, use_dropout=True, fused=fused), 32
    if kind == "patchgan":
        return NLayerDiscriminator(ndf=4, norm=norm, fused=fused), 64
    return UnetGenerator(num_downs=6, ngf=4, norm=norm, fused=fused), 64


MODEL_CASES = [(k, n) for k in ("resnet", "patchgan", "unet") for n in ("instance", "batch")]


@pytest.mark.parametrize("kind,norm", MODEL_CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_net_equals_plain_net(kind, norm, training):
    fused, size = _models(kind, norm, True)
    plain, _ = _models(kind, norm, False)
    plain.load_state_dict(fused.state_dict(), strict=True)
    fused.train(training)
    plain.train(training)
    x = torch.randn(2, 3, size, size)
    assert_same_run(_forward_backward(fused, x), _forward_backward(plain, x))
    if norm == "batch" and training:  # running statistics updated alike
        for (k, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
            assert_close(a.double(), b.double(), 1e-9, k)


@requires_fused
@pytest.mark.parametrize("kind,norm", MODEL_CASES)
def test_fused_backend_equals_reference_backend(kind, norm):
    model, size = _models(kind, norm, True)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, size, size)
    with gan_ext.use_backend("fused"):
        got = _forward_backward(model, x)
    with gan_ext.use_backend("reference"):
        want = _forward_backward(twin, x)
    assert_same_run(got, want)


# ------------------------------------------------------------------ training
class SpyOptimizer(torch.optim.SGD):
    """SGD that records, at each step, whether the watched modules had trainable
    parameters."""

    def __init__(self, params, watched, lr=0.1):
        super().__init__(params, lr=lr)
        self.watched, self.seen = watched, []

    def step(self, closure=None):
        self.seen.append(any(p.requires_grad for m in self.watched for p in m.parameters()))
        return super().step(closure)


def official_cyclegan_step(m: CycleGAN, real_A, real_B, opt_G, opt_D) -> dict:
    """The official cycle_gan_model.optimize_parameters in plain PyTorch
    (nn.MSELoss for lsgan, nn.L1Loss), with pool_size=0."""
    cfg = m.config
    mse = lambda pred, target: F.mse_loss(pred, torch.full_like(pred, target))  # noqa: E731
    fake_B = m.G_A(real_A)
    rec_A = m.G_B(fake_B)
    fake_A = m.G_B(real_B)
    rec_B = m.G_A(fake_A)
    for p in itertools.chain(m.D_A.parameters(), m.D_B.parameters()):
        p.requires_grad_(False)
    opt_G.zero_grad()
    lam = cfg.lambda_identity
    idt_A = m.G_A(real_B)
    loss_idt_A = F.l1_loss(idt_A, real_B) * cfg.lambda_B * lam
    idt_B = m.G_B(real_A)
    loss_idt_B = F.l1_loss(idt_B, real_A) * cfg.lambda_A * lam
    loss_G_A = mse(m.D_A(fake_B), 1.0)
    loss_G_B = mse(m.D_B(fake_A), 1.0)
    loss_cycle_A = F.l1_loss(rec_A, real_A) * cfg.lambda_A
    loss_cycle_B = F.l1_loss(rec_B, real_B) * cfg.lambda_B
    (loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B).backward()
    opt_G.step()
    for p in itertools.chain(m.D_A.parameters(), m.D_B.parameters()):
        p.requires_grad_(True)
    opt_D.zero_grad()
    out = {}
    for name, D, real, fake in (("D_A", m.D_A, real_B, fake_B), ("D_B", m.D_B, real_A, fake_A)):
        loss = (mse(D(real), 1.0) + mse(D(fake.detach()), 0.0)) * 0.5
        loss.backward()
        out[name] = loss.detach()
    opt_D.step()
    out.update(G_A=loss_G_A, G_B=loss_G_B, cycle_A=loss_cycle_A, cycle_B=loss_cycle_B,
               idt_A=loss_idt_A, idt_B=loss_idt_B)
    return {k: v.detach() for k, v in out.items()}


def test_cyclegan_train_step_equals_official_step():
    cfg = CycleGANConfig(ngf=4, ndf=4, n_blocks=1, n_layers_D=2, pool_size=0)
    ours = CycleGAN(cfg)
    theirs = CycleGAN(cfg, fused=False)
    theirs.load_state_dict(ours.state_dict())
    A, B = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1

    def sgd(m):
        return (SpyOptimizer(itertools.chain(m.G_A.parameters(), m.G_B.parameters()),
                             [m.D_A, m.D_B]),
                torch.optim.SGD(itertools.chain(m.D_A.parameters(), m.D_B.parameters()), lr=0.1))

    (oG, oD), (tG, tD) = sgd(ours), sgd(theirs)
    got = ours.train_step(A, B, oG, oD)
    want = official_cyclegan_step(theirs, A, B, tG, tD)
    assert set(got) == {"D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"}
    for k in want:
        assert got[k].dim() == 0 and not got[k].requires_grad
        assert_close(got[k], want[k], 1e-5, k)
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert_close(a, b, 1e-5, k)
    # D frozen during the G step (so the G loss left no gradient on it), trainable afterwards.
    assert oG.seen == [False]
    for a, b in zip(ours.D_A.parameters(), theirs.D_A.parameters()):
        assert_close(a.grad, b.grad, 1e-5, "D_A grad")
    assert all(p.requires_grad for p in ours.parameters())


@pytest.mark.parametrize("lambda_identity", [0.5, 0.0])
def test_cyclegan_train_step_runs_with_adam_and_pool(lambda_identity):
    model = CycleGAN(CycleGANConfig(ngf=4, ndf=4, n_blocks=1, n_layers_D=2, pool_size=1,
                                    lambda_identity=lambda_identity))
    opt_G, opt_D = model.make_optimizers()
    before = copy.deepcopy(model.state_dict())
    losses = model.train_step(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), opt_G, opt_D)
    assert all(torch.isfinite(v) for v in losses.values())
    assert (losses["idt_A"] == 0).item() == (lambda_identity == 0)
    assert len(model.fake_A_pool) == len(model.fake_B_pool) == 1
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert opt_G.param_groups[0]["betas"] == (0.5, 0.999) and opt_G.param_groups[0]["lr"] == 2e-4
    assert len(opt_G.param_groups[0]["params"]) == 2 * len(list(model.G_A.parameters()))


def official_pix2pix_step(m: Pix2Pix, real_A, real_B, opt_G, opt_D) -> dict:
    """The official pix2pix_model.optimize_parameters (vanilla GAN: BCEWithLogits)."""
    bce = lambda pred, target: F.binary_cross_entropy_with_logits(  # noqa: E731
        pred, torch.full_like(pred, target))
    fake_B = m.netG(real_A)
    for p in m.netD.parameters():
        p.requires_grad_(True)
    opt_D.zero_grad()
    fake_AB = torch.cat((real_A, fake_B), 1)
    loss_D_fake = bce(m.netD(fake_AB.detach()), 0.0)
    loss_D_real = bce(m.netD(torch.cat((real_A, real_B), 1)), 1.0)
    loss_D = (loss_D_fake + loss_D_real) * 0.5
    loss_D.backward()
    opt_D.step()
    for p in m.netD.parameters():
        p.requires_grad_(False)
    opt_G.zero_grad()
    loss_G_GAN = bce(m.netD(fake_AB), 1.0)
    loss_G_L1 = F.l1_loss(fake_B, real_B) * m.config.lambda_L1
    (loss_G_GAN + loss_G_L1).backward()
    opt_G.step()
    return {"D": loss_D.detach(), "G_GAN": loss_G_GAN.detach(), "G_L1": loss_G_L1.detach()}


def test_pix2pix_train_step_equals_official_step():
    cfg = Pix2PixConfig(ngf=4, ndf=4, num_downs=6, n_layers_D=2)
    ours = Pix2Pix(cfg)
    # Ours runs channels_last (the fused build's default); torch's dropout draws
    # its mask in memory order, so the plain build must share the layout for
    # the masks to match.
    theirs = Pix2Pix(cfg, fused=False, channels_last=True)
    assert ours.channels_last and ours.netG.model.model[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    theirs.load_state_dict(ours.state_dict())
    A, B = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    oG = SpyOptimizer(ours.netG.parameters(), [ours.netD], lr=0.01)
    oD = torch.optim.SGD(ours.netD.parameters(), lr=0.01)
    tG = torch.optim.SGD(theirs.netG.parameters(), lr=0.01)
    tD = torch.optim.SGD(theirs.netD.parameters(), lr=0.01)
    torch.manual_seed(3)
    got = ours.train_step(A, B, oG, oD)
    torch.manual_seed(3)  # same dropout masks
    want = official_pix2pix_step(theirs, A, B, tG, tD)
    for k in want:
        assert_close(got[k], want[k], 1e-5, k)
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert_close(a.float(), b.float(), 1e-4, k)
    assert oG.seen == [False]
    # The D gradients are those of the D step: the G loss did not add to them.
    for a, b in zip(ours.netD.parameters(), theirs.netD.parameters()):
        assert_close(a.grad, b.grad, 1e-5, "netD grad")
    assert all(p.requires_grad for p in ours.netD.parameters())


def test_pix2pix_train_step_runs_with_adam():
    model = Pix2Pix(Pix2PixConfig(input_nc=1, output_nc=2, ngf=4, ndf=4, num_downs=5,
                                  n_layers_D=2))
    assert model.netD.input_nc == 3
    opt_G, opt_D = model.make_optimizers()
    losses = model.train_step(torch.rand(2, 1, 32, 32), torch.rand(2, 2, 32, 32), opt_G, opt_D)
    assert set(losses) == {"D", "G_GAN", "G_L1"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_init_is_normal_002():
    model = Pix2Pix(Pix2PixConfig(ngf=8, ndf=8, num_downs=5))
    w = model.netG.model.model[0].weight
    assert abs(w.std().item() - 0.02) < 0.005
    bn = model.netD.model[3]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and bn.bias.abs().max() == 0


# ----------------------------------------------------------------- schedule
def test_linear_decay_schedule():
    cfg = CycleGANConfig(ngf=4, ndf=4, n_blocks=0, n_epochs=2, n_epochs_decay=3)
    model = CycleGAN(cfg)
    opt_G, opt_D = model.make_optimizers()
    sched_G, sched_D = model.make_schedulers(opt_G, opt_D)
    lrs = []
    for _ in range(6):
        lrs.append(opt_G.param_groups[0]["lr"])
        assert opt_D.param_groups[0]["lr"] == lrs[-1]
        opt_G.step(), opt_D.step()
        sched_G.step(), sched_D.step()
    # 1 - max(0, epoch + 1 - 2) / 4 for epoch 0..5
    assert lrs == pytest.approx([2e-4 * f for f in (1, 1, 0.75, 0.5, 0.25, 0.0)])
    assert LinearDecay(100, 100, epoch_count=51)(50) == pytest.approx(1 - 1 / 101)
    state = sched_G.state_dict()  # a callable object, so the rule is saved
    assert state["lr_lambdas"][0] == {"n_epochs": 2, "n_epochs_decay": 3, "epoch_count": 1}


# --------------------------------------------------------------- image pool
def test_image_pool_fills_then_mixes():
    pool = ImagePool(3, generator=torch.Generator().manual_seed(0))
    first = torch.arange(2.0).view(2, 1, 1, 1).requires_grad_()
    out = pool.query(first)
    assert torch.equal(out, first) and not out.requires_grad and len(pool) == 2
    second = torch.arange(2.0, 4.0).view(2, 1, 1, 1)
    out = pool.query(second)  # image 2 is stored; image 3 finds the pool full
    assert len(pool) == 3 and out[0].item() == 2.0
    # Many queries once full: both branches happen, and every returned image is
    # the new one or one that was in the pool.
    swapped = kept = 0
    for step in range(20):
        new = torch.full((4, 1, 1, 1), 100.0 + step) + torch.arange(4.0).view(4, 1, 1, 1)
        before = {t.item() for t in pool.images}
        out = pool.query(new)
        for i in range(4):
            if out[i].item() == new[i].item():
                kept += 1
            else:
                swapped += 1
                assert out[i].item() in before | {v.item() for v in new[:i]}
        assert len(pool) == 3
    assert swapped > 10 and kept > 10


def test_image_pool_is_reproducible_with_manual_seed():
    def run():
        pool = ImagePool(2)
        return [pool.query(torch.randn(3, 2, 4, 4)) for _ in range(5)]

    torch.manual_seed(1)
    a = run()
    torch.manual_seed(1)
    b = run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_image_pool_size_zero_is_identity():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    pool = ImagePool(0)
    assert pool.query(x) is x and len(pool) == 0


def test_image_pool_state_dict_round_trip(tmp_path):
    g = torch.Generator().manual_seed(5)
    pool = ImagePool(4, generator=g)
    for _ in range(3):
        pool.query(torch.randn(2, 3, 4, 4))
    torch.save(pool.state_dict(), tmp_path / "pool.pt")
    resumed = ImagePool(4, generator=torch.Generator())
    resumed.load_state_dict(torch.load(tmp_path / "pool.pt"))
    assert all(torch.equal(a, b) for a, b in zip(pool.images, resumed.images))
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(pool.query(x), resumed.query(x))  # the generator state came along
    with pytest.raises(ValueError, match="pool_size"):
        ImagePool(3).load_state_dict(pool.state_dict())
    with pytest.raises(TypeError, match="state_dict"):
        ImagePool(3).load_state_dict({"foo": 1})


def test_image_pool_bad_input():
    with pytest.raises(ValueError, match="pool_size"):
        ImagePool(-1)
    with pytest.raises(TypeError, match="pool_size"):
        ImagePool(2.5)
    with pytest.raises(TypeError, match="generator"):
        ImagePool(2, generator=0)
    pool = ImagePool(2)
    with pytest.raises(TypeError, match="images"):
        pool.query([1, 2])
    pool.query(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        pool.query(torch.randn(1, 3, 8, 8))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(input_nc=0), ValueError, "input_nc"),
    (dict(output_nc=2.0), TypeError, "output_nc"),
    (dict(ngf=True), TypeError, "ngf"),
    (dict(n_blocks=-1), ValueError, "n_blocks"),
    (dict(norm="group"), ValueError, "norm"),
    (dict(padding_type="circular"), ValueError, "padding_type"),
    (dict(use_dropout=1), TypeError, "use_dropout"),
    (dict(fused="yes"), TypeError, "fused"),
])
def test_resnet_generator_bad_args(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        ResnetGenerator(**kwargs)


@pytest.mark.parametrize("cls,kwargs,exc,word", [
    (NLayerDiscriminator, dict(n_layers=-1), ValueError, "n_layers"),
    (NLayerDiscriminator, dict(ndf=0), ValueError, "ndf"),
    (NLayerDiscriminator, dict(norm="Batch"), ValueError, "norm"),
    (UnetGenerator, dict(num_downs=4), ValueError, "num_downs"),
    (UnetGenerator, dict(norm=None), ValueError, "norm"),
    (UnetGenerator, dict(ngf=-4), ValueError, "ngf"),
])
def test_other_nets_bad_args(cls, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        cls(**kwargs)


def test_bad_images():
    G = ResnetGenerator(ngf=4, n_blocks=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        G(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        G(torch.randn(3, 16, 16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        NLayerDiscriminator(ndf=4)([1.0])
    U = UnetGenerator(num_downs=5, ngf=4)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*num_downs = 32"):
        U(torch.randn(1, 3, 48, 64))
    model = CycleGAN(CycleGANConfig(ngf=4, ndf=4, n_blocks=0))
    opt_G, opt_D = model.make_optimizers()
    with pytest.raises(ValueError, match="real_B"):
        model.train_step(torch.randn(1, 3, 16, 16), torch.randn(1, 4, 16, 16), opt_G, opt_D)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(lambda_A=-1.0), ValueError, "lambda_A"),
    (dict(lambda_identity="0.5"), TypeError, "lambda_identity"),
    (dict(input_nc=1), ValueError, "lambda_identity=0"),
    (dict(pool_size=-2), ValueError, "pool_size"),
    (dict(norm="layer"), ValueError, "norm"),
    (dict(gan_mode="wgangp"), ValueError, "mode"),
    (dict(beta1=1.0), ValueError, "beta1"),
    (dict(n_epochs_decay=-1), ValueError, "n_epochs_decay"),
])
def test_cyclegan_config_errors(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        CycleGAN(CycleGANConfig(ngf=4, ndf=4, n_blocks=0, **kwargs))


def test_config_edits_are_checked_and_types():
    model = CycleGAN(CycleGANConfig(ngf=4, ndf=4, n_blocks=0))
    opt_G, opt_D = model.make_optimizers()
    model.config.lambda_B = float("nan")
    with pytest.raises(ValueError, match="lambda_B"):
        model.train_step(torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16), opt_G, opt_D)
    with pytest.raises(TypeError, match="CycleGANConfig"):
        CycleGAN(Pix2PixConfig())
    with pytest.raises(TypeError, match="Pix2PixConfig"):
        Pix2Pix(CycleGANConfig())
    with pytest.raises(ValueError, match="lambda_L1"):
        Pix2Pix(Pix2PixConfig(ngf=4, ndf=4, num_downs=5, lambda_L1=-1))
