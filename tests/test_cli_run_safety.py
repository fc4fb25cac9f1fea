"""Issue 13, sections 4 and 6: the CLI does what it says, and a training run
never loses or mixes runs. Every case here was a silent wrong answer or a
traceback before: resume rules, options that do not apply, one source of
truth for defaults, cGAN labels, the files sample and eval accept, plain
error lines, curves after an interruption, NaN/inf, --overwrite, the run
lock, SIGTERM, stale temporaries, disk full, malformed and crafted files."""
import errno
import json
import os
import re
import signal

import pytest
import torch
from PIL import Image

from gan_ext import cli
from gan_ext.train import FORMAT, load_checkpoint, load_trained
from gan_ext.train import run_dir as run_dir_mod
from gan_ext.train.options import DEFAULTS, DEMO_STEPS, MODELS, defaults_text

from conftest import one_line_error as _one_line_error

TINY = ["--batch-size", "4", "--limit", "16", "--log-every", "1", "--no-progress", "--eval-n", "0"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(model, out, *extra):
    return cli.main(["train", model, "--out", str(out), *TINY, *extra])


def _step(run):
    return load_checkpoint(str(run / "checkpoint.pt"))["step"]


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]  # raises on a bare NaN


# ------------------------------------------------------------ resume rules
def test_resume_with_epochs_replaces_a_saved_steps(tmp_path):
    run = tmp_path / "r"
    assert _train("gan", run, "--steps", "2") == 0
    # 16 images / batch 4 = 4 steps per epoch: --epochs 2 is a total of 8 steps
    assert _train("gan", run, "--resume", "--epochs", "2") == 0
    assert _step(run) == 8


def test_resume_to_no_further_step_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    assert _train("gan", run, "--steps", "3") == 0
    capsys.readouterr()
    line = _one_line_error(capsys, _train("gan", run, "--resume", "--steps", "3"))
    assert "already at step 3" in line and "--steps" in line
    line = _one_line_error(capsys, _train("gan", run, "--resume"))  # the saved length: done
    assert "already at step 3" in line
    assert _step(run) == 3


@pytest.mark.parametrize("option,value", [("--lr", "0.1"), ("--batch-size", "8"),
                                          ("--seed", "5"), ("--k", "2")])
def test_resume_refuses_a_changed_training_option(option, value, tmp_path, capsys):
    run = tmp_path / "r"
    assert _train("gan", run, "--steps", "1") == 0
    capsys.readouterr()
    line = _one_line_error(capsys, cli.main(["train", "gan", "--out", str(run), "--resume",
                                             "--steps", "2", "--no-progress", "--eval-n", "0",
                                             option, value]))
    assert f"{option} cannot change on --resume" in line
    assert _step(run) == 1


def test_resume_accepts_an_unchanged_option_and_run_options(tmp_path):
    run = tmp_path / "r"
    assert _train("gan", run, "--steps", "1") == 0
    # TINY repeats --batch-size 4 and --limit 16 (unchanged): accepted
    assert _train("gan", run, "--resume", "--steps", "2", "--sample-every", "7",
                  "--threads", str(torch.get_num_threads())) == 0
    assert _step(run) == 2


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    line = _one_line_error(capsys, _train("gan", tmp_path / "r", "--resume", "--overwrite"))
    assert "--resume" in line and "--overwrite" in line


# ------------------------------------------------ options a model does not use
@pytest.mark.parametrize("model,option,value", [
    ("cgan", "--image-size", "64"), ("vae", "--k", "3"), ("vae", "--g-loss", "minimax"),
    ("vae", "--label-smoothing", "0.1"), ("dcgan", "--beta", "4"),
    ("dcgan", "--direction", "BtoA"), ("ae", "--decay-epochs", "2"), ("gan", "--channels", "3"),
    ("pix2pix", "--image-size", "64"), ("cgan", "--data", "somewhere"),
])
def test_an_option_that_does_not_apply_is_refused(model, option, value, tmp_path, capsys):
    line = _one_line_error(capsys, _train(model, tmp_path / "r", "--steps", "1", option, value))
    assert option in line and model in line
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_an_option_that_applies_is_accepted(tmp_path):
    assert _train("dcgan", tmp_path / "r", "--steps", "1", "--image-size", "28", "--k", "1") == 0


