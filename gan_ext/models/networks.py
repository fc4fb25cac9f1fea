"""The networks of the official junyanz/pytorch-CycleGAN-and-pix2pix
(``models/networks.py`` there), with its exact module indices and state_dict
keys, so its published checkpoints load strictly (see
:mod:`gan_ext.models.official`): the ResNet generator of CycleGAN, the U-Net
generator of pix2pix and the PatchGAN discriminator of both.

Every norm -> activation pair of the official networks is one fused layer
(:class:`~gan_ext.nn.InstanceNormAct2d` / :class:`~gan_ext.nn.BatchNormAct2d`
carrying the activation) followed by ``nn.Identity()`` where the activation was,
so module indices and state_dict keys are the official ones. ``fused=False``
builds the plain-nn network; ``gan_ext.fuse`` turns it into the fused one.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..nn import BatchNormAct2d, InstanceNormAct2d
from ._checks import check_bool, check_choice, check_images, check_int
from .official import OfficialCheckpoint

__all__ = ["NORMS", "PADDING_TYPES", "GENERATORS", "DISCRIMINATORS", "use_bias", "plain_norm",
           "norm_act", "ResnetBlock", "ResnetGenerator", "NLayerDiscriminator",
           "PixelDiscriminator", "UnetSkipConnectionBlock", "UnetGenerator", "build_generator",
           "build_discriminator"]

NORMS = ("batch", "instance", "none")
PADDING_TYPES = ("reflect", "replicate", "zero")
# The kinds of network a CycleGAN/pix2pix config names (the official netG
# resnet_Nblocks / unet_N and netD basic / n_layers / pixel, by family).
GENERATORS = ("resnet", "unet")
DISCRIMINATORS = ("n_layers", "pixel")


# ------------------------------------------------------------ norm layers
def use_bias(norm: str) -> bool:
    """Whether convs feeding a norm have a bias. Official rule
    ``use_bias = norm_layer == nn.InstanceNorm2d``: batch norm's shift makes the
    bias redundant; the official code also leaves it out for ``norm='none'``,
    and we keep that so its checkpoints load."""
    return norm == "instance"


def plain_norm(norm: str, num_features: int) -> nn.Module:
    """The official ``norm_layer(num_features)``."""
    if norm == "batch":
        return nn.BatchNorm2d(num_features, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
    return nn.Identity()


def norm_act(norm: str, num_features: int, activation: str, fused: bool) -> list[nn.Module]:
    """``[norm, activation]`` as two modules. Fused: the norm carries the
    activation and an ``nn.Identity()`` holds the activation's index.
    ``activation`` is ``"relu"`` or ``"leaky_relu"`` (slope 0.2, as in the paper)."""
    if fused and norm != "none":
        cls, kw = ((BatchNormAct2d, dict(affine=True, track_running_stats=True)) if norm == "batch"
                   else (InstanceNormAct2d, dict(affine=False, track_running_stats=False)))
        return [cls(num_features, activation=activation, negative_slope=0.2, **kw), nn.Identity()]
    act = nn.ReLU(True) if activation == "relu" else nn.LeakyReLU(0.2, True)
    return [plain_norm(norm, num_features), act]



# ---------------------------------------------------------------- generator
class ResnetBlock(nn.Module):
    """Two 3x3 convs with a skip: ``x + conv_block(x)``. ``conv_block`` indices are
    the official ones: pad, conv, norm, relu, [dropout], pad, conv, norm."""

    def __init__(self, dim: int, padding_type: str = "reflect", norm: str = "instance",
                 use_dropout: bool = False, fused: bool = True) -> None:
        super().__init__()
        bias = use_bias(norm)

        def pad_conv() -> list[nn.Module]:
            if padding_type == "zero":
                return [nn.Conv2d(dim, dim, 3, padding=1, bias=bias)]
            pad = nn.ReflectionPad2d(1) if padding_type == "reflect" else nn.ReplicationPad2d(1)
            return [pad, nn.Conv2d(dim, dim, 3, bias=bias)]

        layers = pad_conv() + norm_act(norm, dim, "relu", fused)
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += pad_conv() + [plain_norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)  # (B, dim, H, W)


class ResnetGenerator(OfficialCheckpoint):
    """The CycleGAN generator (Johnson et al. 2016): c7s1-ngf, two stride-2
    downsamplings, ``n_blocks`` residual blocks, two stride-2 upsamplings,
    c7s1-output_nc, tanh. ``n_blocks=9`` is the official ``resnet_9blocks``
    (256x256 images), 6 is ``resnet_6blocks``.

    ``norm``: ``"instance"`` (the paper), ``"batch"`` or ``"none"``. ``fused=False``
    builds the plain-nn network (``gan_ext.fuse`` of it is this one). Weights keep
    torch's default init; :class:`~gan_ext.models.CycleGAN` applies the paper's N(0, 0.02).
    ``load_state_dict`` accepts pre-0.4 official checkpoints (extra InstanceNorm
    running statistics are dropped; any other unexpected key still fails).

    Shape: (B, input_nc, H, W) -> (B, output_nc, H, W) for H, W divisible by 4.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", use_dropout: bool = False, padding_type: str = "reflect",
                 fused: bool = True) -> None:
        super().__init__()
        for name, v in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf)):
            check_int(name, v, 1)
        check_int("n_blocks", n_blocks, 0)
        check_choice("norm", norm, NORMS)
        check_choice("padding_type", padding_type, PADDING_TYPES)
        check_bool("use_dropout", use_dropout)
        check_bool("fused", fused)
        self.input_nc, self.output_nc = input_nc, output_nc
        bias = use_bias(norm)

        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias),
                  *norm_act(norm, ngf, "relu", fused)]                   # (B, ngf, H, W)
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       *norm_act(norm, ngf * mult * 2, "relu", fused)]   # (B, 4ngf, H/4, W/4)
        layers += [ResnetBlock(ngf * 4, padding_type, norm, use_dropout, fused)
                   for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       *norm_act(norm, ngf * mult // 2, "relu", fused)]  # (B, ngf, H, W)
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, (self.input_nc, "H", "W"), name="input", who=type(self).__name__)
        return self.model(x)  # (B, output_nc, H, W) in [-1, 1]


# ------------------------------------------------------------ discriminator
class NLayerDiscriminator(OfficialCheckpoint):
    """The PatchGAN discriminator: ``n_layers=3`` is the 70x70 PatchGAN of
    CycleGAN and pix2pix (``input_nc=6`` there: input and output concatenated).
    Returns logits, one per overlapping patch: (B, input_nc, 256, 256) ->
    (B, 1, 30, 30). ``norm``: ``"instance"``, ``"batch"`` or ``"none"``. Loads
    official checkpoints as :class:`ResnetGenerator` does."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3,
                 norm: str = "instance", fused: bool = True) -> None:
        super().__init__()
        check_int("input_nc", input_nc, 1)
        check_int("ndf", ndf, 1)
        check_int("n_layers", n_layers, 0)
        check_choice("norm", norm, NORMS)
        check_bool("fused", fused)
        self.input_nc = input_nc
        bias = use_bias(norm)

        # No norm on the first layer, so its LeakyReLU stays a plain module.
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1),
                  nn.LeakyReLU(0.2, True)]                            # (B, ndf, H/2, W/2)
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last one keeps the resolution
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                       *norm_act(norm, ndf * mult, "leaky_relu", fused)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]  # (B, 1, H', W')
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, (self.input_nc, "H", "W"), name="input", who=type(self).__name__)
        return self.model(x)  # (B, 1, H', W') logits



class PixelDiscriminator(OfficialCheckpoint):
    """The official 1x1 PatchGAN (``netD pixel``): every pixel judged on its own
    from its channels, (B, input_nc, H, W) -> logits (B, 1, H, W). Official
    keys ``net.0`` ... ``net.5``; as there, the convs after the first have a bias
    only with instance norm (the last one too)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance",
                 fused: bool = True) -> None:
        super().__init__()
        check_int("input_nc", input_nc, 1)
        check_int("ndf", ndf, 1)
        check_choice("norm", norm, NORMS)
        check_bool("fused", fused)
        self.input_nc = input_nc
        bias = use_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1), nn.LeakyReLU(0.2, True),          # (B, ndf, H, W)
            nn.Conv2d(ndf, ndf * 2, 1, bias=bias),                         # (B, 2ndf, H, W)
            *norm_act(norm, ndf * 2, "leaky_relu", fused),
            nn.Conv2d(ndf * 2, 1, 1, bias=bias))                           # (B, 1, H, W)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, (self.input_nc, "H", "W"), name="input", who=type(self).__name__)
        return self.net(x)


