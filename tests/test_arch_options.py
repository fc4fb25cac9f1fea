"""Issue 18, "Architecture from the command line": --nz, --ngf, --ndf, --netG,
--n-blocks, --netD, --n-layers-d, --norm build the networks they name (sizes
checked against the official definitions' parameter arithmetic), are
refused where they do not apply or do not fit, and are saved so that
sample, eval and --resume rebuild the same network."""
import json

import pytest
import torch

from gan_ext import cli
from gan_ext.models import num_parameters
from gan_ext.nn import BatchNormAct2d
from gan_ext.train import TrainOptions, load_trained
from gan_ext.train.base import trainer_class
from gan_ext.train.options import check_applicable

TINY = ["--batch-size", "2", "--limit", "8", "--no-progress", "--eval-n", "0"]


def _conv(cin, cout, k, bias):
    return cin * cout * k * k + (cout if bias else 0)


def _resnet_g(ngf, blocks, nc=3, bias=True):
    """The official ResnetGenerator's parameters: c7s1-ngf, two stride-2
    convs, `blocks` x two 3x3 convs at 4 ngf, two transposed convs, c7s1-nc
    (always with bias); conv biases only with instance norm."""
    down = _conv(nc, ngf, 7, bias) + _conv(ngf, 2 * ngf, 3, bias) + _conv(2 * ngf, 4 * ngf, 3, bias)
    res = blocks * 2 * _conv(4 * ngf, 4 * ngf, 3, bias)
    up = _conv(4 * ngf, 2 * ngf, 3, bias) + _conv(2 * ngf, ngf, 3, bias) + _conv(ngf, nc, 7, True)
    return down + res + up


def _patch_d(ndf, n_layers, nc=3, bias=True, bn=False):
    """The official NLayerDiscriminator: a 4x4 conv (bias), n_layers 4x4
    convs to min(2**n, 8) ndf (+ batch norm's 2 per channel), a 4x4 conv to 1."""
    total, prev = _conv(nc, ndf, 4, True), ndf
    for n in range(1, n_layers + 1):
        width = ndf * min(2 ** n, 8)
        total += _conv(prev, width, 4, bias) + (2 * width if bn else 0)
        prev = width
    return total + _conv(prev, 1, 4, True)


def _build(model, **kw):
    t = trainer_class(model)(TrainOptions(model=model, **kw), torch.device("cpu"))
    t.build()
    return t.model


# ------------------------------------------------------------ sizes
def test_official_figures_follow_from_the_official_layer_lists():
    assert _resnet_g(64, 9) == 11_378_179
    assert _patch_d(64, 3) == 2_764_737


