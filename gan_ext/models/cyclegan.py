"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks"), state_dict-compatible with the official
junyanz/pytorch-CycleGAN-and-pix2pix: its published ``latest_net_G.pth`` files
load strictly into :class:`ResnetGenerator`.

Every norm -> activation pair of the official networks is one fused layer
(:class:`~gan_ext.nn.InstanceNormAct2d` / :class:`~gan_ext.nn.BatchNormAct2d`
carrying the activation) followed by ``nn.Identity()`` where the activation was,
so module indices and state_dict keys are the official ones. ``fused=False``
builds the plain-nn network; ``gan_ext.fuse`` turns it into the fused one.

    G = ResnetGenerator()                       # resnet_9blocks, instance norm
    load_official_state_dict(G, "latest_net_G.pth")
    model = CycleGAN(CycleGANConfig())
    opt_G, opt_D = model.make_optimizers()
    losses = model.train_step(real_A, real_B, opt_G, opt_D)
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .. import ops
from ..nn import BatchNormAct2d, GANLoss, InstanceNormAct2d
from ._common import apply_channels_last, check_int, init_normal_, make_adam

__all__ = ["ResnetBlock", "ResnetGenerator", "NLayerDiscriminator", "ImagePool", "LinearDecay",
           "CycleGANConfig", "CycleGAN", "load_official_state_dict"]

NORMS = ("batch", "instance", "none")
PADDING_TYPES = ("reflect", "replicate", "zero")