# ------------------------------------------------------------------- U-Net
class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: ``x -> [down, submodule, up] -> cat(x, up)``.

    ``model`` indices are the official ones. Non-outermost blocks start with
    ``LeakyReLU(0.2, inplace=True)``, which (official quirk) overwrites the
    parent's down-norm output before the skip concatenation, so the skip
    carries ``lrelu(norm(conv(x)))``. With ``fused=True`` the parent's down-norm
    therefore carries that LeakyReLU and the child's slot 0 is ``nn.Identity()``
    (``input_activated=True``, set by :class:`UnetGenerator` when ``fused``):
    same outputs, one pass fewer, no in-place write.
    ``gan_ext.fuse`` cannot do this on a plain U-Net (the pair spans two
    Sequentials), so the U-Net does it itself.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: Optional[int] = None,
                 submodule: Optional["UnetSkipConnectionBlock"] = None, outermost: bool = False,
                 innermost: bool = False, norm: str = "batch", use_dropout: bool = False,
                 input_activated: bool = False) -> None:
        super().__init__()
        if (submodule is None) != innermost:
            raise ValueError("a UnetSkipConnectionBlock needs a submodule unless innermost=True")
        if input_activated and outermost:
            raise ValueError("the outermost block's input is the image: input_activated must "
                             "be False")
        check_choice("norm", norm, NORMS)
        if submodule is not None and submodule.input_activated and norm == "none":
            raise ValueError("the submodule expects its input activated by our down-norm "
                             "(input_activated=True), but norm='none' has no norm to carry it")
        self.outermost = outermost
        self.input_activated = input_activated
        input_nc = outer_nc if input_nc is None else input_nc
        bias = use_bias(norm)
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=bias)
        downrelu = nn.Identity() if input_activated else nn.LeakyReLU(0.2, True)

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, nn.ReLU(True), upconv, plain_norm(norm, outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=bias)
            if submodule.input_activated:  # the child expects lrelu(norm(.)) from us
                downnorm = norm_act(norm, inner_nc, "leaky_relu", fused=True)[0]
            else:
                downnorm = plain_norm(norm, inner_nc)
            layers = [downrelu, downconv, downnorm, submodule,
                      nn.ReLU(True), upconv, plain_norm(norm, outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        # Evaluated left to right: in the plain net, model(x) has already
        # applied its LeakyReLU to x in place when cat reads x.
        return torch.cat([x, self.model(x)], 1)  # (B, C_x + outer_nc, H, W)


class UnetGenerator(OfficialCheckpoint):
    """The pix2pix generator: ``num_downs`` stride-2 levels with skips, so H and W
    must be divisible by ``2 ** num_downs`` (``num_downs=8``: ``unet_256``, 7:
    ``unet_128``). Channels ngf, 2ngf, 4ngf, then 8ngf for the remaining levels;
    Dropout(0.5) in the ``num_downs - 5`` innermost 8ngf levels when
    ``use_dropout`` (pix2pix's noise source). ``norm``: ``"batch"`` (the paper),
    ``"instance"`` or ``"none"``. Torch's default init; :class:`~gan_ext.models.Pix2Pix` applies
    N(0, 0.02). Loads official checkpoints strictly, as ``ResnetGenerator`` does.

    Shape: (B, input_nc, H, W) -> (B, output_nc, H, W) in [-1, 1].
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = True, fused: bool = True) -> None:
        super().__init__()
        for name, v in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf)):
            check_int(name, v, 1)
        check_int("num_downs", num_downs, 5)  # the 4 outer levels + the innermost one
        check_choice("norm", norm, NORMS)
        check_bool("use_dropout", use_dropout)
        check_bool("fused", fused)
        self.input_nc, self.num_downs = input_nc, num_downs
        act_in = fused and norm != "none"  # every level below the second gets lrelu(norm) fused
        kw = dict(norm=norm)
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, input_activated=act_in,
                                        **kw)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block,
                                            use_dropout=use_dropout, input_activated=act_in, **kw)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, input_activated=act_in,
                                        **kw)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, input_activated=act_in,
                                        **kw)
        # Its input is the outermost conv's output, with no norm to fuse into.
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                             outermost=True, **kw)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, (self.input_nc, "H", "W"), name="input", who=type(self).__name__)
        k = 2 ** self.num_downs
        if x.size(2) % k or x.size(3) % k:
            raise ValueError(f"UnetGenerator: height and width must be divisible by 2**num_downs"
                             f" = {k}, got {tuple(x.shape[2:])}")
        return self.model(x)  # (B, output_nc, H, W)


# ----------------------------------------------------------------- builders
def build_generator(kind: str, input_nc: int, output_nc: int, ngf: int, n_blocks: int,
                    num_downs: int, norm: str, use_dropout: bool, fused: bool) -> nn.Module:
    """The official ``define_G`` by family: ``"resnet"`` (``n_blocks``) or
    ``"unet"`` (``num_downs``; the other count is unused)."""
    check_choice("generator", kind, GENERATORS)
    if kind == "resnet":
        return ResnetGenerator(input_nc, output_nc, ngf, n_blocks, norm, use_dropout, fused=fused)
    return UnetGenerator(input_nc, output_nc, num_downs, ngf, norm, use_dropout, fused)


def build_discriminator(kind: str, input_nc: int, ndf: int, n_layers: int, norm: str,
                        fused: bool) -> nn.Module:
    """The official ``define_D``: ``"n_layers"`` (``basic`` is n_layers=3) or ``"pixel"``."""
    check_choice("discriminator", kind, DISCRIMINATORS)
    if kind == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm, fused)
    return NLayerDiscriminator(input_nc, ndf, n_layers, norm, fused)