def test_cyclegan_with_data_defaults_to_the_official_sizes():
    m = _build("cyclegan", data="unused-until-training")
    assert num_parameters(m.G_A) == num_parameters(m.G_B) == 11_378_179    # resnet_9blocks
    assert num_parameters(m.D_A) == 2_764_737                            # 70x70 PatchGAN
    assert m.config.norm == "instance" and m.config.n_blocks == 9
    with torch.no_grad():   # the 256-px network, one forward at a small size
        assert m.G_A.eval()(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_pix2pix_with_data_defaults_to_unet_256_and_batch_norm():
    m = _build("pix2pix", data="unused-until-training")
    assert m.config.generator == "unet" and m.config.num_downs == 8 and m.config.norm == "batch"
    assert num_parameters(m.netD) == _patch_d(64, 3, nc=6, bias=False, bn=True) == 2_768_705


@pytest.mark.parametrize("norm, bias", [("instance", True), ("batch", False), ("none", False)])
def test_cyclegan_flags_change_the_networks(norm, bias):
    m = _build("cyclegan", ngf=8, ndf=4, n_blocks=3, n_layers_d=2, norm=norm)
    extra = 0 if norm != "batch" else 2 * (8 + 16 + 32) + 3 * 2 * 2 * 32 + 2 * (16 + 8)
    assert num_parameters(m.G_A) == _resnet_g(8, 3, bias=bias) + extra
    assert num_parameters(m.D_A) == _patch_d(4, 2, bias=bias, bn=norm == "batch")
    assert any(isinstance(x, BatchNormAct2d) for x in m.G_A.modules()) == (norm == "batch")


def test_netg_netd_choices_build_the_official_networks():
    m = _build("cyclegan", data="d", image_size=128, netG="unet_128", netD="pixel", ndf=8)
    assert m.config.generator == "unet" and m.config.num_downs == 7
    assert type(m.D_A).__name__ == "PixelDiscriminator"
    # conv 3->8 (bias), conv 8->16 (bias with instance norm), conv 16->1 (bias)
    assert num_parameters(m.D_A) == (_conv(3, 8, 1, True) + _conv(8, 16, 1, True)
                                     + _conv(16, 1, 1, True))
    assert "net.5.weight" in m.D_A.state_dict()                 # the official keys
    m = _build("pix2pix", netG="resnet_6blocks", ngf=8, netD="n_layers", n_layers_d=1)
    assert m.config.generator == "resnet" and m.config.n_blocks == 6
    assert num_parameters(m.netD) == _patch_d(32, 1, nc=2, bias=False, bn=True)


def test_gan_family_sizes():
    g = _build("dcgan", data="d", image_size=64, channels=3)     # pytorch/examples sizes
    assert (num_parameters(g.G), num_parameters(g.D)) == (3_576_704, 2_765_568)
    g = _build("dcgan", nz=10, ngf=8, ndf=4)
    assert g.G.main[0].weight.shape == (10, 32, 4, 4) and g.D.main[0].weight.shape[0] == 4
    assert _build("gan", nz=7).G.main[0].weight.shape == (256, 7)
    assert _build("cgan", nz=12, ngf=16).G.nz == 12
    assert _build("vae", nz=3).config.latent_dim == 3
    assert _build("dae", nz=2).config.latent_dim == 2


# ---------------------------------------------------------- refusals
@pytest.mark.parametrize("model, kw, flag", [
    ("dcgan", dict(norm="batch"), "--norm"),
    ("gan", dict(ngf=8), "--ngf"),
    ("ring", dict(nz=8), "--nz"),
    ("vae", dict(init_g="x.pt"), "--init-g"),
    ("cyclegan", dict(image_size=64), "--image-size"),   # the MNIST pair is 32 px
])
def test_an_option_a_model_does_not_use_is_refused(model, kw, flag):
    with pytest.raises(ValueError, match=flag):
        check_applicable(TrainOptions(model=model, **kw), kw)


@pytest.mark.parametrize("kw, flag", [
    (dict(netG="unet_256", n_blocks=9), "--n-blocks"),
    (dict(netG="resnet_6blocks", n_blocks=9), "--n-blocks 9 contradicts"),
    (dict(netD="basic", n_layers_d=4), "--n-layers-d"),
    (dict(netG="resnet_12"), "--netG must be one of"),
    (dict(ngf=0), "ngf"),
])
def test_contradictions_are_refused(kw, flag):
    with pytest.raises(ValueError, match=flag):
        TrainOptions(model="cyclegan", **kw)


@pytest.mark.parametrize("kw, message", [
    (dict(data="d", image_size=128, netG="unet_256"), "unet_256 needs --image-size divisible by "
                                                      "256, got 128: use --netG unet_128"),
    (dict(n_layers_d=4), "PatchGAN of 4 layers needs images of at least 48 px, got 32"),
    (dict(data="d", image_size=130), "divisible by 4"),
])
def test_a_network_that_does_not_fit_the_images_is_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        _build("cyclegan", **kw)


def test_init_with_resume_or_spectral_norm_is_refused():
    with pytest.raises(ValueError, match="--init-g starts a new run"):
        check_applicable(TrainOptions(model="dcgan", init_g="g.pth", resume=True),
                         ["init_g", "resume"])
    with pytest.raises(ValueError, match="--init-d does not combine with --spectral-norm"):
        check_applicable(TrainOptions(model="dcgan", init_d="d.pth", spectral_norm=True),
                         ["init_d", "spectral_norm"])


# ------------------------------------------- saved, rebuilt, resumed
ARCH = ["--ngf", "8", "--ndf", "8", "--netG", "resnet_6blocks", "--netD", "n_layers",
        "--n-layers-d", "2", "--norm", "instance"]


def test_sample_eval_and_resume_rebuild_a_non_default_pix2pix(tmp_path, capsys):
    run, straight = tmp_path / "r", tmp_path / "s"
    assert cli.main(["train", "pix2pix", "--out", str(run), *TINY, "--steps", "1", *ARCH]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["options"]["netG"] == "resnet_6blocks" and cfg["model_config"]["n_layers_D"] == 2
    trainer, _ = load_trained(str(run))
    assert trainer.model.config.generator == "resnet" and trainer.model.config.norm == "instance"
    assert cli.main(["sample", str(run), "--n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert cli.main(["eval", str(run), "--n", "4", "--json"]) == 0
    assert "test_l1" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # resumed 1 + 1 steps == 2 straight steps, bit for bit
    assert cli.main(["train", "pix2pix", "--out", str(run), "--resume", "--steps", "2"]) == 0
    assert cli.main(["train", "pix2pix", "--out", str(straight), *TINY, "--steps", "2",
                     *ARCH]) == 0
    a, b = load_trained(str(run))[0].model, load_trained(str(straight))[0].model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values()))
    capsys.readouterr()
    assert cli.main(["train", "pix2pix", "--out", str(run), "--resume", "--steps", "3",
                     "--ngf", "16"]) == 2
    assert "--ngf cannot change on --resume" in capsys.readouterr().err


def test_config_file_takes_the_architecture(tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"netD": "pixel", "n-blocks": 2, "ngf": 4, "ndf": 4}))
    run = tmp_path / "r"
    assert cli.main(["train", "cyclegan", "--config", str(cfg), "--out", str(run), *TINY,
                     "--steps", "1"]) == 0
    m = load_trained(str(run))[0].model
    assert m.config.discriminator == "pixel" and m.config.n_blocks == 2 and m.config.ngf == 4


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_pixel_discriminator_keys_and_fused_build(norm):
    from gan_ext import fuse
    from gan_ext.models import PixelDiscriminator
    plain = PixelDiscriminator(3, 4, norm, fused=False)
    bias = norm == "instance"   # the official use_bias rule, the last conv included
    want = ["net.0.weight", "net.0.bias", "net.2.weight"] + ["net.2.bias"] * bias
    want += ["net.3.weight", "net.3.bias", "net.3.running_mean", "net.3.running_var",
             "net.3.num_batches_tracked"] * (norm == "batch")
    want += ["net.5.weight"] + ["net.5.bias"] * bias
    assert list(plain.state_dict()) == want
    fused = PixelDiscriminator(3, 4, norm, fused=True)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 5, 5)
    ref = plain(x)
    assert torch.allclose(fused(x), ref, atol=1e-5)
    assert torch.allclose(fuse(plain)(x), ref, atol=1e-5)
