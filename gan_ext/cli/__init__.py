"""The ``gan-ext`` command line.

Subcommands live in :data:`COMMANDS` (name -> :class:`Command`); a later
subcommand (``train``, ``sample``, ``eval``) is one more entry with its own
argument builder and run function, nothing else changes.

Mistakes a user can make (a bad option value, asking for CUDA on a machine
without it) end with one line on stderr and exit code 2, never a traceback;
``GAN_EXT_DEBUG=1`` shows the traceback anyway.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ..train.options import DEFAULTS, DEMO_STEPS

PROG = "gan-ext"


class UsageError(Exception):
    """An error the user caused and can fix: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (usage stays available via --help)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


@dataclass
class Command:
    help: str                                          # one line, shown in `gan-ext --help`
    examples: str                                      # shown at the end of `gan-ext NAME --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]           # returns the exit code
    description: Optional[str] = None


# ------------------------------------------------------------------------ info
def _info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the fields as one JSON object")


def _format_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else "none"
    return str(v)


def _info_run(args: argparse.Namespace) -> int:
    import gan_ext

    fields = gan_ext.info()
    if args.json:
        print(json.dumps(fields, indent=2))
        return 0
    width = max(len(k) for k in fields)
    for k, v in fields.items():
        print(f"{k.ljust(width)}  {_format_value(v)}")
    return 0


# ----------------------------------------------------------------------- bench
def _positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a handful of cases with fewer repetitions (seconds, not minutes)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run (default auto: cuda when available, else cpu)")
    _threads_argument(p)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="input and parameter dtype (default: float32)")
    p.add_argument("--reps", type=_positive_int, default=None, metavar="N",
                   help="timed repetitions per case; the median is reported "
                        "(default: 50, 20 with --quick)")
    p.add_argument("--warmup", type=_positive_int, default=None, metavar="N",
                   help="untimed repetitions before timing (default: 5, 3 with --quick)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of the eager block (compiles every case: slow)")
    p.add_argument("--models", action="store_true",
                   help="time whole training steps of the models (DCGAN, MLP GAN, VAE, "
                        "CycleGAN) instead of single blocks: fused model vs the plain-PyTorch "
                        "build (slow: use --reps 10)")
    p.add_argument("-k", "--filter", default=None, metavar="WORDS",
                   help="only cases whose name contains every word, e.g. 'bn_lrelu fwd+bwd'")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")


def _bench_run(args: argparse.Namespace) -> int:
    import torch

    from .. import bench
    from ..memory import retain_freed_memory

    retain_freed_memory()  # both sides of every ratio run in this process with it

    kind = "model" if args.models else "all"
    selected = bench.select(bench.cases(quick=args.quick, kind=kind), args.filter)
    if not selected:
        raise UsageError(f"no benchmark case matches --filter {args.filter!r} "
                         f"(see '{PROG} bench --list')")
    if args.list:
        for c in selected:
            print(c.group)
        return 0

    _apply_threads(args)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise UsageError(f"--device cuda was requested but {why} (torch {torch.__version__}); "
                         "use --device cpu")
    dtype = getattr(torch, args.dtype)
    reps = args.reps or (20 if args.quick else 50)
    warmup = args.warmup or (3 if args.quick else 5)
    print(f"{PROG} bench: {len(selected)} case{'s' if len(selected) != 1 else ''}"
          f"{' (quick)' if args.quick else ''}, fused gan_ext vs eager PyTorch"
          f"{' vs torch.compile' if args.compile else ''}")
    busy = _machine_busy()
    if busy:
        print(f"{PROG}: warning: {busy}: timings and ratios will be distorted", file=sys.stderr)
    bench.run(selected, device=device, dtype=dtype, reps=reps, warmup=warmup, compile=args.compile)
    busy = _machine_busy()
    if busy:
        print(f"{PROG}: warning: at the end, {busy}: these timings may be distorted",
              file=sys.stderr)
    return 0


def _cpu_busy_fraction(seconds: float = 0.5) -> float:
    """The share of all CPU time that other processes used over ``seconds``
    (Linux /proc/stat and /proc/self/stat; 0.0 where they cannot be read)."""
    import time

    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return sum(fields), fields[3] + fields[4], int(own[11]) + int(own[12])
    try:
        t0, idle0, me0 = sample()
        time.sleep(seconds)
        t1, idle1, me1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = max(t1 - t0, 1)
    return max(0.0, (total - (idle1 - idle0) - (me1 - me0)) / total)


