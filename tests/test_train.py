"""Unit tests of the training loop's pieces (gan_ext.train): atomic
checkpoints, RNG state round trip, image grids, the CycleGAN LR schedule."""
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from gan_ext.train import (FORMAT, CheckpointError, TrainOptions, atomic_save, load_checkpoint,
                           make_grid, plot_losses, rng_state, save_grid, set_rng_state)
from gan_ext.train import checkpoint as ckpt_mod
from gan_ext.train import trainer_class


# --------------------------------------------------------------- atomic save
def test_atomic_save_round_trip(tmp_path):
    p = tmp_path / "c.pt"
    atomic_save({"format": FORMAT, "model_name": "gan", "x": torch.arange(3)}, str(p))
    assert torch.equal(load_checkpoint(str(p), model="gan")["x"], torch.arange(3))
    assert os.listdir(tmp_path) == ["c.pt"]


class _Boom:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    p = str(tmp_path / "c.pt")
    atomic_save({"format": FORMAT, "model_name": "gan", "step": 1}, p)
    with pytest.raises(RuntimeError, match="simulated"):
        atomic_save({"format": FORMAT, "model_name": "gan", "step": 2, "bad": _Boom()}, p)
    assert load_checkpoint(p)["step"] == 1
    assert os.listdir(tmp_path) == ["c.pt"]  # the temp file is gone


def test_failed_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    p = str(tmp_path / "c.pt")
    atomic_save({"format": FORMAT, "model_name": "gan", "step": 1}, p)

    def crash(src, dst):
        raise OSError("killed before the rename (simulated)")
    monkeypatch.setattr(ckpt_mod.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_save({"format": FORMAT, "model_name": "gan", "step": 2}, p)
    monkeypatch.undo()
    assert load_checkpoint(p)["step"] == 1
    assert os.listdir(tmp_path) == ["c.pt"]


def test_load_checkpoint_rejects_foreign_and_corrupt_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(str(junk))
    foreign = tmp_path / "foreign.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not a gan_ext training checkpoint"):
        load_checkpoint(str(foreign))
    ours = tmp_path / "ours.pt"
    atomic_save({"format": FORMAT, "model_name": "vae"}, str(ours))
    with pytest.raises(CheckpointError, match="'vae' checkpoint, not 'ae'"):
        load_checkpoint(str(ours), model="ae")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.pt"))


# ----------------------------------------------------------------------- RNG
def _draw():
    return (torch.rand(4).tolist(), random.random(), np.random.rand(3).tolist(),
            torch.randn(2).tolist())


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = rng_state()
    p = str(tmp_path / "rng.pt")
    atomic_save({"format": FORMAT, "rng": state}, p)  # must survive weights_only loading
    first = _draw()
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    assert _draw() != first
    set_rng_state(load_checkpoint(p)["rng"])
    assert _draw() == first


# --------------------------------------------------------------------- grids
def test_make_grid_layout_and_values():
    imgs = torch.stack([torch.full((1, 3, 2), v) for v in (-1.0, 0.0, 1.0)])  # (3, 1, 3, 2)
    g = make_grid(imgs, nrow=2, padding=1)
    assert g.shape == (2 * (3 + 1) + 1, 2 * (2 + 1) + 1, 3) and g.dtype == np.uint8
    assert (g[1:4, 1:3] == 0).all()            # -1 -> black
    assert (g[1:4, 4:6] == 128).all()          # 0 -> mid grey (127.5 rounds to 128)
    assert (g[5:8, 1:3] == 255).all()          # 1 -> white, second row
    assert (g[5:8, 4:6] == 0).all()            # the empty slot keeps the pad value
    assert (g[0] == 0).all() and (g[:, 3] == 0).all()  # padding


