"""The official CycleGAN/pix2pix preprocessing (--preprocess, --load-size,
--crop-size, --no-flip) on real files, its refusals, and DCGAN at 128 px."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gan_ext import cli
from gan_ext.data import DataError, Preprocess, aligned_source, folder_source
from gan_ext.train import load_checkpoint

TINY = ["--steps", "1", "--batch-size", "2", "--eval-n", "0", "--no-progress", "--workers", "0"]


def image(path, w, h, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return a


def shapes(folder, prep, epoch=0):
    src = folder_source(folder, prep, 3)
    return src.image_size, [tuple(src[(epoch, i)][0].shape) for i in range(len(src))]


@pytest.mark.parametrize("mode,size,want", [
    ("resize_and_crop", (30, 24), (16, 16)),
    ("crop", (30, 24), (16, 16)),
    ("scale_width", (40, 24), (16, 20)),           # h = max(20 * 24 / 40, crop 16)
    ("scale_width", (40, 60), (30, 20)),           # portrait: the aspect ratio kept
    ("scale_width_and_crop", (40, 60), (16, 16)),
    ("none", (30, 22), (24, 32)),                  # sides rounded to multiples of 4
])
def test_each_mode_gives_its_shape(mode, size, want, tmp_path):
    for i in range(3):
        image(tmp_path / f"{i}.png", *size, seed=i)
    prep = Preprocess(mode, load_size=20, crop_size=16)
    got, items = shapes(tmp_path, prep)
    assert got == want and items == [(3, *want)] * 3
    assert tuple(folder_source(tmp_path, prep, 3).materialize(2)[0].shape) == (2, 3, *want)


def test_crop_takes_pixels_of_the_image_as_it_is(tmp_path):
    a = image(tmp_path / "0.png", 20, 12)
    src = folder_source(tmp_path, Preprocess("crop", crop_size=8, flip=False), 3)
    x = src[(0, 0)][0].permute(1, 2, 0).numpy()                      # (8, 8, 3)
    hits = [(i, j) for i in range(5) for j in range(13) if np.array_equal(a[i:i + 8, j:j + 8], x)]
    assert len(hits) == 1
    assert np.array_equal(src[(None, 0)][0].permute(1, 2, 0).numpy(), a[2:10, 6:14])  # center


def test_flip_and_no_flip(tmp_path):
    a = image(tmp_path / "0.png", 16, 16)
    original = torch.from_numpy(a).permute(2, 0, 1)
    flipping = folder_source(tmp_path, Preprocess("crop", crop_size=16), 3)
    seen = {torch.equal(flipping[(e, 0)][0], original.flip(-1)) for e in range(12)}
    assert seen == {True, False}                            # p = 1/2 per image and epoch
    for e in range(12):
        assert torch.equal(flipping[(e, 0)][0], original) != torch.equal(
            flipping[(e, 0)][0], original.flip(-1))
    still = folder_source(tmp_path, Preprocess("crop", crop_size=16, flip=False), 3)
    assert all(torch.equal(still[(e, 0)][0], original) for e in range(12))


def test_pix2pix_halves_share_the_crop_and_flip(tmp_path):
    for i in range(3):
        a = image(tmp_path / "train" / f"{i}.png", 24, 20, seed=i)
        Image.fromarray(np.concatenate([a, a], axis=1)).save(tmp_path / "train" / f"{i}.png")
    src = aligned_source(tmp_path, "train", Preprocess("resize_and_crop", 22, 16))
    for e in range(4):
        for i in range(3):
            x, y = src[(e, i)]
            assert x.shape == (3, 16, 16) and torch.equal(x, y)


def test_sizes_that_differ_or_are_too_small_are_refused(tmp_path):
    image(tmp_path / "mixed" / "a.png", 40, 24)
    image(tmp_path / "mixed" / "b.png", 40, 60)
    with pytest.raises(DataError, match="--preprocess scale_width gives images of different"):
        folder_source(tmp_path / "mixed", Preprocess("scale_width", 20, 16), 3)
    with pytest.raises(DataError, match="smaller than --crop-size 32"):
        folder_source(tmp_path / "mixed", Preprocess("crop", crop_size=32), 3)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(mode="resize"), "--preprocess must be one of resize_and_crop"),
    (dict(load_size=100, crop_size=200), "--crop-size 200 is larger than --load-size 100"),
    (dict(crop_size=0), "--crop-size must be a positive"),
    (dict(load_size=2.5), "--load-size must be a positive"),
])
def test_bad_values_are_refused(kwargs, needle):
    with pytest.raises(DataError, match=needle):
        Preprocess(**kwargs)


@pytest.fixture
def datasets(tmp_path):
    for d in ("trainA", "trainB"):
        for i in range(4):
            image(tmp_path / "cg" / d / f"{i}.png", 20, 20, seed=i)
    for i in range(4):
        image(tmp_path / "p2p" / "train" / f"{i}.png", 80, 40, seed=i)
    return tmp_path


@pytest.mark.parametrize("model,args,needle", [
    ("cyclegan", ["--preprocess", "resize"], "--preprocess: invalid choice"),
    ("cyclegan", ["--load-size", "100", "--crop-size", "200"], "--crop-size 200 is larger"),
    ("cyclegan", ["--preprocess", "crop", "--load-size", "40"], "--load-size does not apply"),
    ("cyclegan", ["--image-size", "64", "--crop-size", "32"], "--image-size 64 and --crop-size"),
    ("cyclegan", ["--preprocess", "none", "--crop-size", "32"], "--crop-size does not apply"),
    ("cyclegan", ["--preprocess", "none"], "multiples of 4, at least 24"),   # 20x20 images
    ("pix2pix", ["--preprocess", "scale_width", "--load-size", "40", "--crop-size", "32"],
     "come out 40x40"),                          # a 40x40 half, width 40 already
    ("dcgan", ["--preprocess", "crop"], "--preprocess does not apply to dcgan"),
    ("dcgan", ["--no-flip"], "--no-flip does not apply to dcgan"),
    ("cyclegan", ["--workers", "-1"], "--workers"),
])
def test_cli_refusals_name_the_option(model, args, needle, datasets, capsys):
    data = datasets / ("p2p" if model == "pix2pix" else "cg" if model == "cyclegan" else
                       "cg/trainA")
    code = cli.main(["train", model, "--data", str(data), "--out", str(datasets / "r"), *TINY,
                     *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option", [["--workers", "2"], ["--no-flip"], ["--crop-size", "32"]])
def test_folder_options_are_refused_without_data(option, tmp_path, capsys):
    code = cli.main(["train", "cyclegan", "--out", str(tmp_path / "r"), *TINY, *option])
    err = capsys.readouterr().err
    assert code == 2 and f"{option[0]} applies to cyclegan only with --data" in err, err


def test_dcgan_at_128_pixels_end_to_end(tmp_path):
    for i in range(4):
        image(tmp_path / "faces" / f"{i}.jpg", 150, 130, seed=i)
    run = tmp_path / "r"
    assert cli.main(["train", "dcgan", "--data", str(tmp_path / "faces"), "--image-size", "128",
                     "--out", str(run), *TINY, "--workers", "1"]) == 0
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))
    assert ckpt["model_config"]["image_size"] == 128
    assert ckpt["models"]["G.main.0.weight"].shape == (100, 1024, 4, 4)    # 16 ngf at 4x4
    with Image.open(run / "samples.png") as grid:
        assert grid.size[0] >= 8 * 128
    assert cli.main(["train", "dcgan", "--data", str(tmp_path / "faces"), "--image-size", "96",
                     "--out", str(tmp_path / "r96"), *TINY]) == 2


def test_a_config_file_sets_the_folder_options(datasets, tmp_path):
    from gan_ext.train import TrainOptions
    from gan_ext.train.config_file import merge_config
    path = tmp_path / "run.json"
    path.write_text('{"preprocess": "scale_width_and_crop", "load_size": 40, "crop-size": 32, '
                    f'"no_flip": true, "workers": 1, "data": "{datasets / "cg"}"}}')
    opts = TrainOptions(**merge_config(str(path), "cyclegan", {"model": "cyclegan"}))
    assert (opts.preprocess, opts.load_size, opts.crop_size, opts.no_flip, opts.workers) == \
        ("scale_width_and_crop", 40, 32, True, 1)