# ------------------------------------------------------------------ checks
def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def _check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_real(name: str, value, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    if not value >= minimum:  # also rejects NaN
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return float(value)


def _check_images(x, channels: int, who: str, name: str = "input") -> None:
    """A (B, channels, H, W) tensor, checked up front: a conv would only say
    'expected input[...] to have 3 channels' deep inside the network."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.size(1) != channels:
        raise ValueError(f"{who}: {name} must have shape (B, {channels}, H, W), "
                         f"got {tuple(x.shape)}")


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


# ----------------------------------------------------- official checkpoints
def _drop_untracked_instance_norm_stats(module: nn.Module, state_dict: dict, prefix: str,
                                        *args) -> None:
    """load_state_dict pre-hook: checkpoints saved with torch < 0.4 carry
    ``running_mean`` / ``running_var`` / ``num_batches_tracked`` for every
    InstanceNorm, which since 0.4 tracks no statistics by default. Drop exactly
    those keys, for exactly those modules (the official
    ``__patch_instance_norm_state_dict``); any other unexpected key still fails
    a strict load."""
    for name, m in module.named_modules():
        if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats:
            base = f"{prefix}{name}." if name else prefix
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                state_dict.pop(base + key, None)


class _OfficialCheckpoint(nn.Module):
    """Base of the networks: strict ``load_state_dict`` accepts the official
    checkpoints, including pre-0.4 ones with InstanceNorm running statistics
    (see :func:`_drop_untracked_instance_norm_stats`)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_pre_hook(_drop_untracked_instance_norm_stats)


def load_official_state_dict(module: nn.Module, path_or_state_dict, strict: bool = True,
                             map_location="cpu"):
    """Loads an official pytorch-CycleGAN-and-pix2pix checkpoint
    (``latest_net_G.pth``, ``latest_net_D_A.pth``, a path or an already loaded
    dict) into ``module``, the way the official ``load_networks`` does: the
    ``_metadata`` of the file is dropped, a ``module.`` prefix left by
    ``nn.DataParallel`` is stripped, and the InstanceNorm running statistics of
    pre-0.4 checkpoints are ignored (the networks' load hook). Returns
    ``load_state_dict``'s result; a strict load still fails on any other
    mismatch."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        state_dict = torch.load(path_or_state_dict, map_location=map_location, weights_only=True)
    else:
        state_dict = path_or_state_dict
    if not isinstance(state_dict, dict):
        raise TypeError("path_or_state_dict must be a path or a state_dict (a dict of tensors), "
                        f"got {type(state_dict).__name__}")
    # A fresh dict has no _metadata: versions then read as "old", which is what
    # the official loader relies on (e.g. BatchNorm fills in num_batches_tracked).
    keys = list(state_dict)
    strip = bool(keys) and all(k.startswith("module.") for k in keys)
    state_dict = {(k[len("module."):] if strip else k): v for k, v in state_dict.items()}
    if not isinstance(module, _OfficialCheckpoint):
        _drop_untracked_instance_norm_stats(module, state_dict, "")
    return module.load_state_dict(state_dict, strict=strict)


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


class ResnetGenerator(_OfficialCheckpoint):
    """The CycleGAN generator (Johnson et al. 2016): c7s1-ngf, two stride-2
    downsamplings, ``n_blocks`` residual blocks, two stride-2 upsamplings,
    c7s1-output_nc, tanh. ``n_blocks=9`` is the official ``resnet_9blocks``
    (256x256 images), 6 is ``resnet_6blocks``.

    ``norm``: ``"instance"`` (the paper), ``"batch"`` or ``"none"``. ``fused=False``
    builds the plain-nn network (``gan_ext.fuse`` of it is this one). Weights keep
    torch's default init; :class:`CycleGAN` applies the paper's N(0, 0.02).
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
        _check_choice("norm", norm, NORMS)
        _check_choice("padding_type", padding_type, PADDING_TYPES)
        _check_bool("use_dropout", use_dropout)
        _check_bool("fused", fused)
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
        _check_images(x, self.input_nc, type(self).__name__)
        return self.model(x)  # (B, output_nc, H, W) in [-1, 1]


# ------------------------------------------------------------ discriminator
class NLayerDiscriminator(_OfficialCheckpoint):
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
        _check_choice("norm", norm, NORMS)
        _check_bool("fused", fused)
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
        _check_images(x, self.input_nc, type(self).__name__)
        return self.model(x)  # (B, 1, H', W') logits


# ---------------------------------------------------------------- image pool
class ImagePool:
    """The history of generated images (Shrivastava et al. 2017) that CycleGAN's
    discriminators see instead of only the latest fakes.

    ``query(images)``, per image of the batch: while the pool holds fewer than
    ``pool_size`` images, store it and return it; once full, with probability
    0.5 return a random stored image and store the new one in its place,
    otherwise return the new image. ``pool_size=0`` returns the input as is;
    otherwise the result is detached. Randomness comes from ``generator`` or
    torch's default generator, so ``torch.manual_seed`` reproduces it.
    ``state_dict()`` / ``load_state_dict()`` save and restore the stored images
    (and the state of ``generator``, if one was given) with a training checkpoint.
    """

    def __init__(self, pool_size: int = 50, generator: Optional[torch.Generator] = None) -> None:
        self.pool_size = check_int("pool_size", pool_size, 0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, "
                            f"got {type(generator).__name__}")
        self.generator = generator
        self.images: list[Tensor] = []  # each (C, H, W), detached

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"ImagePool.query: images must be a torch.Tensor, "
                            f"got {type(images).__name__}")
        if self.pool_size == 0:
            return images
        if images.dim() < 2:
            raise ValueError(f"ImagePool.query: images must be a batch (B, C, H, W), "
                             f"got shape {tuple(images.shape)}")
        if self.images and self.images[0].shape != images.shape[1:]:
            raise ValueError(f"ImagePool.query: the pool holds images of shape "
                             f"{tuple(self.images[0].shape)}, got a batch of "
                             f"{tuple(images.shape[1:])}")
        images = images.detach()  # (B, C, H, W)
        n_store = min(images.size(0), self.pool_size - len(self.images))
        # Clones, so the pool does not keep whole batches alive or see later
        # in-place changes to them.
        self.images += [img.clone() for img in images[:n_store]]
        n_rest = images.size(0) - n_store
        if n_rest == 0:
            return images
        device = self.generator.device if self.generator is not None else "cpu"
        swap = torch.rand(n_rest, generator=self.generator, device=device) > 0.5
        slot = torch.randint(self.pool_size, (n_rest,), generator=self.generator, device=device)
        out = None
        for i, (s, k) in enumerate(zip(swap.tolist(), slot.tolist()), start=n_store):
            if s:
                out = images.clone() if out is None else out
                old, self.images[k] = self.images[k], images[i].clone()
                out[i] = old
        return images if out is None else out

    def state_dict(self) -> dict:
        state = {"pool_size": self.pool_size, "images": list(self.images)}
        if self.generator is not None:
            state["generator_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or "images" not in state_dict:
            raise TypeError("ImagePool.load_state_dict: expected the dict of "
                            "ImagePool.state_dict() (with 'pool_size' and 'images')")
        if state_dict.get("pool_size") != self.pool_size:
            raise ValueError(f"ImagePool.load_state_dict: the state has pool_size="
                             f"{state_dict.get('pool_size')}, this pool has {self.pool_size}")
        images = list(state_dict["images"])
        if len(images) > self.pool_size or not all(isinstance(t, Tensor) for t in images):
            raise ValueError(f"ImagePool.load_state_dict: 'images' must be at most "
                             f"{self.pool_size} tensors")
        self.images = [t.detach().clone() for t in images]
        if self.generator is not None and "generator_state" in state_dict:
            self.generator.set_state(state_dict["generator_state"])


# ------------------------------------------------------------------ training
@dataclass
class LinearDecay:
    """The official ``lr_policy='linear'`` multiplier for ``LambdaLR``: 1 for the
    first ``n_epochs``, then linearly to 0 over ``n_epochs_decay``
    (``epoch_count``: the epoch training starts at, 1 for a fresh run). A class,
    not a lambda, so ``LambdaLR.state_dict()`` saves it."""
    n_epochs: int = 100
    n_epochs_decay: int = 100
    epoch_count: int = 1

    def __call__(self, epoch: int) -> float:
        decayed = max(0, epoch + self.epoch_count - self.n_epochs)
        return 1.0 - decayed / float(self.n_epochs_decay + 1)


def make_linear_decay_schedulers(config, *optimizers):
    rule = LinearDecay(config.n_epochs, config.n_epochs_decay, config.epoch_count)
    return tuple(torch.optim.lr_scheduler.LambdaLR(opt, rule) for opt in optimizers)


def set_requires_grad(requires_grad: bool, *nets: nn.Module) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(requires_grad)


def _check_schedule(cfg) -> None:
    _check_real("lr", cfg.lr)
    _check_real("beta1", cfg.beta1)
    if not cfg.beta1 < 1:
        raise ValueError(f"beta1 must be in [0, 1), got {cfg.beta1}")
    check_int("n_epochs", cfg.n_epochs, 0)
    check_int("n_epochs_decay", cfg.n_epochs_decay, 0)
    check_int("epoch_count", cfg.epoch_count, 1)


@dataclass
class CycleGANConfig:
    """The official ``train.py --model cycle_gan`` defaults."""
    input_nc: int = 3          # channels of domain A
    output_nc: int = 3         # channels of domain B
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9          # resnet_9blocks; 6 for 128x128 images
    n_layers_D: int = 3        # 70x70 PatchGAN
    norm: str = "instance"
    use_dropout: bool = False
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0     # cycle loss A -> B -> A
    lambda_B: float = 10.0     # cycle loss B -> A -> B
    lambda_identity: float = 0.5  # identity loss weight, relative to lambda_A / lambda_B
    pool_size: int = 50
    lr: float = 2e-4
    beta1: float = 0.5
    n_epochs: int = 100        # epochs at the initial lr
    n_epochs_decay: int = 100  # epochs of linear decay to 0
    epoch_count: int = 1
    init_std: float = 0.02


class CycleGAN(nn.Module):
    """G_A: A -> B, G_B: B -> A, D_A judges domain B, D_B judges domain A, with
    one image pool of fakes per discriminator. The state_dict holds the four
    networks under ``G_A.``, ``G_B.``, ``D_A.``, ``D_B.`` (the official files
    ``latest_net_G_A.pth`` ... are the per-network state_dicts); save the pools
    with ``fake_A_pool.state_dict()`` / ``fake_B_pool.state_dict()``.
    ``channels_last=None``: channels_last weights for the fused build (see
    ``models._common.apply_channels_last``)."""

    def __init__(self, config: Optional[CycleGANConfig] = None, fused: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        super().__init__()
        cfg = CycleGANConfig() if config is None else config
        if not isinstance(cfg, CycleGANConfig):
            raise TypeError(f"config must be a CycleGANConfig, got {type(cfg).__name__}")
        _check_real("init_std", cfg.init_std)
        _check_schedule(cfg)
        self.config = cfg
        self._check_loss_config()
        self.G_A = ResnetGenerator(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.n_blocks, cfg.norm,
                                   cfg.use_dropout, fused=fused)
        self.G_B = ResnetGenerator(cfg.output_nc, cfg.input_nc, cfg.ngf, cfg.n_blocks, cfg.norm,
                                   cfg.use_dropout, fused=fused)
        self.D_A = NLayerDiscriminator(cfg.output_nc, cfg.ndf, cfg.n_layers_D, cfg.norm, fused)
        self.D_B = NLayerDiscriminator(cfg.input_nc, cfg.ndf, cfg.n_layers_D, cfg.norm, fused)
        for net in (self.G_A, self.G_B, self.D_A, self.D_B):
            init_normal_(net, cfg.init_std)
        self.fake_A_pool = ImagePool(cfg.pool_size)  # fakes of domain A, for D_B
        self.fake_B_pool = ImagePool(cfg.pool_size)  # fakes of domain B, for D_A
        self.gan_loss = GANLoss(cfg.gan_mode)
        self.fused = fused
        self.channels_last = apply_channels_last(self, channels_last, fused)

    def _check_loss_config(self) -> None:
        # Also run per step: the config is a plain dataclass a user may edit.
        cfg = self.config
        for name in ("lambda_A", "lambda_B", "lambda_identity"):
            _check_real(name, getattr(cfg, name))
        if cfg.lambda_identity > 0 and cfg.input_nc != cfg.output_nc:
            raise ValueError("the identity loss needs input_nc == output_nc (G_A(real_B) is "
                             f"compared with real_B); got {cfg.input_nc} and {cfg.output_nc}: "
                             "set lambda_identity=0")

    def forward(self, real_A: Tensor, real_B: Tensor):
        """(fake_B, rec_A, fake_A, rec_B), each (B, C, H, W)."""
        fake_B = self.G_A(real_A)  # G_A(A)
        rec_A = self.G_B(fake_B)   # G_B(G_A(A))
        fake_A = self.G_B(real_B)  # G_B(B)
        rec_B = self.G_A(fake_A)   # G_A(G_B(B))
        return fake_B, rec_A, fake_A, rec_B

    def make_optimizers(self):
        """(opt_G, opt_D): Adam over both generators and over both discriminators."""
        cfg = self.config
        betas = (cfg.beta1, 0.999)
        opt_G = make_adam(itertools.chain(self.G_A.parameters(), self.G_B.parameters()),
                          lr=cfg.lr, betas=betas, fused=self.fused)
        opt_D = make_adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()),
                          lr=cfg.lr, betas=betas, fused=self.fused)
        return opt_G, opt_D

    def make_schedulers(self, opt_G, opt_D):
        """``LambdaLR`` with :class:`LinearDecay`; call ``.step()`` once per epoch."""
        return make_linear_decay_schedulers(self.config, opt_G, opt_D)

    def _backward_D(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        # The official 0.5 slows D down relative to G.
        loss = 0.5 * self.gan_loss.d_loss(D(real), D(fake.detach()))
        loss.backward()
        return loss.detach()

    def train_step(self, real_A: Tensor, real_B: Tensor, opt_G, opt_D) -> dict[str, Tensor]:
        """One official ``optimize_parameters``: generators first (the
        discriminators frozen), then both discriminators on pooled fakes.
        Returns the detached scalar losses D_A, G_A, cycle_A, idt_A, D_B, G_B,
        cycle_B, idt_B (already weighted by the lambdas)."""
        cfg = self.config
        self._check_loss_config()
        _check_images(real_A, cfg.input_nc, "CycleGAN.train_step", "real_A")
        _check_images(real_B, cfg.output_nc, "CycleGAN.train_step", "real_B")
        fake_B, rec_A, fake_A, rec_B = self(real_A, real_B)

        # Generators. D's parameters need no gradients from the G loss.
        set_requires_grad(False, self.D_A, self.D_B)
        try:
            opt_G.zero_grad(set_to_none=True)
            # idt_A = G_A(B) is compared with B, so it is weighted by lambda_B.
            w_idt_A = cfg.lambda_B * cfg.lambda_identity
            w_idt_B = cfg.lambda_A * cfg.lambda_identity
            loss_G = ops.cycle_l1_loss(rec_A, real_A, rec_B, real_B, cfg.lambda_A, cfg.lambda_B)
            if cfg.lambda_identity > 0:
                idt_A = self.G_A(real_B)  # G_A should leave images of its target domain alone
                idt_B = self.G_B(real_A)
                loss_G = loss_G + ops.cycle_l1_loss(idt_A, real_B, idt_B, real_A, w_idt_A, w_idt_B)
            loss_G_A = self.gan_loss.g_loss(self.D_A(fake_B))
            loss_G_B = self.gan_loss.g_loss(self.D_B(fake_A))
            (loss_G + loss_G_A + loss_G_B).backward()
            opt_G.step()
        finally:
            set_requires_grad(True, self.D_A, self.D_B)

        # Discriminators, on a history of fakes.
        opt_D.zero_grad(set_to_none=True)
        loss_D_A = self._backward_D(self.D_A, real_B, self.fake_B_pool.query(fake_B))
        loss_D_B = self._backward_D(self.D_B, real_A, self.fake_A_pool.query(fake_A))
        opt_D.step()

        # The per-direction terms, for logging only: the losses above were fused.
        with torch.no_grad():
            zero = real_A.new_zeros(())
            idt_on = cfg.lambda_identity > 0
            return {
                "D_A": loss_D_A, "G_A": loss_G_A.detach(),
                "cycle_A": ops.l1_loss(rec_A.detach(), real_A) * cfg.lambda_A,
                "idt_A": ops.l1_loss(idt_A.detach(), real_B) * w_idt_A if idt_on else zero,
                "D_B": loss_D_B, "G_B": loss_G_B.detach(),
                "cycle_B": ops.l1_loss(rec_B.detach(), real_B) * cfg.lambda_B,
                "idt_B": ops.l1_loss(idt_B.detach(), real_A) * w_idt_B if idt_on else zero,
            }
