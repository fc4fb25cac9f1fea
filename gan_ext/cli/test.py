"""``gan-ext test``: a run's translations or reconstructions of the user's
images, one file per image and an index.html to look at them (as the
official CycleGAN/pix2pix test.py)."""
from __future__ import annotations

import argparse

from ..train.results import TEST_MODELS, write_results
from .common import PROG, Command, open_run, run_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="RUN",
                   help="a run's folder or its checkpoint.pt (cyclegan, pix2pix, ae, dae, vae)")
    p.add_argument("--input", metavar="DIR_OR_IMAGE", required=True,
                   help="the images: a folder (searched recursively) or one image file; each "
                        "is resized and cropped as the run was trained")
    p.add_argument("-o", "--out", metavar="DIR", default=None,
                   help="where the results go (default RUN/test_latest, with --best "
                        "RUN/test_best): images/NAME.png, input/, cycle/ (cyclegan), index.html")
    p.add_argument("--direction", choices=("AtoB", "BtoA"), default=None,
                   help="cyclegan: G_A (A->B, default) or G_B (B->A); the cycle column goes "
                        "back with the other generator")
    run_arguments(p)


def run(args: argparse.Namespace) -> int:
    args.checkpoint = open_run(args)
    page, n = write_results(args.checkpoint, args.input, out=args.out, direction=args.direction,
                            device=args.device)
    print(f"wrote {n} results and {page}")
    return 0


COMMAND = Command(
    help="translate or reconstruct your images: one file each and an index.html",
    description="For each image of --input (a folder or a file), the run's output as the run "
                f"was trained ({', '.join(TEST_MODELS)}): images/NAME.png (the translation or "
                "reconstruction, named after the input), input/NAME.png (the preprocessed "
                "input), cycle/NAME.png (cyclegan: there and back), and index.html showing "
                "them side by side, in RUN/test_latest (as the official CycleGAN/pix2pix "
                "test.py's results/NAME/test_latest). Models that sample from noise have no "
                "input: use 'gan-ext sample'.",
    examples=(f"  {PROG} test runs/cyclegan --input ~/horse2zebra/testA\n"
              f"  {PROG} test runs/cyclegan --input ~/horse2zebra/testB --direction BtoA -o zebras2horses\n"
              f"  {PROG} test runs/pix2pix --input facades/test --best\n"
              f"  {PROG} test runs/vae --input my_digits/"),
    add_arguments=add_arguments,
    run=run,
)
