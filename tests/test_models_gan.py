"""The GAN families (gan_ext.models.gan / dcgan / cgan): pytorch/examples DCGAN
checkpoint compatibility, shapes at every image size, the shared train step
(k D updates, minimax vs non-saturating), fused vs reference vs plain nn, the
fused build vs gan_ext.fuse of the plain build, and bad input."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gan_ext
from gan_ext.models.cgan import (CGANConfig, ConditionalDiscriminator, ConditionalGAN,
                                 ConditionalGenerator)
from gan_ext.models.dcgan import DCGAN, DCGANConfig, Discriminator, Generator
from gan_ext.models.gan import GAN, GANConfig, MLPDiscriminator, MLPGenerator, train_step
from gan_ext.nn import ActDropout, BatchNormAct2d, GANLoss

from conftest import requires_fused

SIZES = [28, 32, 64, 128]
NZ, NGF, NDF, NCLS, EMB, B = 8, 8, 8, 5, 4, 4

# ---------------------------------------------------------------------------
# pytorch/examples dcgan/main.py at nz=100, ngf=ndf=64, nc=3: state_dict keys and shapes.
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix, c):
    return [(f"{prefix}.{n}", () if n == "num_batches_tracked" else (c,)) for n in BN]


EXAMPLES_G = ([("main.0.weight", (100, 512, 4, 4))] + _bn("main.1", 512)
              + [("main.3.weight", (512, 256, 4, 4))] + _bn("main.4", 256)
              + [("main.6.weight", (256, 128, 4, 4))] + _bn("main.7", 128)
              + [("main.9.weight", (128, 64, 4, 4))] + _bn("main.10", 64)
              + [("main.12.weight", (64, 3, 4, 4))])
EXAMPLES_D = ([("main.0.weight", (64, 3, 4, 4)), ("main.2.weight", (128, 64, 4, 4))]
              + _bn("main.3", 128) + [("main.5.weight", (256, 128, 4, 4))] + _bn("main.6", 256)
              + [("main.8.weight", (512, 256, 4, 4))] + _bn("main.9", 512)
              + [("main.11.weight", (1, 512, 4, 4))])


def _examples_model(kind, fused=True):
    if kind == "G":
        return Generator(nz=100, ngf=64, nc=3, image_size=64, fused=fused)
    return Discriminator(nc=3, ndf=64, image_size=64, fused=fused)


def _examples_state_dict(kind):
    return {k: (torch.tensor(7) if not shape else torch.randn(shape))
            for k, shape in (EXAMPLES_G if kind == "G" else EXAMPLES_D)}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("kind", ["G", "D"])
def test_dcgan64_state_dict_is_pytorch_examples(kind, fused):
    model = _examples_model(kind, fused)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == (EXAMPLES_G if kind == "G" else EXAMPLES_D)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    if kind == "G":
        assert isinstance(model.main[13], nn.Tanh)


@pytest.mark.parametrize("kind", ["G", "D"])
def test_examples_checkpoint_loads_strictly(kind, tmp_path):
    path = tmp_path / f"net{kind}_epoch_0.pth"
    torch.save(_examples_state_dict(kind), path)
    ckpt = torch.load(path, weights_only=True)
    for fused in (True, False):
        model = _examples_model(kind, fused)
        model.load_state_dict(ckpt, strict=True)
        for k, v in model.state_dict().items():
            assert torch.equal(v, ckpt[k]), k

    model = _examples_model(kind)
    bad = dict(ckpt)
    bad["main.0.weight"] = torch.randn(3, 3, 4, 4)
    with pytest.raises(RuntimeError, match="size mismatch for main.0.weight"):
        model.load_state_dict(bad, strict=True)
    missing, key = dict(ckpt), "main.4.running_var" if kind == "G" else "main.3.running_var"
    del missing[key]
    with pytest.raises(RuntimeError, match=f"Missing key.*{key}"):
        model.load_state_dict(missing, strict=True)


# ---------------------------------------------------------------------- builders
def _labels(n=B):
    return torch.randint(NCLS, (n,))


def _build(kind, size=32, fused=True):
    """(G, D, conditional) at small widths."""
    if kind == "mlp":
        return (MLPGenerator(NZ, (1, size, size), (16, 32), fused=fused),
                MLPDiscriminator((1, size, size), (32, 16), fused=fused), False)
    if kind == "dcgan":
        return (Generator(NZ, NGF, 3, size, fused=fused), Discriminator(3, NDF, size, fused=fused),
                False)
    cond = kind.split("-")[1]
    return (ConditionalGenerator(NZ, NGF, 1, size, NCLS, EMB, fused=fused),
            ConditionalDiscriminator(1, NDF, size, NCLS, EMB, cond, fused=fused), True)


KINDS = ["mlp", "dcgan", "cgan-channels", "cgan-projection"]


def _real(kind, size, n=B):
    return torch.randn(n, 3 if kind == "dcgan" else 1, size, size).clamp(-1, 1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes(kind, size):
    G, D, cond = _build(kind, size)
    y = _labels() if cond else None
    args = (y,) if cond else ()
    fake = G(torch.randn(B, NZ), *args)
    c = 3 if kind == "dcgan" else 1
    assert fake.shape == (B, c, size, size)
    assert fake.abs().max() <= 1
    logits = D(fake, *args)
    assert logits.shape == ((B, 1) if kind == "mlp" else (B,))
    if kind != "mlp":  # pytorch/examples feeds (B, nz, 1, 1)
        torch.testing.assert_close(G(torch.randn(B, NZ, 1, 1), *args).shape, fake.shape)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_fuse_of_plain_build_is_the_fused_build(kind, size):
    G, D, _ = _build(kind, size, fused=True)
    Gp, Dp, _ = _build(kind, size, fused=False)
    for fused, plain in ((G, Gp), (D, Dp)):
        gan_ext.fuse(plain)
        assert [(n, type(m)) for n, m in plain.named_modules()] == \
            [(n, type(m)) for n, m in fused.named_modules()]
        assert [(k, v.shape) for k, v in plain.state_dict().items()] == \
            [(k, v.shape) for k, v in fused.state_dict().items()]
        for m, mp in zip(fused.modules(), plain.modules()):
            if isinstance(m, (BatchNormAct2d, ActDropout)):
                assert (m.activation, m.negative_slope, getattr(m, "p", None)) == \
                    (mp.activation, mp.negative_slope, getattr(mp, "p", None))
    if kind == "mlp":
        assert [type(m) for m in D.main[1:4]] == [ActDropout, nn.Identity, nn.Linear]
    if kind != "mlp":
        n_fused = sum(isinstance(m, BatchNormAct2d) for m in D.modules())
        assert n_fused == {28: 1, 32: 2, 64: 3, 128: 4}[size]


# ------------------------------------------------------------------ train step
def _adam_steps(opt):
    return {int(s["step"]) for s in opt.state.values()}


@pytest.mark.parametrize("kind", KINDS)
def test_train_step_updates_both_players(kind):
    G, D, cond = _build(kind, 28)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    before = {n: p.detach().clone() for n, p in [*G.named_parameters(prefix="G"),
                                                    *D.named_parameters(prefix="D")]}
    # D's grads when its optimizer steps: the G step must not add to them.
    d_grads, d_step = {}, opt_d.step

    def spy(*a, **kw):
        d_grads.update({n: p.grad.clone() for n, p in D.named_parameters()})
        return d_step(*a, **kw)

    opt_d.step = spy
    stats = train_step(G, D, opt_g, opt_d, _real(kind, 28), GANLoss(),
                       labels=_labels() if cond else None)

    assert set(stats) == {"d_loss", "g_loss", "d_real", "d_fake", "d_gen"}
    for k, v in stats.items():
        assert v.dim() == 0 and not v.requires_grad and torch.isfinite(v), k
    assert 0 < stats["d_real"] < 1 and 0 < stats["d_gen"] < 1
    for n, p in [*G.named_parameters(prefix="G"), *D.named_parameters(prefix="D")]:
        assert not torch.equal(p.detach(), before[n]), f"{n} did not change"
    assert _adam_steps(opt_g) == {1} and _adam_steps(opt_d) == {1}
    assert all(p.requires_grad for p in D.parameters())
    for n, p in D.named_parameters():
        torch.testing.assert_close(p.grad, d_grads[n], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["dcgan", "cgan-projection"])
def test_k_discriminator_updates_per_generator_update(kind):
    G, D, cond = _build(kind, 28)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    reals = [_real(kind, 28), _real(kind, 28, n=3)]  # each D update on its own batch
    labels = [_labels(), _labels(3)] if cond else None
    seen = []
    hook = D.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    stats = train_step(G, D, opt_g, opt_d, reals, GANLoss("hinge"), k=2, labels=labels)
    hook.remove()
    assert _adam_steps(opt_d) == {2} and _adam_steps(opt_g) == {1}
    assert seen == [4, 4, 3, 3, 3]  # real, fake per D update; then the G update's fakes
    assert all(torch.isfinite(v) for v in stats.values())
    with pytest.raises(ValueError, match="k=2 discriminator updates need k=2 batches"):
        train_step(G, D, opt_g, opt_d, reals[0], GANLoss(), k=2, labels=labels and labels[0])


def test_minimax_and_non_saturating_generator_losses():
    logits = torch.randn(8, dtype=torch.float64) * 3
    grads = {}
    for minimax in (False, True):
        x = logits.clone().requires_grad_()
        loss = GANLoss(minimax=minimax).g_loss(x)
        loss.backward()
        grads[minimax] = x.grad
        expected = F.logsigmoid(-logits).mean() if minimax else -F.logsigmoid(logits).mean()
        torch.testing.assert_close(loss, expected)  # minimax: mean log(1 - sigmoid(logit))
    s = torch.sigmoid(logits)
    torch.testing.assert_close(grads[True], -s / 8)         # vanishes where D rejects the fake
    torch.testing.assert_close(grads[False], (s - 1) / 8)   # strongest there

    # Through the models: different generator gradients.
    G, D, _ = _build("dcgan", 28)
    z = torch.randn(B, NZ)
    g_grads = {}
    for minimax in (False, True):
        G.zero_grad(set_to_none=True)
        GANLoss(minimax=minimax).g_loss(D(G(z))).backward()
        g_grads[minimax] = torch.cat([p.grad.flatten() for p in G.parameters()])
    assert not torch.allclose(g_grads[True], g_grads[False], rtol=1e-2, atol=0)


# --------------------------------------------------- fused vs reference vs plain
def _run_losses(G, D, cond, z, real, y, loss, seed):
    """Forward + backward of the D and G losses: outputs, losses and all grads."""
    torch.manual_seed(seed)  # dropout masks (MLP) identical on every side
    args = (y,) if cond else ()
    fake = G(z, *args)
    d_real, d_fake = D(real, *args), D(fake.detach(), *args)
    loss_d = loss.d_loss(d_real, d_fake)
    loss_d.backward()
    d_grads = [p.grad.clone() for p in D.parameters()]
    D.zero_grad(set_to_none=True)
    d_gen = D(fake, *args)
    loss_g = loss.g_loss(d_gen)
    loss_g.backward()
    g_grads = [p.grad.clone() for p in G.parameters()]
    return [fake, d_real, d_fake, d_gen, loss_d, loss_g], d_grads, g_grads


def _assert_grads_close(grads, grads_ref, what):
    for i, (g, r) in enumerate(zip(grads, grads_ref)):
        scale = r.abs().max().item()
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-3 * scale + 1e-7,
                                   msg=lambda m: f"{what} grad {i}: {m}")


@pytest.mark.parametrize("side", [pytest.param("fused", marks=requires_fused), "plain"])
@pytest.mark.parametrize("kind,size", [("mlp", 28), ("dcgan", 28), ("dcgan", 64),
                                       ("cgan-channels", 32), ("cgan-projection", 32)])
@pytest.mark.parametrize("mode", ["vanilla", "lsgan"])
def test_matches_reference_backend(kind, size, side, mode):
    """Fused kernels (or the plain nn build, fused=False) against every op's
    pure-PyTorch twin: same outputs, losses and gradients of G and D."""
    G, D, cond = _build(kind, size)
    if kind == "mlp" and side == "plain":
        D.eval()  # nn.Dropout draws other masks than ActDropout (same distribution)
    with torch.no_grad():  # non-trivial affine norms
        for m in [*G.modules(), *D.modules()]:
            if isinstance(m, nn.BatchNorm2d):
                m.bias.normal_(0.0, 0.1)
    z, real = torch.randn(B, NZ), _real(kind, size)
    y = _labels() if cond else None
    loss = GANLoss(mode)

    with gan_ext.use_backend("reference"):
        ref = _run_losses(copy.deepcopy(G), copy.deepcopy(D), cond, z, real, y, loss, seed=1)
    if side == "fused":
        with gan_ext.use_backend("fused"):
            got = _run_losses(G, D, cond, z, real, y, loss, seed=1)
    else:
        Gp, Dp, _ = _build(kind, size, fused=False)
        Gp.load_state_dict(G.state_dict()), Dp.load_state_dict(D.state_dict())
        Dp.train(D.training)
        got = _run_losses(Gp, Dp, cond, z, real, y, loss, seed=1)
    for i, (a, b) in enumerate(zip(got[0], ref[0])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"output {i}: {m}")
    _assert_grads_close(got[1], ref[1], "D")
    _assert_grads_close(got[2], ref[2], "G")


# ------------------------------------------------------------------ wrappers
@pytest.mark.parametrize("cls,config", [
    (GAN, GANConfig(nz=NZ, g_hidden=(16,), d_hidden=(16,), k=2)),
    (DCGAN, DCGANConfig(nz=NZ, ngf=NGF, ndf=NDF, nc=1, image_size=28, real_label=0.9)),
    (ConditionalGAN, CGANConfig(nz=NZ, ngf=NGF, ndf=NDF, num_classes=NCLS,
                                d_conditioning="channels", loss="lsgan")),
], ids=["gan", "dcgan", "cgan"])
def test_wrappers(cls, config):
    gan = cls(config)
    assert gan.config is config and gan.loss.mode == config.loss
    assert {k.split(".")[0] for k in gan.state_dict()} == {"G", "D"}
    opt_g, opt_d = gan.make_optimizers()
    assert opt_g.defaults["lr"] == config.lr and opt_d.defaults["betas"] == config.betas
    cond = cls is ConditionalGAN
    real = [torch.rand(B, 1, 28, 28) * 2 - 1 for _ in range(config.k)]
    labels = [_labels() for _ in range(config.k)] if cond else None
    stats = gan.train_step(real if config.k > 1 else real[0], opt_g, opt_d,
                           labels=labels if labels is None or config.k > 1 else labels[0])
    assert all(torch.isfinite(v) for v in stats.values())
    assert _adam_steps(opt_d) == {config.k}
    with torch.no_grad():
        assert gan(torch.randn(3, NZ), *((_labels(3),) if cond else ())).shape == (3, 1, 28, 28)
    plain = cls(config, fused=False)
    assert [(n, type(m)) for n, m in gan_ext.fuse(plain).named_modules()] == \
        [(n, type(m)) for n, m in gan.named_modules()]


def _conv_weights(module):
    return [m.weight for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_layout_and_optimizer_of_the_builds():
    """The gan_ext build stores conv weights channels_last and uses PyTorch's
    fused Adam; the plain build keeps NCHW and the default Adam; both can be
    overridden; the layout changes no value."""
    cfg = DCGANConfig(nz=NZ, ngf=NGF, ndf=NDF, nc=1, image_size=28)
    torch.manual_seed(0)
    fast = DCGAN(cfg)
    plain = DCGAN(cfg, fused=False)
    nchw = DCGAN(cfg, channels_last=False)
    assert fast.channels_last and not plain.channels_last and not nchw.channels_last
    assert DCGAN(cfg, fused=False, channels_last=True).channels_last
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(fast))
    assert any(not w.is_contiguous() for w in _conv_weights(fast))
    assert all(w.is_contiguous() for w in _conv_weights(plain) + _conv_weights(nchw))
    assert [o.defaults["fused"] for o in fast.make_optimizers()] == [True, True]
    assert [o.defaults["fused"] for o in plain.make_optimizers()] == [None, None]
    with pytest.raises(TypeError, match="channels_last must be a bool"):
        DCGAN(cfg, channels_last="yes")

    nchw.load_state_dict(fast.state_dict())
    assert all(w.is_contiguous() for w in _conv_weights(nchw))  # loading keeps the layout
    z, x = torch.randn(B, NZ), torch.rand(B, 1, 28, 28) * 2 - 1
    fake = fast.G(z)
    assert fake.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fake, nchw.G(z), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.D(x), nchw.D(x), rtol=1e-5, atol=1e-5)

    # One step each from the same state and seed: the same losses.
    opts = [m.make_optimizers() for m in (fast, nchw)]
    stats = []
    for m, (og, od) in zip((fast, nchw), opts):
        torch.manual_seed(1)
        stats.append(m.train_step(x, og, od))
    for k in stats[0]:
        torch.testing.assert_close(stats[0][k], stats[1][k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", ["dcgan", "cgan"])
@pytest.mark.parametrize("size", SIZES)
def test_first_generator_layer_as_gemm_equals_the_conv(cls, size):
    """The fused G runs its first transposed conv (1x1 input) as a GEMM:
    same output and same gradients as the module itself."""
    torch.manual_seed(0)
    if cls == "dcgan":
        G = Generator(NZ, NGF, 1, size)
        z = torch.randn(B, NZ, requires_grad=True)
        h = z
        run = lambda: G(z)                                                # noqa: E731
    else:
        G = ConditionalGenerator(NZ, NGF, 1, size, NCLS, EMB)
        z, y = torch.randn(B, NZ, requires_grad=True), _labels()
        run = lambda: G(z, y)                                             # noqa: E731
        h = None
    assert G.fused
    G.train()
    out = run()
    assert out.shape == (B, 1, size, size)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [z, G.main[0].weight], g)
    h = z if h is not None else torch.cat([z, G.embed(y)], 1)
    want_out = G.main(h[:, :, None, None])
    want = torch.autograd.grad(want_out, [z, G.main[0].weight], g)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
    # At 128 the gradients pass five batch norms (batch 4), which amplify the
    # float32 summation-order difference of GEMM vs conv to ~3e-5.
    atol = 1e-5 if size < 128 else 1e-4
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("cls", ["dcgan", "cgan-projection", "cgan-channels"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_discriminator_head_as_gemm_equals_the_conv(cls, size, layout):
    """The fused D computes its last conv (one output channel over the whole
    feature map) as a dot product: same logits and gradients as the conv."""
    torch.manual_seed(0)
    x = torch.rand(B, 1, size, size) * 2 - 1
    if cls == "dcgan":
        D = Discriminator(1, NDF, size)
        head = D.main[-1]
        args = (x,)
    else:
        D = ConditionalDiscriminator(1, NDF, size, NCLS, EMB, cls.split("-")[1])
        head = D.head
        args = (x, _labels())
    if layout == "channels_last":
        D = D.to(memory_format=torch.channels_last)
    assert D.fused
    out = D(*args)
    assert out.shape == (B,)
    (gw,) = torch.autograd.grad(out.sum(), [head.weight])
    D.fused = False  # the module's own conv
    want = D(*args)
    (gw_want,) = torch.autograd.grad(want.sum(), [head.weight])
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, gw_want, rtol=1e-4, atol=1e-5)


def test_fused_adam_state_loads_into_the_default_adam():
    cfg = DCGANConfig(nz=NZ, ngf=NGF, ndf=NDF, nc=1, image_size=28)
    fast, plain = DCGAN(cfg), DCGAN(cfg, fused=False)
    og, od = fast.make_optimizers()
    fast.train_step(torch.rand(B, 1, 28, 28) * 2 - 1, og, od)
    plain.load_state_dict(fast.state_dict())
    pg, pd = plain.make_optimizers()
    pg.load_state_dict(og.state_dict())
    pd.load_state_dict(od.state_dict())
    for a, b in zip(og.state.values(), pg.state.values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"])
        assert float(a["step"]) == float(b["step"]) == 1.0


# ------------------------------------------------------------------ bad input
def test_bad_construction_arguments():
    cases = [
        (ValueError, "image_size must be one of", lambda: Generator(image_size=48)),
        (ValueError, "image_size must be one of", lambda: Discriminator(image_size=16)),
        (TypeError, "image_size must be an int", lambda: Discriminator(image_size="64")),
        (ValueError, "ngf must be >= 1", lambda: Generator(ngf=0)),
        (TypeError, "nz must be an int", lambda: Generator(nz=2.5)),
        (ValueError, "ndf must be >= 1", lambda: Discriminator(ndf=-1)),
        (ValueError, "conditioning must be one of",
         lambda: ConditionalDiscriminator(conditioning="concat")),
        (ValueError, "num_classes must be >= 1", lambda: ConditionalGenerator(num_classes=0)),
        (ValueError, r"dropout must lie in \[0, 1\)", lambda: MLPDiscriminator(dropout=1.0)),
        (ValueError, r"img_shape\[1\] must be >= 1", lambda: MLPGenerator(img_shape=(1, 0, 28))),
        (TypeError, "img_shape must be a tuple of ints", lambda: MLPGenerator(img_shape=784)),
        (ValueError, "loss must be one of", lambda: DCGANConfig(loss="wgan")),
        (ValueError, "k must be >= 1", lambda: GANConfig(k=0)),
        (ValueError, "real_label must lie in", lambda: GANConfig(real_label=1.5)),
        (ValueError, "minimax=True", lambda: GANConfig(loss="lsgan", minimax=True)),
        (ValueError, "lr must be a positive number", lambda: CGANConfig(lr=0)),
        (TypeError, "config must be a DCGANConfig", lambda: DCGAN(GANConfig())),
    ]
    for exc, match, fn in cases:
        with pytest.raises(exc, match=match):
            fn()


def test_bad_forward_input():
    G, D, _ = _build("dcgan", 28)
    Gc, Dc, _ = _build("cgan-projection", 28)
    Gm, Dm, _ = _build("mlp", 28)
    x1 = torch.randn(B, 1, 28, 28)
    cases = [
        (ValueError, r"z must have shape \(B, 8\) or \(B, 8, 1, 1\)", lambda: G(torch.randn(B, 5))),
        (ValueError, "z must have shape", lambda: G(torch.randn(B, NZ, 2, 2))),
        (TypeError, "z must be a torch.Tensor", lambda: Gm([0.0] * NZ)),
        (ValueError, r"x must have shape \(B, 3, 28, 28\)", lambda: D(torch.randn(B, 3, 32, 32))),
        (ValueError, r"x must have shape \(B, 1, 28, 28\)", lambda: Dm(torch.randn(B, 784))),
        (ValueError, r"labels must lie in \[0, 5\)", lambda: Gc(torch.randn(B, NZ),
                                                               torch.tensor([0, 1, 5, 2]))),
        (ValueError, r"labels must lie in \[0, 5\)", lambda: Dc(x1, torch.tensor([0, -1, 2, 2]))),
        (TypeError, "labels must be an int64", lambda: Dc(x1, torch.zeros(B))),
        (ValueError, r"labels must have shape \(4,\)", lambda: Dc(x1, _labels(3))),
    ]
    for exc, match, fn in cases:
        with pytest.raises(exc, match=match):
            fn()
    # int32 labels are fine
    assert Dc(x1, _labels().int()).shape == (B,)


def test_bad_train_step_arguments():
    G, D, _ = _build("dcgan", 28)
    Gc, Dc, _ = _build("cgan-channels", 28)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    real, real1 = torch.randn(B, 3, 28, 28), torch.randn(B, 1, 28, 28)
    cases = [
        (ValueError, "k must be >= 1", lambda: train_step(G, D, opt, opt, real, GANLoss(), k=0)),
        (ValueError, "k=1 discriminator updates need k=1 batches",
         lambda: train_step(G, D, opt, opt, [real, real], GANLoss(), k=1)),
        (TypeError, "real must be a Tensor or a list",
         lambda: train_step(G, D, opt, opt, "x", GANLoss())),
        (TypeError, r"real\[1\] must be a torch.Tensor",
         lambda: train_step(G, D, opt, opt, [real, None], GANLoss())),
        (TypeError, "loss must be a gan_ext.nn.GANLoss",
         lambda: train_step(G, D, opt, opt, real, nn.BCEWithLogitsLoss())),
        (ValueError, "labels is required", lambda: train_step(Gc, Dc, opt, opt, real1, GANLoss())),
        (ValueError, "G is not class-conditional",
         lambda: train_step(G, D, opt, opt, real, GANLoss(), labels=_labels())),
    ]
    for exc, match, fn in cases:
        with pytest.raises(exc, match=match):
            fn()
