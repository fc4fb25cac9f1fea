"""The architecture options of ``gan-ext train`` (``--nz``, ``--ngf``,
``--ndf``, ``--netG``, ``--n-blocks``, ``--netD``, ``--n-layers-d``,
``--norm``): their checks and the model-config fields they set.

CycleGAN and pix2pix take the official junyanz/pytorch-CycleGAN-and-pix2pix
choices (``options/base_options.py``, ``models/networks.py`` there): netG
``resnet_9blocks`` / ``resnet_6blocks`` / ``unet_128`` / ``unet_256``, netD
``basic`` (the 70x70 PatchGAN, 3 layers) / ``n_layers`` / ``pixel``, norm
``batch`` / ``instance`` / ``none``. With ``--data`` the defaults are the
official ones (ngf = ndf = 64, resnet_9blocks at 256 px for cyclegan,
instance norm; a U-Net as deep as the image for pix2pix, batch norm); on the
default MNIST data the CPU-sized networks (ngf = ndf = 32). What a model
config records rebuilds the same network for ``sample``, ``eval`` and
``--resume``.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

from .._validate import check_int

__all__ = ["NET_G", "NET_D", "NORMS", "check_fields", "check_combination", "gan_sizes",
           "translation_networks", "DEFAULT_CYCLEGAN_DATA_SIZE"]

NET_G = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
NET_D = ("basic", "n_layers", "pixel")
NORMS = ("batch", "instance", "none")
# The official crop size: cyclegan's --data default image size.
DEFAULT_CYCLEGAN_DATA_SIZE = 256
_MAX_WIDTH = 4096   # checkpoint.MAX_CONFIG_INT: wider would not load again


def _net_g(name: str) -> Tuple[str, int]:
    """'resnet_9blocks' -> ('resnet', 9); 'unet_256' -> ('unet', 8) (num_downs)."""
    kind, rest = name.split("_")
    if kind == "resnet":
        return kind, int(rest[:-len("blocks")])
    return kind, int(math.log2(int(rest)))


def check_fields(o) -> None:
    """The ranges and choices of the options alone (TrainOptions.__post_init__)."""
    for name in ("nz", "ngf", "ndf", "n_blocks", "n_layers_d"):
        v = getattr(o, name)
        if v is not None:
            check_int(name, v, 1)
            if v > _MAX_WIDTH:
                raise ValueError(f"--{name.replace('_', '-')} must be at most {_MAX_WIDTH}, "
                                 f"got {v}")
    for name, choices in (("netG", NET_G), ("netD", NET_D), ("norm", NORMS)):
        v = getattr(o, name)
        if v is not None and v not in choices:
            raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {v!r}")
    if o.netG is not None and o.n_blocks is not None:
        kind, count = _net_g(o.netG)
        if kind == "unet":
            raise ValueError(f"--n-blocks sets the residual blocks of a resnet generator, but "
                             f"--netG {o.netG} is a U-Net: leave --n-blocks out")
        if count != o.n_blocks:
            raise ValueError(f"--n-blocks {o.n_blocks} contradicts --netG {o.netG}: give one "
                             "of them")
    if o.n_layers_d is not None and o.netD not in (None, "n_layers"):
        raise ValueError(f"--n-layers-d sets the depth of --netD n_layers, not of --netD "
                         f"{o.netD} (basic is n_layers 3): use --netD n_layers")
    for name in ("init_g", "init_d"):
        v = getattr(o, name)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ValueError(f"--{name.replace('_', '-')} must name a file or folder, got {v!r}")


def check_combination(o, explicit) -> None:
    """What depends on other options and on what the user gave (fit's
    ``explicit``): one line naming the option."""
    given = [n for n in ("init_g", "init_d") if n in explicit and getattr(o, n) is not None]
    if given and o.resume:
        raise ValueError(f"--{given[0].replace('_', '-')} starts a new run from weights; "
                         "--resume restores the run's own: give one of them")
    if o.init_d is not None and o.spectral_norm:
        raise ValueError("--init-d does not combine with --spectral-norm (D's weights become "
                         "parametrizations with their own power-iteration state): leave one out")


def gan_sizes(o, latent: str = "nz") -> Dict[str, int]:
    """The GAN/AE config fields the options set: ``latent`` (``nz``, or
    ``latent_dim`` for ae/dae/vae), ``ngf``, ``ndf``."""
    out = {latent: o.nz} if o.nz is not None else {}
    out.update({k: getattr(o, k) for k in ("ngf", "ndf") if getattr(o, k) is not None})
    return out


def _patch_side(size: int, n_layers: int) -> int:
    """The PatchGAN's output side for a ``size`` input: n stride-2 4x4 convs
    (pad 1) halve it, the two stride-1 ones take 1 each."""
    for _ in range(n_layers):
        size //= 2
    return size - 2


def translation_networks(o, model: str, size: int) -> dict:
    """CycleGAN/pix2pix config fields (ngf, ndf, generator, n_blocks,
    num_downs, discriminator, n_layers_D, norm) from the options over the
    defaults, for ``size``-pixel images; ValueError naming the option when
    the network does not fit that size."""
    small = o.data is None
    out: dict = {"ngf": o.ngf or (32 if small else 64), "ndf": o.ndf or (32 if small else 64),
                 "norm": o.norm or ("instance" if model == "cyclegan" else "batch")}
    if o.netG is not None:
        kind, count = _net_g(o.netG)
    elif o.n_blocks is not None:
        kind, count = "resnet", o.n_blocks
    elif model == "cyclegan":   # the paper: 6 blocks for 128x128 images, 9 for 256x256
        kind, count = "resnet", 6 if small or size < 256 else 9
    else:                       # pix2pix: a U-Net as deep as the image (unet_256 at 256)
        kind, count = "unet", int(round(math.log2(size)))
        if 2 ** count != size or count < 5:
            flag = "--crop-size" if getattr(o, "crop_size", None) else "--image-size"
            raise ValueError(f"{flag} must be a power of two >= 32 for pix2pix's U-Net "
                             f"(it halves it num_downs times), got {size}")
    if kind == "resnet":
        out.update(generator="resnet", n_blocks=count)
        if size % 4:
            raise ValueError(f"--image-size must be divisible by 4 for a resnet generator "
                             f"(two stride-2 steps down and up), got {size}")
    else:
        out.update(generator="unet", num_downs=count)
        if size % 2 ** count:
            fits = [n for n in NET_G if n.startswith("unet") and size % int(n[5:]) == 0]
            raise ValueError(f"--netG {o.netG} needs --image-size divisible by {2 ** count}, "
                             f"got {size}" + (f": use --netG {fits[-1]}" if fits else ""))
    if o.netD == "pixel":
        out.update(discriminator="pixel")
    else:
        n = o.n_layers_d or (2 if small and model == "pix2pix" and o.netD is None else 3)
        out.update(discriminator="n_layers", n_layers_D=n)
        if _patch_side(size, n) < 1:
            raise ValueError(f"--netD: a PatchGAN of {n} layers needs images of at least "
                             f"{2 ** n * 3} px, got {size}: lower --n-layers-d or use "
                             "--netD pixel")
    return out

