"""`gan-ext train --amp` on the CPU: bf16 autocast where the CPU has native
bf16 (avx512_bf16/AMX), float32 with a note elsewhere; the fused kernels see
bf16 activations and float32 losses; resume stays exact."""
import json

import pytest
import torch

from gan_ext.train import amp as amp_mod
from gan_ext.train.loop import fit
from gan_ext.train.options import MODELS, TrainOptions


def _opts(model, out, **kw):
    base = dict(model=model, out=str(out), device="cpu", amp=True, steps=2, batch_size=4,
                limit=16, eval_n=0, sample_every=1000, progress=False)
    return TrainOptions(**{**base, **kw})


def _fit(opts, explicit=None, log=lambda m: None):
    """fit, with the options the tests set counted as given by the user."""
    given = explicit if explicit is not None else [
        "out", "device", "amp", "steps", "batch_size", "limit", "eval_n", "sample_every",
        "progress"]
    return fit(opts, explicit=given, log=log)


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda: True)


def test_detector_reads_cpuinfo_flags(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert amp_mod._cpuinfo_flags(str(info)) >= {"avx512_bf16", "avx512f"}
    assert amp_mod._cpuinfo_flags(str(tmp_path / "missing")) is None
    # without torch's probes the detector falls back on /proc/cpuinfo
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    monkeypatch.setattr(amp_mod, "_cpuinfo_flags", lambda: {"avx512f"})
    assert amp_mod.cpu_has_bf16() is False
    monkeypatch.setattr(amp_mod, "_cpuinfo_flags", lambda: {"amx_bf16"})
    assert amp_mod.cpu_has_bf16() is True
    monkeypatch.setattr(amp_mod, "_cpuinfo_flags", lambda: None)
    assert amp_mod.cpu_has_bf16() is False


@pytest.mark.parametrize("has", [True, False])
def test_use_amp_follows_the_detector(monkeypatch, has):
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda: has)
    logged = []
    assert amp_mod.use_amp(True, torch.device("cpu"), logged.append) is has
    assert (len(logged) == 1 and "float32" in logged[0]) is not has
    assert amp_mod.use_amp(False, torch.device("cpu"), logged.append) is False


def test_cpu_without_bf16_trains_float32_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda: False)
    logged = []
    _fit(_opts("dcgan", tmp_path / "r"), log=logged.append)
    assert any("--amp" in m and "float32" in m for m in logged)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["amp"] is False


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_under_bf16(tmp_path, native_bf16, model):
    res = _fit(_opts(model, tmp_path / model))
    assert res["step"] == 2
    assert json.loads((tmp_path / model / "config.json").read_text())["amp"] is True
    ckpt = torch.load(tmp_path / model / "checkpoint.pt", weights_only=False)
    assert ckpt["options"]["amp"] is True


def test_bf16_reaches_the_kernels_and_losses_stay_float32(native_bf16, monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode
    seen = {}

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func).startswith("gan_ext."):
                seen.setdefault(str(func).split(".")[1], args[0].dtype)
            return func(*args, **(kwargs or {}))

    from gan_ext.train.base import trainer_class
    opts = _opts("dcgan", "unused")
    t = trainer_class("dcgan")(opts, torch.device("cpu"))
    t.build(None)
    x = torch.rand(4, 1, 32, 32) * 2 - 1  # MNIST padded to 32
    with Spy(), amp_mod.autocast(torch.device("cpu"), True):
        stats = t.step([(x, torch.zeros(4, dtype=torch.long))])
    assert seen["norm_act"] == torch.bfloat16 and seen["norm_act_backward"] == torch.bfloat16
    assert seen["d_loss_with_grad"] == torch.float32 and seen["g_loss_with_grad"] == torch.float32
    assert stats["d_loss"].dtype == torch.float32
    assert {p.dtype for p in t.model.parameters()} == {torch.float32}


def test_resume_with_amp_is_exact(tmp_path, native_bf16):
    _fit(_opts("dcgan", tmp_path / "straight", steps=4))
    _fit(_opts("dcgan", tmp_path / "resumed", steps=2))
    _fit(_opts("dcgan", tmp_path / "resumed", steps=4, amp=False, resume=True),
         explicit=["steps", "resume"])
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert b["options"]["amp"] is True
    assert a["history"] == b["history"]
    # and the steps really ran in bf16: float32 gives other losses
    _fit(_opts("dcgan", tmp_path / "fp32", steps=4, amp=False))
    c = torch.load(tmp_path / "fp32" / "checkpoint.pt", weights_only=False)
    assert c["history"] != a["history"]


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_losses_under_autocast_run_in_float32_on_both_backends(backend):
    import gan_ext
    from gan_ext import ops
    torch.manual_seed(0)
    logits = torch.randn(8, 6).bfloat16()          # what a Linear gives under autocast
    target = torch.rand(8, 6)                      # float32 data
    calls = {
        "d_loss": lambda a, b: ops.d_loss(a, b),
        "g_loss": lambda a, b: ops.g_loss(a),
        "bce_with_logits": lambda a, b: ops.bce_with_logits(a, b, reduction="sum"),
        "l1_loss": lambda a, b: ops.l1_loss(a, b),
        "cycle_l1_loss": lambda a, b: ops.cycle_l1_loss(a, b, a, b, 10.0, 5.0),
        "kl": lambda a, b: ops.reparameterize_kl(a, b.log())[1],
    }
    previous = gan_ext.get_backend()
    gan_ext.set_backend(backend)
    try:
        for name, call in calls.items():
            want = call(logits.float(), target)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = call(logits, target)
            assert got.dtype == torch.float32, name
            torch.testing.assert_close(got, want, msg=name)
            with pytest.raises(TypeError, match="dtype"):   # outside autocast: still refused
                ops.l1_loss(logits, target)
    finally:
        gan_ext.set_backend(previous)


def test_loss_on_meta_tensors_is_not_an_autocast_question():
    from gan_ext import ops
    x = torch.empty(4, 3, device="meta")
    assert ops.l1_loss(x, x).device.type == "meta"
