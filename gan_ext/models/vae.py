"""Variational autoencoders (Kingma & Welling 2014), MLP and convolutional.

:class:`VAE` is the MLP of PyTorch's examples (``vae/main.py``) with the same
layer names, so its checkpoints load strictly::

    encoder  h = relu(fc1(x))            fc1:  784 -> 400
             mu, logvar = fc21(h), fc22(h)   fc21, fc22: 400 -> 20
    sample   z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)
    decoder  logits = fc4(relu(fc3(z)))   fc3: 20 -> 400, fc4: 400 -> 784

The decoder returns logits, not probabilities: the reconstruction term is the
fused ``bce_with_logits(logits, x, "sum")``, equal to the examples'
``binary_cross_entropy(sigmoid(logits), x, reduction="sum")`` but finite for
any logit. The sample and the KL term come from one fused op
(``reparameterize_kl``), which draws eps from torch's generator.

    loss = BCE_sum + beta * KL_sum,  KL = -1/2 * sum(1 + logvar - mu^2 - exp(logvar))

``beta != 1`` is the beta-VAE (Higgins et al. 2017). :class:`ConvVAE` swaps
the MLPs for stride-2 conv / transposed-conv blocks with fused batch norm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..nn import Conv2dNormAct, ConvTranspose2dNormAct
from ._checks import (UNIT_IMAGES, check_choice, check_code, check_images, check_int,
                      check_real)
from ._common import apply_channels_last, make_adam

__all__ = ["VAEConfig", "VAEOutput", "VAE", "ConvVAE", "build_vae"]

KINDS = ("mlp", "conv")
# Image size -> number of stride-2 stages of ConvVAE (28 -> 7x7; 32, 64 -> 4x4).
CONV_STAGES = {28: 2, 32: 3, 64: 4}
# VAEConfig.for_arch: the settings of each kind that the trainer builds.
ARCHS = {"mlp": {}, "conv": dict(latent_dim=32, stage_convs=1)}


@dataclass
class VAEConfig:
    latent_dim: int = 20
    hidden: int = 400          # MLP hidden width (kind="mlp")
    beta: float = 1.0          # weight of the KL term; 1 is the ELBO
    lr: float = 1e-3
    kind: str = "mlp"          # "mlp" | "conv"
    in_channels: int = 1
    image_size: int = 28       # kind="conv": 28, 32 or 64
    base_channels: int = 32    # kind="conv": width of the first conv, doubled per stage
    stage_convs: int = 0       # kind="conv": extra 3x3 conv blocks per stage, each side

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int("latent_dim", self.latent_dim)
        check_int("hidden", self.hidden)
        check_real("beta", self.beta, 0.0)
        check_real("lr", self.lr, 0.0, low_open=True)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        check_int("in_channels", self.in_channels)
        check_int("image_size", self.image_size)
        check_int("base_channels", self.base_channels)
        check_int("stage_convs", self.stage_convs, 0)
        if self.kind == "conv" and self.image_size not in CONV_STAGES:
            raise ValueError(f"image_size must be one of {sorted(CONV_STAGES)} for kind='conv', "
                             f"got {self.image_size}")

    @classmethod
    def for_arch(cls, arch: str, **kw) -> "VAEConfig":
        """``gan-ext train vae --arch``'s settings, overridden by ``kw``:
        ``mlp`` the examples' VAE, ``conv`` the ConvVAE tuned to reach a test
        -ELBO under 100 nats on MNIST in the default epochs (README)."""
        check_choice("arch", arch, KINDS)
        return cls(kind=arch, **{**ARCHS[arch], **kw})

    @property
    def image_shape(self) -> tuple:
        return (self.in_channels, self.image_size, self.image_size)


class VAEOutput(NamedTuple):
    logits: Tensor  # decoder logits: (B, C*H*W) for VAE, (B, C, H, W) for ConvVAE
    mu: Tensor      # (B, latent_dim)
    logvar: Tensor  # (B, latent_dim)
    z: Tensor       # (B, latent_dim): a sample in training, mu in eval (see encode)
    kl: Tensor      # (B,): KL(q(z|x) || N(0, I)) per image


class _VAEBase(nn.Module):
    """Everything but the networks: sampling, loss, training step, evaluation.
    Subclasses define ``encode_stats(x) -> (mu, logvar)``, ``decode(z) -> logits``
    and ``_target(x)`` (x shaped like the logits)."""

    config: VAEConfig
    fused: bool = True

    def _set_config(self, config: Optional[VAEConfig], kind: str) -> VAEConfig:
        if config is None:
            config = VAEConfig(kind=kind)
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        config.validate()
        if config.kind != kind:
            raise ValueError(f"{type(self).__name__} is the kind={kind!r} VAE but config.kind is "
                             f"{config.kind!r}; use build_vae(config) to pick the class")
        self.config = config
        return config

    def encode(self, x: Tensor, sample: Optional[bool] = None):
        """``(z, mu, logvar, kl)`` with kl per image, (B,). ``sample=None``
        samples z in training and returns z = mu in eval; pass True/False to
        choose. In training the sample and KL come from the fused op."""
        mu, logvar = self.encode_stats(x)  # (B, D) each
        if sample is None:
            sample = self.training
        if sample and not self.fused:
            # The plain-PyTorch VAE (the benchmarks' baseline): torch's randn
            # stream, so its z differs from the fused op's for the same seed.
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
        elif sample:
            z, kl = ops.reparameterize_kl(mu, logvar, reduction="none")
        else:
            z, kl = mu, ops.kl_divergence(mu, logvar, reduction="none")
        return z, mu, logvar, kl

    def forward(self, x: Tensor, sample: Optional[bool] = None) -> VAEOutput:
        z, mu, logvar, kl = self.encode(x, sample)
        return VAEOutput(self.decode(z), mu, logvar, z, kl)

    def reconstruct(self, x: Tensor, sample: Optional[bool] = None) -> Tensor:
        """Reconstructed images in [0, 1], (B, C, H, W)."""
        return torch.sigmoid(self(x, sample).logits).reshape(x.shape[0], *self.config.image_shape)

    def loss(self, x: Tensor, sample: Optional[bool] = None):
        """``(total, recon, kl)``, batch sums: recon = BCE summed over pixels
        and images, kl summed over images, total = recon + beta * kl."""
        out = self(x, sample)
        target = self._target(x)
        if self.fused:
            recon = ops.bce_with_logits(out.logits, target, reduction="sum")
        else:
            recon = F.binary_cross_entropy_with_logits(out.logits, target, reduction="sum")
        kl = out.kl.sum()
        return recon + self.config.beta * kl, recon, kl

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam; PyTorch's fused one for the gan_ext build (``fused=True``)."""
        return make_adam(self.parameters(), lr=self.config.lr, fused=self.fused)

    def train_step(self, x: Tensor, opt: torch.optim.Optimizer) -> dict[str, Tensor]:
        """One optimizer step on batch x. Returns detached scalars: ``loss``,
        ``recon``, ``kl`` (batch sums, what is minimized) and the same divided
        by the batch size (``*_per_image``, comparable across batch sizes).
        The caller chooses the mode (``model.train()`` samples z)."""
        opt.zero_grad(set_to_none=True)
        total, recon, kl = self.loss(x)
        total.backward()
        opt.step()
        B = x.shape[0]
        stats = {"loss": total.detach(), "recon": recon.detach(), "kl": kl.detach()}
        stats.update({f"{k}_per_image": v / B for k, v in list(stats.items())})
        return stats

    @torch.no_grad()
    def negative_elbo(self, x: Tensor, sample: bool = False) -> Tensor:
        """``(BCE_sum + KL_sum) / B`` in nats per image, beta ignored (beta = 1
        is the ELBO), without gradients, in the model's current mode.

        ``sample=False`` decodes z = mu: deterministic, but not a bound on
        -log p(x) (it is usually a little below the true -ELBO).
        ``sample=True`` decodes a single z ~ q(z|x): an unbiased one-sample
        estimate of the -ELBO, itself an upper bound of -log p(x)."""
        out = self(x, sample)
        recon = ops.bce_with_logits(out.logits, self._target(x), reduction="sum")
        return (recon + out.kl.sum()) / x.shape[0]

    @torch.no_grad()
    def log_importance_weights(self, x: Tensor, eps: Tensor, stats=None) -> Tensor:
        """``log p(x|z_k) + log p(z_k) - log q(z_k|x)`` for ``z_k = mu + sigma *
        eps_k``, (B, K) in float64: the log weights of the importance-weighted
        bound (Burda et al. 2016), ``log p(x) ~ logsumexp_k(.) - log K``.

        x: a batch (B, ...) as :meth:`loss` takes it; eps: (B, K, D) standard
        normal draws; stats: ``encode_stats(x)`` when the caller has them (one
        encoder pass for all chunks of K). The decoder runs on B*K latents in
        the model's dtype; the Gaussian terms and the sums are float64."""
        mu, logvar = self.encode_stats(x) if stats is None else stats  # (B, D) each
        B, D = mu.shape
        if eps.dim() != 3 or eps.shape[0] != B or eps.shape[2] != D:
            raise ValueError(f"eps must have shape (B={B}, K, D={D}), got {list(eps.shape)}")
        K = eps.shape[1]
        eps = eps.to(device=mu.device, dtype=torch.float64)
        lv = logvar.double()[:, None]                                     # (B, 1, D)
        z = mu.double()[:, None] + torch.exp(0.5 * lv) * eps              # (B, K, D)
        # log N(z; 0, I) - log N(z; mu, sigma^2): the 2*pi terms cancel.
        log_prior_ratio = -0.5 * (z.square() - eps.square() - lv).sum(-1)  # (B, K)
        logits = self.decode(z.reshape(B * K, D).to(mu.dtype)).reshape(B, K, -1)
        target = self._target(x).reshape(B, 1, -1).expand_as(logits)      # (B, K, P)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return log_prior_ratio - bce.sum(-1, dtype=torch.float64)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n images in [0, 1], (n, C, H, W), decoded from z ~ N(0, I). Runs the
        decoder in eval mode (batch norm with running statistics, none updated)
        and restores the mode."""
        n = check_int("n", n)
        p = next(self.parameters())
        z = torch.randn(n, self.config.latent_dim, generator=generator, dtype=p.dtype,
                        device=p.device)
        was_training = self.training
        self.eval()
        try:
            logits = self.decode(z)
        finally:
            self.train(was_training)
        return torch.sigmoid(logits).reshape(n, *self.config.image_shape)


class VAE(_VAEBase):
    """The MLP VAE of PyTorch's examples; ``VAE()`` loads their checkpoints
    (``load_state_dict(..., strict=True)``). Input: (B, C, H, W) images in
    [0, 1] or their flattening (B, C*H*W); logits are (B, C*H*W).

    ``fused=False`` is the same network written in plain PyTorch (``randn_like``
    sample, explicit KL, ``F.binary_cross_entropy_with_logits``): the
    benchmarks' baseline. Its noise is torch's, not the fused op's stream."""

    def __init__(self, config: Optional[VAEConfig] = None, fused: bool = True) -> None:
        super().__init__()
        self.fused = bool(fused)
        c = self._set_config(config, "mlp")
        self.input_dim = c.in_channels * c.image_size * c.image_size  # 784
        self.fc1 = nn.Linear(self.input_dim, c.hidden)
        self.fc21 = nn.Linear(c.hidden, c.latent_dim)
        self.fc22 = nn.Linear(c.hidden, c.latent_dim)
        self.fc3 = nn.Linear(c.latent_dim, c.hidden)
        self.fc4 = nn.Linear(c.hidden, self.input_dim)

    def _target(self, x: Tensor) -> Tensor:
        self._check_x(x)
        return x.reshape(x.shape[0], self.input_dim)  # (B, 784)

    def _check_x(self, x) -> None:
        if isinstance(x, Tensor) and x.dim() == 2:
            check_images(x, (self.input_dim,), who=type(self).__name__, floating=UNIT_IMAGES)
        else:
            check_images(x, self.config.image_shape, who=type(self).__name__, floating=UNIT_IMAGES)

    def encode_stats(self, x: Tensor):
        h = F.relu(self.fc1(self._target(x)))  # (B, hidden)
        return self.fc21(h), self.fc22(h)      # (B, D), (B, D)

    def decode(self, z: Tensor) -> Tensor:
        """(B, D) -> logits (B, C*H*W)."""
        check_code(z, self.config.latent_dim, f"{type(self).__name__}.decode")
        return self.fc4(F.relu(self.fc3(z)))


