"""gan_ext.metrics: the shipped feature networks (files, hashes, accuracy),
Inception Score and FID on real MNIST, the Frechet distance against closed
forms, class coverage, the per-family helpers, the optional FID backends and
bad input."""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gan_ext.metrics as M
from gan_ext.metrics import classifier as C
from gan_ext.metrics import fid as fid_mod

HERE = os.path.dirname(os.path.abspath(M.__file__))
_REAL_STATS_DIR = fid_mod._stats_dir
SHIPPED = [("mnist_classifier.pt", C.MNISTClassifier), ("domain_classifier.pt", C.DomainClassifier)]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def mnist_test():
    from gan_ext.data import load_mnist
    x, y = load_mnist("test")
    return x.unsqueeze(1).float() / 255.0, y  # (10000, 1, 28, 28) in [0, 1], (10000,)


@pytest.fixture(scope="module")
def mnist_train_10k():
    from gan_ext.data import load_mnist
    x, y = load_mnist("train")
    return x[:10000].unsqueeze(1).float() / 255.0, y[:10000]


@pytest.fixture(scope="module")
def pair_test():
    from gan_ext.data import mnist_pair
    return mnist_pair("test", n=1000, seed=3)


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path_factory, monkeypatch):
    """The FID reference statistics go to a temporary folder, never ~/.cache."""
    folder = tmp_path_factory.getbasetemp() / "metrics_stats"
    monkeypatch.setattr(fid_mod, "_stats_dir", lambda: str(folder))
    return folder


def random_psd(d: int, gen: torch.Generator, rank: int = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=gen, dtype=torch.float64)
    return a @ a.T / (rank or d)


# ------------------------------------------------------- shipped weights
@pytest.mark.parametrize("filename,cls", SHIPPED, ids=["mnist", "domain"])
def test_shipped_weights_load_with_weights_only_and_match_their_json(filename, cls):
    path = os.path.join(HERE, filename)
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) < 1_000_000
    with open(os.path.splitext(path)[0] + ".json") as f:
        meta = json.load(f)
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["file"] == filename and meta["seed"] == 0 and meta["epochs"] >= 1
    assert meta["command"].startswith("python -m gan_ext.metrics.retrain --train")
    assert meta["bytes"] == len(data)
    assert meta["parameters"] == sum(p.numel() for p in cls().parameters())
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = cls()
    model.load_state_dict(state, strict=True)
    # the hash the FID cache is keyed by is the hash of this file
    loaded = C.load_classifier() if cls is C.MNISTClassifier else C.load_domain_classifier()
    assert loaded.sha256 == meta["sha256"]
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, state[k].to(v.dtype), rtol=0, atol=0)


def test_shipped_classifier_json_states_what_the_shipped_weights_reach(mnist_test):
    """The accuracy the JSON claims is recomputed from the shipped file by the
    code that wrote it (another machine's float rounding may flip an image
    or two out of 10,000)."""
    from gan_ext.metrics.retrain import mnist_test_accuracy
    with open(os.path.join(HERE, "mnist_classifier.json")) as f:
        meta = json.load(f)
    acc, n = mnist_test_accuracy(M.load_classifier())
    assert n == meta["test_images"] == len(mnist_test[1])
    assert abs(acc - meta["test_accuracy"]) <= 2 / n, (acc, meta["test_accuracy"])
    assert meta["test_accuracy"] >= 0.99


def test_shipped_domain_classifier_json_states_what_the_shipped_weights_reach():
    from gan_ext.metrics.retrain import domain_test_accuracies
    with open(os.path.join(HERE, "domain_classifier.json")) as f:
        meta = json.load(f)
    stats = domain_test_accuracies(M.load_domain_classifier(), seed=meta["seed"])
    for key, value in stats.items():
        assert abs(value - meta[key]) <= 2 / 2000, (key, value, meta[key])


