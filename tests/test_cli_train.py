"""`gan-ext train|sample|eval` end to end, at tiny sizes: every model's run
outputs, exact resume, a checkpoint write killed midway, Ctrl-C, and the
one-line errors for bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from gan_ext import cli
from gan_ext.train import MODELS, load_checkpoint

from conftest import one_line_error as _one_line_error

TINY = ["--batch-size", "4", "--limit", "16", "--log-every", "1", "--no-progress"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(model, out, *extra):
    return cli.main(["train", model, "--out", str(out), *TINY, *extra])


def _png(path):
    with Image.open(path) as im:
        im.load()
        return im.size


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------ every model
@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m == "cyclegan"
                                   else m for m in MODELS])
def test_train_sample_eval_every_model(model, tmp_path, capsys):
    run = tmp_path / model
    assert _train(model, run, "--steps", "2", "--sample-every", "1", "--eval-n", "20") == 0
    out = capsys.readouterr().out
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "samples.png", "losses.png",
                 "samples/step_000001.png", "samples/step_000002.png"):
        assert (run / name).is_file(), name
        assert str(run / name.split("/")[0]) in out or name.startswith("samples/")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["options"]["model"] == model and "torch" in cfg["versions"]
    assert _png(run / "samples.png")[0] > 0 and _png(run / "losses.png")[0] > 0
    ckpt = load_checkpoint(str(run / "checkpoint.pt"), model=model)
    assert ckpt["step"] == 2 and len(ckpt["history"]) == 2 and "torch" in ckpt["rng"]
    records = _jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records if "eval" not in r] == [1, 2]
    assert "eval" in records[-1] and records[-1]["eval"]

    grid = tmp_path / "grid.png"
    assert cli.main(["sample", str(run / "checkpoint.pt"), "--n", "8", "-o", str(grid)]) == 0
    assert _png(grid)[0] > 0
    raw = tmp_path / "samples.pt"                 # the raw samples (outputs alone), every model
    assert cli.main(["sample", str(run), "--n", "8", "-o", str(raw)]) == 0
    x = torch.load(raw)
    assert x.dtype == torch.float32 and len(x) == (10 if model == "cgan" else 8), x.shape
    assert x.shape[1:] == ((2,) if model in ("ring", "grid") else x.shape[1:]) and x.dim() in (2, 4)
    if model in ("gan", "vae"):
        assert cli.main(["sample", str(run), "--n", "20", "--interpolate", "-o", str(grid)]) == 0
        assert _png(grid)[0] > _png(grid)[1]  # rows of 10
    assert cli.main(["eval", str(run / "checkpoint.pt"), "--n", "20"]) == 0
    assert "metrics of" in capsys.readouterr().out
    last = _jsonl(run / "metrics.jsonl")[-1]
    assert last["source"] == "gan-ext eval" and last["eval"]


def test_gan_options_reach_the_model(tmp_path):
    run = tmp_path / "g"
    assert _train("gan", run, "--steps", "1", "--k", "2", "--g-loss", "minimax",
                  "--label-smoothing", "0.1", "--eval-n", "0") == 0
    cfg = load_checkpoint(str(run / "checkpoint.pt"))["model_config"]
    assert cfg["k"] == 2 and cfg["minimax"] is True and cfg["real_label"] == pytest.approx(0.9)


def test_cgan_sample_is_class_by_row(tmp_path):
    run = tmp_path / "c"
    assert _train("cgan", run, "--steps", "1", "--eval-n", "0") == 0
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", str(run), "--n", "30", "-o", str(grid)]) == 0
    w, h = _png(grid)
    assert h > w  # 10 rows (one per class) of 3


# ------------------------------------------------------------- exact resume
@pytest.mark.parametrize("model,extra", [
    ("dcgan", []),
    ("vae", []),
    pytest.param("cyclegan", ["--epochs", "1", "--decay-epochs", "2"], marks=pytest.mark.slow),
])
def test_resume_continues_exactly(model, extra, tmp_path):
    # 16 images / batch 4 = 4 steps per epoch: the resumed half crosses an epoch
    common = ["--eval-n", "0", "--seed", "7", *extra]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(model, straight, "--steps", "6", *common) == 0
    assert _train(model, split, "--steps", "3", *common) == 0
    assert _train(model, split, "--steps", "6", "--resume", *common) == 0
    a = load_checkpoint(str(straight / "checkpoint.pt"))
    b = load_checkpoint(str(split / "checkpoint.pt"))
    assert a["step"] == b["step"] == 6 and a["epoch"] == b["epoch"]
    assert a["history"] == b["history"]          # bitwise equal logged losses
    for k, v in a["models"].items():
        assert torch.equal(v, b["models"][k]), k
    strip = lambda r: {k: v for k, v in r.items() if k != "it_per_s"}  # noqa: E731
    assert ([strip(r) for r in _jsonl(straight / "metrics.jsonl")]
            == [strip(r) for r in _jsonl(split / "metrics.jsonl")])


def _subprocess(code, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_checkpoint_write_killed_midway_keeps_previous(tmp_path):
    run = tmp_path / "r"
    assert _train("gan", run, "--steps", "2", "--eval-n", "0") == 0
    # The resumed run is SIGKILLed between writing the temp file and the rename.
    code = f"""
