"""`gan-ext test RUN --input DIR`: one output per input image, named after it,
equal to the run's model applied to the image preprocessed as trained, the
cycle for CycleGAN, the index.html page, and the refusals."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from gan_ext import cli
from gan_ext.data import load_named_images
from gan_ext.train import load_trained
from gan_ext.train.translation import translate

TINY = ["--steps", "1", "--batch-size", "4", "--limit", "32", "--eval-n", "0", "--threads", "1",
        "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for model in ("cyclegan", "pix2pix", "vae", "dae", "dcgan"):
        assert cli.main(["train", model, *TINY, "--out", str(root / model)]) == 0
    inputs = root / "in"
    (inputs / "sub").mkdir(parents=True)
    g = np.random.default_rng(0)
    for rel, size in (("a.png", (40, 30)), ("b.jpg", (64, 64)), ("sub/c.png", (20, 50))):
        Image.fromarray(g.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(inputs / rel)
    return root, inputs


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im).copy()


def _u8(images):   # what a result file holds: (N, C, H, W) in [-1, 1] -> uint8 (N, H, W[, C])
    u8 = ((images.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return u8[:, 0].numpy() if u8.shape[1] == 1 else u8.permute(0, 2, 3, 1).numpy()


def _check_page(out, names, columns):
    page = (out / "index.html").read_text()
    for name in names:
        for sub in columns:
            assert f'href="{sub}/{name}.png"' in page
            assert (out / sub / f"{name}.png").is_file()
    assert page.count("<tr><td>") == len(names)


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_cyclegan_both_directions_and_the_cycle(runs, direction, capsys):
    root, inputs = runs
    run = root / "cyclegan"
    assert cli.main(["test", str(run), "--input", str(inputs), "--direction", direction,
                     "-o", str(root / f"cg_{direction}"), "--threads", "1"]) == 0
    assert "wrote 3 results" in capsys.readouterr().out
    out = root / f"cg_{direction}"
    trainer, _ = load_trained(str(run), "cpu")
    m = trainer.model
    there, back = (m.G_A, m.G_B) if direction == "AtoB" else (m.G_B, m.G_A)
    ch = m.config.input_nc if direction == "AtoB" else m.config.output_nc
    x, names = load_named_images(inputs, trainer.image_size(), ch)
    assert names == ["a", "b", "sub/c"]
    with torch.no_grad():
        y = translate(there, x, "cpu")
        z = translate(back, y, "cpu")
    for i, name in enumerate(names):
        assert np.array_equal(_png(out / "input" / f"{name}.png"), _u8(x)[i])
        assert np.array_equal(_png(out / "images" / f"{name}.png"), _u8(y)[i])
        assert np.array_equal(_png(out / "cycle" / f"{name}.png"), _u8(z)[i])
    _check_page(out, names, ("input", "images", "cycle"))
    assert ("fake_B" if direction == "AtoB" else "fake_A") in (out / "index.html").read_text()


def test_pix2pix_and_the_autoencoders(runs):
    root, inputs = runs
    for model in ("pix2pix", "vae", "dae"):
        assert cli.main(["test", str(root / model), "--input", str(inputs), "--threads", "1"]) == 0
        out = root / model / "test_latest"
        trainer, _ = load_trained(str(root / model), "cpu")
        if model == "pix2pix":
            x, names = load_named_images(inputs, trainer.image_size(), trainer.model.config.input_nc)
            with torch.no_grad():
                y = translate(trainer.model.netG, x, "cpu")
        else:
            x, names = load_named_images(inputs, 28, 1)   # grey 28x28, as the autoencoders train
            with torch.no_grad():
                u = (x + 1) / 2
                y = (trainer.model.reconstruct(u, sample=False) if model == "vae"
                     else trainer.model(u)) * 2 - 1
        got = np.stack([_png(out / "images" / f"{n}.png") for n in names])
        assert got.shape == _u8(y).shape and np.abs(got.astype(int) - _u8(y)).max() <= 1, model
        _check_page(out, names, ("input", "images"))
        assert not (out / "cycle").exists()


def _error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_refusals(runs, tmp_path, capsys):
    root, inputs = runs
    line = _error(capsys, ["test", str(root / "dcgan"), "--input", str(inputs)])
    assert "--input does not apply to dcgan" in line and "gan-ext sample" in line
    line = _error(capsys, ["test", str(root / "pix2pix"), "--input", str(inputs),
                           "--direction", "BtoA"])
    assert "--direction applies to cyclegan only" in line
    assert "--input" in _error(capsys, ["test", str(root / "vae")])   # required
    (tmp_path / "mine.txt").write_text("keep me")
    line = _error(capsys, ["test", str(root / "vae"), "--input", str(inputs), "-o", str(tmp_path)])
    assert "holds other files" in line and (tmp_path / "mine.txt").read_text() == "keep me"
    clash = tmp_path / "clash"
    clash.mkdir()
    for ext in ("png", "bmp"):
        Image.new("RGB", (8, 8)).save(clash / f"x.{ext}")
    assert re.search(r"same name 'x'", _error(capsys, ["test", str(root / "vae"), "--input",
                                                       str(clash), "-o", str(tmp_path / "o")]))
    assert "does not exist" in _error(capsys, ["test", str(root / "vae"), "--input",
                                               str(tmp_path / "nope")])
    assert "no best.pt" in _error(capsys, ["test", str(root / "vae"), "--input", str(inputs),
                                           "--best"])


def test_one_file_and_a_rerun_replaces_earlier_results(runs, capsys):
    root, inputs = runs
    out = root / "vae" / "again"
    assert cli.main(["test", str(root / "vae"), "--input", str(inputs), "-o", str(out)]) == 0
    assert cli.main(["test", str(root / "vae"), "--input", str(inputs / "sub" / "c.png"),
                     "-o", str(out)]) == 0
    assert sorted(os.listdir(out / "images")) == ["c.png"]   # a.png, b.png, sub/ of the first gone
    assert "wrote 1 results" in capsys.readouterr().out.splitlines()[-1]


def test_data_run_inputs_get_the_runs_preprocessing(tmp_path, capsys):
    """A --data cyclegan run's inputs are its evaluation version (resize to the
    load size, centre crop, no flip), as the run's own test images, not the
    centre square resized to the crop size."""
    from gan_ext.data.preprocess import decode
    from gan_ext.train import _data

    g = np.random.default_rng(1)
    for d in ("trainA", "trainB"):
        (tmp_path / d).mkdir()
        for i in range(4):
            Image.fromarray(g.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
                tmp_path / d / f"{i}.png")
    run = tmp_path / "run"
    assert cli.main(["train", "cyclegan", "--data", str(tmp_path), "--crop-size", "32",
                     "--ngf", "8", "--ndf", "8", "--workers", "0", *TINY, "--out", str(run)]) == 0
    assert cli.main(["test", str(run), "--input", str(tmp_path / "trainA" / "0.png"),
                     "-o", str(tmp_path / "out"), "--threads", "1"]) == 0
    capsys.readouterr()
    trainer, _ = load_trained(str(run), "cpu")
    prep = _data.preprocess(trainer.opts, 4)
    want = decode(str(tmp_path / "trainA" / "0.png"), "RGB", (40, 30), False,
                  prep.plan(40, 30, None))[0]                                # (32, 32, 3)
    got = _png(tmp_path / "out" / "input" / "0.png")
    np.testing.assert_array_equal(got, want)
    square = _u8(load_named_images(tmp_path / "trainA" / "0.png", 32, 3)[0])[0]
    assert not np.array_equal(got, square)   # the old centre-square input differs
