"""Issue 17: `gan-ext train` on 2 processes (CPU, gloo, the torchrun
launcher started by --nproc-per-node). A 2-process run with --sync-bn is
the 1-process run on the same global batch; a crash on one rank leaves a
loadable checkpoint that resumes exactly; what is not supported is refused
in one line."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from gan_ext import cli
from gan_ext.train import load_checkpoint
from gan_ext.train.distributed import FAIL_ENV

TINY = ["--batch-size", "4", "--limit", "32", "--log-every", "1", "--no-progress",
        "--eval-n", "0", "--threads", "1", "--device", "cpu", "--checkpoint-every", "2"]
STEPS = ["--steps", "4"]


def _launch(model, out, *extra, env=None):
    """`gan-ext train MODEL ... --nproc-per-node 2` in a subprocess."""
    cmd = [sys.executable, "-m", "gan_ext", "train", model, "--out", str(out), *TINY, *extra,
           "--nproc-per-node", "2"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})


def _records(run):
    """metrics.jsonl without the timings."""
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "it_per_s"} for line in f]


def _weights(run):
    return load_checkpoint(os.path.join(run, "checkpoint.pt"))["models"]


def _errors(text):
    return [line for line in text.splitlines() if line.startswith("gan-ext: error:")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 2-process DCGAN run of 4 steps with --sync-bn."""
    out = tmp_path_factory.mktemp("dist") / "straight"
    r = _launch("dcgan", out, *STEPS, "--sync-bn")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "x 2 processes (2 each)" in r.stdout
    return out


def _assert_same_run(one, two, steps):
    """Two runs' losses and weights agree to float rounding."""
    a, b = _records(one), _records(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), (ra["step"], k)
    wa, wb = _weights(one), _weights(two)
    assert wa.keys() == wb.keys()
    for k in wa:
        if wa[k].is_floating_point():
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-4, msg=k)
        else:
            assert torch.equal(wa[k], wb[k]), k


def test_two_processes_with_sync_bn_equal_one_process(straight, tmp_path):
    one = tmp_path / "one"
    assert cli.main(["train", "dcgan", "--out", str(one), *TINY, *STEPS]) == 0
    _assert_same_run(one, straight, 4)
    # The 2-process run's checkpoint says how many processes trained it.
    ckpt = load_checkpoint(os.path.join(straight, "checkpoint.pt"))
    assert ckpt["distributed"]["world_size"] == 2 and len(ckpt["distributed"]["rng"]) == 2
    with open(os.path.join(straight, "config.json")) as f:
        assert json.load(f)["world_size"] == 2


def test_cgan_on_two_processes_equals_one_process(tmp_path):
    """The fake labels come from the shared generator too."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(["train", "cgan", "--out", str(one), *TINY, "--steps", "2"]) == 0
    r = _launch("cgan", two, "--steps", "2", "--sync-bn")
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_same_run(one, two, 2)


def test_a_crashed_rank_stops_the_run_and_the_checkpoint_resumes_exactly(straight, tmp_path):
    run = tmp_path / "crash"
    r = _launch("dcgan", run, *STEPS, "--sync-bn", env={FAIL_ENV: "1:3"})
    assert r.returncode != 0
    errors = _errors(r.stderr)
    assert any("another process of the run failed" in e and "(step 2)" in e
               and "--resume on 2 processes" in e for e in errors), r.stderr[-3000:]
    ckpt = load_checkpoint(os.path.join(run, "checkpoint.pt"), model="dcgan")
    assert ckpt["step"] == 2
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
    # Resumed at the same world size: the straight run's records and weights, bit for bit.
    r = _launch("dcgan", run, *STEPS, "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _records(run) == _records(straight)
    wa, wb = _weights(run), _weights(straight)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ctrl_c_stops_every_rank_after_one_step_and_rank_0_saves(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C: the
    launcher, the torchrun agent (which forwards it again) and both ranks."""
    run = tmp_path / "stop"
    cmd = [sys.executable, "-m", "gan_ext", "train", "dcgan", "--out", str(run), *TINY,
           "--steps", "100000", "--checkpoint-every", "100000", "--nproc-per-node", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        metrics = run / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("gan-ext: interrupted at step")]
    assert len(said) == 1, err[-3000:]
    step = int(said[0].split("step ")[1].split(";")[0])
    assert load_checkpoint(os.path.join(run, "checkpoint.pt"))["step"] == step
    assert _records(run)[-1]["step"] == step


def test_resume_at_another_world_size_is_refused(straight, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(straight, run)
    assert cli.main(["train", "dcgan", "--out", str(run), "--steps", "6", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trained on 2 process(es) and this is 1" in err and "--nproc-per-node 2" in err


def test_sync_bn_on_one_process_is_refused(tmp_path, capsys):
    assert cli.main(["train", "dcgan", "--out", str(tmp_path / "r"), *TINY, *STEPS,
                     "--sync-bn"]) == 2
    assert "--sync-bn needs several processes" in capsys.readouterr().err


def test_an_unsupported_model_is_refused_before_any_process_starts(tmp_path, capsys):
    assert cli.main(["train", "vae", "--out", str(tmp_path / "r"), "--nproc-per-node", "2"]) == 2
    assert ("--nproc-per-node: vae trains on one process only; several processes support gan, "
            "dcgan, cgan") in capsys.readouterr().err


@pytest.mark.parametrize("model, extra, expect", [
    ("dcgan", ["--batch-size", "5"],
     "--batch-size 5 is the global batch and must be divisible by the 2 processes"),
    ("gan", ["--unrolled", "1"], "--unrolled is not supported on several processes"),
])
def test_refused_on_two_processes_in_one_line(model, extra, expect, tmp_path):
    r = _launch(model, tmp_path / "r", "--steps", "2", *extra)
    assert r.returncode != 0   # torchrun's own status: 1 whatever the ranks' were
    errors = _errors(r.stderr)
    # Rank 0 says it, rank 1 exits quietly: one line (the launcher adds its summary).
    assert sum(expect in e for e in errors) == 1, r.stderr[-3000:]
    assert not os.path.exists(tmp_path / "r" / "checkpoint.pt")


def test_loader_shards_are_the_global_batch_in_rank_order():
    from gan_ext.data import InMemoryLoader
    from gan_ext.data.errors import DataError
    x = torch.arange(24.0)
    whole = InMemoryLoader(x, batch_size=6, seed=3)
    shards = [InMemoryLoader(x, batch_size=6, seed=3, shard=(r, 3)) for r in range(3)]
    for _ in range(5):   # across an epoch boundary
        (b,), parts = next(iter(whole)), [next(iter(s))[0] for s in shards]
        assert torch.equal(b, torch.cat(parts))
    with pytest.raises(DataError, match="divisible by world"):
        InMemoryLoader(x, batch_size=5, shard=(0, 2))
    with pytest.raises(DataError, match="0 <= rank < world"):
        InMemoryLoader(x, batch_size=4, shard=(2, 2))
