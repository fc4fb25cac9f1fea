"""Issue 18: evaluation during training (`--eval-every N`) and the best
checkpoint (`--keep-best [METRIC]`): the training is bit for bit the run
without them, the records and curves, best.pt and its resume, the refusals,
`sample`/`eval --best`, and the same evaluations on 2 processes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from gan_ext import cli
from gan_ext.train import load_checkpoint
from gan_ext.train.distributed import FAIL_ENV
from gan_ext.train.evaluation import Evaluator, prepare
from gan_ext.train.options import TrainOptions
from gan_ext.train.resume import drop_records_after

from conftest import one_line_error as _one_line_error

TINY = ["--batch-size", "4", "--limit", "32", "--eval-n", "40", "--threads", "1",
        "--no-progress", "--log-every", "1"]


def _train(model, out, *extra):
    return cli.main(["train", model, "--out", str(out), *TINY, *extra])


def _evals(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "eval" in r]


def _same_weights(a, b):
    wa, wb = (load_checkpoint(os.path.join(r, "checkpoint.pt"))["models"] for r in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize("model", ["dcgan", "vae", "dae", "ring"])
def test_evaluations_leave_training_unchanged(model, tmp_path, capsys):
    plain, evald = tmp_path / "plain", tmp_path / "eval"
    assert _train(model, plain, "--steps", "4") == 0
    assert _train(model, evald, "--steps", "4", "--eval-every", "2", "--keep-best") == 0
    out = capsys.readouterr().out
    _same_weights(plain, evald)
    evals = _evals(evald)
    assert [(r["step"], r["final"]) for r in evals] == [(2, False), (4, True)]
    trainer = cli_trainer(model)
    for r in evals:   # the static list of metrics is what evaluate() returns
        assert set(trainer.eval_metrics) <= set(r["eval"]), r["eval"].keys()
    assert _evals(plain)[-1]["eval"] == evals[-1]["eval"]   # the final evaluation unchanged
    assert (evald / "metrics.png").is_file() and not (plain / "metrics.png").exists()
    assert "eval at step 2:" in out
    best = torch.load(evald / "best.pt", weights_only=True)
    crit = [(m, trainer.eval_metrics[m]) for m in trainer.best_metric]
    values = {r["step"]: [r["eval"][m] for m, _ in crit] for r in evals}
    key = lambda s: [v if d == "max" else -v for v, (_, d) in zip(values[s], crit)]  # noqa: E731
    want = max(sorted(values), key=key)   # the earliest of equals: a tie does not improve
    assert best["best"] == {"metric": ",".join(trainer.best_metric), "value": values[want],
                            "step": want}
    assert best["step"] == want
    assert load_checkpoint(str(evald / "checkpoint.pt"))["best"] == best["best"]


def cli_trainer(model):
    from gan_ext.train.base import trainer_class
    return trainer_class(model)


def test_resume_across_evaluations_keeps_the_best(tmp_path, monkeypatch):
    """A run that fails before step 6 (after an evaluation at 4, checkpoints
    at 3 or 4), resumed, ends as the straight run: weights, best.pt, records."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ["--steps", "6", "--eval-every", "2", "--keep-best", "--checkpoint-every", "3"]
    assert _train("vae", straight, *common) == 0
    monkeypatch.setenv(FAIL_ENV, "0:6")
    with pytest.raises(RuntimeError, match="test failure"):
        _train("vae", resumed, *common)
    monkeypatch.delenv(FAIL_ENV)
    assert load_checkpoint(str(resumed / "checkpoint.pt"))["step"] in (3, 4)
    assert _train("vae", resumed, "--resume") == 0
    _same_weights(straight, resumed)
    a, b = (torch.load(r / "best.pt", weights_only=True) for r in (straight, resumed))
    assert a["best"] == b["best"] and a["step"] == b["step"]
    for k in a["models"]:
        assert torch.equal(a["models"][k], b["models"][k]), k
    assert _evals(resumed) == _evals(straight)


