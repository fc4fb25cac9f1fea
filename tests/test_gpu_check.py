"""scripts/gpu_check.py and scripts/cuda_sanitize.py without a GPU: argument
handling, the parsers of each tool's output, the time budgets, the report
writer on a synthetic result, the sanitizer driver's case list on CPU
tensors, and the Makefile target's command line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from conftest import requires_fused

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import cuda_sanitize  # noqa: E402
import gpu_check  # noqa: E402


# ------------------------------------------------------------------ arguments
def test_defaults_follow_out_env(monkeypatch):
    monkeypatch.setenv("OUT", "/tmp/device-out")
    args = gpu_check.parse_args([])
    assert args.out == "/tmp/device-out" and args.part == "all"
    monkeypatch.delenv("OUT")
    args = gpu_check.parse_args(["--part", "2"])
    assert args.out == os.path.join(ROOT, "gpu-check-out")
    assert gpu_check.planned_sections(args) == [
        "env", "build", "device", "sanitize", "bench_norm", "bench_loss", "bench_steps", "train",
        "profile", "graphs", "ncu", "dist"]
    assert gpu_check.planned_sections(gpu_check.parse_args(["--part", "1"])) == [
        "env", "build", "info", "tests", "tests_legacy"]
    # Both parts in one go: env and build once, in part 1.
    both = gpu_check.plan(gpu_check.parse_args([]))
    assert both[:6] == [("env", 1), ("build", 1), ("info", 1), ("tests", 1), ("tests_legacy", 1),
                        ("device", 2)]
    assert len(both) == len(gpu_check.SECTIONS) - 1  # bench_norm_legacy: by name only
    assert gpu_check.plan(gpu_check.parse_args(["--sections", "bench_norm_legacy"])) == [
        ("bench_norm_legacy", 2)]


def test_sections_and_budgets():
    args = gpu_check.parse_args(["--sections", "ncu,sanitize", "--budget", "ncu=12.5"])
    assert gpu_check.planned_sections(args) == ["sanitize", "ncu"]  # their usual order
    assert args.budgets["ncu"] == 12.5 and args.budgets["sanitize"] == 90
    # Each part stops starting sections at its budget, under 7 minutes.
    assert gpu_check.PART_BUDGET_S < 420


@pytest.mark.parametrize("argv,message", [
    (["--sections", "nope"], "unknown nope"),
    (["--budget", "ncu"], "SECTION=SECONDS"),
    (["--budget", "ncu=-1"], "ncu: expected a number > 0"),
    (["--budget", "bogus=3"], "SECTION=SECONDS"),
    (["--part", "3"], "invalid choice"),
    (["--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_make_target_command_line():
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    # Run from `make test` too: none of the parent make's state may leak in.
    env = {k: v for k, v in os.environ.items()
           if k not in ("OUT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    make = ["make", "--no-print-directory", "-n", "gpu-check"]
    r = subprocess.run(make + ["PART=2"], cwd=ROOT, env=env, capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == "python3 scripts/gpu_check.py --part 2 --out gpu-check-out"
    r = subprocess.run(make, cwd=ROOT, env={**env, "OUT": "/tmp/o"}, capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == "python3 scripts/gpu_check.py --part all --out /tmp/o"


# -------------------------------------------------------------------- parsers
MEMCHECK_OK = """========= COMPUTE-SANITIZER
cuda_sanitize: 290/290 cases ran on cuda (level paths, GAN_EXT_CUDA_NORM_ACT=default) in 41.0s; 0 failed
========= ERROR SUMMARY: 0 errors
"""
RACECHECK_BAD = """========= COMPUTE-SANITIZER
========= Error: Race reported between Write access at gan_ext::block_sum+0x1a0
cuda_sanitize: 289/290 cases ran on cuda (level paths, GAN_EXT_CUDA_NORM_ACT=legacy) in 80.0s; 1 failed
========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warning)
========= ERROR SUMMARY: 2 errors
"""

RACECHECK_H200 = """========= COMPUTE-SANITIZER
cuda_sanitize: 279/279 cases ran on cuda (level paths, GAN_EXT_CUDA_NORM_ACT=default) in 36.2s; 0 failed
========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)
"""


def test_parse_sanitizer():
    ok = gpu_check.parse_sanitizer(MEMCHECK_OK)
    assert ok["errors"] == 0 and ok["driver"] == "290/290" and ok["driver_ok"]
    bad = gpu_check.parse_sanitizer(RACECHECK_BAD)
    assert (bad["errors"], bad["hazards"], bad["warnings"]) == (2, 3, 1)
    assert bad["driver"] == "289/290" and not bad["driver_ok"]
    # What racecheck printed on the H200 (session 26): no ERROR SUMMARY line.
    clean = gpu_check.parse_sanitizer(RACECHECK_H200)
    assert (clean["errors"], clean["hazards"], clean["warnings"]) == (0, 0, 0)
    assert clean["driver_ok"]
    cut = gpu_check.parse_sanitizer("========= COMPUTE-SANITIZER\nKilled\n")
    assert cut["errors"] is None and cut["driver"] is None and not cut["driver_ok"]


def test_parse_junit_and_pytest_summary(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="5" failures="1" '
        'errors="1" skipped="1" time="3.5"><testcase classname="tests.test_a" name="t1"/>'
        '<testcase classname="tests.test_a" name="t2"><failure message="assert 1 == 2"/></testcase>'
        '<testcase classname="tests.test_b" name="t3"><error message="CUDA error"/></testcase>'
        '<testcase classname="tests.test_b" name="t4"><skipped/></testcase>'
        '<testcase classname="tests.test_b" name="t5"/></testsuite></testsuites>')
    j = gpu_check.parse_junit(str(xml))
    assert (j["tests"], j["passed"], j["failures"], j["errors"], j["skipped"]) == (5, 2, 1, 1, 1)
    assert [f["id"] for f in j["failed"]] == ["tests.test_a::t2", "tests.test_b::t3"]
    counts = gpu_check.parse_pytest_summary(
        "....\nFAILED tests/x.py::y\n= 3 failed, 120 passed, 4 skipped, 9 deselected in 12.30s =\n")
    assert counts == {"failed": 3, "passed": 120, "skipped": 4, "deselected": 9}


NCU_CSV = '''==PROF== Connected to process 123
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","gpu__time_duration.sum","dram__bytes_read.sum","launch__grid_size","launch__registers_per_thread","launch__waves_per_multiprocessor"
"","","","","","","","nsecond","byte","","register/thread",""
"0","123","python3","h","at::cuda::(anonymous namespace)::spin_kernel(long)","1","7","2000","0","1","16","0.01"
"1","123","python3","h","void gan_ext::(anonymous namespace)::plane_stats_kernel<float, 4>(const float *, gan_ext::PlaneGeometry, gan_ext::StatsOut<float>)","1","7","12,345","8388608","528","40","1.00"
"2","123","python3","h","void gan_ext::(anonymous namespace)::plane_forward_kernel<float, 4>(const float *)","1","7","10000","8388608","576","32","1.09"
"3","123","python3","h","at::cuda::(anonymous namespace)::spin_kernel(long)","1","7","2000","0","1","16","0.01"
"4","123","python3","h","void gan_ext::(anonymous namespace)::d_loss_kernel<float>(float)","1","7","3000","512","1","30","0.01"
==PROF== Disconnected from process 123
'''


def test_parse_ncu_csv_attributes_kernels_to_cases():
    rows = gpu_check.parse_ncu_csv(NCU_CSV)
    assert len(rows) == 5
    ks = gpu_check.ncu_kernels(rows, ["bn case", "loss case"], "legacy")
    assert [(k["case"], k["kernel"]) for k in ks] == [
        ("bn case", "plane_stats_kernel<float, 4>"), ("bn case", "plane_forward_kernel<float, 4>"),
        ("loss case", "d_loss_kernel<float>")]
    assert ks[0]["time_us"] == pytest.approx(12.345) and ks[0]["dram_read_MB"] == pytest.approx(8.388608)
    assert ks[0]["grid"] == 528 and ks[0]["registers"] == 40 and ks[1]["waves"] == 1.09
    assert ks[0]["setting"] == "legacy"
    assert gpu_check.parse_ncu_csv("==ERROR== Failed to find metric foo\n") == []


# ------------------------------------------------------------- the report
def _synthetic_results():
    bn = dict(case="bn_relu 64x128x16x16 nchw fwd+bwd", block="bn_relu", mode="fwd+bwd",
              dtype="float32", setting="default", dcgan_shape=True, fused_us=30.0, eager_us=48.0,
              compile_us=27.0, bw_pct=71.0, triton_kernels=4, triton_launches=5, fused_launches=3)
    return {"meta": {"part": "2", "dry_run": False}, "sections": {
        "env": {"status": "ok", "seconds": 1.0, "data": {"gpu": "NVIDIA H200", "driver": "580.1",
                                                         "nvcc": "V13.0", "torch": "2.11.0"}},
        "device": {"status": "ok", "seconds": 2.0, "data": {
            "name": "NVIDIA H200", "sm_count": 132, "l2_bytes": 60 << 20, "copy_GBps": 4300.0,
            "torch": "2.11.0+cu130", "torch_cuda": "13.0", "total_memory": 141 << 30}},
        "tests": {"status": "ok", "seconds": 100.0, "data": {
            "tests": 10, "passed": 9, "failures": 1, "errors": 0, "skipped": 3, "time": 90.0,
            "command": "pytest -m cuda", "failed": [{"id": "tests.t::x", "message": "boom"}]}},
        "sanitize": {"status": "ok", "seconds": 60.0, "data": {"runs": [
            dict(tool="memcheck", setting="default", errors=0, driver="9/9", driver_ok=True,
                 seconds=30.0),
            dict(tool="racecheck", setting="legacy", errors=2, hazards=3, driver="9/9",
                 driver_ok=True, seconds=50.0)]}},
        "bench_norm": {"status": "ok", "seconds": 50.0, "data": {"rows": [bn],
                                                                 "skipped": ["a", "b"]}},
        "bench_norm_legacy": {"status": "ok", "seconds": 20.0, "data": {"rows": [
            dict(bn, setting="legacy", fused_us=40.0, compile_us=None, bw_pct=53.0)]}},
        "bench_loss": {"status": "ok", "seconds": 10.0, "data": {"rows": [
            dict(case="d_bce 64x1 nchw fwd+bwd", block="d_bce", mode="fwd+bwd", dtype="float32",
                 fused_us=10.0, eager_us=35.0, errors={"compile": "skipped: section budget"}),
            dict(case="reparam_kl 128x20 nchw fwd+bwd", block="reparam_kl", mode="fwd+bwd",
                 dtype="bfloat16", fused_us=10.0, eager_us=31.0)]}},
        "bench_steps": {"status": "ok", "seconds": 60.0, "data": {"rows": [
            dict(case="step_dcgan64 batch 64", block="step_dcgan64", mode="step", dtype="float32",
                 fused_us=5000.0, eager_us=6000.0, compile_us=None, note="compile skipped")]}},
        "profile": {"status": "ok", "seconds": 5.0, "data": {"rows": [
            dict(case="bn", impl="fused", distinct_kernels=3, launches=4, device_us=20.0,
                 host_us=40.0, host_bound=True, kernels=[{"name": "plane_stats", "count": 1}])]}},
        "graphs": {"status": "ok", "seconds": 5.0, "data": {"rows": [
            dict(case="bn", impl="fused", graph_us=18.0, launch_us=30.0)]}},
        "ncu": {"status": "failed", "seconds": 9.0, "error": "ncu not found", "data": {}},
    }}


def test_report_tables_and_targets():
    md = gpu_check.write_report(_synthetic_results())
    assert "| SMs | 132 |" in md and "| L2 | 60 MiB |" in md and "4300 GB/s" in md
    # CUDA tests: one failure misses the target and is listed.
    assert "| tests | 10 | 9 | 1 | 0 | 3 | 90.0 | **missed** | `pytest -m cuda` |" in md
    assert "- tests: `tests.t::x`: boom" in md
    # Sanitizers: 0 errors met, 2 errors missed.
    assert "| memcheck | default | 0 | 9/9 | 30.0 | met |" in md
    assert "| racecheck | legacy | 2 (3 hazards) | 9/9 | 50.0 | **missed** |" in md
    # BN targets: 1.6x eager met, 0.9x compile missed, 71% BW met.
    line = next(l for l in md.splitlines() if l.startswith("| bn_relu 64x128x16x16"))
    assert "eager/fused >= 1.4: met (1.60)" in line
    assert "compile/fused >= 1.0: **missed** (0.90)" in line
    assert "copy BW >= 60%: met (71.00)" in line
    assert "| bn_relu 64x128x16x16 nchw fwd+bwd | float32 | 30.0 | 40.0 | 1.33 | 71 | 53 |" in md
    assert line.endswith("| |") or line.endswith("|  |")
    assert "eager/fused >= 5: **missed** (3.50) | compile: skipped: section budget |" in md and "eager/fused >= 3: met (3.10)" in md
    assert "plain/fused >= 1.15: met (1.20)" in md
    assert "| bn_relu 64x128x16x16 nchw fwd+bwd | float32 | 4 | 5 | 3 |" in md
    assert "| bn | fused | 3 | 4 | 20.0 | 40.0 | yes |" in md
    assert "| bn | fused | 18.0 | 30.0 | 1.67 |" in md
    assert "- ncu: failed: ncu not found" in md
    # The legacy design timed interleaved with the new one (bench_norm rows).
    res = _synthetic_results()
    res["sections"]["bench_norm"]["data"]["rows"][0]["fused_legacy_us"] = 45.0
    md2 = gpu_check.write_report(res)
    assert "interleaved in one process" in md2
    assert "| bn_relu 64x128x16x16 nchw fwd+bwd | float32 | 30.0 | 45.0 | 1.50 | 71 | 47 |" in md2
    assert "| bench_norm | ok | 50.0 | n/a | 2 cases not measured (budget) |" in md


def test_a_broken_report_writer_loses_no_result(tmp_path, monkeypatch):
    def broken(results):
        raise TypeError("bad row")

    monkeypatch.setattr(gpu_check, "write_report", broken)
    monkeypatch.setitem(gpu_check.HOST_SECTIONS, "env", lambda run, budget: {"x": 1})
    args = gpu_check.parse_args(["--sections", "env", "--out", str(tmp_path / "o"), "--work",
                                 str(tmp_path / "w")])
    gpu_check.run_sections(args)
    assert "TypeError: bad row" in (tmp_path / "o" / "report.md").read_text()
    assert json.loads((tmp_path / "o" / "results.json").read_text())["sections"]["env"]["data"] == {"x": 1}


def test_report_of_nothing_and_merge():
    assert gpu_check.write_report({}).startswith("# gan_ext GPU check")
    a = {"meta": {"part": "1"}, "sections": {"tests": {"status": "failed"}, "env": {"status": "ok"}}}
    b = {"meta": {"part": "1"}, "sections": {"tests": {"status": "ok"}}}
    m = gpu_check.merge_results([a, b])
    assert m["sections"] == {"tests": {"status": "ok"}, "env": {"status": "ok"}}


# ---------------------------------------------------------- build reuse
def test_reusable_build_needs_a_matching_stamp(tmp_path):
    stamp = {"sources_sha256": "ab", "torch": "2.11.0+cu130", "arch": "9.0"}
    assert gpu_check.reusable_build(None, stamp) is None
    assert gpu_check.reusable_build(str(tmp_path), stamp) is None  # no build.json
    (tmp_path / "_C.abi3.so").write_bytes(b"\x7fELF")
    (tmp_path / "build.json").write_text(json.dumps(stamp))
    assert gpu_check.reusable_build(str(tmp_path), stamp) == str(tmp_path / "_C.abi3.so")
    assert gpu_check.reusable_build(str(tmp_path), {**stamp, "torch": "2.13.0"}) is None
    assert gpu_check.reusable_build(str(tmp_path), {**stamp, "sources_sha256": "cd"}) is None


def test_source_stamp_follows_the_sources():
    s = gpu_check.source_stamp(sys.executable)
    assert len(s["sources_sha256"]) == 64 and s["torch"] == torch.__version__


# ------------------------------------------------------ budgets and flow
def test_run_cmd_kills_the_process_group_at_its_budget(tmp_path):
    t0 = time.monotonic()
    r = gpu_check.run_cmd([sys.executable, "-c", "import subprocess, sys, time; "
                           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                           "print('started', flush=True); time.sleep(60)"],
                          str(tmp_path / "log"), timeout=1.0)
    assert r["timed_out"] and r["returncode"] is None and time.monotonic() - t0 < 15
    assert "started" in r["tail"]
    r = gpu_check.run_cmd(["/nonexistent/tool"], str(tmp_path / "log2"), timeout=1.0)
    assert r["returncode"] is None and "cannot start" in r["error"]


def test_a_failing_section_is_recorded_and_the_rest_runs(tmp_path, monkeypatch):
    def broken(run, budget):
        raise RuntimeError("kaput")

    def partial(run, budget):
        raise gpu_check.SectionError("stopped", {"rows": [1]})

    def fine(run, budget):
        return {"budget_seen": budget}

    monkeypatch.setitem(gpu_check.HOST_SECTIONS, "env", broken)
    monkeypatch.setitem(gpu_check.HOST_SECTIONS, "build", partial)
    monkeypatch.setitem(gpu_check.HOST_SECTIONS, "info", fine)
    out, work = tmp_path / "out", tmp_path / "work"
    args = gpu_check.parse_args(["--part", "1", "--sections", "env,build,info", "--out", str(out),
                                 "--work", str(work), "--budget", "info=7"])
    run = gpu_check.run_sections(args)
    s = run.results["sections"]
    assert s["env"]["status"] == "failed" and "RuntimeError: kaput" in s["env"]["error"]
    assert s["build"]["status"] == "failed" and s["build"]["data"] == {"rows": [1]}
    assert s["info"]["status"] == "ok" and s["info"]["data"]["budget_seen"] == 7
    # Few files in --out (the device returns at most 8), each rewritten per section.
    assert sorted(os.listdir(out)) == ["logs.tar.gz", "report.md", "results.json"]
    assert json.loads((out / "results.json").read_text())["sections"]["info"]["status"] == "ok"
    assert "kaput" in (out / "report.md").read_text()


def test_sections_past_the_part_budget_are_skipped(tmp_path, monkeypatch):
    def slow(run, budget):
        time.sleep(0.6)
        return {}

    monkeypatch.setitem(gpu_check.HOST_SECTIONS, "env", slow)
    monkeypatch.setitem(gpu_check.HOST_SECTIONS, "info", slow)
    args = gpu_check.parse_args(["--part", "1", "--sections", "env,info", "--part-budget", "3.5",
                                 "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")])
    s = gpu_check.run_sections(args).results["sections"]
    assert s["env"]["status"] == "ok" and s["env"]["budget_s"] == 3.5
    assert s["info"]["status"] == "skipped" and "3 s were spent" in s["info"]["error"] or \
        s["info"]["status"] == "skipped"


def test_pack_logs_cuts_big_files(tmp_path):
    work = tmp_path / "w"
    (work / "sub").mkdir(parents=True)
    (work / "big.log").write_bytes(b"a" * 5000 + b"b" * 5000)
    (work / "sub" / "x.xml").write_text("<x/>")
    (work / "sub" / "ckpt.pt").write_bytes(b"0" * 10)
    dest = tmp_path / "logs.tar.gz"
    gpu_check.pack_logs(str(work), str(dest), cap=1000)
    import tarfile

    with tarfile.open(dest) as tar:
        names = tar.getnames()
        big = tar.extractfile("big.log").read()
    assert sorted(names) == ["big.log", "sub/x.xml"]
    assert big.startswith(b"a" * 500) and big.endswith(b"b" * 500) and len(big) < 1100


def test_time_steps_interleaves_and_counts():
    calls = []
    times = gpu_check.time_steps(torch, torch.device("cpu"),
                                 {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                 warmup=1, reps=3, min_rep_s=0.0)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert calls[-6:] == ["a", "b"] * 3


def test_time_steps_sets_each_steps_environment(monkeypatch):
    """The norm_act design is chosen per call from GAN_EXT_CUDA_NORM_ACT: the
    legacy step runs with it set, the new one with it unset, and the caller's
    value comes back afterwards."""
    monkeypatch.setenv(gpu_check.NORM_ENV, "caller")
    seen = []
    rec = lambda k: (lambda: seen.append((k, os.environ.get(gpu_check.NORM_ENV))))
    gpu_check.time_steps(torch, torch.device("cpu"), {"new": rec("new"), "old": rec("old")},
                         warmup=1, reps=2, min_rep_s=0.0,
                         envs={"new": {gpu_check.NORM_ENV: None},
                               "old": {gpu_check.NORM_ENV: "legacy"}})
    assert set(seen) == {("new", None), ("old", "legacy")}
    assert os.environ[gpu_check.NORM_ENV] == "caller"


def test_synthetic_mnist_loads(tmp_path):
    from gan_ext.data.mnist import load_mnist

    gpu_check.write_synthetic_mnist(str(tmp_path), n_train=64, n_test=16)
    x, y = load_mnist("train", data_dir=tmp_path, download=False)
    assert x.shape == (64, 28, 28) and x.dtype == torch.uint8 and y.shape == (64,)
    assert load_mnist("test", data_dir=tmp_path, download=False)[0].shape == (16, 28, 28)


def test_bench_case_lists():
    norm = gpu_check.norm_bench_cases(dry_run=False)
    targets = [c for c in norm if c.get("dcgan_shape") and c["mode"] == "fwd+bwd"
               and c["layout"] == "nchw"]
    # Both DCGAN batches, both dtypes, every generator and discriminator shape.
    assert len(targets) == 2 * 2 * 7 and all(c["compile"] for c in targets)
    assert norm[:len(targets)] == targets  # measured first
    compiled = {(c["block"], c["shape"], c["layout"], c["mode"], c["dtype"])
                for c in norm + gpu_check.loss_bench_cases(False) if c["compile"]}
    assert gpu_check.TRITON_COUNT_CASES <= compiled
    assert {c["block"] for c in norm} == {"bn_relu", "bn_lrelu", "in_relu", "convT_bn_relu"}


# ---------------------------------------------------- the sanitizer driver
def test_driver_case_list_covers_the_first_run_list():
    names = [c.name for c in cuda_sanitize.cases("paths")]
    assert len(names) == len(set(names))
    joined = "\n".join(names)
    for needle in ("norm_act batch train float16 channels_last", "norm_act instance eval bfloat16 strided",
                   "float64", "/out", "x[1:] view", "unaligned base", "2x264x9x9", "3x19x5x7",
                   "split batch train float32 nchw 2x3x256x256", "channels_last 16x64x64x64",
                   "split instance train float32 nchw 64x32x8x8", "2x3x512x512",
                   "3x20001 (D > 4096)", "40000x20 (D <= 4096)", "7x5003",
                   "unaligned half", "misaligned", "empty real", "2^24+3", "act_dropout",
                   # not in the first GPU run's 279 cases: added after it (session 26)
                   "minibatch_discrimination float16", "minibatch_discrimination NaN"):
        assert needle in joined, needle
    for shape in cuda_sanitize.NORM_SHAPES:
        assert "x".join(map(str, shape)) in joined
    assert len(cuda_sanitize.cases("full")) > len(names)


@requires_fused
def test_driver_runs_every_case_on_the_cpu():
    # The large shapes exist for the CUDA split paths and take most of the
    # time on a CPU; the code that builds them runs here with the small ones.
    big = ("2^24", "split", "40000x20", "3x20001", "7x5003")
    selected = [c for c in cuda_sanitize.cases("paths") if not any(b in c.name for b in big)]
    assert len(selected) > 200
    assert cuda_sanitize.run(selected, torch.device("cpu")) == []


def test_driver_cli(capsys):
    assert cuda_sanitize.main(["--device", "cpu", "--list", "-k", "reparameterize"]) == 0
    out = capsys.readouterr().out
    assert "reparameterize(_kl) float32 3x20001" in out and out.strip().endswith("cases")
    assert cuda_sanitize.main(["--device", "cpu", "-k", "no-such-case"]) == 2


FAKE_SANITIZER = """#!{python}
import os, sys
args = sys.argv[1:]
tool = args[args.index("--tool") + 1]
assert "--report-api-errors" in args and args[args.index("--print-limit") + 1] == "100"
assert os.environ["PYTORCH_NO_CUDA_MEMORY_CACHING"] == "1"
setting = os.environ.get("GAN_EXT_CUDA_NORM_ACT", "default")
assert "cuda_sanitize.py" in " ".join(args) and "--device" in args
errors = 2 if (tool, setting) == ("racecheck", "legacy") else 0
print(f"cuda_sanitize: 5/5 cases ran on cuda (level paths, GAN_EXT_CUDA_NORM_ACT={{setting}}) "
      f"in 1.0s; 0 failed")
