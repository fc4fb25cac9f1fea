"""Modern GAN training options of every GAN family's config
(:class:`~gan_ext.models.gan.TrainConfig`), beside the mode-collapse cures
of :mod:`.cures`:

    lr_d, lr_g        TTUR (Heusel et al. 2017): each network's own Adam learning
                      rate (None: ``lr``)
    spectral_norm     Miyato et al. 2018: ``torch.nn.utils.parametrizations.
                      spectral_norm`` on every Conv2d/Linear weight of D (and a
                      projection D's class embedding), at build time
    diffaugment       Zhao et al. 2020 (:mod:`.diffaugment`) on every image D sees
    r1_gamma, r1_every  Mescheder et al. 2018's R1 penalty on real data, lazily
                      (StyleGAN2): every ``r1_every``-th D step, times ``r1_every``
    loss="wgan-gp",   Gulrajani et al. 2017: the Wasserstein critic loss plus
      gp_lambda       ``gp_lambda`` E[(||grad D(x_hat)||_2 - 1)^2] at random
                      interpolates of real and fake samples; the critic is built
                      without batch norm (:func:`critic_norm`)

R1 and the gradient penalty share one implementation of "the gradient of D's
outputs w.r.t. its input, with create_graph" (:func:`input_gradients`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ._checks import check_bool, check_int, check_real
from .diffaugment import parse_policy

__all__ = ["check_stabilizers", "r1_conflict", "spectral_norm_", "r1_penalty", "r1_weight", "input_gradients",
           "gradient_penalty", "interpolate", "critic_norm", "check_critic", "WGAN_GP_DEFAULTS",
           "GP_LAMBDA"]

# The WGAN-GP paper's settings (Gulrajani et al. 2017, Algorithm 1): lambda,
# n_critic (our k), Adam's alpha and betas. The trainers use them for
# --loss wgan-gp unless the user gives --k / --lr / --lr-d / --lr-g.
GP_LAMBDA = 10.0
WGAN_GP_DEFAULTS = {"k": 5, "lr": 1e-4, "betas": (0.0, 0.9)}


def check_stabilizers(c) -> None:
    """Validates (and normalises) the modern-training fields of a TrainConfig ``c``."""
    for name in ("lr_d", "lr_g"):
        if getattr(c, name) is not None:
            check_real(name, getattr(c, name), 0, math.inf, low_open=True, high_open=True)
    check_bool("spectral_norm", c.spectral_norm)
    c.diffaugment = parse_policy(c.diffaugment)
    check_real("r1_gamma", c.r1_gamma, 0, math.inf, high_open=True)
    check_int("r1_every", c.r1_every)
    conflict = r1_conflict(c.loss, c.unrolled) if c.r1_gamma else None
    if conflict:
        name, flag, why = conflict
        raise ValueError(f"r1_gamma (--r1) cannot be combined with {name} ({flag}): {why}")
    check_real("gp_lambda", c.gp_lambda, 0, math.inf, low_open=True, high_open=True)
    if c.loss != "wgan-gp":
        if c.gp_lambda != GP_LAMBDA:
            raise ValueError(f"gp_lambda (--gp-lambda) is the weight of WGAN-GP's gradient "
                             f"penalty: it applies to loss='wgan-gp' (--loss wgan-gp) only, got "
                             f"loss={c.loss!r}")
        return
    if c.unrolled:
        raise ValueError("unrolled (--unrolled) cannot be combined with loss='wgan-gp' (--loss "
                         "wgan-gp): the look-ahead would reproduce D's updates without the "
                         "gradient penalty")


def r1_conflict(loss: Optional[str], unrolled) -> Optional[Tuple[str, str, str]]:
    """What R1 cannot be combined with, given the loss and the unrolled
    steps: (config name, flag, why), or None where R1 applies. The one rule
    behind the refusals of the config, of the CLI and the recipe that
    leaves R1 out (``gan_ext.train.options.model_defaults``)."""
    if loss == "wgan-gp":
        return ("loss='wgan-gp'", "--loss wgan-gp",
                "its gradient penalty already constrains D's input gradient")
    if unrolled:
        return ("unrolled", "--unrolled",
                "the look-ahead reproduces D's updates without the penalty, so G would train "
                "against a D that is never built")
    return None


def spectral_norm_(D: nn.Module) -> nn.Module:
    """Spectral normalisation of every Conv2d and Linear weight in ``D``
    (a conv's weight as the matrix (out, in k k), as SN-GAN does), and of the
    class embedding of a projection discriminator (``D.conditioning ==
    "projection"``: its inner product with the features is a layer on the
    path to the logit, normalised in Miyato & Koyama's code too). A
    channel-conditioning embedding is D's input, not a layer, and is left
    as it is; so are batch norms (SN-GAN drops them, but the architecture
    is the user's) and minibatch discrimination's tensor. Returns ``D``."""
    sn = nn.utils.parametrizations.spectral_norm
    for m in list(D.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            sn(m)
    if getattr(D, "conditioning", None) == "projection":
        sn(D.embed)
    return D


def r1_weight(c, d_step: int) -> float:
    """The R1 term's weight at D step ``d_step`` (0-based, counted over the
    run): (gamma / 2) times ``r1_every`` (lazy regularisation) on every
    ``r1_every``-th step from the first, else 0."""
    if not c.r1_gamma or d_step % c.r1_every:
        return 0.0
    return c.r1_gamma / 2 * c.r1_every


def input_gradients(d_out: Tensor, x: Tensor) -> Tensor:
    """grad_x of D's summed outputs for ``d_out = D(x)``, ``x`` requiring
    grad, as one row per output (n_out, -1), in float32 or wider; with
    create_graph, so a penalty on it trains D (a second derivative through D:
    the fused layers' double backward). The gradient is that of the summed
    outputs, as every implementation computes it: with batch norm or
    minibatch statistics in D an output also depends on the batch's other
    samples. With a packing D (one output per pack of samples) a row is the
    pack's whole input."""
    grad, = torch.autograd.grad(d_out.sum(), x, create_graph=True)
    grad = grad.to(torch.promote_types(grad.dtype, torch.float32))
    return grad.reshape(d_out.numel(), -1)


def r1_penalty(d_out: Tensor, x: Tensor) -> Tensor:
    """The mean over D's outputs of ||grad_x D(x)||^2 (:func:`input_gradients`)."""
    return input_gradients(d_out, x).square().sum(1).mean()


def gradient_penalty(d_out: Tensor, x_hat: Tensor) -> Tensor:
    """WGAN-GP's E[(||grad D(x_hat)||_2 - 1)^2] over D's outputs for
    ``d_out = D(x_hat)`` (:func:`input_gradients`), without lambda."""
    return (torch.linalg.vector_norm(input_gradients(d_out, x_hat), dim=1) - 1).square().mean()


def interpolate(real: Tensor, fake: Tensor) -> Tensor:
    """x_hat = eps real + (1 - eps) fake, eps ~ U[0, 1] per sample from torch's
    global RNG (seeded and checkpointed), detached from both and requiring
    grad: the points WGAN-GP penalises."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device,
                     dtype=real.dtype)
    return torch.lerp(fake.detach().to(real.dtype), real.detach(), eps).requires_grad_(True)


def critic_norm(c) -> str:
    """The normalisation of D's conv stages for config ``c``: ``"batch"``, or
    ``"instance"`` (affine) for loss='wgan-gp'. The gradient penalty is a
    per-sample constraint; batch norm makes each output depend on the whole
    batch, so the paper drops it from the critic and recommends a
    per-sample normalisation (layer norm) instead; instance norm is one, with
    a fused kernel and double backward (:class:`~gan_ext.nn.InstanceNormAct2d`)."""
    return "instance" if c.loss == "wgan-gp" else "batch"


def check_critic(D: nn.Module) -> None:
    """ValueError when ``D`` has a batch norm: WGAN-GP's penalty needs a
    critic whose outputs are per sample."""
    bn = next((m for m in D.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)), None)
    if bn is not None:
        raise ValueError(f"loss='wgan-gp': D has a batch norm ({type(bn).__name__}), which "
                         "couples the samples the gradient penalty treats one by one; build the "
                         "critic without batch norm (layer or instance norm, as the paper)")