def test_shipped_weights_are_package_data():
    import importlib.resources
    files = importlib.resources.files("gan_ext.metrics")
    for name, _ in SHIPPED:
        assert files.joinpath(name).read_bytes()[:2] == b"PK"  # torch.save's zip format


def test_load_classifier_is_cached_per_device_and_frozen():
    a, b = M.load_classifier(), M.load_classifier(device="cpu")
    assert a is b and not a.training
    assert all(not p.requires_grad for p in a.parameters())


def test_load_classifier_from_a_path_and_bad_paths(tmp_path):
    m = M.load_classifier(os.path.join(HERE, "mnist_classifier.pt"))
    assert m.sha256 == M.load_classifier().sha256
    with pytest.raises(ValueError, match="path: no weights file"):
        M.load_classifier(tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"w": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="not a MNISTClassifier state_dict"):
        M.load_classifier(wrong)
    with pytest.raises(TypeError, match="path must be"):
        M.load_classifier(3)


def test_classifier_shapes():
    m = M.load_classifier()
    x = torch.rand(5, 1, 28, 28)
    assert m(x).shape == (5, 10)
    assert m.features(x).shape == (5, M.MNISTClassifier.feature_dim)
    d, c = M.load_domain_classifier()(torch.rand(4, 3, 32, 32) * 2 - 1)
    assert d.shape == (4,) and c.shape == (4, 10)


# -------------------------------------------------------------- accuracy / IS
def test_shipped_classifier_reaches_99_percent_on_the_real_test_set(mnist_test):
    x, y = mnist_test
    acc = M.classifier_accuracy(x, y)
    assert acc >= 0.99, acc


def test_classifier_accuracy_with_wrong_labels_is_low(mnist_test):
    x, y = mnist_test
    assert M.classifier_accuracy(x[:2000], (y[:2000] + 1) % 10) < 0.05


def test_accepts_images_without_channel_dim(mnist_test):
    x, y = mnist_test
    assert M.classifier_accuracy(x[:500, 0], y[:500]) == M.classifier_accuracy(x[:500], y[:500])


def test_inception_score_of_the_real_test_set_is_near_10(mnist_test):
    mean, std = M.inception_score(mnist_test[0])
    assert 9.0 <= mean <= 10.0 and 0 <= std < 0.2, (mean, std)


def test_inception_score_of_one_repeated_image_is_1(mnist_test):
    x = mnist_test[0][:1].repeat(200, 1, 1, 1)
    mean, std = M.inception_score(x)
    assert 1.0 - 1e-9 <= mean < 1.01 and std < 1e-6


def test_inception_score_of_two_balanced_classes_is_about_2(mnist_test):
    x, y = mnist_test
    zeros, ones = x[y == 0][:400], x[y == 1][:400]
    mixed = torch.stack([zeros, ones], 1).flatten(0, 1)  # alternate, so every split is balanced
    mean, _ = M.inception_score(mixed, splits=4)
    assert 1.9 < mean < 2.1, mean  # exp(I(y; x)): 2 for two sharp, balanced classes


# ------------------------------------------------------------ Frechet distance
def test_frechet_distance_matches_the_diagonal_closed_form():
    g = torch.Generator().manual_seed(0)
    d = 16
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1, torch.rand(d, generator=g, dtype=torch.float64) * 3
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    got = M.frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected.item(), rel=1e-10)


def test_frechet_distance_of_scaled_full_covariances():
    # S2 = c^2 S1 commutes with S1: tr((S1 S2)^(1/2)) = c tr(S1), FID = (1 - c)^2 tr(S1) + |dmu|^2
    g = torch.Generator().manual_seed(1)
    s1 = random_psd(12, g)
    mu1, mu2 = torch.zeros(12, dtype=torch.float64), torch.full((12,), 0.5, dtype=torch.float64)
    c = 1.7
    got = M.frechet_distance(mu1, s1, mu2, c * c * s1)
    assert got == pytest.approx((1 - c) ** 2 * s1.trace().item() + 12 * 0.25, rel=1e-9)


