"""Modern GAN training options (issue 18): TTUR learning rates, spectral
normalisation of D, DiffAugment and lazy R1, on the models and through
`gan-ext train` (exact resume), with the refusals."""
import copy
import itertools

import pytest
import torch
from torch.autograd import gradcheck

import gan_ext
from gan_ext import cli
from gan_ext.models import CGANConfig, ConditionalGAN, DCGAN, DCGANConfig, GAN, GANConfig
from gan_ext.models.diffaugment import POLICIES, diff_augment, parse_policy
from gan_ext.models.modes import (MixtureGAN, MixtureGANConfig, StackedMNISTConfig,
                                  StackedMNISTGAN)
from gan_ext.models.stabilize import r1_penalty
from gan_ext.train import TrainOptions, load_checkpoint, trainer_class

from conftest import one_line_error, skip_unless_fused_on

TINY = ["--batch-size", "4", "--limit", "32", "--eval-n", "0", "--threads", "1",
        "--no-progress", "--log-every", "1"]
MODERN = ["--lr-d", "4e-4", "--lr-g", "1e-4", "--spectral-norm",
          "--diffaugment", "color,translation,cutout", "--r1", "1", "--r1-every", "2"]
ONE = [(p,) for p in POLICIES] + [POLICIES]


def _images(b=3, c=3, s=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, s, s, generator=g, dtype=dtype) * 1.8 - 0.9   # no exact zeros


def _dcgan(**kw):
    return DCGAN(DCGANConfig(nc=1, image_size=28, ngf=8, ndf=8, nz=8, **kw))


# -------------------------------------------------------------- DiffAugment
@pytest.mark.parametrize("policy", ONE, ids=lambda p: "+".join(p))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_diffaugment_keeps_shape_and_dtype_and_changes_images(policy, dtype):
    x = _images(dtype=dtype)
    torch.manual_seed(0)
    out = diff_augment(x, policy)
    assert out.shape == x.shape and out.dtype == dtype
    assert not torch.equal(out, x)
    torch.manual_seed(0)
    assert torch.equal(diff_augment(x, ",".join(policy)), out)   # the global RNG reproduces it
    assert not torch.equal(diff_augment(x, policy), out)         # fresh draws per call