def _machine_busy(threshold: float = 0.15) -> Optional[str]:
    """A phrase when other processes use more than ``threshold`` of the CPUs."""
    share = _cpu_busy_fraction()
    if share <= threshold:
        return None
    return (f"other processes are using {share:.0%} of this machine's {os.cpu_count()} CPUs")


def _threads_argument(p: argparse.ArgumentParser) -> None:
    import torch
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help=f"CPU threads for torch (default: {torch.get_num_threads()}, what torch "
                        "uses on this machine)")


def _apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        import torch
        torch.set_num_threads(args.threads)


# ------------------------------------------------------- train, sample, eval
def _one_line_warnings() -> None:
    """Data warnings (a skipped non-image file) as one 'gan-ext: warning:' line each."""
    import warnings

    def fmt(message, category, filename, lineno, line=None):
        return f"{PROG}: warning: {message}\n"
    warnings.formatwarning = fmt


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.options import MODELS, defaults_text
    p.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(MODELS)}")
    g = p.add_argument_group("data and length")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="gan/dcgan/ae/dae/vae: a folder of images; cyclegan: the official layout "
                        "(trainA/ trainB/ testA/ testB/); pix2pix: an aligned dataset (DIR/train/"
                        "*.jpg, A|B side by side). Default: MNIST (offline), for cyclegan the "
                        "offline MNIST pair (plain vs coloured digits, 32x32), for pix2pix MNIST "
                        "edges -> digits (32x32)")
    g.add_argument("--mnist-dir", metavar="DIR", default=None,
                   help="an existing folder with the MNIST IDX files, or where to download them "
                        "(default: the gan_ext cache, else the offline copy)")
    g.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="stop after N iterations (G steps for GANs) instead of whole epochs")
    g.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help="epochs (cyclegan/pix2pix: at the constant learning rate). Defaults: "
                        + defaults_text("epochs"))
    g.add_argument("--decay-epochs", type=_nonneg_int, default=None, metavar="N",
                   help="cyclegan/pix2pix: then linear decay of the learning rate to 0 over N "
                        f"epochs (default: {defaults_text('decay_epochs')})")
    g.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help=f"default: {defaults_text('batch_size')}")
    g.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on at most N images (default: all; on the default data "
                        f"{defaults_text('limit')})")
    g.add_argument("--image-size", type=_positive_int, default=None, metavar="S",
                   help="dcgan: 28/32/64 (MNIST: 32, digits padded by 2, or 28; --data: default "
                        "64); cyclegan: default 32 on the MNIST pair, 128 with --data; gan and "
                        "pix2pix (a power of two, default 256): with --data only")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="gan/dcgan with --data: 1 (grey) or 3 (RGB; dcgan default)")
    g.add_argument("--direction", choices=("AtoB", "BtoA"), default=None,
                   help="pix2pix with --data: which half of each image is the input (default "
                        "AtoB)")
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", default=None, help="run folder (default: runs/MODEL)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the run in --out exactly where its checkpoint stopped. A "
                        "resume may change the length (--steps/--epochs/--decay-epochs: the new "
                        "total; --epochs alone replaces a saved --steps) and how the run is "
                        "carried out (--sample-every, --log-every, --checkpoint-every, "
                        "--eval-n, --no-progress, --device, --amp, --backend, --threads, "
                        "--mnist-dir); any other option that differs from the saved run is "
                        "refused")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the run already in --out (its checkpoint, samples, metrics "
                        "and curves are deleted first); without it such a folder is refused")
    g.add_argument("--seed", type=_seed, default=None, help="random seed (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="default auto: cuda when available")
    _threads_argument(g)
    g.add_argument("--amp", action="store_true", default=None,
                   help="bf16 autocast (CUDA only; refused on the CPU)")
    g.add_argument("--backend", choices=("fused", "reference"), default=None,
                   help="gan_ext kernels (default) or the pure-PyTorch reference ops")
    g.add_argument("--sample-every", type=_positive_int, default=None, metavar="N",
                   help="write samples/step_N.png and redraw losses.png every N steps "
                        "(default 500)")
    g.add_argument("--log-every", type=_positive_int, default=None, metavar="N",
                   help="append mean losses to metrics.jsonl every N steps (default 50); with "
                        "--no-progress also print them")
    g.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="save checkpoint.pt every N steps (default 1000; also at the end, on "
                        "Ctrl-C and on SIGTERM)")
    g.add_argument("--eval-n", type=_nonneg_int, default=None, metavar="N",
                   help="samples/test images for the final evaluation (default 2000; 0: skip)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar: a log line every --log-every steps instead")
    g = p.add_argument_group("model")
    g.add_argument("--k", type=_positive_int, default=None,
                   help="gan/dcgan/cgan: discriminator steps per generator step (default 1)")
    g.add_argument("--g-loss", choices=("non-saturating", "minimax"), default=None,
                   help="gan/dcgan/cgan: -log D(G(z)) (default) or the paper's log(1 - D(G(z)))")
    g.add_argument("--label-smoothing", type=float, default=None, metavar="EPS",
                   help="gan/dcgan/cgan: one-sided, real label = 1 - EPS (e.g. 0.1)")
    g.add_argument("--beta", type=float, default=None, help="vae: weight of the KL term (default 1)")
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the paper's; 2e-4 GANs, 1e-3 AE/VAE)")


