"""`gan-ext train dcgan`'s defaults are the quality recipe (options.DEFAULTS:
G's moving average 0.999, lazy R1 gamma 1, bf16 autocast where native),
each left out where the user gives the option; a resume keeps the saved
run's; a checkpoint from before the moving average's update count
continues at the constant decay."""
import json

import pytest
import torch

from gan_ext import cli
from gan_ext.models.cures import EMA_SETTLED
from gan_ext.train import TrainOptions, load_checkpoint, load_trained
from gan_ext.train.amp import cpu_has_bf16
from gan_ext.train.options import DEFAULTS, model_defaults

TINY = ["--batch-size", "4", "--limit", "32", "--log-every", "1", "--no-progress",
        "--eval-n", "0", "--threads", "1"]


def _config(run):
    return json.loads((run / "config.json").read_text())["options"]


def test_dcgan_trains_with_its_recipe_by_default(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli.main(["train", "dcgan", "--out", str(run), *TINY, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "dcgan's defaults: --ema 0.999 --r1 1 --amp (leave one out with --ema 0, --r1 0, " \
           "--no-amp)" in out
    cfg = _config(run)
    assert (cfg["ema"], cfg["r1"], cfg["amp"]) == (0.999, 1.0, True)
    assert DEFAULTS["dcgan"]["epochs"] == 28
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))
    assert ckpt["model_config"]["ema"] == 0.999 and ckpt["model_config"]["r1_gamma"] == 1.0
    assert ckpt["extra"]["ema_updates"] == 2
    assert json.loads((run / "config.json").read_text())["amp"] == cpu_has_bf16()   # in effect
    assert "r1" in json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


def test_each_default_is_left_out_where_the_option_is_given(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli.main(["train", "dcgan", "--out", str(run), *TINY, "--steps", "2", "--ema", "0",
                     "--r1", "0", "--no-amp"]) == 0
    assert "defaults:" not in capsys.readouterr().out
    cfg = _config(run)
    assert (cfg["ema"], cfg["r1"], cfg["amp"]) == (None, 0.0, False)
    trainer, _ = load_trained(str(run))
    assert trainer.model.G_ema is None
    assert model_defaults("dcgan", {"ema": 0.99}) == {"r1": 1.0, "amp": True}


@pytest.mark.parametrize("given", [{"loss": "wgan-gp"}, {"unrolled": 1}])
def test_the_r1_default_yields_to_what_it_cannot_combine_with(given):
    recipe = model_defaults("dcgan", given)
    assert recipe == {"ema": 0.999, "amp": True}
    TrainOptions(model="dcgan", **given, **recipe)   # accepted


def test_the_other_models_keep_plain_defaults():
    for model in ("gan", "cgan", "ring", "grid", "stacked-mnist", "vae", "cyclegan"):
        assert model_defaults(model, {}) == {}, model


def test_ema_zero_means_none():
    assert TrainOptions(model="gan", ema=0).ema is None
    assert TrainOptions(model="gan", ema=0.0).ema is None


def test_a_resume_keeps_the_saved_runs_options(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli.main(["train", "dcgan", "--out", str(run), *TINY, "--steps", "2", "--ema", "0",
                     "--r1", "0", "--no-amp"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "dcgan", "--out", str(run), *TINY, "--steps", "3",
                     "--resume"]) == 0
    assert "defaults:" not in capsys.readouterr().out
    cfg = _config(run)
    assert (cfg["ema"], cfg["r1"], cfg["amp"]) == (None, 0.0, False)
    assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 3


def test_a_checkpoint_without_the_average_count_continues_at_the_decay(tmp_path):
    run = tmp_path / "r"
    assert cli.main(["train", "dcgan", "--out", str(run), *TINY, "--steps", "2"]) == 0
    path = run / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    del ckpt["extra"]["ema_updates"]   # as saved before the count existed
    torch.save(ckpt, path)
    trainer, _ = load_trained(str(run))
    trainer.load_extra_state(load_checkpoint(str(path))["extra"])
    assert trainer.model.ema_updates == EMA_SETTLED
