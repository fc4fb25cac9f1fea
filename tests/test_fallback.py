"""The pure-PyTorch fallback: import without the extension, the
GAN_EXT_BACKEND variable, and switching backends in-process."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gan_ext

from conftest import requires_fused

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter; prints one JSON line as the last line of stdout.
_PROBE = textwrap.dedent("""
    import json, sys, warnings
    if {block_extension}:
        sys.modules["gan_ext._C"] = None  # makes `from . import _C` raise ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import gan_ext
    import torch
    from torch import nn
    torch.manual_seed(0)
    calls = []
    mod = sys.modules["gan_ext.ops.norm_act"]  # where the wrapper looks the twin up
    orig = mod.norm_act
    mod.norm_act = lambda *a, **k: calls.append(1) or orig(*a, **k)
    ours = gan_ext.nn.BatchNormAct2d(4, activation="leaky_relu", negative_slope=0.2)
    twin = nn.Sequential(nn.BatchNorm2d(4), nn.LeakyReLU(0.2))
    with torch.no_grad():
        twin[0].weight.uniform_(0.5, 1.5), twin[0].bias.normal_()
    ours.load_state_dict(twin[0].state_dict())
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = ours(x), twin(x2)
    y.square().sum().backward(), y2.square().sum().backward()
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
    err = max(rel(y, y2), rel(x.grad, x2.grad), rel(ours.weight.grad, twin[0].weight.grad),
              rel(ours.running_var, twin[0].running_var))
    print(json.dumps(dict(
        backend=gan_ext.get_backend(),
        extension_loaded=gan_ext._backend.extension_loaded,
        runtime_warnings=[str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        reference_calls=len(calls),
        max_rel_err=err,
    )))
""")


def _probe(block_extension: bool, backend_env: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GAN_EXT_BACKEND"}
    if backend_env is not None:
        env["GAN_EXT_BACKEND"] = backend_env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(block_extension=block_extension)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_without_extension_falls_back_with_one_warning():
    r = _probe(block_extension=True)
    assert r["extension_loaded"] is False
    assert r["backend"] == "reference"
    assert len(r["runtime_warnings"]) == 1, r["runtime_warnings"]
    assert "falls back to the pure-PyTorch reference" in r["runtime_warnings"][0]
    assert r["reference_calls"] > 0  # the layer really ran the reference twin
    assert r["max_rel_err"] < 1e-5


def test_backend_environment_variable_forces_reference():
    r = _probe(block_extension=False, backend_env="reference")
    assert r["backend"] == "reference"
    assert r["runtime_warnings"] == []  # asked for, so nothing to warn about
    assert r["reference_calls"] > 0
    assert r["max_rel_err"] < 1e-5


@requires_fused
def test_default_backend_is_fused_when_built():
    r = _probe(block_extension=False)
    assert r["extension_loaded"] is True and r["backend"] == "fused"
    assert r["runtime_warnings"] == []
    assert r["reference_calls"] == 0  # the kernel ran, not the twin
    assert r["max_rel_err"] < 1e-5


def test_unknown_backend_environment_variable_warns():
    r = _probe(block_extension=False, backend_env="cudnn")
    assert any("GAN_EXT_BACKEND='cudnn'" in w for w in r["runtime_warnings"]), r
    assert r["backend"] == ("fused" if r["extension_loaded"] else "reference")


# ------------------------------------------------------------- in-process switch
def _count_reference_calls(monkeypatch):
    # The twin is patched where the wrapper looks it up: in its op module.
    calls = []
    mod = importlib.import_module("gan_ext.ops.norm_act")
    orig = mod.norm_act
    monkeypatch.setattr(mod, "norm_act", lambda *a, **k: calls.append(1) or orig(*a, **k))
    return calls


def test_set_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="backend must be one of"):
        gan_ext.set_backend("triton")


def test_use_backend_restores_the_previous_backend_on_error():
    before = gan_ext.get_backend()
    with pytest.raises(KeyError):
        with gan_ext.use_backend("reference"):
            assert gan_ext.get_backend() == "reference"
            raise KeyError("boom")
    assert gan_ext.get_backend() == before


def test_reference_backend_runs_the_reference(monkeypatch):
    calls = _count_reference_calls(monkeypatch)
    m = gan_ext.nn.BatchNormAct2d(3)
    with gan_ext.use_backend("reference"):
        m(torch.randn(2, 3, 4, 4))
    assert len(calls) == 1


@requires_fused
def test_switching_backends_in_process_gives_the_same_results(monkeypatch):
    calls = _count_reference_calls(monkeypatch)

    def run(name):
        torch.manual_seed(0)
        m = gan_ext.nn.BatchNormAct2d(8, activation="leaky_relu", negative_slope=0.2)
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5), m.bias.normal_()
        x = torch.randn(4, 8, 6, 6, requires_grad=True)
        n0 = len(calls)
        with gan_ext.use_backend(name):
            assert gan_ext.get_backend() == name
            y = m(x)
            y.square().sum().backward()
            m.eval()
            y_eval = m(x)
        ran_reference = len(calls) > n0
        return ran_reference, (y, y_eval, x.grad, m.weight.grad, m.bias.grad, m.running_mean,
                               m.running_var)

    before = gan_ext.get_backend()
    ran_ref_f, fused = run("fused")
    ran_ref_r, reference = run("reference")
    assert gan_ext.get_backend() == before
    assert (ran_ref_f, ran_ref_r) == (False, True)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    gan_ext.set_backend("reference")
    try:
        assert gan_ext.get_backend() == "reference"
    finally:
        gan_ext.set_backend(before)


# ------------------------------------------------- losses and VAE ops, no _C
_LOSS_PROBE = textwrap.dedent("""
    import json, sys, warnings
    sys.modules["gan_ext._C"] = None
    warnings.simplefilter("ignore")
    import gan_ext, torch
    import torch.nn.functional as F
    from gan_ext import ops
    from gan_ext.nn import GANLoss
    torch.manual_seed(0)
    real = torch.randn(8, 1, requires_grad=True)
    fake = torch.randn(3, 1, 4, 4, requires_grad=True)
    crit = GANLoss("vanilla", real_label=0.9)
    d = crit.d_loss(real, fake)
    d.backward()
    want = (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    g = GANLoss("lsgan").g_loss(fake)
    a, b = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    mu, lv = torch.randn(4, 6), torch.randn(4, 6)
    torch.manual_seed(7); z1, kl = ops.reparameterize_kl(mu, lv)
    torch.manual_seed(7); z2, _ = ops.reparameterize_kl(mu, lv)
    kl_want = (-0.5 * (1 + lv - mu ** 2 - lv.exp()).sum(1)).mean()
    print(json.dumps(dict(
        extension_loaded=gan_ext._backend.extension_loaded,
        d_err=abs(d.item() - want.item()),
        g_err=abs(g.item() - F.mse_loss(fake, torch.ones_like(fake)).item()),
        l1_err=abs(ops.l1_loss(a, b).item() - F.l1_loss(a, b).item()),
        kl_err=abs(kl.item() - kl_want.item()),
        same_z=bool(torch.equal(z1, z2)),
        grads=real.grad is not None and fake.grad is not None,
    )))
""")


def test_losses_and_vae_ops_work_without_the_extension():
    env = {k: v for k, v in os.environ.items() if k != "GAN_EXT_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", _LOSS_PROBE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["extension_loaded"] is False
    assert max(r["d_err"], r["g_err"], r["l1_err"], r["kl_err"]) < 1e-5, r
    assert r["same_z"] and r["grads"], r
