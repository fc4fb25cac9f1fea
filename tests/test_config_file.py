"""``gan-ext train MODEL --config FILE`` (issue 18): a run described in a JSON
or YAML file, the command line over it, the run's own config.json fed back."""
import json
import sys

import pytest

from gan_ext import cli
from gan_ext.cli import train as cli_train
from gan_ext.train import load_checkpoint
from gan_ext.train.config_file import merge_config

TINY = {"batch_size": 4, "limit": 32, "steps": 2, "eval_n": 0, "threads": 1, "progress": False}


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _error(capsys, code):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("gan-ext: error:") and "Traceback" not in err
    return lines[0]


def _options(run):
    with open(run / "config.json") as f:
        return json.load(f)["options"]


# ------------------------------------------------------------- parse level
def test_json_and_yaml_read_alike(tmp_path):
    pytest.importorskip("yaml")
    j = _write(tmp_path / "a.json", {"batch-size": 8, "lr": 0.001, "progress": False, "k": 2})
    y = _write(tmp_path / "a.yml", "batch-size: 8\nlr: 1e-3   # YAML 1.1 reads this as a string\n"
                                   "progress: no\nk: 2\nmodel: dcgan\n")
    want = {"model": "dcgan", "batch_size": 8, "lr": 0.001, "progress": False, "k": 2}
    assert merge_config(j, "dcgan", {"model": "dcgan"}) == want
    assert merge_config(y, "dcgan", {"model": "dcgan"}) == want


def test_command_line_beats_file_and_defaults_are_not_given(tmp_path):
    f = _write(tmp_path / "a.json", {"batch_size": 8, "seed": 3, "k": None, "direction": "AtoB",
                                     "lr": None})
    # k, direction and lr are the defaults: not given (direction would be refused for dcgan)
    assert merge_config(f, "dcgan", {"model": "dcgan", "seed": 5}) == {
        "model": "dcgan", "batch_size": 8, "seed": 5}


def test_k_1_is_given_and_an_old_saved_run_of_a_model_without_k_feeds_back(tmp_path):
    """k's default is None (1, or 5 with --loss wgan-gp): a file's k: 1 is an
    explicit 1. Runs saved before stored k: 1 for every model; for a model
    without k (vae) that is dropped, so their config.json still feeds back."""
    f = _write(tmp_path / "a.json", {"k": 1, "loss": "wgan-gp"})
    assert merge_config(f, "dcgan", {"model": "dcgan"}) == {"model": "dcgan", "k": 1,
                                                             "loss": "wgan-gp"}
    old = _write(tmp_path / "config.json", {"options": {"model": "vae", "k": 1, "beta": 2.0}})
    assert merge_config(old, "vae", {"model": "vae"}) == {"model": "vae", "beta": 2.0}
    old_gan = _write(tmp_path / "gan.json", {"options": {"model": "gan", "k": 1}})
    assert merge_config(old_gan, "gan", {"model": "gan"}) == {"model": "gan", "k": 1}


def test_saved_run_layout_ignores_where_it_was_written(tmp_path):
    f = _write(tmp_path / "config.json", {
        "options": {"model": "dcgan", "out": "elsewhere", "resume": True, "overwrite": True,
                    "steps": 2, "k": 2},
        "model_config": {"nz": 100}, "steps": 2})
    assert merge_config(f, "dcgan", {"model": "dcgan"}) == {"model": "dcgan", "steps": 2, "k": 2}


def test_user_file_may_set_out_but_not_resume_or_overwrite(tmp_path):
    f = _write(tmp_path / "a.json", {"out": "runs/exp1", "resume": False})
    assert merge_config(f, "dcgan", {"model": "dcgan"}) == {"model": "dcgan", "out": "runs/exp1"}
    for key in ("resume", "overwrite"):
        f = _write(tmp_path / "b.json", {key: True})
        with pytest.raises(ValueError, match=f"b.json: {key}: give --{key} on the command line"):
            merge_config(f, "dcgan", {"model": "dcgan"})


@pytest.mark.parametrize("content,message", [
    ({"batchsize": 4}, "a.json: unknown option 'batchsize' (did you mean 'batch_size'?)"),
    ({"steps": "2"}, "a.json: steps: expected a whole number, got '2'"),
    ({"steps": 2.0}, "a.json: steps: expected a whole number"),
    ({"amp": 1}, "a.json: amp: expected bool, got 1"),
    ({"lr": "fast"}, "a.json: lr: expected float"),
    ({"data": 3}, "a.json: data: expected str"),
    ({"seed": None}, "a.json: seed: must not be null"),
    ({"steps": 0}, "a.json: steps: steps must be >= 1, got 0"),
    ({"g_loss": "wasserstein"}, "a.json: g_loss: g_loss must be one of"),
    ({"r1_every": 4}, "a.json: r1_every: --r1-every needs --r1"),
    ({"batch_size": 4, "batch-size": 8}, "'batch_size' is given twice"),
    ({"nproc-per-node": 2}, "give --nproc-per-node on the command line"),
    ({"model": "vae"}, "a.json: describes a vae run, but the command trains dcgan"),
    ({"options": {"model": "vae"}}, "describes a vae run, but the command trains dcgan"),
])
def test_bad_keys_and_values_are_refused_naming_file_and_key(tmp_path, content, message):
    f = _write(tmp_path / "a.json", content)
    with pytest.raises(ValueError) as e:
        merge_config(f, "dcgan", {"model": "dcgan"})
    assert str(e.value).startswith(f"--config {f}: ") and message in str(e.value), str(e.value)


