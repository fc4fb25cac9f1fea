"""FID and KID of RGB images (gan_ext.metrics.image_fid) on known inputs, the
feature-extractor hook, and the calls into torch-fidelity / clean-fid (the
real packages where they import, else a recording stand-in of their API)."""
from __future__ import annotations

import importlib
import os
import sys
import types

import numpy as np
import pytest
import torch

import gan_ext.metrics as M
from gan_ext.metrics import image_fid
from gan_ext.train.image_metrics import write_pngs


def _gauss(n, d, shift=0.0, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


@pytest.fixture(autouse=True)
def no_hook(monkeypatch):
    monkeypatch.delenv(image_fid.ENV_EXTRACTOR, raising=False)
    M.set_feature_extractor(None)
    yield
    M.set_feature_extractor(None)


# --------------------------------------------------------------------- FID
def test_fid_of_identical_sets_is_zero():
    a = _gauss(500, 16)
    assert M.fid_from_features(a, a) < 1e-9
    assert M.fid_from_features(a, a.clone()) == M.fid_from_features(a, a)


@pytest.mark.parametrize("shift,scale,expected", [
    (0.5, 1.0, 8 * 0.25),              # ||mu1 - mu2||^2
    (0.0, 2.0, 8 * (1 + 4 - 2 * 2)),   # tr(S1 + S2 - 2 (S1 S2)^1/2) = D (1 - 2)^2
    (1.0, 3.0, 8 * 1.0 + 8 * (3 - 1) ** 2),
])
def test_fid_of_gaussians_matches_the_closed_form(shift, scale, expected):
    a, b = _gauss(40000, 8, seed=1), _gauss(40000, 8, shift, scale, seed=2)
    assert M.fid_from_features(a, b) == pytest.approx(expected, rel=0.05, abs=0.02)


def test_fid_grows_with_the_shift_and_is_symmetric():
    a = _gauss(2000, 8, seed=3)
    fids = [M.fid_from_features(a, _gauss(2000, 8, s, seed=4)) for s in (0.0, 0.5, 1.0)]
    assert fids[0] < fids[1] < fids[2]
    b = _gauss(2000, 8, 0.5, seed=4)
    assert M.fid_from_features(a, b) == pytest.approx(M.fid_from_features(b, a), rel=1e-9)


# --------------------------------------------------------------------- KID
def _mmd2_unbiased_loops(x, y, k):
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd2_with_the_cubic_kernel():
    x, y = _gauss(12, 5, seed=5), _gauss(12, 5, 0.3, seed=6)
    d = x.shape[1]
    ref = _mmd2_unbiased_loops(x, y, lambda a, b: (a @ b / d + 1) ** 3).item()
    mean, std = M.kernel_inception_distance(x, y, subsets=3, subset_size=12)
    assert mean == pytest.approx(ref, rel=1e-10)   # a subset of all 12 is the whole set
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_with_the_linear_kernel_estimates_the_squared_mean_shift():
    delta = torch.tensor([0.5, -0.25, 0.0, 1.0], dtype=torch.float64)
    x, y = _gauss(3000, 4, seed=7), _gauss(3000, 4, seed=8) + delta
    mean, _ = M.kernel_inception_distance(x, y, subsets=10, subset_size=1000, degree=1,
                                          gamma=1.0, coef0=0.0)
    assert mean == pytest.approx(delta.square().sum().item(), rel=0.1)


def test_kid_of_one_distribution_is_near_zero_and_far_for_another():
    a, b = _gauss(1500, 16, seed=9), _gauss(1500, 16, seed=10)
    same, same_std = M.kernel_inception_distance(a, b, subsets=20, subset_size=500)
    other, _ = M.kernel_inception_distance(a, _gauss(1500, 16, 0.5, seed=11), subsets=20,
                                           subset_size=500)
    assert abs(same) < 3 * same_std + 1e-3
    assert other > 20 * abs(same) and other > 0.05
    # seeded: the same subsets, the same value
    assert M.kernel_inception_distance(a, b, subsets=5, seed=3) == \
        M.kernel_inception_distance(a, b, subsets=5, seed=3)


def test_kid_and_fid_bad_input():
    a = _gauss(10, 4)
    with pytest.raises(ValueError, match="same width"):
        M.kernel_inception_distance(a, _gauss(10, 5))
    with pytest.raises(ValueError, match="N >= 2"):
        M.fid_from_features(a[:1], a)
    with pytest.raises(ValueError, match="NaN"):
        M.kernel_inception_distance(a * float("nan"), a)
    with pytest.raises(ValueError, match="subset_size"):
        M.kernel_inception_distance(a, a, subset_size=1)


# ------------------------------------------------------------ images, hook
def _colour_images(n, rgb, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)
    return (base + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)


def test_fid_kid_of_images_uses_every_channel():
    red = _colour_images(64, (0.8, -0.8, -0.8), seed=1)
    red2 = _colour_images(64, (0.8, -0.8, -0.8), seed=2)
    blue = _colour_images(64, (-0.8, -0.8, 0.8), seed=3)
    hook = (M.pooled_pixels, "pooled")
    same = M.fid_kid(red, red2, hook)
    other = M.fid_kid(red, blue, hook)
    assert set(same) == {"fid", "kid", "kid_std", "fid_features", "fid_real_n"}
    assert same["fid_features"] == "pooled" and same["fid_real_n"] == 64
    # red vs blue differ in channels 0 and 2 only: a channel-0-only metric could not tell
    assert other["fid"] > 100 * same["fid"] and other["kid"] > 100 * abs(same["kid"])
    grey = M.to_rgb_uint8(torch.zeros(2, 1, 4, 4))
    assert grey.shape == (2, 3, 4, 4) and grey.dtype == torch.uint8 and (grey == 128).all()


def test_the_hook_from_the_environment_and_from_python(monkeypatch):
    assert M.feature_extractor() is None
    with pytest.raises(ValueError, match="need a feature extractor"):
        M.fid_kid(_colour_images(4, (0, 0, 0)), _colour_images(4, (0, 0, 0)))
    monkeypatch.setenv(image_fid.ENV_EXTRACTOR, "gan_ext.metrics.image_fid:pooled_pixels")
    fn, name = M.feature_extractor()
    assert fn is M.pooled_pixels and name == "gan_ext.metrics.image_fid:pooled_pixels"
    M.set_feature_extractor(lambda x: x.float().flatten(1)[:, :5], "first5")
    assert M.feature_extractor()[1] == "first5"   # Python's hook over the environment's
    M.set_feature_extractor(None)
    for bad in ("gan_ext.metrics.image_fid:nope", "no_such_module_xyz:f", "gan_ext.metrics"):
        monkeypatch.setenv(image_fid.ENV_EXTRACTOR, bad)
        with pytest.raises(ValueError, match=image_fid.ENV_EXTRACTOR):
            M.feature_extractor()
    with pytest.raises(ValueError, match=r"tensor \(N, D\)"):
        M.fid_kid(_colour_images(4, (0, 0, 0)), _colour_images(4, (0, 0, 0)),
                  (lambda x: x.float(), "bad"))


# -------------------------------------------------------------- the backends
def _imports(module):
    try:
        importlib.import_module(module)
        return None
    except Exception as e:   # e.g. torchvision built for CUDA beside a CPU torch
        return f"{module} does not import here ({type(e).__name__}: {str(e)[:80]})"


@pytest.fixture
def folders(tmp_path):
    real = _colour_images(24, (0.8, -0.8, -0.8), seed=1)
    fake = _colour_images(24, (0.6, -0.8, -0.4), seed=2)
    write_pngs(real, str(tmp_path / "real"))
    write_pngs(fake, str(tmp_path / "fake"))
    return tmp_path / "real", tmp_path / "fake", real, fake


@pytest.mark.skipif(_imports("torch_fidelity") is not None,
                    reason=_imports("torch_fidelity") or "")
def test_torch_fidelity_with_the_hook_equals_our_fid_and_kid(folders):
    real_dir, fake_dir, real, fake = folders
    got = M.scores_with_backend("torch-fidelity", real_dir, fake_dir, extractor=M.pooled_pixels)
    ours = M.fid_kid(real, fake, (M.pooled_pixels, "pooled"))
    assert got["fid"] == pytest.approx(ours["fid"], rel=1e-4)
    assert got["kid"] == pytest.approx(ours["kid"], rel=1e-4)   # subsets of all 24: one value


@pytest.mark.skipif(_imports("cleanfid.fid") is not None, reason=_imports("cleanfid.fid") or "")
def test_clean_fid_with_the_hook(folders):
    real_dir, fake_dir, real, fake = folders
    got = M.scores_with_backend("clean-fid", real_dir, fake_dir, extractor=M.pooled_pixels)
    same = M.scores_with_backend("clean-fid", real_dir, real_dir, extractor=M.pooled_pixels)
    ours = M.fid_kid(real, fake, (M.pooled_pixels, "pooled"))   # clean-fid resizes to 299 first
    assert got["fid"] == pytest.approx(ours["fid"], rel=0.1) and same["fid"] < 1e-6


def test_the_torch_fidelity_call(folders, monkeypatch):
    """Where torch-fidelity does not import: the arguments of our call, against
    a recording module with its API (calculate_metrics, FeatureExtractorBase,
    register_feature_extractor and its registry)."""
    real_dir, fake_dir, real, _ = folders
    calls = {}
    fake_tf = types.ModuleType("torch_fidelity")
    registry = types.ModuleType("torch_fidelity.registry")
    registry.FEATURE_EXTRACTORS_REGISTRY = {}
    fake_tf.FeatureExtractorBase = torch.nn.Module

    def calculate_metrics(**kw):
        calls.update(kw)
        cls = registry.FEATURE_EXTRACTORS_REGISTRY[kw["feature_extractor"]]
        from PIL import Image
        x = torch.stack([torch.from_numpy(np.array(Image.open(os.path.join(kw["input2"], f))))
                         .permute(2, 0, 1) for f in sorted(os.listdir(kw["input2"]))])
        calls["features"] = cls.fn(x)
        return {"frechet_inception_distance": 1.0, "kernel_inception_distance_mean": 2.0,
                "kernel_inception_distance_std": 3.0}

    fake_tf.calculate_metrics = calculate_metrics
    fake_tf.register_feature_extractor = registry.FEATURE_EXTRACTORS_REGISTRY.__setitem__
    monkeypatch.setitem(sys.modules, "torch_fidelity", fake_tf)
    monkeypatch.setitem(sys.modules, "torch_fidelity.registry", registry)
    got = M.scores_with_backend("torch-fidelity", real_dir, fake_dir, extractor=M.pooled_pixels)
    assert got == {"fid": 1.0, "kid": 2.0, "kid_std": 3.0}
    assert calls["input1"] == str(fake_dir) and calls["input2"] == str(real_dir)
    assert calls["fid"] and calls["kid"] and calls["kid_subset_size"] == 24
    assert calls["kid_subsets"] == 100 and calls["samples_find_ext"] == "png"
    # the files hold every channel: the hook sees the real images as they were
    torch.testing.assert_close(calls["features"], M.pooled_pixels(M.to_rgb_uint8(real)))