def test_frechet_distance_is_symmetric_and_zero_on_itself():
    g = torch.Generator().manual_seed(2)
    mu1, mu2 = torch.randn(20, generator=g, dtype=torch.float64), torch.randn(20, generator=g, dtype=torch.float64)
    s1, s2 = random_psd(20, g), random_psd(20, g, rank=5)  # one singular covariance
    ab, ba = M.frechet_distance(mu1, s1, mu2, s2), M.frechet_distance(mu2, s2, mu1, s1)
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-8)
    assert M.frechet_distance(mu1, s1, mu1, s1) < 1e-9 * s1.trace().item()
    assert M.frechet_distance(mu2, s2, mu2, s2) < 1e-6 * s2.trace().item()


def test_frechet_distance_accepts_numpy_and_float32():
    g = torch.Generator().manual_seed(3)
    mu1, mu2 = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    s1, s2 = random_psd(8, g), random_psd(8, g)
    ref = M.frechet_distance(mu1, s1, mu2, s2)
    assert M.frechet_distance(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy()) == pytest.approx(ref, rel=1e-12)
    assert M.frechet_distance(mu1.float(), s1.float(), mu2.float(), s2.float()) == pytest.approx(ref, rel=1e-5)


def test_frechet_distance_bad_input():
    mu, s = torch.zeros(4), torch.eye(4)
    with pytest.raises(ValueError, match="mu2 has shape"):
        M.frechet_distance(mu, s, torch.zeros(5), torch.eye(5))
    with pytest.raises(ValueError, match="sigma1 must be a matrix"):
        M.frechet_distance(mu, torch.zeros(4), mu, s)
    with pytest.raises(ValueError, match="NaN"):
        M.frechet_distance(mu, s * float("nan"), mu, s)
    with pytest.raises(TypeError, match="mu1 must be"):
        M.frechet_distance([0.0] * 4, s, mu, s)


# ------------------------------------------------------------------- FID
def test_feature_stats_shapes(mnist_test):
    mu, sigma = M.feature_stats(mnist_test[0][:1000])
    d = M.MNISTClassifier.feature_dim
    assert mu.shape == (d,) and sigma.shape == (d, d) and mu.dtype == torch.float64
    torch.testing.assert_close(sigma, sigma.T)
    assert torch.linalg.eigvalsh(sigma).min() > -1e-8 * sigma.trace()


def test_fid_of_the_test_set_against_itself_is_0(mnist_test):
    fid = M.mnist_fid(mnist_test[0], reference="test")
    _, sigma = M.reference_stats("test")
    assert 0 <= fid < 1e-3 * sigma.trace().item(), fid


def test_fid_of_train_vs_test_is_small_but_positive(mnist_test, mnist_train_10k):
    x, y = mnist_test
    fid_train = M.mnist_fid(mnist_train_10k[0])
    fid_threes = M.mnist_fid(x[y == 3])          # a collapsed "generator"
    fid_noise = M.mnist_fid(torch.rand(2000, 1, 28, 28))
    assert 0 < fid_train < 0.05 * fid_threes, (fid_train, fid_threes)
    assert fid_threes < fid_noise


