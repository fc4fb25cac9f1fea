"""Runtime choice of the CPU kernel variant (csrc/cpu_dispatch.cpp): what is
reported, what the environment variables force, and the op suite under every
variant this CPU can run."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest
import torch

import gan_ext
from gan_ext import _backend
from gan_ext import cli

from conftest import requires_fused

VARIANTS = ("default", "avx2", "avx512")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torch_level() -> int:
    """Index in VARIANTS of what torch runs here: the variants this CPU can execute."""
    name = torch.backends.cpu.get_cpu_capability().lower()
    return VARIANTS.index(name) if name in VARIANTS else 0


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in ("GAN_EXT_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_every_cpu_kernel_file_registers_only_when_selected():
    """Each cpu.cpp is compiled once per variant: a registration block without
    the guard would register three copies, the last overriding the others."""
    files = sorted(glob.glob(os.path.join(ROOT, "csrc", "ops", "*", "cpu.cpp")))
    assert files
    for path in files:
        with open(path) as f:
            src = f.read()
        blocks = re.findall(r"TORCH_LIBRARY_IMPL\(gan_ext, CPU, m\) \{\n\s*(\S+)", src)
        assert blocks == ["GAN_EXT_REGISTER_IF_SELECTED();"], path


_PRINT = "import gan_ext; print(gan_ext.info()['cpu_capability'])"


@requires_fused
def test_info_reports_the_variant(capsys):
    assert gan_ext.info()["cpu_capability"] == _backend.cpu_capability
    assert _backend.cpu_capability in VARIANTS
    assert cli.main(["info"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["cpu_capability", _backend.cpu_capability] in rows


@requires_fused
def test_default_choice_is_torchs():
    """Without GAN_EXT_CPU_CAPABILITY the best variant the CPU and torch run."""
    r = _run(_PRINT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [VARIANTS[_torch_level()]]


@requires_fused
def test_aten_cpu_capability_is_the_ceiling():
    r = _run(_PRINT, ATEN_CPU_CAPABILITY="default")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["default"]


@requires_fused
@pytest.mark.parametrize("variant", VARIANTS)
def test_forced_variant_is_used(variant):
    r = _run(_PRINT, GAN_EXT_CPU_CAPABILITY=variant.upper() if variant == "avx2" else variant)
    assert r.returncode == 0, r.stderr
    if VARIANTS.index(variant) <= _torch_level():
        assert r.stdout.split() == [variant] and "GAN_EXT_CPU_CAPABILITY" not in r.stderr
    else:  # this CPU cannot run it: said, and the best it can run is used
        assert r.stdout.split() == [VARIANTS[_torch_level()]]
        assert f"GAN_EXT_CPU_CAPABILITY={variant}: this CPU cannot run it" in r.stderr


@requires_fused
def test_unknown_value_is_an_error():
    r = _run("import gan_ext", GAN_EXT_CPU_CAPABILITY="sse9")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        "ValueError: GAN_EXT_CPU_CAPABILITY='sse9' is not one of default, avx2, avx512")


@requires_fused
@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_op_suite_under_variant(variant):
    """Parity with the twins and gradcheck of every op, every reduction scheme
    of norm_act, the reparameterization noise against its twin and minibatch
    discrimination's non-finite values in every lane (its exp differs per
    variant) and its triangle blocks, in a process that runs this variant's kernels."""
    if VARIANTS.index(variant) > _torch_level():
        pytest.skip(f"this CPU cannot run the {variant} kernels")
    r = _run(_PRINT, GAN_EXT_CPU_CAPABILITY=variant)
    assert r.stdout.split() == [variant], r.stderr
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env["GAN_EXT_CPU_CAPABILITY"] = variant
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_op_spec.py", "tests/test_norm_act_paths.py",
         "tests/test_reparam_op.py", "tests/test_minibatch_discrimination.py", "-q", "-p",
         "no:cacheprovider", "-k",
         "(parity or gradcheck or noise or every_lane or at_a_tie or triangle_blocks) and not gradgrad "
         "and not cuda"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    tail = p.stdout.strip().splitlines()[-1]
    assert p.returncode == 0, p.stdout[-3000:]
    assert " passed" in tail and "failed" not in tail
