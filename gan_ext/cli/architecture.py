"""The architecture and starting-weights options of ``gan-ext train``
(gan_ext/train/architecture.py, gan_ext/train/init_weights.py)."""
from __future__ import annotations

import argparse

from ..train.architecture import NET_D, NET_G, NORMS
from .common import positive_int

__all__ = ["add_architecture_arguments"]


def add_architecture_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "architecture (default: the model's; cyclegan/pix2pix with --data: the official "
        "sizes) and starting weights")
    g.add_argument("--nz", type=positive_int, default=None, metavar="N",
                   help="latent size: gan/dcgan/cgan (default 100); ae/dae/vae latent_dim "
                        "(default 4, 4, 20)")
    g.add_argument("--ngf", type=positive_int, default=None, metavar="N",
                   help="dcgan/cgan/cyclegan/pix2pix: G's base width (default 64; 32 for "
                        "cyclegan/pix2pix on the default MNIST data)")
    g.add_argument("--ndf", type=positive_int, default=None, metavar="N",
                   help="dcgan/cgan/cyclegan/pix2pix: D's base width (defaults as --ngf)")
    g.add_argument("--netG", choices=NET_G, default=None,
                   help="cyclegan/pix2pix: the official generators (default: cyclegan "
                        "resnet_9blocks with --data at 256 px, 6 blocks below 256 px and on the "
                        "MNIST pair; pix2pix a U-Net as deep as the image: unet_256 at 256 px)")
    g.add_argument("--n-blocks", type=positive_int, default=None, metavar="N",
                   help="cyclegan/pix2pix: residual blocks of a resnet generator (6 and 9 are "
                        "resnet_6blocks/resnet_9blocks; alone it selects a resnet generator)")
    g.add_argument("--netD", choices=NET_D, default=None,
                   help="cyclegan/pix2pix: basic (the 70x70 PatchGAN, default), n_layers "
                        "(--n-layers-d deep) or pixel (1x1 PatchGAN)")
    g.add_argument("--n-layers-d", type=positive_int, default=None, metavar="N",
                   help="cyclegan/pix2pix: the PatchGAN's depth for --netD n_layers (default 3; "
                        "pix2pix on MNIST 2; alone it selects n_layers)")
    g.add_argument("--norm", choices=NORMS, default=None,
                   help="cyclegan/pix2pix: the networks' norm (default instance for cyclegan, "
                        "batch for pix2pix)")
    g.add_argument("--init-g", metavar="FILE", default=None,
                   help="start a new run's generator(s) from weights: a pytorch/examples DCGAN "
                        "netG_epoch_N.pth, an official latest_net_G.pth, a gan_ext checkpoint "
                        "or run folder; cyclegan: A.pth,B.pth (G_A then G_B), an official run "
                        "folder with latest_net_G_A.pth and latest_net_G_B.pth, or a cyclegan "
                        "checkpoint. Not with --resume")
    g.add_argument("--init-d", metavar="FILE", default=None,
                   help="the same for the discriminator(s) (netD_epoch_N.pth, "
                        "latest_net_D_A.pth, ...)")