import os, signal
import gan_ext.train.checkpoint as c
def killed(src, dst):
    assert os.path.getsize(src) > 0
    os.kill(os.getpid(), signal.SIGKILL)
c.os.replace = killed
from gan_ext import cli
cli.main(["train", "gan", "--out", {str(run)!r}, "--steps", "4", "--resume", "--eval-n", "0",
          "--no-progress"])
"""
    r = _subprocess(code)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert load_checkpoint(str(run / "checkpoint.pt"), model="gan")["step"] == 2
    assert _train("gan", run, "--steps", "3", "--resume", "--eval-n", "0") == 0
    assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 3


@pytest.mark.slow
def test_ctrl_c_saves_checkpoint_and_exits_130(tmp_path):
    run = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "gan_ext.cli", "train", "gan", "--out", str(run),
                          "--steps", "1000000", *TINY, "--eval-n", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            m = run / "metrics.jsonl"
            if m.is_file() and m.stat().st_size > 0:
                break
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved to" in err
    ckpt = load_checkpoint(str(run / "checkpoint.pt"), model="gan")
    assert ckpt["step"] >= 1 and len(ckpt["history"]) == ckpt["step"]


# ---------------------------------------------------------------- bad input
def test_unknown_model_lists_choices(capsys):
    line = _one_line_error(capsys, cli.main(["train", "stylegan"]))
    assert all(m in line for m in MODELS)


def test_unknown_model_subprocess_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "gan_ext.cli", "train", "nope"], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_and_empty_data_folder(tmp_path, capsys):
    line = _one_line_error(capsys, _train("dcgan", tmp_path / "r", "--data",
                                          str(tmp_path / "nowhere"), "--steps", "1"))
    assert "nowhere" in line
    (tmp_path / "empty").mkdir()
    line = _one_line_error(capsys, _train("dcgan", tmp_path / "r", "--data",
                                          str(tmp_path / "empty"), "--steps", "1"))
    assert "empty" in line


def test_non_image_file_is_skipped_with_a_warning(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 36), (40 * i, 20, 200 - 30 * i)).save(d / f"{i}.png")
    (d / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt"):
        code = _train("dcgan", tmp_path / "r", "--data", str(d), "--image-size", "32",
                      "--steps", "1", "--eval-n", "0")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    assert load_checkpoint(str(tmp_path / "r" / "checkpoint.pt"))["model_config"]["nc"] == 3


@pytest.mark.parametrize("command", ["eval", "sample", "resume"])
def test_corrupt_and_foreign_checkpoints(command, tmp_path, capsys):
    junk = tmp_path / "junk" / "checkpoint.pt"
    junk.parent.mkdir()
    junk.write_bytes(os.urandom(2048))
    foreign = tmp_path / "foreign" / "checkpoint.pt"
    foreign.parent.mkdir()
    torch.save({"weights": torch.ones(3)}, foreign)
    for path, needle in ((junk, "is not a PyTorch checkpoint"),
                         (foreign, "not a gan_ext training checkpoint")):
        if command == "resume":
            code = _train("gan", path.parent, "--steps", "1", "--resume")
        else:
            code = cli.main([command, str(path), "-o" if command == "sample" else "--n",
                             str(tmp_path / "g.png") if command == "sample" else "5"])
        assert needle in _one_line_error(capsys, code)


def test_resume_into_another_model(tmp_path, capsys):
    run = tmp_path / "r"
    assert _train("vae", run, "--steps", "1", "--eval-n", "0") == 0
    capsys.readouterr()
    line = _one_line_error(capsys, _train("ae", run, "--steps", "2", "--resume"))
    assert "'vae'" in line and "'ae'" in line


def test_resume_without_checkpoint(tmp_path, capsys):
    line = _one_line_error(capsys, _train("gan", tmp_path / "none", "--resume"))
    assert "no checkpoint" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_missing_is_one_line(tmp_path, capsys):
    line = _one_line_error(capsys, _train("gan", tmp_path / "r", "--device", "cuda",
                                          "--steps", "1"))
    assert "--device cuda" in line


def test_official_generator_file_translates(tmp_path):
    from gan_ext.models import ResnetGenerator
    G = ResnetGenerator(3, 3, ngf=8, n_blocks=2, fused=False)
    sd = {k: v for k, v in G.state_dict().items()}
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(sd, path)
    img = tmp_path / "in.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(img)
    out = tmp_path / "t.png"
    assert cli.main(["sample", str(path), "--input", str(img), "--image-size", "32",
                     "-o", str(out)]) == 0
    assert _png(out)[1] > 0


def test_help_shows_examples(capsys):
    for command in ("train", "sample", "eval"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"gan-ext {command}" in out
