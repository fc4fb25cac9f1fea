"""Issue 17: `gan-ext train` on 2 processes (CPU, gloo, the torchrun
launcher started by --nproc-per-node). A 2-process run with --sync-bn is
the 1-process run on the same global batch; a crash on one rank leaves a
loadable checkpoint that resumes exactly; what is not supported is refused
in one line."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext

import pytest
import torch

from gan_ext import cli
from gan_ext.train import load_checkpoint
from gan_ext.train.distributed import FAIL_ENV

# float32 (--no-amp: dcgan's default bf16 rounds differently on 1 and 2 processes)
TINY = ["--batch-size", "4", "--limit", "32", "--log-every", "1", "--no-progress",
        "--eval-n", "0", "--threads", "1", "--device", "cpu", "--checkpoint-every", "2",
        "--no-amp"]
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


def _assert_same_eval(a, b):
    """Two final evaluations agree (numbers to float rounding)."""
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], (int, float)):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
        elif isinstance(a[k], list) and a[k] and isinstance(a[k][0], (int, float)):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
        else:
            assert a[k] == b[k], k


def _assert_same_run(one, two, steps):
    """Two runs' losses, weights and final evaluations agree to float rounding."""
    a, b = _records(one), _records(two)
    ea, eb = [r["eval"] for r in a if "eval" in r], [r["eval"] for r in b if "eval" in r]
    assert len(ea) == len(eb)
    for x, y in zip(ea, eb):
        _assert_same_eval(x, y)
    a, b = [r for r in a if "eval" not in r], [r for r in b if "eval" not in r]
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
    """The fake labels come from the shared generator too; the final
    evaluation, its samples made half by each rank, is one process's."""
    one, two = tmp_path / "one", tmp_path / "two"
    ev = ["--eval-n", "50"]   # 25 samples per rank; 5 labels each
    assert cli.main(["train", "cgan", "--out", str(one), *TINY, "--steps", "2", *ev]) == 0
    r = _launch("cgan", two, "--steps", "2", "--sync-bn", *ev)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_same_run(one, two, 2)
    assert _records(two)[-1]["eval"]["n"] == 50


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


def test_an_option_that_does_not_apply_is_refused_before_any_process_starts(tmp_path, capsys):
    assert cli.main(["train", "gan", "--out", str(tmp_path / "r"), "--sync-bn",
                     "--nproc-per-node", "2"]) == 2
    assert "--sync-bn does not apply to gan" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r")


# Every family on 2 processes equals 1 process on the global batch where its
# randomness is the global batch's (latents, the denoising noise): ae/dae
# with synced batch norms, PacGAN's packs (whole packs per rank) with and
# without --joint-batch, the 2-D mixtures.
@pytest.mark.parametrize("model, extra", [
    ("ae", ["--sync-bn"]),
    ("dae", ["--sync-bn"]),
    ("ring", ["--pack", "2"]),
    ("stacked-mnist", ["--pack", "2", "--joint-batch", "--sync-bn"]),
])
def test_family_on_two_processes_equals_one_process(model, extra, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = [a for a in extra if a != "--sync-bn"]
    assert cli.main(["train", model, "--out", str(one), *TINY, "--steps", "2", *single]) == 0
    r = _launch(model, two, "--steps", "2", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_same_run(one, two, 2)


def test_vae_batch_sums_are_summed_over_processes(tmp_path):
    """The VAE's loss is a batch sum: its stats add up over the ranks (the
    per-image ones average), and its gradients are summed (the next test).
    Its z noise is each rank's own, so the run is not compared bit for bit."""
    run = tmp_path / "vae"
    r = _launch("vae", run, "--steps", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    for rec in _records(run):
        for k in ("loss", "recon", "kl"):
            assert rec[k] == pytest.approx(4 * rec[f"{k}_per_image"], rel=1e-5), (rec["step"], k)


def _vae_rank(rank, init_file, out):
    import torch.distributed as dist
    from gan_ext.models import VAEConfig, build_vae
    from gan_ext.train.autoencoder import VAETrainer
    from gan_ext.train.distributed import Context
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    model = build_vae(VAEConfig()).double().eval()   # eval: z = mu, no noise
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if rank is None:   # one process, the whole batch
        model.train_step(x, opt)
    else:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=2)
        ctx = Context(rank, 2)
        ctx.average_gradients(opt, VAETrainer.grad_reduction)
        model.train_step(x[3 * rank:3 * rank + 3], opt)
        # map_rows: each rank computes its share, all get every row in order.
        seen = []
        rows = {n: ctx.map_rows(lambda i: (seen.append(len(i)), i[:, None] * 10.0 + rank)[1], n)
                for n in (5, 4, 1)}
        torch.save({"rows": rows, "seen": seen}, f"{out}.rows")
        dist.destroy_process_group()
    torch.save(model.state_dict(), out)


def test_vae_gradients_summed_and_rows_split_over_two_ranks(tmp_path):
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_vae_rank, args=(r, tmp_path / "init", tmp_path / f"r{r}.pt"))
             for r in range(2)]
    for p in procs:
        p.start()
    _vae_rank(None, None, tmp_path / "one.pt")
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    one = torch.load(tmp_path / "one.pt")
    for r in range(2):
        got = torch.load(f"{tmp_path / f'r{r}.pt'}.rows")
        # 5 rows: rank 0 computes 0-2, rank 1 3-4; 1 row: both compute it.
        assert got["seen"] == ([3, 2, 1] if r == 0 else [2, 2, 1])
        assert torch.equal(got["rows"][5][:, 0], torch.tensor([0., 10, 20, 31, 41]))
        assert torch.equal(got["rows"][4][:, 0], torch.tensor([0., 10, 21, 31]))
        assert torch.equal(got["rows"][1][:, 0], torch.tensor([float(r)]))
        got = torch.load(tmp_path / f"r{r}.pt")
        for k in one:
            torch.testing.assert_close(got[k], one[k], rtol=1e-9, atol=1e-12, msg=k)


