"""The original GAN (Goodfellow et al. 2014, "Generative Adversarial Nets"):
MLP generator and discriminator, and Algorithm 1's alternating update, which
every family in :mod:`gan_ext.models` trains with (:func:`train_step`).

    gan = GAN(GANConfig())
    opt_g, opt_d = gan.make_optimizers()
    for real in loader:                       # (B, 1, 28, 28) in [-1, 1]
        stats = gan.train_step(real, opt_g, opt_d)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..nn import ActDropout, GANLoss
from ._common import apply_channels_last, check_int, make_adam

__all__ = ["TrainConfig", "GANConfig", "MLPGenerator", "MLPDiscriminator", "GAN", "train_step"]

Batches = Union[Tensor, Sequence[Tensor]]
LOSS_MODES = ("vanilla", "lsgan", "hinge")


# ------------------------------------------------------------------ checks
def check_ints(name: str, values, allow_empty: bool = False) -> Tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a tuple of ints, got {values!r}")
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_int(f"{name}[{i}]", v) for i, v in enumerate(values))


def check_latent(z, nz: int) -> Tensor:
    """z: (B, nz) or (B, nz, 1, 1) -> (B, nz)."""
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if not (z.dim() == 2 or (z.dim() == 4 and z.shape[2:] == (1, 1))) or z.size(1) != nz:
        raise ValueError(f"z must have shape (B, {nz}) or (B, {nz}, 1, 1) for nz={nz}, "
                         f"got {tuple(z.shape)}")
    return z.flatten(1)


def check_image(x, shape: Tuple[int, ...], name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        expected = ", ".join(map(str, shape))
        raise ValueError(f"{name} must have shape (B, {expected}), got {tuple(x.shape)}")


def _check_fraction(name: str, value, high_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not (0.0 <= value < 1.0 if high_open else 0.0 <= value):
        raise ValueError(f"{name} must lie in {'[0, 1)' if high_open else '[0, inf)'}, got {value}")
    return float(value)


# ----------------------------------------------------------------- configs
@dataclass(kw_only=True)
class TrainConfig:
    """How the two players are trained; every family's config extends it."""
    loss: str = "vanilla"          # GANLoss mode: "vanilla" (BCE) | "lsgan" | "hinge"
    minimax: bool = False          # G minimizes log(1 - D(G(z))) as in the paper, not -log D(G(z))
    k: int = 1                     # D updates per G update (Algorithm 1)
    real_label: float = 1.0        # 0.9: one-sided label smoothing
    lr: float = 2e-4               # Adam, as in DCGAN
    betas: Tuple[float, float] = (0.5, 0.999)

    def __post_init__(self) -> None:
        if self.loss not in LOSS_MODES:
            raise ValueError(f"loss must be one of {LOSS_MODES}, got {self.loss!r}")
        check_int("k", self.k)
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        for i, b in enumerate(self.betas):
            _check_fraction(f"betas[{i}]", b)
        self.make_loss()  # validates loss, minimax and real_label now, not at step 1

    def make_loss(self) -> GANLoss:
        return GANLoss(self.loss, real_label=self.real_label, minimax=self.minimax)


@dataclass
class GANConfig(TrainConfig):
    nz: int = 100
    img_shape: Tuple[int, ...] = (1, 28, 28)
    g_hidden: Tuple[int, ...] = (256, 512, 1024)
    d_hidden: Tuple[int, ...] = (1024, 512, 256)
    negative_slope: float = 0.2
    dropout: float = 0.3           # the paper trains D with dropout


