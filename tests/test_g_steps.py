"""``--g-steps N`` (issue 16): N generator updates per iteration on the same
latents, as the VEEGAN/PacGAN stacked-MNIST code runs G's optimizer twice on
one z."""
import copy

import pytest
import torch

from gan_ext import cli
from gan_ext.models import GAN, GANConfig
from gan_ext.models.gan import train_step
from gan_ext.train import TrainOptions

NZ = 4


def _gan(**kw):
    torch.manual_seed(0)
    return GAN(GANConfig(nz=NZ, img_shape=(1, 4, 4), g_hidden=(8,), d_hidden=(8,), dropout=0.0,
                         **kw)).double()


def _opts(model):
    return [torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.5, 0.999))
            for m in (model.G, model.D)]


def _real():
    return torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64) * 2 - 1


def test_two_g_steps_are_one_step_then_a_g_update_on_the_same_latents():
    a, b = _gan(), _gan()
    (ga, da), (gb, db) = _opts(a), _opts(b)
    zs = []

    def sample_z(n, device):
        zs.append(torch.randn(n, NZ, dtype=torch.float64, device=device))
        return zs[-1]

    torch.manual_seed(5)
    stats = train_step(a.G, a.D, ga, da, _real(), a.loss, sample_z=sample_z, g_steps=2)
    assert len(zs) == 1                                   # one draw of z for both G steps

    torch.manual_seed(5)
    first = train_step(b.G, b.D, gb, db, _real(), b.loss, sample_z=sample_z)
    z = zs[-1]
    for p in b.D.parameters():
        p.requires_grad_(False)
    loss_g = b.loss.g_loss(b.D(b.G(z)))                   # the second G step, by hand
    gb.zero_grad()
    loss_g.backward()
    gb.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    torch.testing.assert_close(stats["g_loss"], (first["g_loss"] + loss_g.detach()) / 2)
    torch.testing.assert_close(stats["d_loss"], first["d_loss"])


def test_one_g_step_is_bitwise_the_default_and_the_model_config_drives_it():
    a, b = _gan(), _gan(g_steps=3)
    (ga, da), (gb, db) = _opts(a), _opts(b)
    torch.manual_seed(2)
    s1 = a.train_step(_real(), ga, da)
    torch.manual_seed(2)
    s2 = train_step(a.G, a.D, ga, da, _real(), a.loss, g_steps=1)
    assert s1.keys() == s2.keys()
    torch.manual_seed(2)
    b.train_step(_real(), gb, db)
    assert gb.state[next(iter(b.G.parameters()))]["step"] == 3    # three Adam steps of G
    assert db.state[next(iter(b.D.parameters()))]["step"] == 1


def test_bad_g_steps_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="g_steps"):
        GANConfig(g_steps=0)
    with pytest.raises(ValueError, match="g_steps"):
        TrainOptions(model="dcgan", g_steps=0)
    for model, args, message in [("vae", ["--g-steps", "2"], "--g-steps does not apply to vae"),
                                 ("dcgan", ["--g-steps", "0"], "--g-steps")]:
        code = cli.main(["train", model, *args, "--steps", "1", "--eval-n", "0",
                         "--out", str(tmp_path / model)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_cli_ring_run_with_two_g_steps(tmp_path):
    out = tmp_path / "run"
    rc = cli.main(["train", "ring", "--g-steps", "2", "--steps", "3", "--batch-size", "8",
                   "--eval-n", "0", "--threads", "1", "--no-progress", "--out", str(out)])
    assert rc in (0, None)
    cfg = (out / "config.json").read_text()
    assert '"g_steps": 2' in cfg
