"""WGAN-GP (issue 18): the critic loss with the gradient penalty in every GAN
family (``TrainConfig(loss="wgan-gp")``, ``gan-ext train --loss wgan-gp``):
the penalty against a hand computation, its parameter gradients through the
fused critic against the reference backend, the critic without batch norm,
the paper's defaults, the cures it combines with, a short run that resumes
exactly, and the refusals. The op-level "wasserstein" mode is in the spec
matrix (tests/test_op_spec.py, gan_ext/ops/gan_loss.py)."""
import copy

import pytest
import torch
from torch import nn

import gan_ext
from gan_ext import cli, ops
from gan_ext.models import CGANConfig, ConditionalGAN, DCGAN, DCGANConfig, GAN, GANConfig
from gan_ext.models import stabilize
from gan_ext.models.gan_step import train_step
from gan_ext.models.modes import (MixtureGAN, MixtureGANConfig, StackedMNISTConfig,
                                  StackedMNISTGAN)
from gan_ext.nn import GANLoss, InstanceNormAct2d
from gan_ext.train import TrainOptions, load_checkpoint, trainer_class

from conftest import one_line_error, skip_unless_fused_on

TINY = ["--batch-size", "4", "--limit", "32", "--eval-n", "0", "--threads", "1",
        "--no-progress", "--log-every", "1"]
SMALL = dict(nz=8, ngf=4, ndf=4)


def _dcgan(**kw):
    return DCGAN(DCGANConfig(nc=1, image_size=28, **SMALL, **kw))


def _leaky(a, slope=0.2):
    ones = torch.ones_like(a)
    return torch.where(a > 0, a, slope * a), torch.where(a > 0, ones, slope * ones)


def _mlp_input_grad(D, x):
    """grad_x D(x) per sample for the MLP D (Linear, LeakyReLU 0.2, no dropout)
    by the chain rule written out: the oracle owes nothing to autograd."""
    linears = [m for m in D.modules() if isinstance(m, nn.Linear)]
    h, slopes = x.flatten(1), []
    for lin in linears[:-1]:
        h, d = _leaky(h @ lin.weight.T + lin.bias)
        slopes.append(d)
    g = linears[-1].weight.expand(x.shape[0], -1)                   # (B, width)
    for lin, d in zip(reversed(linears[:-1]), reversed(slopes)):
        g = (g * d) @ lin.weight                                     # (B, fan_in)
    return g


