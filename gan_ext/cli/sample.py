"""``gan-ext sample``: a grid of samples, interpolations or translations from
a trained model or a published generator file."""
from __future__ import annotations

import argparse
import os
from typing import List

from ..train import sample_checkpoint
from ..train.inference import is_tensor_file
from .common import (PROG, Command, UsageError, bounded_int, open_run, positive_int, run_arguments,
                     seed)

# Upper bounds of --n: a grid of more images is not a picture; a .pt file of
# raw samples may hold as many as `gan-ext eval` draws.
MAX_SAMPLE_N = 10_000
MAX_TENSOR_N = 200_000


def _labels(s: str) -> List[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class numbers such as 3 or 1,4,7, got {s!r}"
                                         ) from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one class number")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a run's checkpoint.pt (or its folder), an official CycleGAN/pix2pix "
                        "generator file such as latest_net_G_A.pth, or a pytorch/examples "
                        "DCGAN generator such as netG_epoch_24.pth")
    p.add_argument("--n", type=bounded_int(MAX_TENSOR_N), default=64,
                   help=f"number of samples (default 64; at most {MAX_SAMPLE_N} in a picture)")
    p.add_argument("-o", "--out", default="grid.png",
                   help="the grid image, its extension sets the format (default grid.png; "
                        "ring/grid: a scatter plot); FILE.pt: the raw samples as a tensor "
                        "(torch.load), e.g. for your own metrics")
    p.add_argument("--interpolate", action="store_true",
                   help="GAN/VAE/AE: rows of latent interpolations (cgan: one class per row)")
    p.add_argument("--label", type=_labels, default=None, metavar="C[,C...]",
                   help="cgan: sample these classes, one row per class (default: a row for "
                        "each of the 10 classes)")
    p.add_argument("--input", metavar="DIR_OR_IMAGE", default=None,
                   help="cyclegan/pix2pix/ae: translate or reconstruct these images into one "
                        "grid (default: test images); 'gan-ext test RUN --input DIR' writes one "
                        "file per image and an index.html")
    p.add_argument("--direction", choices=("AtoB", "BtoA"), default="AtoB",
                   help="cyclegan: G_A (A->B, default) or G_B (B->A)")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="--input images are resized/cropped to this (default: the training "
                        "size; 256 for official generator files)")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the latent draws (default 0): the same seed gives the same grid")
    run_arguments(p)


def _check_image_name(path: str) -> None:
    from PIL import Image  # here: the other commands never load PIL
    ext = os.path.splitext(path)[1].lower()
    if ext not in Image.registered_extensions():
        what = f"its extension {ext!r} is not an image format" if ext else "it has no extension"
        raise UsageError(f"-o {path!r}: {what}; give a file name such as grid.png (or "
                         "samples.pt for the raw samples)")


def run(args: argparse.Namespace) -> int:
    args.checkpoint = open_run(args)
    if not is_tensor_file(args.out):
        _check_image_name(args.out)
        if args.n > MAX_SAMPLE_N:
            raise UsageError(f"--n {args.n}: a picture holds at most {MAX_SAMPLE_N} samples; "
                             "write them to a .pt file (-o samples.pt) instead")
    path = sample_checkpoint(args.checkpoint, args.out, n=args.n, interpolate=args.interpolate,
                             inputs=args.input, seed=args.seed, device=args.device,
                             direction=args.direction, image_size=args.image_size,
                             labels=args.label)
    print(f"wrote {path}")
    return 0


COMMAND = Command(
    help="sample, interpolate or translate with a trained model",
    description="Write a grid PNG from a checkpoint: GAN/VAE samples or latent "
                "interpolations, a class-by-row grid for cgan, reconstructions for ae/dae, "
                "translations (input row, output row) for cyclegan/pix2pix, including "
                "published official generator files (latest_net_G_A.pth) with --input.",
    examples=(f"  {PROG} sample runs/dcgan/checkpoint.pt --n 64 -o grid.png\n"
              f"  {PROG} sample runs/vae/checkpoint.pt --interpolate -o interp.png\n"
              f"  {PROG} sample runs/cgan/checkpoint.pt --n 100\n"
              f"  {PROG} sample runs/cgan/checkpoint.pt --label 3 --n 16\n"
              f"  {PROG} sample runs/grid --n 2500 -o grid_samples.pt   # raw (2500, 2) tensor\n"
              f"  {PROG} sample netG_epoch_24.pth --n 64   # a pytorch/examples DCGAN\n"
              f"  {PROG} sample runs/cyclegan/checkpoint.pt --input my_digits/ --direction BtoA\n"
              f"  {PROG} sample latest_net_G_A.pth --input horse.jpg -o zebra.png"),
    add_arguments=add_arguments,
    run=run,
)
