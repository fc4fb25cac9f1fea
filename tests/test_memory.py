"""gan_ext.memory: retain_freed_memory, a process-wide glibc setting (so each
of its cases runs in a fresh interpreter), and saved_tensor_bytes, the measure
of what a forward keeps for backward."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gan_ext.memory import saved_tensor_bytes

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


def test_saved_tensor_bytes_counts_each_storage_once():
    x = torch.randn(1000, dtype=torch.float32, requires_grad=True)  # 4000 bytes
    # x * x saves x twice (as self and as other): one storage. sum saves nothing.
    assert saved_tensor_bytes(lambda: (x * x).sum()) == 4000
    # Two halves of x: views of one storage, counted whole and once.
    assert saved_tensor_bytes(lambda: (x[:500] * x[500:]).sum()) == 4000
    # exp saves its output (a new storage), not its input.
    assert saved_tensor_bytes(lambda: x.exp().sum()) == 4000


def test_saved_tensor_bytes_leaves_out_tensors_alive_anyway():
    x = torch.randn(1000, dtype=torch.float32, requires_grad=True)
    w = torch.randn(1000, dtype=torch.float32, requires_grad=True)
    assert saved_tensor_bytes(lambda: (x * w).exp().sum(), alive=[x]) == 8000   # w and exp's output
    assert saved_tensor_bytes(lambda: (x * w).exp().sum(), alive=[x, w]) == 4000
    assert saved_tensor_bytes(lambda: None) == 0

