"""The `gan-ext` command line and the timing library behind `gan-ext bench`.

These check behaviour (exit codes, output shape, error lines), never speed.
"""
import io
import json
import subprocess
import sys

import pytest
import torch

import gan_ext
from gan_ext import bench, cli
from gan_ext.bench.timing import MIN_FLOOR_BYTES


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
    assert len(row) == 1 and row[0].split()[6].endswith("x"), r.stdout
    assert row[0].rstrip().endswith("%"), r.stdout  # the memory-floor column


@pytest.mark.parametrize("case", bench.cases(quick=True), ids=lambda c: c.id)
def test_every_quick_case_prints_a_timed_row(case):
    out = io.StringIO()
    [result] = bench.run([case], device="cpu", reps=1, warmup=1, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("device cpu") and "median of 1 reps" in lines[0], lines
    assert lines[1].split() == ["case", "fused", "ms", "eager", "ms", "eager/fused", "saved", "MiB",
                                "f/e", "floor", "ms", "floor", "%"], lines
    assert lines[2].startswith(case.group + " "), lines
    cells = lines[2][len(case.group):].split()
    fused_ms, eager_ms, ratio = float(cells[0]), float(cells[1]), cells[2]
    # Above what an empty step costs (~0.1 us): the step really ran the block.
    assert fused_ms > 1e-3 and eager_ms > 1e-3, lines[2]
    assert fused_ms == pytest.approx(result.median("fused") * 1e3, abs=1e-3)
    # The ratio of the unrounded medians (the printed ms are rounded to 1 us: at
    # 0.025 vs 0.042 ms their own ratio is off by 2-3%, a flaky failure in CI).
    want = result.median("eager") / result.median("fused")
    assert ratio.endswith("x") and float(ratio[:-1]) == pytest.approx(want, abs=0.0051), lines[2]
    rest = cells[3:]
    if case.mode == "fwd+bwd":  # the memory column: fused/eager MiB kept for backward
        assert set(result.saved) == {"fused", "eager"}, lines[2]
        assert rest.pop(0) == f"{result.saved['fused'] / 2**20:.1f}/{result.saved['eager'] / 2**20:.1f}"
    else:
        assert not result.saved, lines[2]
    # The memory floor: the bandwidth-bound cases (norm + activation, no
    # convolution) whose tensors are large enough for a copy to time memory;
    # the copy it is measured from is not reported as an impl.
    assert set(result.seconds) == {"fused", "eager"}
    floor = case.spec.floor(case, torch.float32)
    assert (floor is None) == case.block.startswith("convT"), case
    if floor is None or floor[1] < MIN_FLOOR_BYTES:
        assert result.floor is None and rest == [], lines[2]
    else:
        assert result.floor is not None and result.floor > 0, lines[2]
        assert rest == [f"{result.floor * 1e3:.3f}", f"{result.floor_percent():.0f}%"], lines[2]
        assert result.floor_percent() == pytest.approx(100 * result.floor / result.median("fused"))
    assert not result.errors and lines[3].startswith("ratio = other median / fused median")


def test_console_script_entry_point():
    # The installed `gan-ext` script and `python -m gan_ext.cli` are the same main().
    r = _run("--help")
    assert r.returncode == 0 and "info" in r.stdout and "bench" in r.stdout


def test_core_and_cli_load_the_bench_harness_only_for_bench():
    # The core never imports the harness; the CLI imports it inside the bench
    # command only (fresh interpreter: this one has imported it already).
    code = ("import sys, gan_ext, gan_ext.cli\n"
            "loaded = lambda: sorted(m for m in sys.modules if m.startswith('gan_ext.bench'))\n"
            "assert not loaded(), loaded()\n"
            "assert gan_ext.cli.main(['info', '--json']) == 0 and not loaded(), loaded()\n"
            "assert gan_ext.cli.main(['bench', '--list', '-k', 'd_bce']) == 0 and loaded()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "d_bce 64x1 nchw fwd+bwd" in r.stdout

