"""Image folders read per batch (gan_ext.data.stream): the batches equal the
in-memory loader's, do not depend on the number of workers, resume exactly
mid-epoch (also a whole training run), and never hold the set as float32."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gan_ext import cli
from gan_ext.data import (DataError, InMemoryLoader, Preprocess, StreamingLoader, aligned_source,
                          folder_source, load_image_folder, unpaired_source)
from gan_ext.data.preprocess import CENTER
from gan_ext.train import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUGMENT = Preprocess("resize_and_crop", load_size=18, crop_size=16)


def noise_images(folder, n, size=(20, 14), seed=0, ext="png"):
    """``n`` random RGB images of ``size`` (w, h) in ``folder``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(a).save(os.path.join(folder, f"{i:03d}.{ext}"))


def take(loader, n):
    return [b for _, b in loader.batches(n)]


def same(xs, ys):
    return len(xs) == len(ys) and all(len(a) == len(b) and all(torch.equal(u, v)
                                      for u, v in zip(a, b)) for a, b in zip(xs, ys))


def test_center_stream_equals_the_in_memory_loader(tmp_path):
    noise_images(tmp_path, 10, size=(23, 17))
    source = folder_source(tmp_path, Preprocess(CENTER, crop_size=12), 3, seed=4)
    whole = load_image_folder(tmp_path, 12)
    assert torch.equal(source.materialize()[0], whole)
    streamed = take(StreamingLoader(source, batch_size=3, seed=4, workers=0), 7)
    assert same(streamed, take(InMemoryLoader(whole, batch_size=3, seed=4), 7))
    # Several processes: each rank reads its share of the same global batches.
    shard = take(StreamingLoader(source, batch_size=4, seed=4, shard=(1, 2), workers=0), 3)
    assert same(shard, take(InMemoryLoader(whole, batch_size=4, seed=4, shard=(1, 2)), 3))


def test_items_are_uint8_and_the_source_holds_no_pixels(tmp_path):
    noise_images(tmp_path / "trainA", 5)
    noise_images(tmp_path / "trainB", 7, seed=1)
    source = unpaired_source(tmp_path, "train", AUGMENT)
    assert len(source) == 5 and source.image_size == (16, 16)
    a, b = source[(0, 2)]
    assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape == (3, 16, 16)
    held = [v for v in vars(source).values() if isinstance(v, (torch.Tensor, np.ndarray))]
    held += [s for _, s in source.domains]
    assert all(x.dtype != np.float32 and x.size <= 2 * 7 for x in held)   # (w, h) per file
    batch = take(StreamingLoader(source, batch_size=2, workers=0), 1)[0]
    assert [x.dtype for x in batch] == [torch.float32] * 2 and batch[0].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("kind", ["unpaired", "aligned"])
def test_workers_do_not_change_the_batches(kind, tmp_path):
    if kind == "unpaired":
        noise_images(tmp_path / "trainA", 6)
        noise_images(tmp_path / "trainB", 6, seed=1)
        source = unpaired_source(tmp_path, "train", AUGMENT, seed=3)
    else:
        noise_images(tmp_path / "train", 6, size=(40, 14))
        source = aligned_source(tmp_path, "train", AUGMENT, seed=3)
    ref = take(StreamingLoader(source, batch_size=2, seed=3, workers=0), 7)   # 2 epochs +
    before = torch.get_rng_state()
    got = take(StreamingLoader(source, batch_size=2, seed=3, workers=2), 7)
    assert same(ref, got)
    assert torch.equal(before, torch.get_rng_state())    # the global RNG is not drawn from
    # Each epoch crops and flips anew: the same image differs across epochs.
    loader = StreamingLoader(source, batch_size=2, seed=3, workers=0)
    assert not torch.equal(source[(0, 1)][0], source[(1, 1)][0])
    assert torch.equal(source[(1, 1)][0], source[(1, 1)][0])
    assert len(loader) == 3