# ------------------------------------------------------------ the penalty
def test_gp_term_of_a_train_step_equals_the_hand_computed_penalty(monkeypatch):
    """float64, a tiny MLP critic: the step's logged gp is lambda times
    E[(||grad D(x_hat)||_2 - 1)^2] at its interpolates, computed by hand
    with D's weights before the update; x_hat lies between real and fake."""
    torch.manual_seed(0)
    gan = GAN(GANConfig(nz=4, img_shape=(1, 3, 3), g_hidden=(8,), d_hidden=(6, 5), dropout=0.0,
                        loss="wgan-gp", gp_lambda=3.0)).double()
    opt_g, opt_d = gan.make_optimizers()
    D0 = copy.deepcopy(gan.D)
    seen = []
    real_interpolate = stabilize.interpolate
    monkeypatch.setattr(stabilize, "interpolate",
                        lambda r, f: seen.append((r, f, real_interpolate(r, f))) or seen[-1][2])
    real = torch.rand(7, 1, 3, 3, dtype=torch.float64) * 2 - 1
    stats = gan.train_step(real, opt_g, opt_d)
    (r, f, x_hat), = seen
    assert torch.equal(r, real)
    eps = (x_hat - f) / (r - f)                  # one eps per sample, in [0, 1]
    assert torch.allclose(eps, eps[:, :1, :1, :1].expand_as(eps), atol=1e-9)
    assert ((eps >= 0) & (eps <= 1)).all() and eps.flatten().std() > 0
    g = _mlp_input_grad(D0, x_hat.detach())
    want = 3.0 * ((g.norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(stats["gp"], want, rtol=1e-12, atol=1e-14)
    # d_loss stays the Wasserstein critic loss, gp apart (as r1 is)
    assert stats.keys() == {"d_loss", "g_loss", "d_real", "d_fake", "d_gen", "gp"}


def test_gradient_penalty_of_a_linear_critic_is_exact():
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64)   # ||w|| = 5 everywhere
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    gp = stabilize.gradient_penalty(x @ w.T, x)
    assert gp.item() == pytest.approx(16.0, abs=1e-12)    # (5 - 1)^2
    r1 = stabilize.r1_penalty(x @ w.T, x)
    assert r1.item() == pytest.approx(25.0, abs=1e-12)    # the shared input gradient


@pytest.mark.parametrize("family", ["dcgan", "dcgan-pack-mbstd", "cgan", "stacked"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_penalty_gradients_through_fused_critic_match_reference(family, layout):
    """float64: D's parameter gradients of the penalty (a second derivative
    through the fused instance-norm critic) on both backends."""
    skip_unless_fused_on("cpu")
    torch.manual_seed(5)
    y = None
    if family.startswith("dcgan"):
        cure = dict(pack=2, minibatch_stddev=2) if family != "dcgan" else {}
        D, shape = _dcgan(loss="wgan-gp", **cure).D, (4, 1, 28, 28)
    elif family == "cgan":
        D, shape = ConditionalGAN(CGANConfig(loss="wgan-gp", **SMALL)).D, (4, 1, 28, 28)
        y = torch.tensor([0, 3, 3, 9])
    else:
        D, shape = StackedMNISTGAN(StackedMNISTConfig.for_arch(
            "unrolled", loss="wgan-gp", d_width=0.5)).D, (4, 3, 28, 28)
    assert any(isinstance(m, InstanceNormAct2d) for m in D.modules())
    D = D.double().train()
    g = torch.Generator().manual_seed(1)
    x = stabilize.interpolate(torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1,
                              torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1)
    if layout == "channels_last":
        D = D.to(memory_format=torch.channels_last)
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()

    def grads(backend):
        D.zero_grad(set_to_none=True)
        with gan_ext.use_backend(backend):
            stabilize.gradient_penalty(D(x) if y is None else D(x, y), x).backward()
        return {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}

    want, got = grads("reference"), grads("fused")
    assert want.keys() == got.keys() and len(want) >= 4
    flat_w = torch.cat([v.flatten() for v in want.values()])
    flat_g = torch.cat([got[n].flatten() for n in want])
    assert flat_w.norm() > 0
    assert (flat_g - flat_w).norm() <= 1e-9 * flat_w.norm()


@pytest.mark.compile
def test_wasserstein_losses_compile_fullgraph():
    """The spec's compile test takes the first (vanilla) sample: the
    wasserstein mode of both ops, compiled whole, forward and backward."""
    skip_unless_fused_on("cpu")
    real, fake = torch.randn(5, 1), torch.randn(3, 1, 2, 2)

    def f(r, fk):
        return ops.d_loss(r, fk, "wasserstein") + 0.5 * ops.g_loss(fk, "wasserstein", reduction="sum")

    def run(fn):
        r, fk = real.clone().requires_grad_(), fake.clone().requires_grad_()
        out = fn(r, fk)
        out.backward()
        return out.detach(), r.grad, fk.grad

    with gan_ext.use_backend("fused"):
        torch._dynamo.reset()
        got = run(torch.compile(f, fullgraph=True))
        want = run(f)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[0], fake.mean() - real.mean() - 0.5 * fake.sum())
    torch.testing.assert_close(got[1], torch.full_like(real, -1 / 5))
    torch.testing.assert_close(got[2], torch.full_like(fake, 1 / 12 - 0.5))


# ------------------------------------------------------------ the critic
def test_critic_has_no_batch_norm_and_vanilla_keeps_it():
    def norms(model):
        return {type(m).__name__ for m in model.D.modules()
                if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.InstanceNorm2d))}

    small = dict(nz=8, ngf=4, ndf=4)
    assert norms(_dcgan()) == {"BatchNormAct2d"}
    for model in (_dcgan(loss="wgan-gp"), _dcgan(loss="wgan-gp", pack=2, minibatch_stddev=4),
                  ConditionalGAN(CGANConfig(loss="wgan-gp", **small)),
                  StackedMNISTGAN(StackedMNISTConfig.for_arch("veegan", loss="wgan-gp"))):
        assert norms(model) == {"InstanceNormAct2d"}
    unfused = DCGAN(DCGANConfig(nc=1, image_size=28, loss="wgan-gp", **small), fused=False)
    assert norms(unfused) == {"InstanceNorm2d"}
    assert norms(gan_ext.fuse(unfused)) == {"InstanceNormAct2d"}
    assert "BatchNormAct2d" in {type(m).__name__ for m in _dcgan(loss="wgan-gp").G.modules()}


