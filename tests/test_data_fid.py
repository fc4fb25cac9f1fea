"""A 64 px RGB DCGAN on a folder of images, end to end: it trains, its
evaluation (during training, at the end, and `gan-ext eval`) gives FID and
KID against that folder with every channel (the stand-in feature extractor
of the documented hook: no Inception offline), `--keep-best` follows them,
and the TensorBoard events hold the losses, the sample pictures and the
evaluation metrics."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

import gan_ext.metrics as M
from gan_ext import cli
from gan_ext.data import load_image_folder
from gan_ext.metrics import image_fid
from gan_ext.train.latents import FID_BACKEND_SEED

STANDIN = "gan_ext.metrics.image_fid:pooled_pixels"
N = 16   # evaluation samples: KID subsets of all 16, FID from a 96-d covariance


def make_folder(path, n=40, seed=0):
    """``n`` RGB images of coloured shapes (not square, so cropped and resized)."""
    from PIL import Image, ImageDraw
    g = torch.Generator().manual_seed(seed)
    os.makedirs(path, exist_ok=True)
    for i in range(n):
        bg, fg = (tuple(int(v) for v in torch.randint(0, 256, (3,), generator=g)) for _ in "ab")
        im = Image.new("RGB", (80, 72), bg)
        x, y = (int(v) for v in torch.randint(8, 40, (2,), generator=g))
        (ImageDraw.Draw(im).ellipse if i % 2 else ImageDraw.Draw(im).rectangle)(
            (x, y, x + 24, y + 24), fill=fg)
        im.save(os.path.join(path, f"shape_{i:03d}.png"))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """dcgan --data (64 px, RGB), 2 steps, evaluations at steps 1 and 2,
    --keep-best (fid), losses, pictures and metrics logged at every step."""
    root = tmp_path_factory.mktemp("datafid")
    data, out = make_folder(str(root / "shapes")), root / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv(image_fid.ENV_EXTRACTOR, STANDIN)
    try:
        code = cli.main(["train", "dcgan", "--data", data, "--image-size", "64",
                         "--channels", "3", "--steps", "2", "--batch-size", "8",
                         "--eval-every", "1", "--eval-n", str(N), "--keep-best",
                         "--log-every", "1", "--sample-every", "1", "--threads", "1",
                         "--no-progress", "--out", str(out)])
    finally:
        mp.undo()
    assert code == 0
    return data, out


def _evals(out):
    with open(out / "metrics.jsonl") as f:
        return [r for r in map(json.loads, f) if "eval" in r and "source" not in r]  # training's


def test_a_64px_rgb_run_is_scored_against_its_folder(run, capsys, monkeypatch):
    data, out = run
    evals = _evals(out)
    assert [(r["step"], r["final"]) for r in evals] == [(1, False), (2, True)]
    final = evals[-1]["eval"]
    assert final["fid_features"] == STANDIN and final["fid_real_n"] == N
    assert final["fid"] > 0 and final["kid"] > 0
    best = torch.load(out / "best.pt", weights_only=True)["best"]
    assert best["metric"] == "fid"
    assert best["value"] == [min(r["eval"]["fid"] for r in evals)]

    # gan-ext eval: the same numbers (same seed), from the folder and the samples
    monkeypatch.setenv(image_fid.ENV_EXTRACTOR, STANDIN)
    assert cli.main(["eval", str(out), "--n", str(N), "--json", "--threads", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["fid"] == pytest.approx(final["fid"], rel=1e-9)
    assert got["kid"] == pytest.approx(final["kid"], rel=1e-9)

    # ... which are the FID/KID of the run's samples against the folder, RGB
    assert cli.main(["sample", str(out), "--n", str(N), "--seed", str(FID_BACKEND_SEED),
                     "-o", str(out / "fakes.pt"), "--threads", "1"]) == 0
    fakes = torch.load(out / "fakes.pt", weights_only=True)
    assert fakes.shape == (N, 3, 64, 64)
    reals = load_image_folder(data, 64, channels=3)
    reals = reals[torch.randperm(len(reals), generator=torch.Generator().manual_seed(
        FID_BACKEND_SEED))[:N]]
    ref = M.fid_kid(reals, fakes, (M.pooled_pixels, "pooled"))
    assert got["fid"] == pytest.approx(ref["fid"], rel=1e-6)
    assert got["kid"] == pytest.approx(ref["kid"], rel=1e-6)
    # a 2-step generator is far from the folder; the folder is close to itself
    others = load_image_folder(data, 64, channels=3)
    halves = M.fid_kid(others[:20], others[20:], (M.pooled_pixels, "pooled"))
    assert got["fid"] > 3 * halves["fid"]


def test_without_features_a_note_and_keep_best_refused(run, tmp_path, capsys, monkeypatch):
    data, out = run
    monkeypatch.delenv(image_fid.ENV_EXTRACTOR, raising=False)
    monkeypatch.setattr(M, "installed_backend", lambda: None)   # even where one imports
    assert cli.main(["eval", str(out), "--n", "4", "--json", "--threads", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert "fid" not in got and "pip install torch-fidelity" in got["note"]
    code = cli.main(["train", "dcgan", "--data", data, "--steps", "1", "--eval-every", "1",
                     "--keep-best", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--keep-best" in err[0]
    assert "GAN_EXT_FEATURE_EXTRACTOR" in err[0]


_NO_TB = importlib.util.find_spec("tensorboard") is None


@pytest.mark.skipif(_NO_TB, reason="tensorboard is not installed (pip install tensorboard; "
                                   "make test installs it)")
def test_tensorboard_events_hold_losses_pictures_and_metrics(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, out = run
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/d_loss", "train/g_loss", "eval/fid", "eval/kid", "eval/kid_std"):
        assert tag in tags["scalars"], tags["scalars"]
    assert [e.step for e in acc.Scalars("train/d_loss")] == [1, 2]
    with open(out / "metrics.jsonl") as f:
        losses = [r["d_loss"] for r in map(json.loads, f) if "d_loss" in r]
    assert [e.value for e in acc.Scalars("train/d_loss")] == pytest.approx(losses, rel=1e-6)
    fids = [r["eval"]["fid"] for r in _evals(out)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/fid")] == [
        (1, pytest.approx(fids[0], rel=1e-6)), (2, pytest.approx(fids[1], rel=1e-6))]
    assert "samples" in tags["images"]
    pics = acc.Images("samples")
    assert {p.step for p in pics} == {1, 2}
    from PIL import Image
    import io
    with Image.open(io.BytesIO(pics[-1].encoded_image_string)) as im:
        with Image.open(out / "samples.png") as ref:
            assert im.size == ref.size   # the grid PNG itself