def test_reference_stats_are_cached_on_disk(tmp_path, monkeypatch, mnist_test):
    monkeypatch.setattr(fid_mod, "_stats_dir", lambda: str(tmp_path))
    monkeypatch.setattr(fid_mod, "_STATS", {})
    mu, sigma = M.reference_stats("test")
    files = list(tmp_path.glob("mnist_test_stats_*.pt"))
    assert len(files) == 1 and M.load_classifier().sha256[:16] in files[0].name
    saved = torch.load(files[0], weights_only=True)
    torch.testing.assert_close(saved["mu"], mu, rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))
    # a new process (empty memory cache) reads the file instead of recomputing
    monkeypatch.setattr(fid_mod, "_STATS", {})
    real_feature_stats = fid_mod.feature_stats
    monkeypatch.setattr(fid_mod, "feature_stats", lambda *a, **k: pytest.fail("recomputed"))
    mu2, sigma2 = M.reference_stats("test")
    torch.testing.assert_close(sigma2, sigma, rtol=0, atol=0)
    # a corrupt file is recomputed (never trusted) and rewritten
    files[0].write_bytes(b"not a torch file")
    monkeypatch.setattr(fid_mod, "_STATS", {})
    monkeypatch.setattr(fid_mod, "feature_stats", real_feature_stats)
    mu3, _ = M.reference_stats("test")
    torch.testing.assert_close(mu3, mu)
    assert torch.load(files[0], weights_only=True)["mu"].shape == mu.shape


def test_stats_cache_folder_honours_gan_ext_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_EXT_CACHE", str(tmp_path))
    assert _REAL_STATS_DIR() == str(tmp_path / "metrics")
    monkeypatch.delenv("GAN_EXT_CACHE")
    assert _REAL_STATS_DIR() == os.path.join(os.path.expanduser("~"), ".cache", "gan_ext", "metrics")


def test_mnist_fid_bad_reference(mnist_test):
    with pytest.raises(ValueError, match="reference must be one of"):
        M.mnist_fid(mnist_test[0][:10], reference="valid")


# ---------------------------------------------------------------- coverage
def test_class_coverage_of_the_real_test_set_has_no_warning(mnist_test):
    r = M.class_coverage(mnist_test[0])
    assert r.warnings == [] and r.ok
    assert sum(r.counts) == r.n == 10000 and sum(r.fractions) == pytest.approx(1.0)
    assert 0.08 < r.min_frac <= r.max_frac < 0.12
    truth = torch.bincount(mnist_test[1], minlength=10) / 10000
    assert np.allclose(r.fractions, truth.numpy(), atol=0.005)


def test_class_coverage_of_only_threes_warns_for_every_class(mnist_test):
    x, y = mnist_test
    r = M.class_coverage(x[y == 3])
    assert len(r.warnings) == 10 and not r.ok
    assert r.max_frac > 0.98 and r.fractions.index(r.max_frac) == 3
    assert "class 3" in r.warnings[3] and "collapse" in r.warnings[3]
    assert all("dropped" in w for i, w in enumerate(r.warnings) if i != 3)
    assert "warning" in str(r) and r.to_dict()["min_frac"] == r.min_frac


def test_class_coverage_thresholds(mnist_test):
    x = mnist_test[0][:2000]
    assert M.class_coverage(x, low=0.0, high=1.0).warnings == []
    with pytest.raises(ValueError, match="low must be < high"):
        M.class_coverage(x, low=0.3, high=0.2)
    with pytest.raises(ValueError, match="high must be in"):
        M.class_coverage(x, high=1.5)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("fn", [lambda x: M.inception_score(x, splits=1), M.feature_stats,
                                M.class_coverage, lambda x: M.mnist_fid(x)],
                         ids=["is", "stats", "coverage", "fid"])