class _BNGAN(GAN):
    def build(self, c, fused):
        G, _ = super().build(c, fused)
        return G, nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8),
                                nn.Linear(8, 1))


def test_batch_norm_critic_refused():
    with pytest.raises(ValueError, match=r"loss='wgan-gp': D has a batch norm \(BatchNorm1d\)"):
        _BNGAN(GANConfig(loss="wgan-gp"))
    D = _dcgan().D
    G = _dcgan().G
    opt = torch.optim.Adam(D.parameters())
    with pytest.raises(ValueError, match=r"D has a batch norm \(BatchNormAct2d\)"):
        train_step(G, D, opt, opt, torch.rand(2, 1, 28, 28), GANLoss("wasserstein"), gp_lambda=10.0)


# ----------------------------------------------------- combinations, defaults
@pytest.mark.parametrize("cure", [{}, {"pack": 2}, {"minibatch_stddev": 2},
                                  {"minibatch_discrimination": (3, 2)}, {"joint_batch": True},
                                  {"feature_matching": True}, {"spectral_norm": True, "ema": 0.9},
                                  {"diffaugment": ("translation",)}])
def test_wgan_gp_step_with_the_cures_runs(cure):
    torch.manual_seed(0)
    gan = _dcgan(loss="wgan-gp", k=2, **cure)
    opt_g, opt_d = gan.make_optimizers()
    stats = gan.train_step([torch.rand(4, 1, 28, 28) * 2 - 1] * 2, opt_g, opt_d)
    assert all(torch.isfinite(v) for v in stats.values()) and stats["gp"] > 0


@pytest.mark.parametrize("family", ["gan", "ring-veegan", "grid-pacgan", "stacked-unrolled"])
def test_wgan_gp_step_in_the_other_families_runs(family):
    torch.manual_seed(0)
    if family == "gan":   # D with dropout: the penalty's D call draws its own mask
        gan, real = GAN(GANConfig(nz=4, g_hidden=(16,), d_hidden=(16, 8), loss="wgan-gp")), \
            torch.rand(4, 1, 28, 28) * 2 - 1
    elif family.startswith(("ring", "grid")):
        arch = family.split("-")[1]
        gan, real = MixtureGAN(MixtureGANConfig.for_arch(arch, loss="wgan-gp")), torch.randn(8, 2)
    else:
        gan = StackedMNISTGAN(StackedMNISTConfig.for_arch("unrolled", loss="wgan-gp"))
        real = torch.rand(4, 3, 28, 28) * 2 - 1
    opt_g, opt_d = gan.make_optimizers()
    stats = gan.train_step(real, opt_g, opt_d)
    assert all(torch.isfinite(v) for v in stats.values()) and stats["gp"] > 0


def test_conditional_critic_interpolates_within_a_class():
    """cgan: each D update's fakes take the real batch's labels, so x_hat has
    one class (sample_labels is never asked)."""
    torch.manual_seed(0)
    gan = ConditionalGAN(CGANConfig(loss="wgan-gp", **SMALL))
    opt_g, opt_d = gan.make_optimizers()

    def no_labels(n, device):
        raise AssertionError("fakes drew their own labels")

    stats = gan.train_step(torch.rand(4, 1, 28, 28), opt_g, opt_d,
                           labels=torch.tensor([1, 2, 3, 4]), sample_labels=no_labels)
    assert torch.isfinite(stats["gp"])


def test_wgan_gp_brings_the_papers_defaults_and_explicit_values_win():
    def config(model="dcgan", **kw):
        return trainer_class(model)(TrainOptions(model=model, **kw),
                                    torch.device("cpu")).make_config()

    c = config(loss="wgan-gp")
    assert (c.loss, c.k, c.lr, tuple(c.betas), c.gp_lambda) == ("wgan-gp", 5, 1e-4, (0.0, 0.9), 10.0)
    assert isinstance(c.make_loss(), GANLoss) and c.make_loss().mode == "wasserstein"
    c = config(loss="wgan-gp", k=2, lr=3e-4, gp_lambda=5.0)
    assert (c.k, c.lr, tuple(c.betas), c.gp_lambda) == (2, 3e-4, (0.0, 0.9), 5.0)
    c = config()                                   # vanilla: today's defaults
    assert (c.loss, c.k, c.lr, tuple(c.betas)) == ("vanilla", 1, 2e-4, (0.5, 0.999))
    c = config("ring", loss="wgan-gp")             # over the arch's own (VEEGAN: 1e-3)
    assert (c.k, c.lr, tuple(c.betas)) == (5, 1e-4, (0.0, 0.9))
    assert config("ring", loss="hinge").lr == 1e-3
    c = config("stacked-mnist", loss="wgan-gp", lr_d=3e-4)
    assert (c.lr, c.lr_d, c.lr_g, tuple(c.betas)) == (1e-4, 3e-4, 1e-4, (0.0, 0.9))
    assert isinstance(MixtureGAN(config("grid", loss="wgan-gp")).D, nn.Module)