def _nonneg_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {n}")
    return n


def _seed(s: str) -> int:
    from ..train.options import MAX_SEED
    n = _nonneg_int(s)
    if n > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1, got {n}")
    return n


def _fmt_metric(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_metric(x) for x in v) + "]"
    return str(v)


def _print_metrics(metrics: dict) -> None:
    """An aligned two-column table; warnings after it."""
    rows = [(k, _fmt_metric(v)) for k, v in metrics.items()
            if k not in ("coverage_warnings", "warnings")]
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    for w in list(metrics.get("warnings", [])) + list(metrics.get("coverage_warnings", [])):
        print(f"  warning: {w}")


def _train_run(args: argparse.Namespace) -> int:
    from ..train import MODELS, TrainOptions, TrainingInterrupted, fit
    from ..train.loop import CheckpointSaveError, TrainingDiverged
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose one of: {', '.join(MODELS)}")
    _one_line_warnings()
    given = {k: v for k, v in vars(args).items() if v is not None and k != "command"}
    opts = TrainOptions(**given)
    try:
        result = fit(opts, explicit=list(given))
    except TrainingInterrupted as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    except (TrainingDiverged, CheckpointSaveError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(f"done: {result['step']} steps, epoch {result['epoch']}")
    for name, path in result["paths"].items():
        print(f"  {name}: {path}")
    if result["metrics"]:
        print("metrics:")
        _print_metrics(result["metrics"])
    return 0


# Upper bounds of --n: a grid of more images is not a picture, and the metrics
# hold every sample in memory (10**12 would fail deep inside torch).
MAX_SAMPLE_N = 10_000
MAX_EVAL_N = 200_000


def _bounded_int(maximum: int):
    def parse(s: str) -> int:
        n = _positive_int(s)
        if n > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {n:,}")
        return n
    return parse


def _labels(s: str) -> List[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class numbers such as 3 or 1,4,7, got {s!r}"
                                         ) from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one class number")
    return out


def _device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the model runs (default auto: cuda when available)")


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a run's checkpoint.pt (or its folder), an official CycleGAN/pix2pix "
                        "generator file such as latest_net_G_A.pth, or a pytorch/examples "
                        "DCGAN generator such as netG_epoch_24.pth")
    p.add_argument("--n", type=_bounded_int(MAX_SAMPLE_N), default=64,
                   help="number of samples (default 64)")
    p.add_argument("-o", "--out", default="grid.png",
                   help="the grid image; its extension sets the format (default grid.png)")
    p.add_argument("--interpolate", action="store_true",
                   help="GAN/VAE/AE: rows of latent interpolations (cgan: one class per row)")
    p.add_argument("--label", type=_labels, default=None, metavar="C[,C...]",
                   help="cgan: sample these classes, one row per class (default: a row for "
                        "each of the 10 classes)")
    p.add_argument("--input", metavar="DIR_OR_IMAGE", default=None,
                   help="cyclegan/pix2pix/ae: translate or reconstruct these images (default: "
                        "test images)")
    p.add_argument("--direction", choices=("AtoB", "BtoA"), default="AtoB",
                   help="cyclegan: G_A (A->B, default) or G_B (B->A)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="--input images are resized/cropped to this (default: the training "
                        "size; 256 for official generator files)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the latent draws (default 0): the same seed gives the same grid")
    _device_argument(p)
    _threads_argument(p)


def _check_image_name(path: str) -> None:
    from PIL import Image
    ext = os.path.splitext(path)[1].lower()
    if ext not in Image.registered_extensions():
        what = f"its extension {ext!r} is not an image format" if ext else "it has no extension"
        raise UsageError(f"-o {path!r}: {what}; give a file name such as grid.png")


def _sample_run(args: argparse.Namespace) -> int:
    from ..train import sample_checkpoint
    _one_line_warnings()
    _apply_threads(args)
    _check_image_name(args.out)
    path = sample_checkpoint(args.checkpoint, args.out, n=args.n, interpolate=args.interpolate,
                             inputs=args.input, seed=args.seed, device=args.device,
                             direction=args.direction, image_size=args.image_size,
                             labels=args.label)
    print(f"wrote {path}")
    return 0


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a run's checkpoint.pt (or its folder), or the generator files "
                        "'gan-ext sample' accepts")
    p.add_argument("--n", type=_bounded_int(MAX_EVAL_N), default=10000,
                   help="generated samples / test images (default 10000)")
    p.add_argument("--fid-backend", choices=("torch-fidelity", "clean-fid"), default=None,
                   help="also an Inception FID through that package (must be installed)")
    _device_argument(p)
    _threads_argument(p)


