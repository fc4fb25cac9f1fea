"""The mode-collapse benchmarks and cures through `gan-ext train|sample|eval`,
at tiny sizes: every cure on the families it applies to, the refusals, the
JSON metrics, raw samples, exact resume."""
import json

import pytest
import torch
from PIL import Image

from gan_ext import cli
from gan_ext.models.cures import CuredDiscriminator
from gan_ext.train import load_checkpoint, load_trained

TINY = ["--batch-size", "4", "--limit", "32", "--log-every", "1", "--no-progress"]


def _train(model, out, *extra):
    return cli.main(["train", model, "--out", str(out), *TINY, *extra])


def _error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gan-ext: error:"), err
    return lines[0]


CURES = [
    ("gan", ["--pack", "2"], dict(pack=2)),
    ("gan", ["--unrolled", "2"], dict(unrolled=2)),
    ("dcgan", ["--minibatch-stddev"], dict(minibatch_stddev=4)),
    ("dcgan", ["--feature-matching", "--ema", "0.99"], dict(feature_matching=True, ema=0.99)),
    ("cgan", ["--unrolled", "1", "--unrolled-first-order"],
     dict(unrolled=1, unrolled_first_order=True)),
    ("cgan", ["--minibatch-stddev", "--feature-matching"],
     dict(minibatch_stddev=4, feature_matching=True)),
    ("ring", ["--pack", "2", "--minibatch-stddev"], dict(pack=2, minibatch_stddev=4)),
    ("grid", ["--unrolled", "2", "--ema", "0.9"], dict(unrolled=2, ema=0.9, arch="veegan")),
    ("grid", ["--arch", "pacgan", "--pack", "2"], dict(arch="pacgan", pack=2, maxout=5)),
    ("grid", ["--minibatch-discrimination", "8,3"], dict(minibatch_discrimination=(8, 3))),
    ("ring", ["--minibatch-discrimination", "8,3,mean"],
     dict(minibatch_discrimination=(8, 3, "mean"))),
    ("dcgan", ["--minibatch-discrimination", "16,4", "--unrolled", "1"],
     dict(minibatch_discrimination=(16, 4), unrolled=1)),
    ("cgan", ["--minibatch-discrimination", "8,3"], dict(minibatch_discrimination=(8, 3))),
    ("stacked-mnist", ["--unrolled", "1", "--d-width", "0.5"], dict(unrolled=1, d_width=0.5)),
    ("stacked-mnist", ["--joint-batch", "--pack", "2", "--ema", "0.99"],
     dict(joint_batch=True, pack=2, ema=0.99)),
    ("cgan", ["--joint-batch"], dict(joint_batch=True)),
    ("stacked-mnist", ["--arch", "veegan", "--pack", "2", "--feature-matching"],
     dict(arch="veegan", pack=2, feature_matching=True, nz=100)),
]


@pytest.mark.parametrize("model, flags, expect", CURES,
                         ids=[f"{m}{''.join(f)}" for m, f, _ in CURES])
def test_each_cure_trains(model, flags, expect, tmp_path):
    run = tmp_path / "r"
    assert _train(model, run, "--steps", "2", "--eval-n", "0", *flags) == 0
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))
    for k, v in expect.items():
        assert ckpt["model_config"][k] == v, k
    trainer, _ = load_trained(str(run))
    D = trainer.model.D
    if model == "cgan":                  # its own D takes the cures (not --pack)
        assert D.group == expect.get("minibatch_stddev", 0)
        assert (D.mbd is not None) == ("minibatch_discrimination" in expect)
    else:
        d_side = any(k in expect for k in ("pack", "minibatch_stddev", "feature_matching",
                                           "minibatch_discrimination"))
        assert isinstance(D, CuredDiscriminator) == (d_side or model in (
            "ring", "grid", "stacked-mnist"))
    # dcgan's defaults have G's moving average (options.DEFAULTS)
    assert (trainer.model.G_ema is not None) == ("ema" in expect or model == "dcgan")
    if "minibatch_discrimination" in expect:
        assert D.mbd.reduction == ("mean" if len(expect["minibatch_discrimination"]) == 3
                                   else "sum")


def test_pack_multiplies_the_samples_per_batch(tmp_path):
    run = tmp_path / "r"
    assert _train("ring", run, "--steps", "1", "--eval-n", "0", "--pack", "4") == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["batch_size"] == 16    # 4 packs of 4 samples