def test_make_grid_rgb_and_unit_range():
    imgs = torch.zeros(2, 3, 4, 4)
    imgs[1, 0] = 1.0                                    # red
    g = make_grid(imgs, nrow=8, padding=0, value_range=(0, 1))
    assert g.shape == (4, 8, 3)
    assert (g[:, 4:, 0] == 255).all() and (g[:, 4:, 1:] == 0).all() and (g[:, :4] == 0).all()


def test_make_grid_bad_input():
    with pytest.raises(ValueError, match="channels"):
        make_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make_grid(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="nrow"):
        make_grid(torch.zeros(1, 1, 4, 4), nrow=0)


def test_save_grid_and_plot_losses_write_pngs(tmp_path):
    p = save_grid(torch.rand(5, 1, 28, 28) * 2 - 1, str(tmp_path / "g.png"), nrow=3)
    with Image.open(p) as im:
        assert im.mode == "RGB" and im.width > im.height
    hist = [{"step": i + 1, "d_loss": 1.0 / (i + 1), "g_loss": float(i)} for i in range(20)]
    out = plot_losses(hist, {"losses": ["d_loss", "g_loss"], "none": ["missing"]},
                      str(tmp_path / "l.png"))
    with Image.open(out) as im:
        assert im.width > 100
    assert plot_losses([], {"x": ["y"]}, str(tmp_path / "e.png")) is None


# ------------------------------------------------------------------ schedule
@pytest.mark.filterwarnings("ignore:Detected call of")  # no optimizer step in this test
def test_cyclegan_lr_constant_then_linear_to_zero():
    opts = TrainOptions(model="cyclegan", epochs=3, decay_epochs=4)
    trainer = trainer_class("cyclegan")(opts, torch.device("cpu"))
    trainer.build()
    lrs = []
    for _ in range(3 + 4 + 1):
        lrs.append([o.param_groups[0]["lr"] for o in trainer.optimizers.values()])
        trainer.end_epoch()
    g = [lr[0] for lr in lrs]
    assert all(lr[0] == lr[1] for lr in lrs)    # G and D decay together
    assert g[:3] == [2e-4] * 3
    steps = np.diff(g[2:])
    assert np.allclose(steps, -2e-4 / 5)       # linear: n_epochs_decay + 1 equal steps
    assert g[-1] == pytest.approx(0.0, abs=1e-12)


def test_options_validation():
    with pytest.raises(ValueError, match="choose one of: gan, dcgan"):
        TrainOptions(model="stylegan")
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainOptions(model="gan", label_smoothing=1.0)
    with pytest.raises(TypeError, match=r"^steps must be an int, got float \(2\.5\)$"):
        TrainOptions(model="gan", steps=2.5)
    with pytest.raises(TypeError, match=r"^k must be an int, got bool"):
        TrainOptions(model="gan", k=True)
    with pytest.raises(ValueError, match=r"^eval_n must be >= 0, got -1$"):
        TrainOptions(model="gan", eval_n=-1)


# ------------------------------------------------------------ the registry
def test_every_model_has_its_registered_trainer():
    from gan_ext.train import MODELS, TRAINERS
    assert tuple(TRAINERS) == MODELS
    for name in MODELS:
        assert trainer_class(name) is TRAINERS[name] and TRAINERS[name].name == name
    with pytest.raises(ValueError, match="unknown model 'stylegan'; choose one of: gan, dcgan"):
        trainer_class("stylegan")


def test_register_refuses_unknown_names_and_a_second_trainer(monkeypatch):
    from gan_ext.train import TRAINERS, Trainer, register
    monkeypatch.setattr("gan_ext.train.base.TRAINERS", dict(TRAINERS))

    class Nameless(Trainer):
        name = "stylegan"
    with pytest.raises(ValueError, match="Nameless has name 'stylegan', not one of the models"):
        register(Nameless)

    class OtherGAN(Trainer):
        name = "gan"
    with pytest.raises(ValueError, match="two trainers for 'gan': GANTrainer and OtherGAN"):
        register(OtherGAN)
    assert register(TRAINERS["gan"]) is TRAINERS["gan"]  # re-registering itself is harmless