# ------------------------------------------------------ one source of truth
def test_defaults_have_one_source(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for key in ("epochs", "batch_size", "decay_epochs"):
        assert defaults_text(key) in help_text, key
    assert f"--steps {DEMO_STEPS}" in help_text
    assert f"dcgan: {DEFAULTS['dcgan']['epochs']} epochs" in help_text
    with open(os.path.join(ROOT, "Makefile")) as f:
        makefile = f.read()
    assert re.search(rf"^DEMO_STEPS \?= {DEMO_STEPS}$", makefile, re.M)
    assert "bench --quick" not in makefile.splitlines()[2]  # the header says what demo runs
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert f"gan-ext train dcgan --steps {DEMO_STEPS}" in readme
    from gan_ext.train import TRAINERS
    for name, t in TRAINERS.items():
        trainer = t.__new__(t)
        assert trainer.default_epochs == DEFAULTS[name]["epochs"]
        assert trainer.default_batch_size == DEFAULTS[name]["batch_size"]
    # what the run records is the table's value
    run = tmp_path / "c"
    assert cli.main(["train", "cgan", "--out", str(run), "--limit", "64", "--batch-size", "64",
                     "--no-progress", "--eval-n", "0", "--steps", "1"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["epochs"] == DEFAULTS["cgan"]["epochs"]


# --------------------------------------------------------- cGAN labels
def test_cgan_sample_chosen_classes(tmp_path, capsys):
    run = tmp_path / "c"
    assert _train("cgan", run, "--steps", "1") == 0
    trainer, _ = load_trained(str(run))
    with torch.no_grad():
        images, per = trainer.sample(12, False, torch.Generator().manual_seed(0), labels=[3, 7])
        z = torch.randn(12, trainer.model.config.nz, generator=torch.Generator().manual_seed(0))
        want = trainer.generate(z, torch.tensor([3] * 6 + [7] * 6))
    assert per == 6 and torch.equal(images, want)
    grid = tmp_path / "g.png"
    assert cli.main(["sample", str(run), "--label", "3", "--n", "8", "-o", str(grid)]) == 0
    line = _one_line_error(capsys, cli.main(["sample", str(run), "--label", "12", "-o",
                                             str(grid)]))
    assert "--label" in line and "[0, 9]" in line


def test_label_is_refused_for_other_models(tmp_path, capsys):
    run = tmp_path / "g"
    assert _train("gan", run, "--steps", "1") == 0
    capsys.readouterr()
    line = _one_line_error(capsys, cli.main(["sample", str(run), "--label", "3", "-o",
                                             str(tmp_path / "x.png")]))
    assert "--label applies to cgan" in line


def test_unknown_option_points_to_the_subcommand_help(capsys):
    line = _one_line_error(capsys, cli.main(["sample", "x.pt", "--bogus", "1"]))
    assert "--bogus" in line and "gan-ext sample --help" in line


# ------------------------------------------- the files sample and eval accept
def _examples_dcgan_file(tmp_path, nc):
    from gan_ext.models import DCGAN, DCGANConfig
    G = DCGAN(DCGANConfig(nc=nc, image_size=64, nz=10, ngf=8), fused=False).G
    path = tmp_path / "netG_epoch_24.pth"
    torch.save(G.state_dict(), path)  # a bare state_dict, as pytorch/examples saves it
    return path


def test_examples_dcgan_generator_samples_and_evaluates(tmp_path, capsys):
    path = _examples_dcgan_file(tmp_path, nc=1)
    grid = tmp_path / "g.png"
    assert cli.main(["sample", str(path), "--n", "9", "-o", str(grid)]) == 0
    with Image.open(grid) as im:
        assert im.size[0] > 64 * 2
    capsys.readouterr()
    assert cli.main(["eval", str(path), "--n", "50"]) == 0
    out = capsys.readouterr().out
    assert "inception_score" in out and "warning:" in out and "--n 2000" in out
    rgb = _examples_dcgan_file(tmp_path, nc=3)
    line = _one_line_error(capsys, cli.main(["eval", str(rgb), "--n", "10"]))
    assert "3-channel" in line


def test_eval_names_an_official_generator_and_says_what_to_do(tmp_path, capsys):
    from gan_ext.models import ResnetGenerator
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(ResnetGenerator(3, 3, ngf=8, n_blocks=2, fused=False).state_dict(), path)
    line = _one_line_error(capsys, cli.main(["eval", str(path), "--n", "10"]))
    assert "official CycleGAN/pix2pix generator" in line and "gan-ext sample" in line


def test_malformed_official_state_dict_is_one_line(tmp_path, capsys):
    path = tmp_path / "latest_net_G_A.pth"
    torch.save({"model.3.conv_block.1.weight": torch.ones(2), "model.1.weight": torch.ones(3)},
               path)
    img = tmp_path / "in.png"
    Image.new("RGB", (40, 40)).save(img)
    line = _one_line_error(capsys, cli.main(["sample", str(path), "--input", str(img),
                                             "-o", str(tmp_path / "o.png")]))
    assert "malformed" in line or "does not load" in line


# ---------------------------------------------------- plain error lines
def test_unreadable_files_get_plain_whole_sentences(tmp_path, capsys):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"f": os.system}, unsafe)
    line = _one_line_error(capsys, cli.main(["eval", str(unsafe)]))
    assert "safe loading refuses" in line and "system" in line and "weights_only" not in line
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    line = _one_line_error(capsys, cli.main(["eval", str(junk)]))
    assert line.endswith("(corrupt or another format)")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "empty or truncated" in _one_line_error(capsys, cli.main(["eval", str(empty)]))


def test_tagged_checkpoint_with_malformed_content(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "model_name": "gan", "options": {"model": "gan"}}, path)
    for command in (["eval", str(path)], ["sample", str(path), "-o", str(tmp_path / "a.png")]):
        line = _one_line_error(capsys, cli.main(command))
        assert "malformed" in line


