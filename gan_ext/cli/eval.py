"""``gan-ext eval``: the model family's metrics for a checkpoint."""
from __future__ import annotations

import argparse
import json
import sys

from ..train import evaluate_checkpoint
from ..train.monitor import json_safe
from .common import (PROG, Command, bounded_int, iw_arguments, open_run, print_metrics,
                     run_arguments)

# Upper bound of --n: the metrics hold every sample in memory (10**12 would
# fail deep inside torch).
MAX_EVAL_N = 200_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a run's checkpoint.pt (or its folder), or the generator files "
                        "'gan-ext sample' accepts")
    p.add_argument("--n", type=bounded_int(MAX_EVAL_N), default=None,
                   help="generated samples / test images (default 10000; ring/grid 2500 and "
                        "stacked-mnist 26000, the papers' counts)")
    p.add_argument("--json", action="store_true",
                   help="print the metrics as one JSON object on stdout (nothing else there)")
    p.add_argument("--fid-backend", choices=("torch-fidelity", "clean-fid"), default=None,
                   help="gan/dcgan/cgan/vae: Inception FID and KID through that package (must "
                        "be installed) against the run's images (--data folder or MNIST test)")
    iw_arguments(p)
    run_arguments(p)


def run(args: argparse.Namespace) -> int:
    args.checkpoint = open_run(args)
    if args.json:
        report = lambda m: print(json.dumps(json_safe(m), allow_nan=False))  # noqa: E731
    else:
        report = lambda m: (print(f"metrics of {args.checkpoint}:"), print_metrics(m))  # noqa: E731
    metrics, log = evaluate_checkpoint(args.checkpoint, n=args.n, device=args.device,
                                       fid_backend=args.fid_backend, report=report,
                                       options={"iw_k": args.iw_k, "iw_n": args.iw_n})
    if log is not None:
        print(f"appended to {log}", file=sys.stderr if args.json else sys.stdout)
    return 0


COMMAND = Command(
    help="the model family's metrics for a checkpoint",
    description="GANs: classifier Inception Score, MNIST-FID and class coverage (with "
                "mode-collapse warnings); on --data: FID and KID against that folder "
                "(torch-fidelity or clean-fid, or GAN_EXT_FEATURE_EXTRACTOR); VAE: test "
                "negative ELBO and importance-weighted NLL (nats/image); AE: test "
                "MSE; CycleGAN: digit accuracy of translations and the domain score; "
                "pix2pix: test L1; ring/grid: modes covered, high-quality samples and reverse "
                "KL; stacked-mnist: modes covered of 1,000 and KL to uniform. Printed (--json: "
                "as JSON) and appended to the run's metrics.jsonl.",
    examples=(f"  {PROG} eval runs/dcgan/checkpoint.pt\n"
              f"  {PROG} eval runs/vae/checkpoint.pt --n 10000\n"
              f"  {PROG} eval runs/vae --iw-k 1000 --iw-n 10000\n"
              f"  {PROG} eval runs/dcgan --n 2000 --fid-backend clean-fid\n"
              f"  {PROG} eval runs/grid --json"),
    add_arguments=add_arguments,
    run=run,
)
