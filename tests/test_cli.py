"""The `gan-ext` command line and the timing library behind `gan-ext bench`.

These check behaviour (exit codes, output shape, error lines), never speed.
"""
import json
import subprocess
import sys

import pytest
import torch

import gan_ext
from gan_ext import bench, cli


def test_info_json_reports_the_build(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == json.loads(json.dumps(gan_ext.info()))
    for key in ("extension_loaded", "compiled_backends", "torch", "threads", "active_backend"):
        assert key in info
    assert info["torch"] == torch.__version__


def test_info_table(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "extension_loaded" in out and torch.__version__ in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_bench_cuda_without_cuda_is_one_line_error(capsys):
    assert cli.main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gan-ext: error:") and len(err.strip().splitlines()) == 1


def _run(*argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "gan_ext.cli", *argv], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("argv", [[], ["no-such-command"], ["bench", "--reps", "0"],
                                  ["bench", "-k", "no-such-case"]])
def test_user_errors_exit_2_without_traceback(argv):
    r = _run(*argv)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip()


def test_bench_quick_filtered_prints_a_ratio_row():
    r = _run("bench", "--quick", "-k", "bn_lrelu", "--reps", "1", "--warmup", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    row = [line for line in r.stdout.splitlines() if line.startswith("bn_lrelu 64x256x8x8")]
    assert len(row) == 1 and row[0].rstrip().split()[-2].endswith("x"), r.stdout


@pytest.mark.parametrize("case", bench.cases(quick=True), ids=lambda c: c.id)
def test_every_quick_case_runs_one_step(case):
    for impl in ("fused", "eager"):
        p = bench.prepare(case, impl)
        p.step()


def test_console_script_entry_point():
    # The installed `gan-ext` script and `python -m gan_ext.cli` are the same main().
    r = _run("--help")
    assert r.returncode == 0 and "info" in r.stdout and "bench" in r.stdout