print(f"========= ERROR SUMMARY: {{errors}} errors")
"""


def test_sanitize_section_runs_every_tool_and_setting(tmp_path, monkeypatch):
    """Four tools x two norm_act settings, in parallel, each count parsed; the
    tool itself is a stand-in here (compute-sanitizer needs a GPU)."""
    fake = tmp_path / "compute-sanitizer"
    fake.write_text(FAKE_SANITIZER.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.delenv("GAN_EXT_CUDA_NORM_ACT", raising=False)
    args = gpu_check.parse_args(["--part", "2", "--sections", "sanitize", "--sanitizer", str(fake),
                                 "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")])
    s = gpu_check.run_sections(args).results["sections"]["sanitize"]
    assert s["status"] == "ok", s.get("error")
    got = {(r["tool"], r["setting"]): r["errors"] for r in s["data"]["runs"]}
    assert got == {(t, st): (2 if (t, st) == ("racecheck", "legacy") else 0)
                   for t in gpu_check.SANITIZER_TOOLS for st in gpu_check.SETTINGS}
    assert [r["tool"] for r in s["data"]["runs"]][:2] == ["memcheck", "memcheck"]
    assert s["data"]["total_errors"] == 2


def test_export_and_install_of_a_build(tmp_path, monkeypatch):
    """The build goes back without debug information (or gzipped when still
    too big) and part 2 puts it back into gan_ext/ from either form."""
    so = os.path.join(ROOT, "gan_ext", "_C.abi3.so")
    if not os.path.exists(so):
        pytest.skip("no built extension")
    plain_dir, gz_dir = tmp_path / "plain", tmp_path / "gz"
    plain_dir.mkdir()
    gz_dir.mkdir()
    plain, size = gpu_check.export_so(so, str(plain_dir))
    assert size < os.path.getsize(so) and size == os.path.getsize(plain)
    monkeypatch.setattr(gpu_check, "RETURN_LIMIT", 1000)
    gz, _ = gpu_check.export_so(so, str(gz_dir))
    assert os.listdir(gz_dir) == ["_C.abi3.so.gz"]
    fake_root = tmp_path / "root"
    (fake_root / "gan_ext").mkdir(parents=True)
    (fake_root / "gan_ext" / "_C.old.so").write_bytes(b"old")
    monkeypatch.setattr(gpu_check, "ROOT", str(fake_root))
    target = gpu_check.install_so(gz)
    assert os.listdir(fake_root / "gan_ext") == ["_C.abi3.so"]
    with open(target, "rb") as a, open(plain, "rb") as b:
        assert a.read() == b.read()


def test_dist_section_dry_run_trains_on_two_processes(tmp_path):
    """Issue 17's NCCL check, in its CPU form: the 2-process --sync-bn run
    over gloo finishes its steps and the report has its row."""
    args = gpu_check.parse_args(["--part", "2", "--sections", "dist", "--dry-run",
                                 "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")])
    res = gpu_check.run_sections(args).results
    s = res["sections"]["dist"]
    assert s["status"] == "ok", s.get("error")
    (a,) = s["data"]["attempts"]
    assert (a["backend"], a["returncode"], a["steps_done"]) == ("gloo", 0, 2)
    assert "| gloo | cpu | 0 | 2 |" in gpu_check.write_report(res)