def test_cyclegan_resumes_exactly_with_every_ranks_image_pools(tmp_path):
    """Each rank pools its own fakes: a crash after step 2 and a resume
    give the straight run, pools and all."""
    straight, crash = tmp_path / "straight", tmp_path / "crash"
    extra = ["--batch-size", "2", "--limit", "8", "--steps", "4"]
    r = _launch("cyclegan", straight, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    ckpt = load_checkpoint(os.path.join(straight, "checkpoint.pt"))
    pools = [s["fake_A_pool"]["images"] for s in ckpt["distributed"]["ranks"]]
    assert [len(p) for p in pools] == [4, 4]   # one fake per rank and step
    assert not torch.equal(torch.stack(pools[0]), torch.stack(pools[1]))
    r = _launch("cyclegan", crash, *extra, env={FAIL_ENV: "0:3"})
    assert r.returncode != 0
    r = _launch("cyclegan", crash, *extra, "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _records(crash) == _records(straight)
    wa, wb = _weights(crash), _weights(straight)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


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


@pytest.mark.parametrize("model, arch, expect", [
    ("cyclegan", None, "--sync-bn does not apply: the cyclegan networks have no batch norm"),
    ("grid", "pacgan", "--sync-bn: the grid networks' 1-D batch norms need torch's "
                       "SyncBatchNorm, which runs on CUDA only"),
])
def test_sync_bn_with_nothing_it_can_sync_is_refused(model, arch, expect):
    """What --sync-bn finds once the networks are converted (rank 0 says
    it; the refusal needs no collective)."""
    from gan_ext.nn import convert_sync_batchnorm
    from gan_ext.train import TrainOptions
    from gan_ext.train.base import trainer_class
    from gan_ext.train.distributed import Context, Quiet
    opts = TrainOptions(model=model, **({"arch": arch} if arch else {}))
    trainer = trainer_class(model)(opts, torch.device("cpu"))
    trainer.build()
    net = convert_sync_batchnorm(trainer.model)
    with pytest.raises(ValueError, match=re.escape(expect)):
        Context(0, 2).check_sync_bn(net, model, torch.device("cpu"))
    with pytest.raises(Quiet):
        Context(1, 2).check_sync_bn(net, model, torch.device("cpu"))
    Context(0, 2).check_sync_bn(convert_sync_batchnorm(  # a 2-D batch norm: accepted
        torch.nn.Sequential(torch.nn.BatchNorm2d(3))), model, torch.device("cpu"))


@pytest.mark.parametrize("backend, expect", [
    ("nccl", "GAN_EXT_DIST_BACKEND=nccl needs CUDA (--device cuda); the CPU uses gloo"),
    ("mpi", "GAN_EXT_DIST_BACKEND='mpi': choose gloo or nccl"),
])
def test_a_backend_that_cannot_run_is_refused(backend, expect, monkeypatch):
    from gan_ext.train.distributed import Quiet, from_env
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("GAN_EXT_DIST_BACKEND", backend)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError) as e:
        from_env(torch.device("cpu"))
    assert str(e.value) == expect
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(Quiet):
        from_env(torch.device("cpu"))


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


def test_allreduce_benchmark_reports_every_optimizer():
    """benchmarks/allreduce.py on 2 gloo ranks, tiny: one row per optimizer."""
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "allreduce.py")
    r = subprocess.run([sys.executable, path, "--models", "vae,dcgan", "--reps", "2"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "| vae | model | 652,824 |" in out and "| dcgan | G |" in out and "| dcgan | D |" in out
    assert "dcgan: " in out and "ms of gradient all-reduce per training step" in out


def test_nccl_on_a_shared_gpu_is_refused(monkeypatch):
    """Two ranks on one GPU over NCCL fail inside NCCL ("invalid usage", seen
    on the H200 in session 26): refused first, naming the way that works."""
    from gan_ext.train import distributed

    for k, v in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                 distributed.SHARE_GPU_ENV: "1", distributed.BACKEND_ENV: "nccl"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"NCCL cannot run two ranks on one GPU .*"
                                         r"GAN_EXT_DIST_BACKEND=gloo"):
        distributed.from_env(torch.device("cuda"))


# CI saw a 2-process run that succeeded abort in rank 1 at exit (SIGABRT,
# "terminate called without an active exception"): gloo's threads outliving
# the interpreter. The run's Context now destroys the group on the way out.
@pytest.mark.parametrize("outcome", ["success", "error", "peer_failed"])
def test_the_run_context_destroys_the_process_group(outcome, tmp_path):
    import torch.distributed as dist
    from gan_ext.train.distributed import Context, PeerFailed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        ctx = Context(0, 2)   # active: a group of one stands for the two ranks
        raised = {"success": None, "error": ValueError, "peer_failed": PeerFailed}[outcome]
        with pytest.raises(raised) if raised else nullcontext():
            with ctx:
                assert dist.is_initialized()
                if raised:
                    raise raised("stop")
        # after a peer failed the group is left to the launcher (destroying it could wait)
        assert dist.is_initialized() == (outcome == "peer_failed")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