def test_cross_key_error_names_the_file(tmp_path):
    f = _write(tmp_path / "a.json", {"unrolled_first_order": True, "r1_every": 2, "r1": 1.0})
    with pytest.raises(ValueError, match=r"a.json: unrolled_first_order: --unrolled-first-order "
                                         "needs --unrolled"):
        merge_config(f, "dcgan", {"model": "dcgan"})
    f = _write(tmp_path / "b.json", {"minibatch_stddev": True, "batch_size": 6})
    with pytest.raises(ValueError, match=r"^--config .*b.json: --minibatch-stddev takes groups"):
        merge_config(f, "dcgan", {"model": "dcgan"})


@pytest.mark.parametrize("name,content,message", [
    ("a.json", None, "no such file"),
    ("a.toml", "", "expected a .json, .yaml or .yml file"),
    ("a.json", "{\"k\": 2,\n}", "invalid JSON at line 2, column 1"),
    ("a.json", "[1, 2]", "expected a mapping of option names to values at the top level, "
                         "got a list"),
    ("a.yaml", "", "got an empty file"),
    ("a.yaml", "k: [1\nseed: 2\n", "invalid YAML at line 2"),
    ("a.json", b"\xff\xfe{", "cannot read it"),
    ("dir.json", "DIR", "is a folder"),
])
def test_bad_files_are_one_line_naming_config(tmp_path, capsys, name, content, message):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    line = _error(capsys, cli.main(["train", "dcgan", "--config", str(path),
                                    "--out", str(tmp_path / "run")]))
    assert f"--config {path}: " in line and message in line, line
    assert not (tmp_path / "run").exists()


def test_yaml_without_pyyaml_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)   # import yaml raises ImportError
    f = _write(tmp_path / "a.yaml", "k: 2\n")
    with pytest.raises(ValueError, match="reading YAML needs PyYAML: pip install pyyaml, or "
                                         "write the file as JSON"):
        merge_config(f, "dcgan", {"model": "dcgan"})


def test_option_that_does_not_apply_is_refused_like_the_flag(tmp_path, capsys):
    f = _write(tmp_path / "a.json", {"k": 2})
    line = _error(capsys, cli.main(["train", "vae", "--config", f, "--out", str(tmp_path / "r")]))
    assert "--k does not apply to vae" in line
    # ... also before torchrun would start
    line = _error(capsys, cli.main(["train", "vae", "--config", f, "--nproc-per-node", "2",
                                    "--out", str(tmp_path / "r")]))
    assert "--k does not apply to vae" in line


def test_launcher_hands_config_to_every_rank(tmp_path, monkeypatch):
    f = _write(tmp_path / "a.json", {"steps": 2})
    seen = []

    class Proc:
        def __init__(self, cmd):
            seen.append(cmd)

        def wait(self):
            return 0
    monkeypatch.setattr(cli_train.subprocess, "Popen", Proc)
    assert cli.main(["train", "dcgan", "--nproc-per-node", "2", "--config", f]) == 0
    assert seen[0][-3:] == ["dcgan", "--config", f] and "--nproc-per-node" not in seen[0]


def test_help_shows_config(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--config FILE" in capsys.readouterr().out


# ------------------------------------------------------------- tiny runs
def test_yaml_run_command_line_wins_and_config_json_round_trips(tmp_path):
    yaml = pytest.importorskip("yaml")
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump({**TINY, "model": "dcgan", "k": 2, "seed": 3}))
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["train", "dcgan", "--config", str(f), "--out", str(first),
                     "--seed", "5"]) == 0
    saved = _options(first)
    assert saved["k"] == 2 and saved["seed"] == 5 and saved["batch_size"] == 4  # CLI > file
    assert saved["steps"] == 2 and saved["progress"] is False
    # The run's own config.json describes it again (its out is not followed).
    assert cli.main(["train", "dcgan", "--config", str(first / "config.json"),
                     "--out", str(second)]) == 0
    again = _options(second)
    assert {**again, "out": None} == {**saved, "out": None} and again["out"] == str(second)
    a = load_checkpoint(str(first / "checkpoint.pt"))
    b = load_checkpoint(str(second / "checkpoint.pt"))
    assert a["history"] == b["history"]


def test_resume_with_config_obeys_the_resume_rules(tmp_path, capsys):
    run = tmp_path / "run"
    f = _write(tmp_path / "a.json", TINY)
    assert cli.main(["train", "dcgan", "--config", f, "--out", str(run)]) == 0
    saved = str(run / "config.json")
    # the length may change, from the file or the command line
    assert cli.main(["train", "dcgan", "--config", saved, "--out", str(run), "--resume",
                     "--steps", "3"]) == 0
    assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 3
    capsys.readouterr()
    # what a resume may not change is refused from the file as from the flag
    g = _write(tmp_path / "b.json", {**TINY, "steps": 4, "lr": 0.01})
    line = _error(capsys, cli.main(["train", "dcgan", "--config", g, "--out", str(run),
                                    "--resume"]))
    assert "--lr cannot change on --resume" in line
