"""Issue 18, "Start from published weights": --init-g / --init-d load a
pytorch/examples DCGAN file, official CycleGAN/pix2pix files (two for
cyclegan, or an official run folder) and gan_ext checkpoints into a new run;
anything that does not fit is one line naming the option, the first
mismatching key and the flags that would fit."""
import json

import pytest
import torch
from PIL import Image
from torch import nn

from gan_ext import cli
from gan_ext.models import NLayerDiscriminator, ResnetGenerator, UnetGenerator
from gan_ext.train import TrainOptions, load_trained
from gan_ext.train.base import trainer_class
from gan_ext.train.init_weights import apply_init

TINY = ["--batch-size", "2", "--limit", "8", "--no-progress", "--eval-n", "0"]


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return module


def _examples_dcgan(nz=10, ngf=8, ndf=8, nc=3):
    """pytorch/examples dcgan/main.py's Generator and Discriminator at 64 px,
    written out from its layer list: `main` = ConvT/BN/ReLU x 4, ConvT, Tanh;
    Conv/LReLU, (Conv/BN/LReLU) x 3, Conv, Sigmoid."""
    def up(i, o, s=2, p=1):
        return [nn.ConvTranspose2d(i, o, 4, s, p, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

    def down(i, o):
        return [nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, True)]
    G = nn.Module()
    G.main = nn.Sequential(*up(nz, ngf * 8, 1, 0), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2),
                           *up(ngf * 2, ngf), nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
                           nn.Tanh())
    D = nn.Module()
    D.main = nn.Sequential(nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
                           *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8),
                           nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    return _randomize(G, 1).state_dict(), _randomize(D, 2).state_dict()


def _build(model, **kw):
    t = trainer_class(model)(TrainOptions(model=model, **kw), torch.device("cpu"))
    t.build()
    apply_init(t, log=lambda line: None)
    return t.model


def _equal(net, sd):
    own = net.state_dict()   # every key of the file is the network's, every value equal
    return all(k in own and torch.equal(own[k].float(), v.float()) for k, v in sd.items())


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def test_pytorch_examples_dcgan_files(tmp_path):
    sd_g, sd_d = _examples_dcgan()
    g, d = _save(sd_g, tmp_path / "netG_epoch_24.pth"), _save(sd_d, tmp_path / "netD_epoch_24.pth")
    m = _build("dcgan", data="d", image_size=64, channels=3, nz=10, ngf=8, ndf=8, init_g=g,
               init_d=d, ema=0.9)
    assert _equal(m.G, sd_g) and _equal(m.D, sd_d) and _equal(m.G_ema, sd_g)
    # end to end: a run on a folder of images, the files recorded in config.json
    data = tmp_path / "img"
    data.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (30 * i, 10, 200)).save(data / f"{i}.png")
    run = tmp_path / "r"
    assert cli.main(["train", "dcgan", "--out", str(run), *TINY, "--steps", "1", "--data",
                     str(data), "--image-size", "64", "--nz", "10", "--ngf", "8", "--ndf", "8",
                     "--init-g", g, "--init-d", d]) == 0
    assert json.loads((run / "config.json").read_text())["options"]["init_g"] == g


def _official_g(seed, blocks=2):
    return _randomize(ResnetGenerator(3, 3, 8, blocks, "instance", fused=False), seed).state_dict()


def test_official_cyclegan_files_two_ways(tmp_path):
    a, b = _official_g(3), _official_g(4)
    # as the official code saves them: a DataParallel prefix; pre-0.4 InstanceNorm statistics
    fa = _save({"module." + k: v for k, v in a.items()}, tmp_path / "h2z.pth")
    fb = _save({**b, "model.2.running_mean": torch.zeros(8), "model.2.running_var": torch.ones(8)},
               tmp_path / "z2h.pth")
    m = _build("cyclegan", ngf=8, n_blocks=2, init_g=f"{fa},{fb}")
    assert _equal(m.G_A, a) and _equal(m.G_B, b) and not _equal(m.G_A, b)
    folder = tmp_path / "official_run"
    folder.mkdir()
    _save(a, folder / "latest_net_G_A.pth")
    _save(b, folder / "latest_net_G_B.pth")
    da = _randomize(NLayerDiscriminator(3, 8, 3, "instance", fused=False), 5).state_dict()
    db = _randomize(NLayerDiscriminator(3, 8, 3, "instance", fused=False), 6).state_dict()
    _save(da, folder / "latest_net_D_A.pth")
    _save(db, folder / "latest_net_D_B.pth")
    m = _build("cyclegan", ngf=8, ndf=8, n_blocks=2, init_g=str(folder), init_d=str(folder))
    assert _equal(m.G_A, a) and _equal(m.G_B, b) and _equal(m.D_A, da) and _equal(m.D_B, db)