def test_crafted_huge_model_config_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    assert _train("dcgan", run, "--steps", "1") == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["model_config"]["ngf"] = 10 ** 9
    torch.save(ckpt, run / "checkpoint.pt")
    capsys.readouterr()
    line = _one_line_error(capsys, cli.main(["sample", str(run), "-o", str(tmp_path / "a.png")]))
    assert "ngf" in line and "4096" in line


@pytest.mark.parametrize("argv,needle", [
    (["sample", "x.pt", "--n", str(10 ** 12)], "at most 200,000"),
    (["eval", "x.pt", "--n", str(10 ** 12)], "at most 200,000"),
    (["sample", "x.pt", "--seed", str(2 ** 64)], "2**63 - 1"),
    (["train", "gan", "--seed", str(2 ** 64)], "2**63 - 1"),
    (["train", "dcgan", "--lr", "inf"], "finite"),
    (["train", "vae", "--beta", "inf"], "finite"),
    (["train", "gan", "--label-smoothing", "nan"], "label_smoothing"),
    (["train", "gan", "--mnist-dir", "/nonexistent/mnist"], "is not a folder"),
])
def test_bad_values_are_one_line(argv, needle, tmp_path, capsys):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "r"), "--steps", "1"]
    assert needle in _one_line_error(capsys, cli.main(argv))


def test_output_name_without_an_image_extension(tmp_path, capsys):
    run = tmp_path / "g"
    assert _train("gan", run, "--steps", "1") == 0
    capsys.readouterr()
    line = _one_line_error(capsys, cli.main(["sample", str(run), "-o", str(tmp_path / "name")]))
    assert "no extension" in line and "grid.png" in line


