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
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import check_bool, check_int, check_real
from .diffaugment import parse_policy

__all__ = ["check_stabilizers", "spectral_norm_", "r1_penalty", "r1_weight"]


def check_stabilizers(c) -> None:
    """Validates (and normalises) the modern-training fields of a TrainConfig ``c``."""
    for name in ("lr_d", "lr_g"):
        if getattr(c, name) is not None:
            check_real(name, getattr(c, name), 0, math.inf, low_open=True, high_open=True)
    check_bool("spectral_norm", c.spectral_norm)
    c.diffaugment = parse_policy(c.diffaugment)
    check_real("r1_gamma", c.r1_gamma, 0, math.inf, high_open=True)
    check_int("r1_every", c.r1_every)
    if c.r1_gamma and c.unrolled:
        raise ValueError("r1_gamma (--r1) cannot be combined with unrolled (--unrolled): the "
                         "look-ahead reproduces D's updates without the penalty, so G would "
                         "train against a D that is never built")


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


def r1_penalty(d_out: Tensor, x: Tensor) -> Tensor:
    """The mean over D's outputs of ||grad_x D(x)||^2 for ``d_out = D(x)``,
    ``x`` requiring grad; with create_graph, so the penalty trains D (a
    second derivative through D). The gradient is that of the summed outputs,
    as every implementation computes it: with batch norm in D an output also
    depends on the batch's other samples. With a packing D (one output per
    pack of samples) the norm is over each pack's whole input."""
    grad, = torch.autograd.grad(d_out.sum(), x, create_graph=True)
    return grad.float().reshape(d_out.numel(), -1).square().sum(1).mean()