def test_official_pix2pix_folder(tmp_path):
    sd = _randomize(UnetGenerator(1, 1, 5, 8, "batch", fused=False), 7).state_dict()
    _save(sd, tmp_path / "latest_net_G.pth")
    assert _equal(_build("pix2pix", ngf=8, init_g=str(tmp_path)).netG, sd)


def test_gan_ext_checkpoints(tmp_path):
    run = tmp_path / "dc"
    assert cli.main(["train", "dcgan", "--out", str(run), *TINY, "--steps", "1", "--ngf", "8",
                     "--ndf", "8"]) == 0
    old = load_trained(str(run))[0].model
    m = _build("dcgan", ngf=8, ndf=8, init_g=str(run), init_d=str(run / "checkpoint.pt"))
    assert _equal(m.G, old.G.state_dict()) and _equal(m.D, old.D.state_dict())
    cyc = tmp_path / "cyc"
    assert cli.main(["train", "cyclegan", "--out", str(cyc), *TINY, "--steps", "1", "--ngf", "4",
                     "--ndf", "4", "--n-blocks", "1"]) == 0
    old = load_trained(str(cyc))[0].model
    m = _build("cyclegan", ngf=4, n_blocks=1, init_g=str(cyc))
    assert _equal(m.G_A, old.G_A.state_dict()) and _equal(m.G_B, old.G_B.state_dict())


@pytest.mark.parametrize("case, message", [
    ("dcgan_ngf", "--init-g .*netG.pth does not fit the dcgan G: first mismatching key "
                  r"main.0.weight has shape \(10, 64, 4, 4\) in the file, \(10, 128, 4, 4\) in "
                  r"the model \(the file's network matches --nz 10 --ngf 8 --image-size 64\)"),
    ("blocks", "model.16.weight is missing from the file .*matches --netG resnet_9blocks --ngf 8 "
               "--norm instance"),
    ("one_file", "cyclegan starts G_A and G_B .* the option gave 1: give two files"),
    ("patch", "--init-d .* matches --netD basic --ndf 8 --norm instance"),
    ("foreign", "neither a state_dict"),
])
def test_a_file_that_does_not_fit_is_refused(tmp_path, case, message):
    if case == "dcgan_ngf":
        kw = dict(model="dcgan", data="d", image_size=64, nz=10, ngf=16,
                  init_g=_save(_examples_dcgan()[0], tmp_path / "netG.pth"))
    elif case == "blocks":
        f = _save(_official_g(0, 9), tmp_path / "g.pth")
        kw = dict(model="cyclegan", ngf=8, n_blocks=6, init_g=f"{f},{f}")
    elif case == "one_file":
        kw = dict(model="cyclegan", ngf=8, n_blocks=2,
                  init_g=_save(_official_g(0), tmp_path / "g"))
    elif case == "patch":
        sd = NLayerDiscriminator(3, 8, 3, "instance", fused=False).state_dict()
        f = _save(sd, tmp_path / "d.pth")
        kw = dict(model="cyclegan", ndf=8, n_layers_d=2, init_d=f"{f},{f}")
    else:
        kw = dict(model="dcgan", init_g=_save([1, 2], tmp_path / "list.pt"))
    with pytest.raises(ValueError, match=message):
        _build(kw.pop("model"), **kw)


def test_mismatch_is_one_cli_line_and_no_run(tmp_path, capsys):
    f = _save(_official_g(0, 9), tmp_path / "g.pth")
    run = tmp_path / "r"
    code = cli.main(["train", "cyclegan", "--out", str(run), *TINY, "--steps", "1",
                     "--init-g", f"{f},{f}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--init-g" in err[0] and "first mismatching key" in err[0]
    assert not (run / "checkpoint.pt").exists()
