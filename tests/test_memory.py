"""gan_ext.retain_freed_memory: a process-wide glibc setting, so each case runs
in a fresh interpreter."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = """
import gan_ext, torch
a = gan_ext.retain_freed_memory()
b = gan_ext.retain_freed_memory()     # idempotent
x = torch.randn(64, 64, 32, 32)      # 16 MiB: below the new mmap threshold
y = (x * 2).sum()
print(a, b)
"""


def _run(env_value):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("GAN_EXT_RETAIN_FREED_MEMORY", None)
    if env_value is not None:
        env["GAN_EXT_RETAIN_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc setting")
def test_applies_on_linux_and_is_idempotent():
    assert _run(None) == ["True", "True"]


@pytest.mark.parametrize("value", ["0", "off"])
def test_environment_turns_it_off(value):
    assert _run(value) == ["False", "False"]