def test_mid_epoch_resume_with_workers(tmp_path):
    noise_images(tmp_path, 7)
    source = folder_source(tmp_path, AUGMENT, 3, seed=5)
    ref = take(StreamingLoader(source, batch_size=3, seed=5, workers=2), 6)
    first = StreamingLoader(source, batch_size=3, seed=5, workers=2)
    head = take(first, 3)                                 # 2 per epoch: one batch into epoch 1
    state = first.state_dict()
    first.close()
    resumed = StreamingLoader(source, batch_size=3, seed=5, workers=2)
    resumed.load_state_dict(state)
    assert resumed.steps_done == 3 and state["epoch"] == 1 and state["position"] == 1
    assert same(ref, head + take(resumed, 3))
    with pytest.raises(DataError, match="not a StreamingLoader state_dict"):
        resumed.load_state_dict(InMemoryLoader(torch.zeros(7), batch_size=3).state_dict())


def test_a_file_that_fails_to_decode_is_named(tmp_path):
    noise_images(tmp_path, 4)
    data = (tmp_path / "001.png").read_bytes()
    (tmp_path / "001.png").write_bytes(data[:60])        # the header reads, the pixels do not
    source = folder_source(tmp_path, Preprocess(CENTER, crop_size=8), 3)
    loader = StreamingLoader(source, batch_size=4, shuffle=False, workers=1)
    with pytest.raises(DataError, match="001.png cannot be decoded"):
        take(loader, 1)


@pytest.mark.slow   # three short runs: ~7 s of CPU, far more wall time on a busy machine
def test_resumed_pix2pix_run_equals_the_straight_one(tmp_path):
    """3 steps per epoch; 2 + 3 resumed steps with 2 workers (random crops
    and flips, dropout) give bitwise the weights of 5 straight steps."""
    noise_images(tmp_path / "data" / "train", 6, size=(56, 24))
    common = ["train", "pix2pix", "--data", str(tmp_path / "data"), "--load-size", "36",
              "--crop-size", "32", "--batch-size", "2", "--workers", "2", "--eval-n", "0",
              "--no-progress", "--log-every", "1", "--seed", "3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli.main([*common, "--out", str(straight), "--steps", "5"]) == 0
    assert cli.main([*common, "--out", str(split), "--steps", "2"]) == 0
    assert load_checkpoint(str(split / "checkpoint.pt"))["loader"]["position"] == 2
    assert cli.main([*common, "--out", str(split), "--steps", "5", "--resume",
                     "--workers", "1"]) == 0                 # --workers may change on resume
    a = load_checkpoint(str(straight / "checkpoint.pt"))
    b = load_checkpoint(str(split / "checkpoint.pt"))
    assert a["step"] == b["step"] == 5 and a["history"] == b["history"]
    for k, v in a["models"].items():
        assert torch.equal(v, b["models"][k]), k


_RSS = """
import sys, torch
from gan_ext.data import Preprocess, StreamingLoader, folder_source, load_image_folder
from gan_ext.data.preprocess import CENTER

def status(key):
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ":"))   # KiB

def peak_growth(fn):
    with open("/proc/self/clear_refs", "w") as f:   # resets the peak (VmHWM) to the current RSS
        f.write("5")
    before = status("VmRSS")
    out = fn()
    return status("VmHWM") - before, out

source = folder_source(sys.argv[1], Preprocess(CENTER, crop_size=64), 3)
loader = StreamingLoader(source, batch_size=20, workers=0)
for _ in loader.batches(1):   # allocator warm-up
    pass
streamed, _ = peak_growth(lambda: [None for _ in loader.batches(len(loader) - 1)])
in_memory, x = peak_growth(lambda: load_image_folder(sys.argv[1], 64))
print(streamed, in_memory, x.numel() * 4 // 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc needed")
def test_peak_memory_streamed_vs_in_memory(tmp_path):
    noise_images(tmp_path, 400, size=(64, 64))               # 19,200 KiB as float32
    r = subprocess.run([sys.executable, "-c", _RSS, str(tmp_path)], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    streamed, in_memory, whole = map(int, r.stdout.split())
    assert in_memory >= whole, (streamed, in_memory, whole)   # the in-memory way holds the set
    assert streamed < whole / 4, (streamed, in_memory, whole)