def test_resume_drops_later_periodic_evaluations(tmp_path):
    log = tmp_path / "metrics.jsonl"
    recs = [{"step": 2, "eval": {"a": 1}, "final": False}, {"step": 3, "loss": 1.0},
            {"step": 4, "eval": {"a": 2}, "final": False}, {"step": 5, "eval": {"a": 3}},
            {"step": 6, "eval": {"a": 4}, "source": "gan-ext eval"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    drop_records_after(str(log), 2)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [2, 5, 6]


def test_default_criteria_and_tie_break():
    assert prepare(TrainOptions(model="ring", eval_every=2, keep_best="auto")).keep_best == \
        "modes,high_quality"
    assert prepare(TrainOptions(model="cyclegan", eval_every=2, keep_best="auto")).keep_best == \
        "B_to_A_digit_accuracy"
    ev = Evaluator.__new__(Evaluator)
    ev.criterion, ev.best = [("modes", "max"), ("high_quality", "max")], None
    assert ev._improves({"modes": 7, "high_quality": 0.5})
    ev.best = {"value": [7, 0.5]}
    assert not ev._improves({"modes": 7, "high_quality": 0.5})
    assert ev._improves({"modes": 7, "high_quality": 0.6})
    assert not ev._improves({"modes": 6, "high_quality": 0.9})
    assert not ev._improves({"modes": float("nan"), "high_quality": 0.9})
    ev.criterion, ev.best = [("kl", "min")], {"value": [1.0]}
    assert ev._improves({"kl": 0.9}) and not ev._improves({"kl": 1.1})


def test_refusals(tmp_path, capsys):
    run = tmp_path / "r"
    line = _one_line_error(capsys, _train("dcgan", run, "--steps", "2", "--keep-best"))
    assert "--keep-best needs --eval-every" in line
    line = _one_line_error(capsys, _train("dcgan", run, "--steps", "2", "--eval-every", "1",
                                          "--keep-best", "test_mse"))
    assert "no metric 'test_mse'" in line and "mnist_fid" in line
    line = _one_line_error(capsys, _train("dcgan", run, "--steps", "2", "--eval-every", "1",
                                          "--keep-best", "--data", str(tmp_path)))
    assert "--keep-best" in line and "no metrics on --data" in line
    line = _one_line_error(capsys, _train("dcgan", run, "--steps", "2", "--eval-every", "1",
                                          "--eval-n", "0"))
    assert "--eval-every" in line and "--eval-n 0" in line
    for bad in ("0", "-1", "1.5"):
        line = _one_line_error(capsys, _train("dcgan", run, "--eval-every", bad))
        assert "--eval-every" in line
    assert not (run / "checkpoint.pt").exists()
    # The criterion of a run cannot change on --resume; --eval-every can.
    assert _train("ae", run, "--steps", "2", "--eval-every", "1", "--keep-best") == 0
    line = _one_line_error(capsys, _train("ae", run, "--steps", "3", "--resume",
                                          "--keep-best", "n"))
    assert "--keep-best cannot change" in line
    assert _train("ae", run, "--steps", "3", "--resume", "--keep-best", "--eval-every", "3") == 0
    assert [(r["step"], r["final"]) for r in _evals(run)] == [(1, False), (2, True), (3, True)]


def test_sample_and_eval_best(tmp_path, capsys):
    run = tmp_path / "r"
    assert _train("ae", run, "--steps", "2", "--eval-every", "1", "--keep-best") == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--best", "--n", "20", "--json"]) == 0
    out = capsys.readouterr().out
    assert "test_mse" in json.loads(out.splitlines()[0])
    best_step = torch.load(run / "best.pt", weights_only=True)["step"]
    assert _evals(run)[-1]["source"] == "gan-ext eval" and _evals(run)[-1]["step"] == best_step
    assert cli.main(["sample", str(run / "checkpoint.pt"), "--best", "--n", "4",
                     "-o", str(tmp_path / "g.png")]) == 0
    other = tmp_path / "other"
    assert _train("ae", other, "--steps", "1", "--eval-n", "0") == 0
    capsys.readouterr()
    line = _one_line_error(capsys, cli.main(["eval", str(other), "--best"]))
    assert "no best.pt" in line


def test_two_processes_evaluate_alike(tmp_path):
    """Every rank evaluates at the same steps (the samples split across
    them); rank 0 alone writes: the records of 1 process."""
    args = ["--steps", "4", "--eval-every", "2", "--keep-best", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert _train("dcgan", one, *args) == 0
    args.append("--sync-bn")   # 2 processes normalise the global batch as 1 process does
    cmd = [sys.executable, "-m", "gan_ext", "train", "dcgan", "--out", str(two), *TINY, *args,
           "--nproc-per-node", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = _evals(one), _evals(two)
    assert [(x["step"], x["final"]) for x in a] == [(x["step"], x["final"]) for x in b]
    for x, y in zip(a, b):
        for k, v in x["eval"].items():
            if isinstance(v, float):
                assert y["eval"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    best = [torch.load(r / "best.pt", weights_only=True)["best"] for r in (one, two)]
    assert best[0]["step"] == best[1]["step"]