def test_eval_prints_metrics_before_a_failed_append(tmp_path, capsys, monkeypatch):
    run = tmp_path / "v"
    assert _train("vae", run, "--steps", "1") == 0
    import gan_ext.train.inference as inf

    def read_only(path, record):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(inf, "append_jsonl", read_only)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="not appended"):
        assert cli.main(["eval", str(run), "--n", "20"]) == 0
    out = capsys.readouterr().out
    assert "metrics of" in out and "test_nelbo_nats" in out
    assert "appended to" not in out


def test_metrics_table_is_aligned_and_warns_at_small_n(tmp_path, capsys):
    run = tmp_path / "g"
    assert _train("gan", run, "--steps", "1") == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--n", "200"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("  ") and "warning" not in ln]
    starts = {len(re.match(r"  (\S+\s+)", ln).group(1)) for ln in rows}
    assert len(starts) == 1, rows  # one value column
    assert "warning: inception_score and mnist_fid from only 200 samples" in out


# --------------------------------------------- progress, curves, signals
def test_no_progress_prints_a_line_per_log_interval(tmp_path, capsys):
    assert cli.main(["train", "gan", "--out", str(tmp_path / "r"), "--batch-size", "4",
                     "--limit", "16", "--no-progress", "--eval-n", "0", "--steps", "4",
                     "--log-every", "2"]) == 0
    out = capsys.readouterr().out
    assert "step 2/4" in out and "step 4/4" in out and "d_loss=" in out


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_checkpoint_and_the_curves(signum, code, tmp_path, monkeypatch,
                                                      capsys):
    from gan_ext.train.gan import GANTrainer
    real = GANTrainer.step
    calls = {"n": 0}

    def step(self, batches):
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signum)  # handled between steps, like a real Ctrl-C/docker stop
        return real(self, batches)
    monkeypatch.setattr(GANTrainer, "step", step)
    run = tmp_path / "r"
    assert _train("gan", run, "--steps", "1000", "--sample-every", "1000") == code
    err = capsys.readouterr().err
    assert "checkpoint saved" in err and "Traceback" not in err
    assert ("SIGTERM" in err) == (signum == signal.SIGTERM)
    assert _step(run) == 3
    assert (run / "losses.png").is_file()
    assert [r["step"] for r in _jsonl(run / "metrics.jsonl")] == [1, 2, 3]


# --------------------------------------------------------- NaN / inf
def test_a_nan_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch,
                                                                       capsys):
    from gan_ext.train.gan import GANTrainer
    real = GANTrainer.step
    calls = {"n": 0}

    def step(self, batches):
        calls["n"] += 1
        out = real(self, batches)
        if calls["n"] == 3:
            out = {**out, "g_loss": torch.tensor(float("nan"))}
        return out
    monkeypatch.setattr(GANTrainer, "step", step)
    run = tmp_path / "r"
    line = _one_line_error(capsys, _train("gan", run, "--steps", "10", "--checkpoint-every", "2"),
                           expected=1)
    assert "diverged at step 3" in line and "g_loss" in line and "(step 2)" in line
    assert _step(run) == 2
    records = _jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]


def test_nan_weights_are_never_saved(tmp_path, monkeypatch, capsys):
    from gan_ext.train.gan import GANTrainer
    real = GANTrainer.step

    def step(self, batches):
        out = real(self, batches)
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("inf"))
        return out
    monkeypatch.setattr(GANTrainer, "step", step)
    run = tmp_path / "r"
    line = _one_line_error(capsys, _train("gan", run, "--steps", "2"), expected=1)
    assert "diverged" in line and "no checkpoint was written" in line
    assert not (run / "checkpoint.pt").exists()


def test_metrics_jsonl_never_holds_a_bare_nan(tmp_path):
    from gan_ext.train.monitor import append_jsonl
    path = tmp_path / "m.jsonl"
    append_jsonl(str(path), {"eval": {"fid": float("nan"), "is": [1.0, float("inf")]}})
    assert _jsonl(path) == [{"eval": {"fid": None, "is": [1.0, None]}}]