# ------------------------------------------------------------------ models
class MLPGenerator(nn.Module):
    """z (B, nz) -> Linear -> LeakyReLU -> ... -> Linear -> tanh -> (B, *img_shape).

    ``fused`` is accepted for the same interface as the conv families: an MLP
    has no norm -> activation pair, so both builds are identical.
    """

    def __init__(self, nz: int = 100, img_shape: Sequence[int] = (1, 28, 28),
                 hidden: Sequence[int] = (256, 512, 1024), negative_slope: float = 0.2,
                 fused: bool = True) -> None:
        super().__init__()
        self.nz = check_int("nz", nz)
        self.img_shape = check_ints("img_shape", img_shape)
        negative_slope = _check_fraction("negative_slope", negative_slope, high_open=False)
        layers, width = [], self.nz
        for h in check_ints("hidden", hidden, allow_empty=True):
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope, inplace=True)]
            width = h
        layers += [nn.Linear(width, math.prod(self.img_shape)), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        z = check_latent(z, self.nz)                          # (B, nz)
        return self.main(z).view(z.size(0), *self.img_shape)  # (B, C, H, W)


class MLPDiscriminator(nn.Module):
    """x (B, *img_shape) -> flatten -> [Linear, LeakyReLU, Dropout] x n -> Linear
    -> logit (B, 1).

    With ``fused=True`` each LeakyReLU -> Dropout pair is one
    :class:`~gan_ext.nn.ActDropout` followed by ``nn.Identity()`` in the
    dropout's slot (what :func:`gan_ext.fuse` makes of the ``fused=False``
    build); neither holds parameters, so the state_dicts are the same.
    """

    def __init__(self, img_shape: Sequence[int] = (1, 28, 28),
                 hidden: Sequence[int] = (1024, 512, 256), negative_slope: float = 0.2,
                 dropout: float = 0.3, fused: bool = True) -> None:
        super().__init__()
        self.img_shape = check_ints("img_shape", img_shape)
        negative_slope = _check_fraction("negative_slope", negative_slope, high_open=False)
        dropout = _check_fraction("dropout", dropout)
        layers, width = [], math.prod(self.img_shape)
        for h in check_ints("hidden", hidden, allow_empty=True):
            if fused:
                act_drop = [ActDropout("leaky_relu", negative_slope, dropout), nn.Identity()]
            else:
                act_drop = [nn.LeakyReLU(negative_slope, inplace=True), nn.Dropout(dropout)]
            layers += [nn.Linear(width, h), *act_drop]
            width = h
        layers.append(nn.Linear(width, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.img_shape)
        return self.main(x.flatten(1))  # (B, 1) logit


# ------------------------------------------------------------ training step
def _per_step(value, name: str, k: Optional[int]) -> list:
    """A tensor (k = 1) or a sequence of k tensors -> a list of k tensors."""
    if isinstance(value, Tensor):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise TypeError(f"{name} must be a Tensor or a list of k Tensors, "
                        f"got {type(value).__name__}")
    if k is not None and len(items) != k:
        raise ValueError(f"{name}: k={k} discriminator updates need k={k} batches, one each; "
                         f"got {len(items)} (pass a list of k tensors)")
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return items


def train_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, real: Batches, loss: GANLoss, *,
               k: Optional[int] = None, labels: Optional[Batches] = None,
               sample_z: Optional[Callable[[int, torch.device], Tensor]] = None
               ) -> Dict[str, Tensor]:
    """One iteration of Algorithm 1: ``k`` discriminator updates, each on its own
    real batch, then one generator update.

    Args:
        real: the real images, one tensor (k = 1) or a list of k tensors.
        loss: the adversarial loss; ``GANLoss(minimax=True)`` is the paper's
            saturating ``log(1 - D(G(z)))`` for G, the default the
            non-saturating ``-log D(G(z))``.
        k: D updates per G update; ``None``: the number of real batches.
        labels: class labels for a class-conditional G and D (``G.num_classes``
            set): a (B,) integer tensor per real batch. Fake samples get labels
            drawn uniformly from ``range(G.num_classes)``.
        sample_z: ``sample_z(batch_size, device) -> z``; default N(0, I) of
            shape (B, G.nz) in the dtype of ``real``.

    The generator step reuses the last D step's fakes (as pytorch/examples
    dcgan does), scored by the updated D. D's parameters are frozen during
    it, so no gradient is computed for them and their ``.grad`` keeps the D
    step's.

    Returns detached scalars: ``d_loss`` (mean over the k D updates),
    ``g_loss``, and the mean D output on the last D update's real batch
    (``d_real``) and fakes (``d_fake``) and on the fakes in the G update
    (``d_gen``): probabilities sigmoid(logit) for the BCE losses, raw scores
    for lsgan/hinge.
    """
    if not isinstance(loss, GANLoss):
        raise TypeError(f"loss must be a gan_ext.nn.GANLoss, got {type(loss).__name__}")
    if k is not None:
        check_int("k", k)
    reals = _per_step(real, "real", k)
    k = check_int("k (the number of real batches)", len(reals))
    num_classes = getattr(G, "num_classes", None)
    if num_classes is not None and labels is None:
        raise ValueError(f"labels is required: G is class-conditional (num_classes={num_classes})")
    if num_classes is None and labels is not None:
        raise ValueError("labels were given but G is not class-conditional (no G.num_classes)")
    ys = _per_step(labels, "labels", k) if labels is not None else [None] * k
    if sample_z is None:
        nz = getattr(G, "nz", None)
        if nz is None:
            raise ValueError("G has no attribute nz: pass sample_z(batch_size, device)")
        dtype = reals[0].dtype

        def sample_z(n: int, device: torch.device) -> Tensor:
            return torch.randn(n, nz, device=device, dtype=dtype)

    cond = num_classes is not None

    def generate(n: int, device: torch.device):
        z = sample_z(n, device)                                              # (B, nz)
        if not cond:
            return G(z), None
        y = torch.randint(num_classes, (n,), device=device)                  # (B,)
        return G(z, y), y

    def score(x: Tensor, y: Optional[Tensor]) -> Tensor:
        return D(x, y) if cond else D(x)

    d_losses = []
    for i, (x, y) in enumerate(zip(reals, ys)):
        # Only the last fakes feed the G update: the others need no graph through G.
        with torch.set_grad_enabled(i == k - 1):
            fake, y_fake = generate(x.size(0), x.device)                     # (B, C, H, W)
        d_real, d_fake = score(x, y), score(fake.detach(), y_fake)
        loss_d = loss.d_loss(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d_losses.append(loss_d.detach())

    frozen = [p for p in D.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        d_gen = score(fake, y_fake)
        loss_g = loss.g_loss(d_gen)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)

    with torch.no_grad():
        prob = torch.sigmoid if loss.mode == "vanilla" else (lambda t: t)
        return {"d_loss": torch.stack(d_losses).mean(), "g_loss": loss_g.detach(),
                "d_real": prob(d_real.detach().float()).mean(),
                "d_fake": prob(d_fake.detach().float()).mean(),
                "d_gen": prob(d_gen.detach().float()).mean()}


# ----------------------------------------------------------------- wrapper
class GAN(nn.Module):
    """A generator ``G``, a discriminator ``D``, their ``loss`` and ``config``:
    what a trainer needs. ``gan(z)`` samples. Other families (DCGAN,
    ConditionalGAN) override ``config_class`` and :meth:`build` only."""

    config_class = GANConfig

    def __init__(self, config: Optional[TrainConfig] = None, *, fused: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        super().__init__()
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config
        self.G, self.D = self.build(config, fused)
        self.loss = config.make_loss()
        self.fused = bool(fused)
        self.channels_last = apply_channels_last(self, channels_last, fused)

    def build(self, c: GANConfig, fused: bool) -> Tuple[nn.Module, nn.Module]:
        return (MLPGenerator(c.nz, c.img_shape, c.g_hidden, c.negative_slope, fused=fused),
                MLPDiscriminator(c.img_shape, c.d_hidden, c.negative_slope, c.dropout,
                                 fused=fused))

    def make_optimizers(self) -> Tuple[torch.optim.Adam, torch.optim.Adam]:
        c = self.config
        return (make_adam(self.G.parameters(), lr=c.lr, betas=c.betas, fused=self.fused),
                make_adam(self.D.parameters(), lr=c.lr, betas=c.betas, fused=self.fused))

    def train_step(self, real: Batches, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer, labels: Optional[Batches] = None
                   ) -> Dict[str, Tensor]:
        """:func:`train_step` with ``k = config.k`` (``real``: a list of k batches when k > 1)."""
        return train_step(self.G, self.D, opt_g, opt_d, real, self.loss, k=self.config.k,
                          labels=labels)

    def forward(self, z: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        return self.G(z) if labels is None else self.G(z, labels)