def test_bad_images_raise_clear_errors(fn):
    good = torch.rand(4, 1, 28, 28)
    with pytest.raises(TypeError, match="floating point"):
        fn((good * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(good.numpy())
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        fn(torch.rand(4, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        fn(good * 2 - 1)
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((4, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        fn(torch.rand(0, 1, 28, 28))


def test_bad_arguments():
    x = torch.rand(20, 1, 28, 28)
    with pytest.raises(ValueError, match="splits=30"):
        M.inception_score(x, splits=30)
    with pytest.raises(ValueError, match="splits must be >= 1"):
        M.inception_score(x, splits=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        M.feature_stats(x, batch_size=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        M.feature_stats(x[:1])
    with pytest.raises(ValueError, match=r"labels must have shape \(20,\)"):
        M.classifier_accuracy(x, torch.zeros(19, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        M.classifier_accuracy(x, torch.zeros(20))
    with pytest.raises(ValueError, match="0..9"):
        M.classifier_accuracy(x, torch.full((20,), 10))


# --------------------------------------------------------------- families
def test_vae_test_nelbo_matches_the_formula():
    from gan_ext.models import VAE
    torch.manual_seed(0)
    model = VAE().train()
    x = torch.rand(37, 1, 28, 28)
    got = M.vae_test_nelbo(model, x, batch_size=10, sample=False)
    with torch.no_grad():
        h = F.relu(model.fc1(x.flatten(1)))
        mu, logvar = model.fc21(h), model.fc22(h)
        logits = model.fc4(F.relu(model.fc3(mu)))
        bce = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    assert got == pytest.approx(((bce + kl) / 37).item(), rel=1e-5)
    assert model.training  # mode restored
    assert M.vae_test_nelbo(model, x.flatten(1), sample=False) == pytest.approx(got, rel=1e-5)


def test_vae_test_nelbo_sampled_is_reproducible_and_keeps_the_rng():
    from gan_ext.models import ConvVAE, VAEConfig
    model = ConvVAE(VAEConfig(kind="conv", base_channels=8))
    x = torch.rand(16, 1, 28, 28)
    state = torch.get_rng_state()
    a = M.vae_test_nelbo(model, x, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == M.vae_test_nelbo(model, x, seed=1)
    assert a != M.vae_test_nelbo(model, x, seed=2)
    # sampling z ~ q adds the decoder's sensitivity to noise: the sampled value
    # is not the deterministic one
    assert a != M.vae_test_nelbo(model, x, sample=False)


def test_vae_test_nelbo_bad_input():
    with pytest.raises(TypeError, match="negative_elbo"):
        M.vae_test_nelbo(nn.Linear(2, 2), torch.rand(2, 1, 28, 28))
    from gan_ext.models import VAE
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        M.vae_test_nelbo(VAE(), torch.rand(2, 1, 28, 28) * 2 - 1)


class _Const(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return torch.full_like(x, self.value) * self.scale


def test_ae_test_mse():
    x = torch.rand(33, 1, 28, 28)
    assert M.ae_test_mse(_Const(0.0), x, batch_size=8) == pytest.approx(x.double().pow(2).mean().item(), rel=1e-9)
    assert M.ae_test_mse(_Const(0.5), x) == pytest.approx((x.double() - 0.5).pow(2).mean().item(), rel=1e-9)
    from gan_ext.models import ConvAutoencoder, AEConfig
    ae = ConvAutoencoder(AEConfig(denoising=True)).train()
    v = M.ae_test_mse(ae, x)
    assert 0 < v < 1 and ae.training and v == M.ae_test_mse(ae, x)  # eval: no noise
    with pytest.raises(ValueError, match="reconstruction shaped like"):
        M.ae_test_mse(nn.Flatten(), x)


def test_pix2pix_l1():
    pred, target = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5)
    assert M.pix2pix_l1(pred, target) == pytest.approx(0.5)
    target[0] = -1.0
    assert M.pix2pix_l1(pred, target) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same shape"):
        M.pix2pix_l1(pred, target[:1])
    with pytest.raises(TypeError, match="floating point"):
        M.pix2pix_l1(pred.long(), target)


def test_mnist_like_to_unit_inverts_the_a_domain(mnist_test):
    x = mnist_test[0][:8]
    a = F.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1) * 2 - 1  # how mnist_pair draws domain A
    torch.testing.assert_close(M.mnist_like_to_unit(a), x, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        M.mnist_like_to_unit(x)


def test_translation_scores_on_real_pair_images(pair_test):
    A, B, la, lb = pair_test
    assert M.digit_accuracy_of_mnist_like(A, la) > 0.98
    sa = M.translation_scores(A, la, target="A")
    sb = M.translation_scores(B, lb, target="B")
    assert sa["domain_score"] > 0.95 and sa["digit_accuracy"] > 0.98 and sa["n"] == len(A)
    assert sb["domain_score"] > 0.95 and sb["digit_accuracy"] > 0.9
    # an identity "translation" leaves the images in the source domain
    assert M.translation_scores(A, la, target="B")["domain_score"] < 0.05
    assert M.translation_scores(B, lb, target="A")["domain_score"] < 0.05
    # wrong labels: content lost
    assert M.translation_scores(B, (lb + 1) % 10, target="B")["digit_accuracy"] < 0.1


def test_translation_scores_bad_input(pair_test):
    A, _, la, _ = pair_test
    with pytest.raises(ValueError, match="target must be one of"):
        M.translation_scores(A[:4], la[:4], target="C")
    with pytest.raises(ValueError, match=r"2 \* x - 1"):
        M.translation_scores((A[:4] + 1) * 2, la[:4])
    with pytest.raises(ValueError, match="labels must have shape"):
        M.translation_scores(A[:4], la[:3])


# ------------------------------------------------------------- FID backends
@pytest.mark.parametrize("backend,module,package", [("torch-fidelity", "torch_fidelity", "torch-fidelity"),
                                                    ("clean-fid", "cleanfid", "clean-fid")])
def test_fid_backend_missing_package_says_what_to_install(backend, module, package, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails even where it is installed
    with pytest.raises(ValueError, match=f"pip install {package}"):
        M.fid_with_backend(backend, tmp_path, tmp_path)


def test_fid_backend_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        M.fid_with_backend("pytorch-fid", tmp_path, tmp_path)
    with pytest.raises(ValueError, match="fake_dir: no folder"):
        M.fid_with_backend("clean-fid", tmp_path, tmp_path / "nope")


# ------------------------------------------------------------------ training
def test_random_shift_moves_whole_images(mnist_test):
    from gan_ext.metrics.retrain import random_shift
    x = mnist_test[0][:500]
    border = x.clone()
    border[:, :, 2:26, 2:26] = 0
    x = x[border.flatten(1).sum(1) == 0][:64]  # no ink within 2 pixels of the edge
    assert len(x) == 64
    g = torch.Generator().manual_seed(0)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape
    # so a shift of up to 2 pixels loses no ink
    torch.testing.assert_close(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    moved = [(y[i] != x[i]).any().item() for i in range(64)]
    assert 40 < sum(moved) < 64  # 1/25 of the shifts are (0, 0)
    for i in range(64):  # each is a pure translation of its own image
        found = any(torch.equal(torch.roll(x[i], (dy, dx), (1, 2)), y[i])
                    for dy in range(-2, 3) for dx in range(-2, 3))
        assert found


def test_retrain_script_runs_as_the_json_command_says():
    """The command the JSONs record names a module that runs as a script, and
    running it does not import the library module twice (runpy would warn)."""
    import subprocess
    for name, _ in SHIPPED:
        with open(os.path.join(HERE, os.path.splitext(name)[0] + ".json")) as f:
            module = json.load(f)["command"].split()[2]
        out = subprocess.run([sys.executable, "-W", "error", "-m", module, "--help"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--train-domain" in out.stdout and f"python -m {module}" in out.stdout


def test_save_weights_writes_hash_and_command(tmp_path):
    from gan_ext.metrics.retrain import save_weights
    out = tmp_path / "clf.pt"
    meta = save_weights(M.MNISTClassifier(), str(out), {"test_accuracy": 0.5, "epochs": 1, "seed": 0},
                        "python -m gan_ext.metrics.retrain --train --out clf.pt")
    data = out.read_bytes()
    saved = json.loads((tmp_path / "clf.json").read_text())
    assert saved == meta and saved["sha256"] == hashlib.sha256(data).hexdigest()
    assert not list(tmp_path.glob("*.tmp"))
    assert M.load_classifier(out).sha256 == saved["sha256"]
