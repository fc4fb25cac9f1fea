"""``--decay-epochs N`` for the GANs (issue 18): the learning rate of every
optimizer decays linearly over the last N epochs' steps, per step, as the
official CycleGAN rule does per epoch; a function of the step, so a resumed
run continues it exactly."""
import json
import os

import pytest
import torch

from gan_ext import cli
from gan_ext.models.schedule import LinearDecay, step_decay_factor
from gan_ext.train.checkpoint import load_checkpoint
from gan_ext.train.distributed import FAIL_ENV

from conftest import one_line_error

TINY = ["--batch-size", "4", "--limit", "32", "--eval-n", "0", "--threads", "1",
        "--no-progress", "--log-every", "1"]


def _train(model, out, *extra):
    return cli.main(["train", model, "--out", str(out), *TINY, *extra])


def _lrs(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [(r["step"], r["lr"]) for r in map(json.loads, f) if "lr" in r and "eval" not in r]


def test_factor_holds_then_decays_to_one_over_n_plus_one():
    # 10 steps, the last 4 decaying: the official rule's values, one per step.
    assert [step_decay_factor(s, 10, 4) for s in range(10)] == pytest.approx(
        [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    # Per step it is the per-epoch rule with one step per epoch.
    rule = LinearDecay(n_epochs=6, n_epochs_decay=4, epoch_count=1)
    assert [step_decay_factor(s, 10, 4) for s in range(10)] == pytest.approx(
        [rule(s) for s in range(10)])
    assert {step_decay_factor(s, 5, 0) for s in range(5)} == {1.0}
    # More decay than steps: the whole run decays.
    assert step_decay_factor(0, 3, 10) == pytest.approx(0.75)


@pytest.mark.parametrize("model", ["dcgan", "ring"])
def test_the_logged_learning_rate_follows_the_rule(model, tmp_path):
    plain, decayed = tmp_path / "plain", tmp_path / "decayed"
    # dcgan: 32 images / batch 4 = 8 steps an epoch: 1 epoch + 1 of decay.
    # ring's epoch is longer than the run: --steps 4 decays over all 4 steps.
    length = (["--epochs", "1", "--decay-epochs", "1"] if model == "dcgan"
              else ["--steps", "4", "--decay-epochs", "1"])
    plain_len = ["--steps", str(16 if model == "dcgan" else 4)]
    assert _train(model, plain, *plain_len) == 0
    assert _train(model, decayed, *length) == 0
    lr0 = {lr for _, lr in _lrs(plain)}
    assert len(lr0) == 1
    lr0 = lr0.pop()
    total, n = (16, 8) if model == "dcgan" else (4, 4)
    want = [(s + 1, lr0 * step_decay_factor(s, total, n)) for s in range(total)]
    got = _lrs(decayed)
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [lr for _, lr in got] == pytest.approx([lr for _, lr in want], rel=1e-12)
    # Both players' optimizers decay (TTUR rates keep their ratio).
    ckpt = load_checkpoint(str(decayed / "checkpoint.pt"))
    for opt in ckpt["optimizers"].values():
        group = opt["param_groups"][0]
        assert group["lr"] == pytest.approx(group["initial_lr"] * step_decay_factor(total - 1, total, n))
    cfg = json.loads((decayed / "config.json").read_text())
    assert cfg["decay_epochs"] == 1


def test_resume_continues_the_decay_exactly(tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ["--epochs", "1", "--decay-epochs", "1", "--checkpoint-every", "5",
              "--lr-d", "4e-4", "--lr-g", "1e-4"]
    assert _train("dcgan", straight, *common) == 0
    monkeypatch.setenv(FAIL_ENV, "0:11")
    with pytest.raises(RuntimeError, match="test failure"):
        _train("dcgan", resumed, *common)
    monkeypatch.delenv(FAIL_ENV)
    assert load_checkpoint(str(resumed / "checkpoint.pt"))["step"] == 10
    assert _train("dcgan", resumed, "--resume") == 0
    a, b = (load_checkpoint(str(r / "checkpoint.pt")) for r in (straight, resumed))
    for k in a["models"]:
        assert torch.equal(a["models"][k], b["models"][k]), k
    assert _lrs(straight) == _lrs(resumed)
    lrs = dict(_lrs(straight))
    assert lrs[16] == pytest.approx(1e-4 / 9)   # G's lr in the log, the last step: 1/(8+1)


def test_no_decay_by_default_and_refused_where_it_does_not_apply(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train("gan", run, "--steps", "3") == 0
    assert len({lr for _, lr in _lrs(run)}) == 1
    capsys.readouterr()
    code = _train("vae", tmp_path / "vae", "--steps", "2", "--decay-epochs", "1")
    err = one_line_error(capsys, code)
    assert "--decay-epochs" in err and "vae" in err