def _eval_run(args: argparse.Namespace) -> int:
    from ..train import evaluate_checkpoint
    _one_line_warnings()
    _apply_threads(args)
    metrics, log = evaluate_checkpoint(args.checkpoint, n=args.n, device=args.device,
                                       fid_backend=args.fid_backend,
                                       report=lambda m: (print(f"metrics of {args.checkpoint}:"),
                                                         _print_metrics(m)))
    if log is not None:
        print(f"appended to {log}")
    return 0


# -------------------------------------------------------------------- registry
COMMANDS: Dict[str, Command] = {
    "info": Command(
        help="show the version, what was compiled and which backend runs",
        description="Print gan_ext.info(): versions, whether the C++/CUDA extension loaded, "
                    "the devices with compiled kernels and the active backend.",
        examples=f"  {PROG} info\n  {PROG} info --json",
        add_arguments=_info_arguments,
        run=_info_run,
    ),
    "bench": Command(
        help="time the fused layers and losses against eager PyTorch",
        description="Time fused gan_ext blocks and losses against the same code in eager "
                    "PyTorch (and torch.compile with --compile): norm+activation blocks at "
                    "the DCGAN batch-64 shapes, GAN/L1 losses and the VAE reparameterization "
                    "at the shapes of the models. "
                    "Repetitions are interleaved after warm-up; the median is reported. "
                    "Ratios > 1 mean the fused block is faster.",
        examples=(f"  {PROG} bench --quick\n"
                  f"  {PROG} bench --device cuda --dtype bfloat16\n"
                  f"  {PROG} bench --compile -k 'bn_relu fwd+bwd'\n"
                  f"  {PROG} bench -k reparam_kl\n"
                  f"  {PROG} bench --models --reps 10 -k dcgan64\n"
                  f"  {PROG} bench --list"),
        add_arguments=_bench_arguments,
        run=_bench_run,
    ),
    "train": Command(
        help="train a model (gan, dcgan, cgan, ae, dae, vae, cyclegan, pix2pix)",
        description="Train MODEL, offline by default (MNIST; for cyclegan the MNIST pair, "
                    "plain vs coloured digits, with a CPU-sized CycleGAN: ngf 32, 6 residual "
                    "blocks; for pix2pix MNIST edges -> digits). The run folder (runs/MODEL or "
                    "--out) gets config.json, checkpoint.pt (atomic; --resume continues "
                    "exactly), samples/step_N.png, samples.png, losses.png and metrics.jsonl. "
                    "Ctrl-C or SIGTERM saves a checkpoint and exits with code 130 or 143. A "
                    "NaN/inf loss stops the run (exit 1) and keeps the last finite checkpoint. "
                    "Without --steps the defaults are the quality configuration (dcgan: "
                    f"{DEFAULTS['dcgan']['epochs']} epochs, ~28 min on 2 CPU cores).",
        examples=(f"  {PROG} train dcgan --steps {DEMO_STEPS}         # make demo: ~4 min on 2 CPU cores\n"
                  f"  {PROG} train dcgan                      # {DEFAULTS['dcgan']['epochs']} epochs of MNIST\n"
                  f"  {PROG} train dcgan --steps 3000 --resume # continue the run to step 3000\n"
                  f"  {PROG} train dcgan --overwrite          # start runs/dcgan afresh\n"
                  f"  {PROG} train gan --k 2 --g-loss minimax --label-smoothing 0.1\n"
                  f"  {PROG} train cgan --epochs 2 --out runs/cgan2\n"
                  f"  {PROG} train vae --beta 4\n"
                  f"  {PROG} train cyclegan --epochs 5 --decay-epochs 5\n"
                  f"  {PROG} train cyclegan --data datasets/horse2zebra --image-size 128\n"
                  f"  {PROG} train pix2pix --data datasets/facades --batch-size 1"),
        add_arguments=_train_arguments,
        run=_train_run,
    ),
    "sample": Command(
        help="sample, interpolate or translate with a trained model",
        description="Write a grid PNG from a checkpoint: GAN/VAE samples or latent "
                    "interpolations, a class-by-row grid for cgan, reconstructions for ae/dae, "
                    "translations (input row, output row) for cyclegan/pix2pix, including "
                    "published official generator files (latest_net_G_A.pth) with --input.",
        examples=(f"  {PROG} sample runs/dcgan/checkpoint.pt --n 64 -o grid.png\n"
                  f"  {PROG} sample runs/vae/checkpoint.pt --interpolate -o interp.png\n"
                  f"  {PROG} sample runs/cgan/checkpoint.pt --n 100\n"
                  f"  {PROG} sample runs/cgan/checkpoint.pt --label 3 --n 16\n"
                  f"  {PROG} sample netG_epoch_24.pth --n 64   # a pytorch/examples DCGAN\n"
                  f"  {PROG} sample runs/cyclegan/checkpoint.pt --input my_digits/ --direction BtoA\n"
                  f"  {PROG} sample latest_net_G_A.pth --input horse.jpg -o zebra.png"),
        add_arguments=_sample_arguments,
        run=_sample_run,
    ),
    "eval": Command(
        help="the model family's metrics for a checkpoint",
        description="GANs: classifier Inception Score, MNIST-FID and class coverage (with "
                    "mode-collapse warnings); VAE: test negative ELBO (nats/image); AE: test "
                    "MSE; CycleGAN: digit accuracy of translations and the domain score; "
                    "pix2pix: test L1. Printed and appended to the run's metrics.jsonl.",
        examples=(f"  {PROG} eval runs/dcgan/checkpoint.pt\n"
                  f"  {PROG} eval runs/vae/checkpoint.pt --n 10000\n"
                  f"  {PROG} eval runs/dcgan --n 2000 --fid-backend clean-fid"),
        add_arguments=_eval_arguments,
        run=_eval_run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG, formatter_class=fmt,
        description="gan_ext: fused kernels, layers and tools that make generative models train faster.",
        epilog="examples:\n" + "\n".join(c.examples.splitlines()[0] for c in COMMANDS.values())
               + f"\n\nRun '{PROG} COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.subcommands = {}
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=textwrap.fill(cmd.description or cmd.help),
                           epilog="examples:\n" + cmd.examples, formatter_class=fmt)
        cmd.add_arguments(p)
        parser.subcommands[name] = p
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand's parser, so the hint names its --help
            owner = parser.subcommands.get(args.command, parser)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            raise UsageError(f"missing command, one of: {', '.join(COMMANDS)} (see '{PROG} --help')")
        return COMMANDS[args.command].run(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `gan-ext bench | head`: stop quietly; point stdout at devnull so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as e:
        # Library errors caused by input (STYLE: ValueError with what to do) and
        # missing/unreadable files: one line unless debugging.
        if os.environ.get("GAN_EXT_DEBUG", "0") == "1":
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