@pytest.mark.parametrize("policy", ONE, ids=lambda p: "+".join(p))
def test_diffaugment_gradcheck(policy):
    x = _images(2, 3, 8, dtype=torch.float64).requires_grad_()

    def f(t):
        torch.manual_seed(3)   # the same draws in each of gradcheck's evaluations
        return diff_augment(t, policy)

    assert gradcheck(f, (x,), eps=1e-6, atol=1e-5)
    f(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_is_a_shift_of_at_most_an_eighth_with_zeros_moving_in():
    x = torch.arange(1, 8 * 16 * 16 + 1, dtype=torch.float32).view(8, 1, 16, 16)
    torch.manual_seed(1)
    out = diff_augment(x, "translation")
    shifts = set()
    for b in range(8):
        matches = []
        for dy, dx in itertools.product(range(-2, 3), repeat=2):
            want = torch.zeros(16, 16)
            ys, xs = slice(max(0, -dy), 16 - max(0, dy)), slice(max(0, -dx), 16 - max(0, dx))
            src_y = slice(max(0, dy), 16 - max(0, -dy))
            src_x = slice(max(0, dx), 16 - max(0, -dx))
            want[ys, xs] = x[b, 0, src_y, src_x]
            if torch.equal(out[b, 0], want):
                matches.append((dy, dx))
        assert len(matches) == 1, f"sample {b}: not a zero-filled shift within 2 pixels"
        shifts.add(matches[0])
    assert len(shifts) > 1   # drawn per sample


def test_cutout_zeroes_one_clipped_square_of_half_the_size():
    x = _images(64, 2, 16)
    torch.manual_seed(2)
    out = diff_augment(x, ("cutout",))
    full = 0
    for b in range(64):
        zero = out[b] == 0
        assert torch.equal(zero[0], zero[1])                 # the same square on every channel
        assert torch.equal(out[b][~zero], x[b][~zero])       # the rest untouched
        rows = zero[0].any(1).nonzero().flatten()
        cols = zero[0].any(0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 8
        box = zero[0][rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and int(zero[0].sum()) == box.numel()   # one rectangle
        assert len(rows) == 8 or rows[0] == 0 or rows[-1] == 15  # clipped only at a border
        full += len(rows) == 8 and len(cols) == 8
    assert full > 0


def test_empty_policy_is_identity_and_nan_propagates():
    x = _images()
    assert diff_augment(x, "") is x and diff_augment(x, ()) is x
    y = x.clone()
    y[0, 0, 3, 4] = float("nan")
    torch.manual_seed(0)
    out = diff_augment(y, "color")
    assert torch.isnan(out[0]).all() and not torch.isnan(out[1:]).any()  # the image's mean
    nan = torch.full((2, 1, 8, 8), float("nan"))
    assert torch.isnan(diff_augment(nan, "cutout")).all()   # cut pixels stay NaN


def test_bad_policies_refused():
    with pytest.raises(ValueError, match="unknown policy 'zoom'"):
        parse_policy("color,zoom")
    with pytest.raises(ValueError, match="--diffaugment: unknown policy"):
        TrainOptions(model="dcgan", diffaugment="color,zoom")
    with pytest.raises(ValueError, match="diffaugment: unknown"):
        DCGANConfig(diffaugment=("blur",))
    with pytest.raises(ValueError, match="B, C, H, W"):
        diff_augment(torch.zeros(4, 2), "color")
    with pytest.raises(ValueError, match="2-D points"):
        MixtureGANConfig(diffaugment=("color",))
    assert parse_policy("cutout, color") == ("color", "cutout")   # the paper's order


@pytest.mark.parametrize("cure", [{}, {"joint_batch": True}, {"feature_matching": True},
                                  {"unrolled": 1}, {"pack": 2}])
def test_every_image_d_sees_is_augmented(cure):
    torch.manual_seed(0)
    gan = _dcgan(diffaugment=("cutout",), **cure)
    seen = []
    gan.D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    opt_g, opt_d = gan.make_optimizers()
    gan.train_step(_images(4, 1, 28), opt_g, opt_d)
    assert len(seen) >= 2
    for x in seen:   # real pixels and tanh outputs are never exactly 0: the cut square is
        assert (x == 0).flatten(1).any(1).all()


# ----------------------------------------------------------------------- TTUR
def test_ttur_learning_rates_in_every_family():
    def lrs(model):
        opt_g, opt_d = model.make_optimizers()
        return opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]

    small = dict(nz=8, ngf=8, ndf=8)
    assert lrs(GAN(GANConfig(lr_d=4e-4, lr_g=1e-4))) == (1e-4, 4e-4)
    assert lrs(_dcgan(lr=3e-4)) == (3e-4, 3e-4)
    assert lrs(_dcgan(lr=3e-4, lr_d=5e-4)) == (3e-4, 5e-4)
    assert lrs(ConditionalGAN(CGANConfig(lr_g=1e-3, **small))) == (1e-3, 2e-4)
    assert lrs(MixtureGAN(MixtureGANConfig.for_arch("veegan", lr_d=2e-3))) == (1e-3, 2e-3)
    stacked = StackedMNISTGAN(StackedMNISTConfig.for_arch("unrolled"))
    assert lrs(stacked) == (1e-4, 2e-4)            # the paper's G 1e-4 against D 2e-4
    stacked = StackedMNISTGAN(StackedMNISTConfig.for_arch("unrolled", lr_d=3e-4))
    assert lrs(stacked) == (1e-4, 3e-4)
    for bad in (0.0, -1e-4, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr_d"):
            DCGANConfig(lr_d=bad)
    with pytest.raises(ValueError, match="--lr-g must be a learning rate > 0"):
        TrainOptions(model="dcgan", lr_g=0.0)


def test_stacked_mnist_options_map_to_one_lr_mechanism():
    def config(**kw):
        opts = TrainOptions(model="stacked-mnist", **kw)
        return trainer_class("stacked-mnist")(opts, torch.device("cpu")).make_config()

    c = config()
    assert (c.lr, c.lr_d, c.lr_g) == (2e-4, None, 1e-4)
    c = config(lr=3e-4)                   # --lr: both networks' rate, as before
    assert (c.lr, c.lr_d, c.lr_g) == (3e-4, None, 3e-4)
    c = config(lr=3e-4, lr_g=5e-5, lr_d=1e-3)
    assert (c.lr_d, c.lr_g) == (1e-3, 5e-5)


# ----------------------------------------------------------- spectral norm
def _parametrized(module):
    return torch.nn.utils.parametrize.is_parametrized(module, "weight")


@pytest.mark.parametrize("family", ["gan", "dcgan", "cgan-projection", "cgan-channels",
                                    "stacked", "pack"])
def test_spectral_norm_on_every_d_weight_and_state_dict_round_trip(family):
    torch.manual_seed(0)
    small = dict(nz=8, ngf=8, ndf=8)
    make = {"gan": lambda: GAN(GANConfig(spectral_norm=True, g_hidden=(16,), d_hidden=(32, 16))),
            "dcgan": lambda: _dcgan(spectral_norm=True),
            "pack": lambda: _dcgan(spectral_norm=True, pack=2, minibatch_stddev=2),
            "cgan-projection": lambda: ConditionalGAN(CGANConfig(spectral_norm=True, **small)),
            "cgan-channels": lambda: ConditionalGAN(CGANConfig(
                spectral_norm=True, d_conditioning="channels", **small)),
            "stacked": lambda: StackedMNISTGAN(StackedMNISTConfig.for_arch(
                "unrolled", spectral_norm=True))}[family]
    gan = make()
    layers = [m for m in gan.D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(_parametrized(m) for m in layers)
    assert not any(_parametrized(m) for m in gan.G.modules())
    if family.startswith("cgan"):
        assert _parametrized(gan.D.embed) == (family == "cgan-projection")
    for m in layers:   # the normalised weight's largest singular value is 1
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1).double(), 2)
        assert abs(float(sigma) - 1) < 0.05, float(sigma)
    again = make()
    again.load_state_dict(gan.state_dict())   # strict: the rebuilt model has the same keys
    assert any(k.endswith("parametrizations.weight.original") for k in gan.D.state_dict())


# ------------------------------------------------------------------------- R1
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_r1_through_fused_d_matches_plain_pytorch(spectral_norm):
    """R1's parameter gradients (a double backward) through the fused
    BatchNormAct2d D equal those of the fused=False build (nn.BatchNorm2d +
    LeakyReLU), float64."""
    skip_unless_fused_on("cpu")
    cfg = DCGANConfig(nc=1, image_size=28, ngf=8, ndf=8, nz=8, spectral_norm=spectral_norm)
    torch.manual_seed(4)
    fused = DCGAN(cfg).D.double()
    torch.manual_seed(4)
    plain = DCGAN(cfg, fused=False).D.double()
    plain.load_state_dict(fused.state_dict())
    assert not any(isinstance(m, gan_ext.nn.BatchNormAct2d) for m in plain.modules())
    x = _images(5, 1, 28, dtype=torch.float64)

    def grads(D):
        xr = x.clone().requires_grad_()
        r1_penalty(D(xr), xr).backward()
        return {n: p.grad for n, p in D.named_parameters()}

    with gan_ext.use_backend("fused"):
        got = grads(fused)
    want = grads(plain)
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-7, atol=1e-10, msg=n)


def test_r1_lazy_schedule_weight_and_step_counter():
    """Every r1_every-th D step the loss gains r1_every * gamma/2 E||grad||^2:
    D's SGD step equals that computed by hand; other steps log no r1."""
    torch.manual_seed(0)
    gan = _dcgan(r1_gamma=3.0, r1_every=2, k=1)
    x = _images(4, 1, 28)
    ref = copy.deepcopy(gan)
    opt_g = torch.optim.SGD(gan.G.parameters(), lr=1.0)
    opt_d = torch.optim.SGD(gan.D.parameters(), lr=1.0)
    before = {n: p.detach().clone() for n, p in gan.D.named_parameters()}
    torch.manual_seed(7)
    stats = gan.train_step(x, opt_g, opt_d)
    assert gan.d_steps == 1 and "r1" in stats
    torch.manual_seed(7)
    fake = ref.G(torch.randn(4, 8))
    xr = x.clone().requires_grad_()
    d_real, d_fake = ref.D(xr), ref.D(fake.detach())
    r1 = 3.0 / 2 * r1_penalty(d_real, xr)
    (ref.loss.d_loss(d_real, d_fake) + 2 * r1).backward()
    torch.testing.assert_close(stats["r1"], r1.detach())
    for n, p in ref.D.named_parameters():
        torch.testing.assert_close(gan.D.get_parameter(n).detach(), before[n] - p.grad,
                                   msg=n)
    assert "r1" not in gan.train_step(x, opt_g, opt_d)    # D step 1
    assert "r1" in gan.train_step(x, opt_g, opt_d)        # D step 2
    gan2 = _dcgan(r1_gamma=1.0, r1_every=3, k=2)
    og, od = gan2.make_optimizers()
    seen = ["r1" in gan2.train_step([x, x], og, od) for _ in range(4)]
    assert gan2.d_steps == 8 and seen == [True, True, False, True]   # D steps 0, 3, -, 6


@pytest.mark.parametrize("cure", [{"joint_batch": True}, {"pack": 2},
                                  {"joint_batch": True, "diffaugment": ("translation",)}])
def test_r1_with_joint_batch_and_pack_runs(cure):
    torch.manual_seed(0)
    gan = _dcgan(r1_gamma=1.0, r1_every=1, **cure)
    opt_g, opt_d = gan.make_optimizers()
    stats = gan.train_step(_images(4, 1, 28), opt_g, opt_d)
    assert torch.isfinite(stats["r1"]) and stats["r1"] > 0


def test_r1_refusals():
    with pytest.raises(ValueError, match=r"r1_gamma \(--r1\) cannot be combined with unrolled"):
        DCGANConfig(r1_gamma=1.0, unrolled=2)
    with pytest.raises(ValueError, match="r1_gamma must"):
        DCGANConfig(r1_gamma=-1.0)
    with pytest.raises(ValueError, match="--r1-every needs --r1"):
        TrainOptions(model="dcgan", r1_every=4)
    with pytest.raises(ValueError, match="--r1 must be"):
        TrainOptions(model="dcgan", r1=-0.5)


# ------------------------------------------------------------------------ CLI
def _train(model, out, *extra):
    return cli.main(["train", model, "--out", str(out), *TINY, *extra])


def test_cli_modern_dcgan_run_has_the_lrs_and_resumes_exactly(tmp_path):
    common = ["--seed", "3", *MODERN]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train("dcgan", straight, "--steps", "4", *common) == 0
    assert _train("dcgan", split, "--steps", "3", *common) == 0   # stops after D step 2: resumes
    # at D step 3 (no R1; a lost counter would restart at 0, an R1 step)
    assert _train("dcgan", split, "--steps", "4", "--resume", *common) == 0
    a = load_checkpoint(str(straight / "checkpoint.pt"))
    b = load_checkpoint(str(split / "checkpoint.pt"))
    cfg = a["model_config"]
    assert (cfg["lr_d"], cfg["lr_g"], cfg["spectral_norm"], cfg["r1_gamma"], cfg["r1_every"]) \
        == (4e-4, 1e-4, True, 1.0, 2)
    assert tuple(cfg["diffaugment"]) == POLICIES
    assert a["optimizers"]["G"]["param_groups"][0]["lr"] == 1e-4
    assert a["optimizers"]["D"]["param_groups"][0]["lr"] == 4e-4
    assert a["extra"]["d_steps"] == b["extra"]["d_steps"] == 4
    assert ["r1" in r for r in a["history"]] == [True, False, True, False]
    assert a["history"] == b["history"]
    assert a["models"].keys() == b["models"].keys()
    for k, v in a["models"].items():
        assert torch.equal(v, b["models"][k]), k
    out = tmp_path / "s.pt"   # the saved config rebuilds the spectral-norm D to load into
    assert cli.main(["sample", str(straight), "--n", "4", "-o", str(out)]) == 0


def test_cli_cgan_projection_with_modern_options_runs(tmp_path):
    assert _train("cgan", tmp_path / "c", "--steps", "2", "--spectral-norm", "--joint-batch",
                  "--diffaugment", "color", "--r1", "0.5", "--r1-every", "1") == 0
    ckpt = load_checkpoint(str(tmp_path / "c" / "checkpoint.pt"))
    assert all("r1" in r for r in ckpt["history"])
    assert any("embed.parametrizations.weight" in k for k in ckpt["models"])


def test_cli_help_shows_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "dcgan", "--help"])
    out = capsys.readouterr().out
    for flag in ("--lr-d LR", "--lr-g LR", "--spectral-norm", "--diffaugment POLICIES",
                 "--r1 GAMMA", "--r1-every N", "color,translation,cutout"):
        assert flag in out, flag


@pytest.mark.parametrize("model,args,message", [
    ("dcgan", ["--lr-d", "0"], "--lr-d must be a learning rate > 0"),
    ("dcgan", ["--lr-g=-1e-4"], "--lr-g must be a learning rate > 0"),
    ("dcgan", ["--diffaugment", "color,zoom"], "--diffaugment: unknown policy 'zoom'"),
    ("ring", ["--diffaugment", "color"], "--diffaugment does not apply to ring"),
    ("vae", ["--spectral-norm"], "--spectral-norm does not apply to vae"),
    ("gan", ["--r1-every", "4"], "--r1-every needs --r1"),
    ("dcgan", ["--r1-every", "4", "--r1", "0"], "--r1-every needs --r1"),
    ("gan", ["--r1", "1", "--unrolled", "1"], "--r1 cannot be combined with --unrolled: the look-ahead"),
])
def test_cli_refusals_are_one_line(model, args, message, tmp_path, capsys):
    assert message in one_line_error(capsys, _train(model, tmp_path / "r", "--steps", "1", *args))