@pytest.mark.parametrize("model, flags, match", [
    ("cgan", ["--pack", "2"], "--pack does not apply to cgan"),
    ("vae", ["--unrolled", "1"], "--unrolled does not apply to vae"),
    ("dcgan", ["--arch", "veegan"], "--arch does not apply to dcgan"),
    ("gan", ["--unrolled-first-order"], "needs --unrolled K"),
    ("gan", ["--minibatch-discrimination", "5"], "B,C"),
    ("gan", ["--minibatch-discrimination", "5,3,max"], "must be B,C or B,C,mean"),
    ("gan", ["--ema", "1.5"], "ema must be a decay in"),
    ("ring", ["--data", "x"], "--data does not apply to ring"),
    ("ring", ["--arch", "unrolled"], "arch must be one of veegan, pacgan for ring"),
    ("stacked-mnist", ["--arch", "veegan", "--d-width", "0.5"], "--d-width applies to --arch "
                                                                 "unrolled only"),
    ("dcgan", ["--minibatch-stddev", "--batch-size", "6"], "multiple of 4"),
    ("vae", ["--joint-batch"], "--joint-batch does not apply to vae"),
    ("ring", ["--joint-batch", "--unrolled", "2"], "joint_batch cannot be combined with unrolled"),
])
def test_cure_misuse_is_a_one_line_error(model, flags, match, tmp_path, capsys):
    line = _error(capsys, _train(model, tmp_path / "r", "--steps", "1", *flags))
    assert match in line


def test_eval_json_and_raw_samples(tmp_path, capsys):
    run = tmp_path / "grid"
    assert _train("grid", run, "--steps", "3", "--eval-n", "0") == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--json", "--n", "300"]) == 0
    out = capsys.readouterr().out
    m = json.loads(out)
    assert m["n"] == 300 and m["max_modes"] == 25 and 0 <= m["high_quality"] <= 1
    assert set(m) >= {"modes", "reverse_kl", "counts"}
    pt = tmp_path / "s.pt"
    assert cli.main(["sample", str(run), "--n", "12000", "-o", str(pt)]) == 0
    x = torch.load(pt)
    assert x.shape == (12000, 2) and x.dtype == torch.float32
    png = tmp_path / "s.png"
    assert cli.main(["sample", str(run), "--n", "500", "-o", str(png)]) == 0
    with Image.open(png) as im:
        assert im.size[0] > 100          # the scatter plot
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--n", "12000", "-o", str(png)]) == 2
    assert "write them to a .pt file" in capsys.readouterr().err


def test_stacked_mnist_eval_and_samples(tmp_path, capsys):
    run = tmp_path / "s"
    assert _train("stacked-mnist", run, "--steps", "2", "--eval-n", "100") == 0
    rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert rec["eval"]["max_modes"] == 1000 and 1 <= rec["eval"]["modes"] <= 100
    pt = tmp_path / "s.pt"
    assert cli.main(["sample", str(run), "--n", "10", "-o", str(pt)]) == 0
    x = torch.load(pt)
    assert x.shape == (10, 3, 28, 28) and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("model, flags", [
    ("ring", ["--pack", "2", "--ema", "0.9", "--minibatch-stddev"]),
    ("stacked-mnist", ["--unrolled", "1"]),
    ("stacked-mnist", ["--joint-batch", "--pack", "2"]),
])
def test_resume_is_exact_with_cures(model, flags, tmp_path):
    common = ["--eval-n", "0", "--seed", "3", *flags]
    straight, split = tmp_path / "a", tmp_path / "b"
    assert _train(model, straight, "--steps", "6", *common) == 0
    assert _train(model, split, "--steps", "3", *common) == 0
    assert _train(model, split, "--steps", "6", "--resume", *common) == 0
    a = load_checkpoint(str(straight / "checkpoint.pt"))
    b = load_checkpoint(str(split / "checkpoint.pt"))
    assert a["history"] == b["history"]
    for k, v in a["models"].items():
        assert torch.equal(v, b["models"][k]), k


def test_the_benchmark_table_quick_form(tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "modes.py"), "--quick",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "check ring: perfect sampler 8/8 modes" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ring") or
            ln.startswith("| grid") or ln.startswith("| stacked-mnist")]
    assert len(rows) == 6, r.stdout
    assert not (tmp_path / "modes.json").exists()      # --quick keeps to OUT/quick
    summary = json.loads((tmp_path / "quick" / "modes.json").read_text())
    assert {s["benchmark"] for s in summary} == {"ring", "grid", "stacked-mnist"}
    assert all(len(s["runs"]) == 1 and "modes" in s["runs"][0] for s in summary)