# ------------------------------------------------ never lose or mix runs
def test_a_folder_with_a_run_is_refused_without_overwrite(tmp_path, capsys):
    run = tmp_path / "dcgan"
    assert _train("gan", run, "--steps", "2", "--sample-every", "1") == 0
    before = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    line = _one_line_error(capsys, _train("vae", run, "--steps", "1"))
    assert "--overwrite" in line and "--resume" in line
    assert (run / "checkpoint.pt").read_bytes() == before
    assert _train("vae", run, "--steps", "1", "--overwrite") == 0
    assert load_checkpoint(str(run / "checkpoint.pt"))["model_name"] == "vae"
    assert not (run / "samples" / "step_000002.png").exists()  # the gan run's files are gone
    assert [r["step"] for r in _jsonl(run / "metrics.jsonl")] == [1]


def test_a_second_train_into_a_locked_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    with run_dir_mod.RunLock(str(run)):
        line = _one_line_error(capsys, _train("gan", run, "--steps", "1"))
    assert "in use by another" in line and str(os.getpid()) in line
    assert _train("gan", run, "--steps", "1") == 0  # released


def test_stale_temporaries_are_removed(tmp_path, capsys):
    run = tmp_path / "r"
    assert _train("gan", run, "--steps", "1") == 0
    stale = run / ".checkpoint.pt.0123456789ab.tmp"
    stale.write_bytes(b"x" * 1000)
    assert _train("gan", run, "--steps", "2", "--resume") == 0
    assert not stale.exists()
    assert "left by an interrupted save" in capsys.readouterr().out


def test_disk_full_during_a_save_is_one_line(tmp_path, monkeypatch, capsys):
    import gan_ext.train.loop as lp
    real = lp.atomic_save
    calls = {"n": 0}

    def save(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, path)
    monkeypatch.setattr(lp, "atomic_save", save)
    run = tmp_path / "r"
    line = _one_line_error(capsys, _train("gan", run, "--steps", "4", "--checkpoint-every", "2"),
                           expected=1)
    assert "No space left on device" in line and "(step 2) is intact" in line
    assert _step(run) == 2


def test_pix2pix_without_a_test_split_says_so(tmp_path, capsys):
    root = tmp_path / "aligned"
    (root / "train").mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (64, 32), (30 * i, 90, 200 - 20 * i)).save(root / "train" / f"{i}.png")
    assert cli.main(["train", "pix2pix", "--out", str(tmp_path / "p"), "--data", str(root),
                     "--image-size", "32", "--batch-size", "4", "--no-progress", "--steps", "1",
                     "--eval-n", "4"]) == 0
    out = capsys.readouterr().out
    assert "no test split" in out and "training images" in out


def test_threads_option_sets_torch_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        assert _train("gan", tmp_path / "r", "--steps", "1", "--threads", "1") == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bench_warns_on_a_busy_machine(monkeypatch):
    share = cli.bench._cpu_busy_fraction(0.05)
    assert 0.0 <= share <= 1.0
    monkeypatch.setattr(cli.bench, "_cpu_busy_fraction", lambda seconds=0.5: 0.5)
    assert "50%" in cli.bench._machine_busy()
    monkeypatch.setattr(cli.bench, "_cpu_busy_fraction", lambda seconds=0.5: 0.05)
    assert cli.bench._machine_busy() is None


def test_every_subcommand_option_has_help():
    parser = cli.build_parser()
    for name, sub in parser.subcommands.items():
        for action in sub._actions:
            assert action.help, f"gan-ext {name} {action.option_strings or action.dest}"
    bench_device = next(a for a in parser.subcommands["bench"]._actions if a.dest == "device")
    assert "auto" in bench_device.choices


def test_models_constant_matches_registry():
    from gan_ext.train import TRAINERS
    assert tuple(TRAINERS) == MODELS
