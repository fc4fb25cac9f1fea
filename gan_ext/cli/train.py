"""``gan-ext train``: train a model of the zoo (:func:`gan_ext.train.fit`)."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from ..data import PREPROCESS_MODES
from ..train import MODELS, TrainOptions, TrainingInterrupted, fit
from ..train.distributed import world_size_from_env
from ..train.loop import CheckpointSaveError, PeerFailed, TrainingDiverged
from ..train.config_file import merge_config
from ..train.options import (DEFAULTS, DEMO_STEPS, LOSSES, R1_EVERY, check_applicable,
                             defaults_text, model_defaults, recipe_text)
from ..models.stabilize import GP_LAMBDA
from .architecture import add_architecture_arguments
from .common import (PROG, Command, UsageError, iw_arguments, nonneg_int, one_line_warnings,
                     positive_int, print_metrics, seed, threads_argument)


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="stop after N iterations (G steps for GANs) instead of whole epochs")
    g.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="epochs (cyclegan/pix2pix: at the constant learning rate). Defaults: "
                        + defaults_text("epochs"))
    g.add_argument("--decay-epochs", type=nonneg_int, default=None, metavar="N",
                   help="then linear decay of the learning rate to 0 over N epochs: "
                        "cyclegan/pix2pix per epoch, the GANs per step (every optimizer; "
                        f"with --steps, over the last N epochs' steps) (default: "
                        f"{defaults_text('decay_epochs')})")
    g.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=f"default: {defaults_text('batch_size')}")
    g.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="train on at most N images (default: all; on the default data "
                        f"{defaults_text('limit')})")
    g.add_argument("--image-size", type=positive_int, default=None, metavar="S",
                   help="dcgan: 28/32/64/128 (MNIST: 32, digits padded by 2, or 28; --data: "
                        "default 64); gan: with --data only; cyclegan and pix2pix with --data: "
                        "the size trained at, the same as --crop-size (default 256; pix2pix: a "
                        "power of two)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="gan/dcgan with --data: 1 (grey) or 3 (RGB; dcgan default)")
    g.add_argument("--direction", choices=("AtoB", "BtoA"), default=None,
                   help="pix2pix with --data: which half of each image is the input (default "
                        "AtoB)")
    g.add_argument("--workers", type=nonneg_int, default=None, metavar="N",
                   help="with --data: processes that decode each batch's images ahead of use "
                        "(default min(4, CPUs); 0: the training process); the batches are the "
                        "same for every N")
    g.add_argument("--preprocess", choices=PREPROCESS_MODES, default=None,
                   help="cyclegan/pix2pix with --data, as the official code: resize_and_crop "
                        "(default: resize to --load-size, random --crop-size crop), crop (of the "
                        "image as it is), scale_width (width to --load-size, aspect kept), "
                        "scale_width_and_crop, none (sides rounded to a multiple of 4; pix2pix: "
                        "of 2**U-Net depth)")
    g.add_argument("--load-size", type=positive_int, default=None, metavar="S",
                   help="cyclegan/pix2pix with --data: resize to S before the crop (default 286 "
                        "for --crop-size 256, the same ratio for other sizes)")
    g.add_argument("--crop-size", type=positive_int, default=None, metavar="S",
                   help="cyclegan/pix2pix with --data: the size trained at (= --image-size; "
                        "default 256)")
    g.add_argument("--no-flip", action="store_true", default=None,
                   help="cyclegan/pix2pix with --data: no random horizontal flips")
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE", default=None,
                   help="the run's options from a JSON or YAML (.yaml/.yml, needs pyyaml) "
                        "file of option names and values (batch_size: 32, or batch-size), or "
                        "a run's config.json; the command line overrides it. A run's saved "
                        "out/resume/overwrite are ignored (README: Train, sample, evaluate)")
    g.add_argument("--out", metavar="DIR", default=None, help="run folder (default: runs/MODEL)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the run in --out exactly where its checkpoint stopped. A "
                        "resume may change the length (--steps/--epochs/--decay-epochs: the new "
                        "total; --epochs alone replaces a saved --steps) and how the run is "
                        "carried out (--sample-every, --log-every, --checkpoint-every, "
                        "--eval-n, --eval-every, --no-progress, --device, --amp, --backend, --threads, "
                        "--mnist-dir, --workers, --iw-k, --iw-n); any other option that "
                        "differs from the saved run is refused")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the run already in --out (its checkpoint, samples, metrics "
                        "and curves are deleted first); without it such a folder is refused")
    g.add_argument("--seed", type=seed, default=None, help="random seed (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="default auto: cuda when available")
    threads_argument(g)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast on CUDA, or on a CPU with avx512_bf16 or AMX (other CPUs train "
                        "in float32, with a note); samples and evaluation run in float32 "
                        "(default: on for dcgan, off for the others)")
    g.add_argument("--backend", choices=("fused", "reference"), default=None,
                   help="gan_ext kernels (default) or the pure-PyTorch reference ops")
    g.add_argument("--sample-every", type=positive_int, default=None, metavar="N",
                   help="write samples/step_N.png and redraw losses.png every N steps "
                        "(default 500)")
    g.add_argument("--log-every", type=positive_int, default=None, metavar="N",
                   help="append mean losses to metrics.jsonl every N steps (default 50); with "
                        "--no-progress also print them")
    g.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="save checkpoint.pt every N steps (default 1000; also at the end, on "
                        "Ctrl-C and on SIGTERM)")
    g.add_argument("--eval-n", type=nonneg_int, default=None, metavar="N",
                   help="samples/test images for the final evaluation (default 2000; ring/grid "
                        "2500, stacked-mnist 26000; 0: skip)")
    iw_arguments(g)
    g.add_argument("--eval-every", type=positive_int, default=None, metavar="N",
                   help="also evaluate every N steps (as the final evaluation, --eval-n "
                        "samples; the training is unchanged): eval records in metrics.jsonl "
                        "(the final one has \"final\": true) and curves in metrics.png")
    g.add_argument("--keep-best", nargs="?", const="auto", default=None, metavar="METRIC",
                   help="with --eval-every: save the checkpoint also as best.pt whenever an "
                        "evaluation improves METRIC (default: the model's: mnist_fid for "
                        "gan/dcgan/cgan, modes then high_quality for ring/grid, kl for "
                        "stacked-mnist, test_mse for ae/dae, test_nelbo_nats for vae, test_l1 "
                        "for pix2pix, B_to_A_digit_accuracy for cyclegan)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar: a log line every --log-every steps instead")
    g = p.add_argument_group("several processes (every model; README: Scaling out)")
    g.add_argument("--nproc-per-node", type=positive_int, default=None, metavar="N",
                   help="train on N processes of this machine: starts 'torchrun --standalone "
                        "--nproc-per-node N -m gan_ext.cli train ...' (gloo on CPU, nccl on "
                        "CUDA, one GPU each); --batch-size is the global batch, split evenly")
    g.add_argument("--sync-bn", action="store_true", default=None,
                   help="on several processes: 2-D batch norms use the statistics of the "
                        "whole global batch, so results do not depend on N (without it each "
                        "process normalises its own share); not for gan or cyclegan (no "
                        "batch norm)")
    g = p.add_argument_group("model")
    g.add_argument("--k", type=positive_int, default=None,
                   help="GANs: discriminator steps per generator step (default 1; 5 with --loss "
                        "wgan-gp)")
    g.add_argument("--loss", choices=LOSSES, default=None,
                   help="GANs: the adversarial loss: vanilla (BCE, default), lsgan, hinge, or "
                        "wgan-gp (Wasserstein critic + gradient penalty; defaults --k 5, Adam "
                        "lr 1e-4, betas (0, 0.9), a critic without batch norm)")
    g.add_argument("--gp-lambda", type=float, default=None, metavar="LAMBDA",
                   help=f"with --loss wgan-gp: the gradient penalty's weight (default "
                        f"{GP_LAMBDA:g})")
    g.add_argument("--g-steps", type=positive_int, default=None, metavar="N",
                   help="GANs: generator steps per iteration, after the --k D steps, on the "
                        "same latents (default 1; the VEEGAN/PacGAN stacked-MNIST code: 2)")
    g.add_argument("--g-loss", choices=("non-saturating", "minimax"), default=None,
                   help="GANs with --loss vanilla: -log D(G(z)) (default) or the paper's "
                        "log(1 - D(G(z)))")
    g.add_argument("--label-smoothing", type=float, default=None, metavar="EPS",
                   help="GANs with --loss vanilla or lsgan: one-sided, real label = 1 - EPS "
                        "(e.g. 0.1)")
    g.add_argument("--beta", type=float, default=None, help="vae: weight of the KL term (default 1)")
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the paper's; 2e-4 GANs, 1e-3 AE/VAE)")
    g = p.add_argument_group("mode collapse: the benchmarks' settings and the cures (gan, dcgan, "
                             "cgan, ring, grid, stacked-mnist; --pack: not cgan)")
    g.add_argument("--arch", choices=("veegan", "pacgan", "unrolled", "mlp", "conv"), default=None,
                   help="the papers' networks: ring/grid veegan (default) or pacgan; "
                        "stacked-mnist unrolled (the Unrolled-GAN paper's small DCGAN, "
                        "default) or veegan (VEEGAN/PacGAN's DCGAN); vae mlp (the examples' "
                        "VAE, default) or conv (ConvVAE, latent 32)")
    g.add_argument("--d-width", type=float, default=None, metavar="F",
                   help="stacked-mnist --arch unrolled: D's widths as a fraction of G's "
                        "(default 0.25; the papers: 0.25, 0.5)")
    g.add_argument("--pack", type=positive_int, default=None, metavar="M",
                   help="PacGAN: D judges M samples concatenated (2-4); a batch is "
                        "--batch-size packs of M samples")
    g.add_argument("--minibatch-stddev", action="store_true", default=None,
                   help="ProGAN's minibatch standard deviation feature map in D (group 4)")
    g.add_argument("--minibatch-discrimination", metavar="B,C[,mean]", default=None,
                   help="Salimans et al.'s minibatch discrimination before D's logit: B "
                        "kernels of dimension C (e.g. 100,5); ',mean' divides o by the N - 1 "
                        "other samples (large batches: the sum lets D win at once)")
    g.add_argument("--feature-matching", action="store_true", default=None,
                   help="G matches the mean of D's last features on real data (Salimans et al.)")
    g.add_argument("--unrolled", type=nonneg_int, default=None, metavar="K",
                   help="G trains against D after K look-ahead Adam steps (Metz et al.), "
                        "differentiating through them")
    g.add_argument("--unrolled-first-order", action="store_true", default=None,
                   help="with --unrolled: the look-ahead D as constants (no second derivatives)")
    g.add_argument("--joint-batch", action="store_true", default=None,
                   help="D scores each real batch and its fakes in one call, so its batch "
                        "norms use one set of statistics for both (default: separate calls, "
                        "as DCGAN)")
    g.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="sample and evaluate with an exponential moving average of G's weights "
                        "(e.g. 0.999; 0: none; default: dcgan 0.999, the others none)")
    g = p.add_argument_group("modern training (gan, dcgan, cgan, ring, grid, stacked-mnist; "
                             "--diffaugment: not ring/grid)")
    g.add_argument("--lr-d", type=float, default=None, metavar="LR",
                   help="TTUR: D's Adam learning rate (default: --lr, or the model's)")
    g.add_argument("--lr-g", type=float, default=None, metavar="LR",
                   help="TTUR: G's Adam learning rate (default: --lr, or the model's; "
                        "stacked-mnist --arch unrolled: 1e-4)")
    g.add_argument("--spectral-norm", action="store_true", default=None,
                   help="spectral normalisation of every conv/linear weight of D (and cgan's "
                        "projection embedding); D's batch norms are kept")
    g.add_argument("--diffaugment", metavar="POLICIES", default=None,
                   help="DiffAugment: the same random differentiable augmentation of every "
                        "image D sees, real and fake; any of color,translation,cutout "
                        "(comma-separated)")
    g.add_argument("--r1", type=float, default=None, metavar="GAMMA",
                   help="R1 penalty (GAMMA/2) E||grad_x D(x)||^2 on real images, lazily "
                        "(every --r1-every D steps, times that interval); not with --unrolled "
                        "(default: dcgan 1, the others 0: none)")
    g.add_argument("--r1-every", type=positive_int, default=None, metavar="N",
                   help=f"with --r1: the penalty every N-th D step (default {R1_EVERY})")
    add_architecture_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose one of: {', '.join(MODELS)}")
    one_line_warnings()
    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("command", "argv", "nproc_per_node", "config")}
    given = merge_config(args.config, args.model, given)   # the command line over the file
    # The model's option defaults (dcgan's recipe) for a new run; a resume keeps the saved run's.
    recipe = {} if given.get("resume") else model_defaults(args.model, given)
    opts = TrainOptions(**given, **recipe)
    if args.nproc_per_node is not None:
        check_applicable(opts, list(given))   # said once, before any process starts
        return launch(args.model, args.nproc_per_node, args.argv)
    main = world_size_from_env() <= 1 or os.environ.get("RANK", "0") == "0"
    if recipe and main:
        print(f"{args.model}'s defaults: {recipe_text(recipe)}")
    try:
        result = fit(opts, explicit=list(given))
    except TrainingInterrupted as e:
        if main:
            print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    except (TrainingDiverged, CheckpointSaveError, PeerFailed) as e:
        if main or isinstance(e, PeerFailed):
            print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    if not main:
        return 0
    print(f"done: {result['step']} steps, epoch {result['epoch']}")
    for name, path in result["paths"].items():
        print(f"  {name}: {path}")
    if result["metrics"]:
        print("metrics:")
        print_metrics(result["metrics"])
    return 0


def launch(model: str, nproc: int, argv) -> int:
    """``--nproc-per-node N``: the same command under torchrun's launcher
    (a subprocess: its agent handles signals and tears the group down when a
    rank fails). One node; for several, run torchrun yourself."""
    if world_size_from_env() > 1:
        raise UsageError("--nproc-per-node starts torchrun; under torchrun already, leave it out")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc-per-node":
            skip = True
        elif not a.startswith("--nproc-per-node="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "gan_ext.cli", *rest]
    # The torchrun agent and the ranks install their own SIGINT handlers, so
    # they act on Ctrl-C even where SIGINT was ignored at start (a background
    # job of a non-interactive shell); the launcher must hear it too, or it
    # reports the ranks' stop as a failure.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc, interrupted = subprocess.Popen(cmd), False
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:   # the launcher got the Ctrl-C too: it stops the ranks
                interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:   # rank 0 said where its checkpoint is
        return 130
    if code:
        print(f"{PROG}: error: the {nproc}-process run ended with status {code} (the ranks' "
              "lines above say why)", file=sys.stderr)
    return code


COMMAND = Command(
    help=f"train a model ({', '.join(MODELS)})",
    description="Train MODEL, offline by default (MNIST; for cyclegan the MNIST pair, "
                "plain vs coloured digits, with a CPU-sized CycleGAN: ngf 32, 6 residual "
                "blocks; for pix2pix MNIST edges -> digits). The run folder (runs/MODEL or "
                "--out) gets config.json, checkpoint.pt (atomic; --resume continues "
                "exactly), samples/step_N.png, samples.png, losses.png and metrics.jsonl. "
                "Ctrl-C or SIGTERM saves a checkpoint and exits with code 130 or 143. A "
                "NaN/inf loss stops the run (exit 1) and keeps the last finite checkpoint. "
                "Without --steps the defaults are the quality configuration (dcgan: "
                f"{DEFAULTS['dcgan']['epochs']} epochs, with G's moving average, lazy R1 and "
                "bf16 autocast where native: ~23 min on 2 CPU cores with avx512_bf16).",
    examples=(f"  {PROG} train dcgan --steps {DEMO_STEPS}         # make demo: ~2 min on 2 CPU cores\n"
              f"  {PROG} train dcgan                      # {DEFAULTS['dcgan']['epochs']} epochs of MNIST\n"
              f"  {PROG} train dcgan --steps 3000 --resume # continue the run to step 3000\n"
              f"  {PROG} train dcgan --overwrite          # start runs/dcgan afresh\n"
              f"  {PROG} train gan --k 2 --g-loss minimax --label-smoothing 0.1\n"
              f"  {PROG} train grid --pack 4                # a mode-collapse benchmark, cured\n"
              f"  {PROG} train stacked-mnist --unrolled 5 --d-width 0.5\n"
              f"  {PROG} train cgan --epochs 2 --out runs/cgan2\n"
              f"  {PROG} train vae --beta 4\n"
              f"  {PROG} train cyclegan --epochs 5 --decay-epochs 5\n"
              f"  {PROG} train cyclegan --data datasets/horse2zebra --load-size 143 --crop-size 128\n"
              f"  {PROG} train cyclegan --data datasets/horse2zebra --init-g h2z.pth,z2h.pth\n"
              f"  {PROG} train dcgan --data ~/celeba --image-size 128 --workers 4\n"
              f"  {PROG} train pix2pix --data datasets/facades --batch-size 1"),
    add_arguments=add_arguments,
    run=run,
)