def test_model_config_refusals():
    cases = [
        (dict(gp_lambda=5.0), r"gp_lambda \(--gp-lambda\) .* applies to loss='wgan-gp'"),
        (dict(loss="wgan-gp", gp_lambda=0.0), r"gp_lambda must be"),
        (dict(loss="wgan-gp", r1_gamma=1.0), r"r1_gamma \(--r1\) cannot be combined with "
                                             r"loss='wgan-gp'"),
        (dict(loss="wgan-gp", unrolled=1), r"unrolled \(--unrolled\) cannot be combined"),
        (dict(loss="wgan-gp", minimax=True), r"minimax=True is the BCE"),
        (dict(loss="wgan-gp", real_label=0.9), r"no meaning for the wasserstein loss"),
        (dict(loss="wgan"), r"loss must be one of"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            DCGANConfig(**kw)


# ------------------------------------------------------------------------ CLI
def _train(model, out, *extra):
    return cli.main(["train", model, "--out", str(out), *TINY, *extra])


def test_cli_dcgan_wgan_gp_trains_and_resumes_exactly(tmp_path):
    common = ["--seed", "2", "--loss", "wgan-gp", "--k", "2", "--gp-lambda", "5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train("dcgan", straight, "--steps", "3", *common) == 0
    assert _train("dcgan", split, "--steps", "2", *common) == 0
    assert _train("dcgan", split, "--steps", "3", "--resume", *common) == 0
    a = load_checkpoint(str(straight / "checkpoint.pt"))
    b = load_checkpoint(str(split / "checkpoint.pt"))
    cfg = a["model_config"]
    assert (cfg["loss"], cfg["k"], cfg["gp_lambda"], cfg["lr"], tuple(cfg["betas"])) \
        == ("wgan-gp", 2, 5.0, 1e-4, (0.0, 0.9))
    assert len(a["history"]) == 3
    for rec in a["history"]:
        for key in ("d_loss", "g_loss", "gp"):
            assert rec[key] is not None and abs(rec[key]) < 1e6, rec
    assert a["history"] == b["history"]
    assert a["models"].keys() == b["models"].keys()
    assert not any("running_mean" in k for k in a["models"] if k.startswith("D."))
    for k, v in a["models"].items():
        assert torch.equal(v, b["models"][k]), k


def test_cli_help_shows_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "dcgan", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--loss {vanilla,lsgan,hinge,wgan-gp}", "--gp-lambda LAMBDA", "(default 10)",
                 "5 with --loss wgan-gp"):
        assert text in out, text


@pytest.mark.parametrize("model,args,message", [
    ("dcgan", ["--gp-lambda", "5"], "--gp-lambda is the weight of WGAN-GP's gradient penalty: "
                                    "it applies to --loss wgan-gp only"),
    ("dcgan", ["--loss", "wgan-gp", "--gp-lambda", "0"], "--gp-lambda must be > 0"),
    ("dcgan", ["--loss", "hinge", "--g-loss", "minimax"], "--g-loss minimax is the BCE loss's"),
    ("gan", ["--loss", "wgan-gp", "--g-loss", "non-saturating"],
     "--g-loss applies to --loss vanilla only"),
    ("dcgan", ["--loss", "wgan-gp", "--label-smoothing", "0.1"],
     "--label-smoothing has no meaning for --loss wgan-gp"),
    ("dcgan", ["--loss", "wgan-gp", "--r1", "1"], "--r1 cannot be combined with --loss wgan-gp"),
    ("ring", ["--loss", "wgan-gp", "--unrolled", "1"], "--unrolled cannot be combined"),
    ("vae", ["--loss", "wgan-gp"], "--loss does not apply to vae"),
    ("dcgan", ["--loss", "wgan"], "argument --loss: invalid choice: 'wgan'"),
])
def test_cli_refusals_are_one_line(model, args, message, tmp_path, capsys):
    assert message in one_line_error(capsys, _train(model, tmp_path / "r", "--steps", "1", *args))
    assert not (tmp_path / "r").exists()