class ConvVAE(_VAEBase):
    """Convolutional VAE for (C, 28, 28), (C, 32, 32) or (C, 64, 64) images.

    Encoder: stride-2 4x4 ``Conv2dNormAct`` stages (BN + ReLU) halving the
    size down to 7x7 (28) or 4x4 (32, 64), with widths base, 2*base, ...; then
    linear heads ``fc_mu`` and ``fc_logvar``. Decoder: ``fc_z`` + ReLU back to
    the last feature map, ``ConvTranspose2dNormAct`` stages doubling the size,
    and a plain transposed conv to C channels of logits, (B, C, H, W).
    ``stage_convs`` adds that many stride-1 3x3 ``Conv2dNormAct`` blocks at
    every size, after each encoder stage and before each decoder one (0: the
    layer names of the plain network).
    """

    def __init__(self, config: Optional[VAEConfig] = None, fused: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        super().__init__()
        self.fused = bool(fused)  # False: plain-PyTorch sample, KL and BCE (the convs stay)
        c = self._set_config(config, "conv")
        stages = CONV_STAGES[c.image_size]
        widths = [c.base_channels * 2 ** i for i in range(stages)]  # e.g. [32, 64]
        s = c.image_size // 2 ** stages                             # 7 or 4
        self.feature_shape = (widths[-1], s, s)
        feat = widths[-1] * s * s

        down, cin = [], c.in_channels
        for w in widths:  # each halves H and W, then stage_convs keep it
            down.append(Conv2dNormAct(cin, w, 4, stride=2, padding=1))
            down += [Conv2dNormAct(w, w, 3, padding=1) for _ in range(c.stage_convs)]
            cin = w
        self.encoder = nn.Sequential(*down, nn.Flatten(1))  # (B, C, H, W) -> (B, feat)
        self.fc_mu = nn.Linear(feat, c.latent_dim)
        self.fc_logvar = nn.Linear(feat, c.latent_dim)

        self.fc_z = nn.Linear(c.latent_dim, feat)
        up = [nn.Unflatten(1, self.feature_shape)]  # (B, widths[-1], s, s)
        for w_in, w_out in zip(widths[::-1], widths[-2::-1] + [None]):  # each doubles H, W
            up += [Conv2dNormAct(w_in, w_in, 3, padding=1) for _ in range(c.stage_convs)]
            if w_out is not None:
                up.append(ConvTranspose2dNormAct(w_in, w_out, 4, stride=2, padding=1))
        up.append(nn.ConvTranspose2d(widths[0], c.in_channels, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*up)  # -> (B, C, H, W) logits
        self.channels_last = apply_channels_last(self, channels_last, self.fused)

    def _target(self, x: Tensor) -> Tensor:
        check_images(x, self.config.image_shape, who=type(self).__name__, floating=UNIT_IMAGES)
        return x

    def encode_stats(self, x: Tensor):
        h = self.encoder(self._target(x))          # (B, feat)
        return self.fc_mu(h), self.fc_logvar(h)    # (B, D), (B, D)

    def decode(self, z: Tensor) -> Tensor:
        """(B, D) -> logits (B, C, H, W)."""
        check_code(z, self.config.latent_dim, f"{type(self).__name__}.decode")
        return self.decoder(F.relu(self.fc_z(z)))


def build_vae(config: Optional[VAEConfig] = None, fused: bool = True) -> _VAEBase:
    """:class:`VAE` or :class:`ConvVAE`, as ``config.kind`` says."""
    if config is None:
        config = VAEConfig()
    if not isinstance(config, VAEConfig):
        raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
    return (VAE if config.kind == "mlp" else ConvVAE)(config, fused)
