"""The VAE sample and its KL, ``torch.ops.gan_ext.reparameterize`` and
``reparameterize_kl`` (one backward op, ``reparameterize_backward``, for
both), and the KL alone: the functional forms, the pure-PyTorch twins (the
same Philox noise as the kernels), the fake kernels, the twin op of the
double backward and the op spec."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from ._spec import BadInput, OpSpec, Sample, leaf
from ._common import (MEAN, NONE, SUM, autocast_like_op, check_float, check_same, check_tensor,
                      reduction_code, register_twin, stats_dtype)
from ._philox import generator_seed_offset, philox_blocks

__all__ = ["reparameterize", "reparameterize_kl", "kl_divergence"]

OP = "reparameterize"
KERNELS = ("reparameterize", "reparameterize_kl", "reparameterize_backward")

_lib = torch.ops.gan_ext


# ------------------------------------------------------------------ wrappers
def reparameterize(mu: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """``z = mu + exp(0.5 * logvar) * eps`` with ``eps ~ N(0, 1)`` drawn inside
    the kernel from PyTorch's generator (the default one, or ``generator``):
    ``torch.manual_seed`` reproduces z. Backward keeps no eps."""
    check_tensor(mu, "mu")
    check_tensor(logvar, "logvar")
    fn = _lib.reparameterize if _backend.use_fused(mu, OP) else reparameterize_ref
    return fn(mu, logvar, generator=generator)


def reparameterize_kl(mu: Tensor, logvar: Tensor, reduction: str = "mean",
                      generator: Optional[torch.Generator] = None):
    """``(z, kl)``: the reparameterized sample and
    ``kl = -0.5 * sum(1 + logvar - mu^2 - exp(logvar))`` over the latent dims,
    then the mean (default) or sum over the batch, or per sample (``'none'``)."""
    check_tensor(mu, "mu")
    check_tensor(logvar, "logvar")
    r = reduction_code(reduction, allow_none=True)
    fn = _lib.reparameterize_kl if _backend.use_fused(mu, OP) else _reparameterize_kl_twin
    return fn(mu, logvar, r, generator=generator)


def kl_divergence(mu: Tensor, logvar: Tensor, reduction: str = "mean") -> Tensor:
    """The KL term alone, in plain PyTorch (for evaluation without sampling)."""
    check_tensor(mu, "mu")
    check_tensor(logvar, "logvar")
    r = reduction_code(reduction, allow_none=True)
    check_reparameterize_args(mu, logvar, True, r)
    return kl_divergence_ref(mu, logvar, r)


# --------------------------------------------------------------------- twins
def normal_noise(numel: int, dtype: torch.dtype, device, seed: int, offset: int) -> Tensor:
    """The first `numel` normals of the (seed, offset) stream, in the op's
    compute precision (float64 for float64, else float32)."""
    double = dtype == torch.float64
    per = 2 if double else 4
    nblocks = -(-numel // per)
    x = philox_blocks(torch.arange(nblocks, dtype=torch.int64, device=device), seed, offset)
    # Uniforms are exact; the transform is evaluated in float64 and rounded
    # once, so this twin gives the correctly rounded noise the kernels
    # approximate to a few ulp.
    if double:
        def u53(hi, lo):
            v = (hi << 21) ^ (lo >> 11)
            return (v.double() + 0.5) * 2.0 ** -53
        pairs = [(u53(x[:, 0], x[:, 1]), u53(x[:, 2], x[:, 3]))]
    else:
        def u23(w):
            return ((w >> 9).double() + 0.5) * 2.0 ** -23
        pairs = [(u23(x[:, 0]), u23(x[:, 1])), (u23(x[:, 2]), u23(x[:, 3]))]
    cols = []
    for u1, u2 in pairs:
        r = torch.sqrt(-2.0 * torch.log(u1))
        t = 2.0 * math.pi * u2
        cols += [r * torch.cos(t), r * torch.sin(t)]
    out_dtype = torch.float64 if double else torch.float32
    return torch.stack(cols, dim=1).reshape(-1)[:numel].to(out_dtype)


def check_reparameterize_args(mu: Tensor, logvar: Tensor, kl: bool, reduction: int) -> None:
    """Twin of check_reparameterize_args in the C++ reparameterize checks."""
    check_float(mu, "mu")
    check_same(logvar, "logvar", mu, "mu")
    if kl:
        if mu.dim() < 2:
            raise ValueError("mu must have a batch dimension and a latent dimension (B, D, ...) for "
                             f"the KL term, got shape {list(mu.shape)}")
        if reduction not in (NONE, MEAN, SUM):
            raise ValueError(f"reduction must be 0 ('none'), 1 ('mean') or 2 ('sum'), got {reduction}")
        if mu.shape[0] == 0 and reduction == MEAN:
            raise ValueError("mu has batch size 0: the mean KL over no samples is undefined (use "
                             "reduction='sum' or 'none')")


def _reparameterize(mu: Tensor, logvar: Tensor, generator) -> Tensor:
    sd = stats_dtype(mu.dtype)
    seed, offset = generator_seed_offset(mu.device, generator)
    eps = normal_noise(mu.numel(), mu.dtype, mu.device, seed, offset).reshape(mu.shape).to(sd)
    return (mu.to(sd) + torch.exp(0.5 * logvar.to(sd)) * eps).to(mu.dtype)


def reparameterize_ref(mu: Tensor, logvar: Tensor, *,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Twin of ``torch.ops.gan_ext.reparameterize``: the same noise as the
    kernel for the same generator state."""
    check_reparameterize_args(mu, logvar, False, MEAN)
    return _reparameterize(mu, logvar, generator)


def kl_divergence_ref(mu: Tensor, logvar: Tensor, reduction: int) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over all but the batch dim."""
    sd = stats_dtype(mu.dtype)
    m, lv = mu.to(sd), logvar.to(sd)
    per_sample = (-0.5 * (1 + lv - m * m - torch.exp(lv))).flatten(1).sum(1)
    if reduction == NONE:
        return per_sample.to(mu.dtype)
    s = per_sample.double().sum()
    return (s / mu.shape[0] if reduction == MEAN else s).to(mu.dtype)


def reparameterize_kl_ref(mu: Tensor, logvar: Tensor, reduction: int, *,
                          generator: Optional[torch.Generator] = None):
    """Twin of ``torch.ops.gan_ext.reparameterize_kl``: returns (z, kl)."""
    check_reparameterize_args(mu, logvar, True, reduction)
    return _reparameterize(mu, logvar, generator), kl_divergence_ref(mu, logvar, reduction)


def reparameterize_kl_given_noise(mu: Tensor, logvar: Tensor, eps: Tensor, with_kl: bool,
                                  reduction: int):
    """(z, kl) for a given noise eps, differentiable in mu and logvar (and eps);
    kl is an empty tensor without with_kl. What the C++ autograd
    differentiates for a double backward through reparameterize(_kl)."""
    sd = stats_dtype(mu.dtype)
    z = (mu.to(sd) + torch.exp(0.5 * logvar.to(sd)) * eps.to(sd)).to(mu.dtype)
    kl = kl_divergence_ref(mu, logvar, reduction) if with_kl else mu.new_empty((0,))
    return z, kl


# ------------------------------------------------------- fake kernels, twin op
def _register() -> None:
    @torch.library.register_fake("gan_ext::reparameterize")
    def _reparameterize_fake(mu, logvar, *, generator=None):
        check_reparameterize_args(mu, logvar, False, MEAN)
        return torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)

    @torch.library.register_fake("gan_ext::reparameterize_kl")
    def _reparameterize_kl_fake(mu, logvar, reduction, *, generator=None):
        check_reparameterize_args(mu, logvar, True, reduction)
        z = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
        kl = mu.new_empty((mu.shape[0],) if reduction == NONE else ())
        return z, kl

    @torch.library.register_fake("gan_ext::reparameterize_backward")
    def _reparameterize_backward_fake(grad_z, grad_kl, z, mu, logvar, reduction):
        return (torch.empty(mu.shape, dtype=mu.dtype, device=mu.device),
                torch.empty(mu.shape, dtype=mu.dtype, device=mu.device))

    # z and the KL for a given eps (the noise the forward drew, recovered from z).
    register_twin("reparameterize_kl_twin(Tensor mu, Tensor logvar, Tensor eps, bool with_kl, "
                  "int reduction) -> (Tensor, Tensor)", __name__, "reparameterize_kl_given_noise")



# -------------------------------------------------------------------- specs
_RED_NAMES = {0: "none", 1: "mean", 2: "sum"}
_SHAPES = {"3x4": (3, 4), "2x3x2": (2, 3, 2)}


def _mu_logvar(shape, dtype, device, layout="contiguous", requires_grad=True):
    mu = leaf(torch.randn(shape, dtype=torch.float64), dtype, device, layout, requires_grad)
    lv = leaf(0.5 * torch.randn(shape, dtype=torch.float64), dtype, device, layout, requires_grad)
    return mu, lv


def _z_samples(dtype, device, layout):
    out = [Sample(name, _mu_logvar(shape, dtype, device, layout)) for name, shape in _SHAPES.items()]
    out.append(Sample("3x4-generator", _mu_logvar((3, 4), dtype, device, layout),
                      {"generator": torch.Generator(device=device)}))
    return out


def _kl_samples(dtype, device, layout):
    out = [Sample(f"{name}-{red}", (*_mu_logvar(shape, dtype, device, layout), code))
           for name, shape in _SHAPES.items() for code, red in _RED_NAMES.items()]
    # One output used: backward gets an undefined gradient for the other.
    out += [Sample(f"3x4-sum-{which}-only", (*_mu_logvar((3, 4), dtype, device, layout), 2),
                   grad_outputs=(i,)) for i, which in enumerate(("z", "kl"))]
    out.append(Sample("3x4-mean-generator", (*_mu_logvar((3, 4), dtype, device, layout), 1),
                      {"generator": torch.Generator(device=device)}))
    return out


# test_aot_dispatch_dynamic reseeds only the default generator between its
# eager and traced runs: an explicit generator has advanced by then.
_NO_AOT = ("test_schema", "test_autograd_registration", "test_faketensor")


def _opchecks(device):
    L = torch.ops.gan_ext
    mu, lv = _mu_logvar((3, 4), torch.float32, device, requires_grad=False)
    z, gz = torch.randn(3, 4, device=device), torch.randn(3, 4, device=device)
    return {
        "reparameterize": (L.reparameterize.default, _mu_logvar((3, 4), torch.float32, device), {}),
        "reparameterize-nograd-generator": (
            L.reparameterize.default, (mu, lv),
            {"generator": torch.Generator(device=device).manual_seed(1)}, _NO_AOT),
        "reparameterize_kl-none": (L.reparameterize_kl.default,
                                   (*_mu_logvar((3, 4), torch.float32, device), 0), {}),
        "reparameterize_kl-mean": (L.reparameterize_kl.default,
                                   (*_mu_logvar((3, 4), torch.float32, device), 1), {}),
        "reparameterize_kl-sum-4d": (L.reparameterize_kl.default,
                                     (*_mu_logvar((2, 3, 2, 2), torch.float32, device), 2), {}),
        "backward-z-only": (L.reparameterize_backward.default, (gz, None, z, mu, lv, 1), {}),
        "backward-kl-only": (L.reparameterize_backward.default,
                             (None, torch.tensor(0.7, device=device), z, mu, lv, 1), {}),
        "backward-both-none": (L.reparameterize_backward.default,
                               (gz, torch.randn(3, device=device), z, mu, lv, 0), {}),
    }


def _bad(name, make, error, match):
    return BadInput(name, lambda d: Sample(name, make(d)), error, match)


def _r(d, *shape, dtype=torch.float32):
    return torch.randn(*shape, device=d).to(dtype)


def _nan_mu(d):
    mu = _r(d, 3, 7)
    mu[1, 5] = float("nan")
    return mu


SPECS = (
    OpSpec("reparameterize", reparameterize_ref, _z_samples,
           lambda s: reparameterize(*s.args, **s.kwargs), random=True,
           gradcheck=dict(eps=1e-6, atol=1e-7, rtol=1e-5),
           bad_inputs=(
               _bad("int-mu", lambda d: (torch.ones(3, 4, dtype=torch.int64, device=d), _r(d, 3, 4)),
                    TypeError, "mu must be a floating point tensor"),
               _bad("shape-mismatch", lambda d: (_r(d, 3, 4), _r(d, 4, 3)), ValueError,
                    "logvar has shape [4, 3] but mu has shape [3, 4]")),
           nan_sample=lambda d: Sample("nan", (_nan_mu(d), _r(d, 3, 7))),
           empty_samples=lambda d: [Sample("0x4", (_r(d, 0, 4), _r(d, 0, 4)))],
           opchecks=_opchecks, bench_shapes={"vae-mnist": (128, 20)}),
    OpSpec("reparameterize_kl", reparameterize_kl_ref, _kl_samples,
           lambda s: reparameterize_kl(s.args[0], s.args[1], _RED_NAMES[s.args[2]], **s.kwargs),
           outputs=(0, 1), grad_outputs=(0, 1), random=True,
           bad_inputs=(
               _bad("1d-mu", lambda d: (_r(d, 4), _r(d, 4), 1), ValueError,
                    "mu must have a batch dimension and a latent dimension"),
               _bad("reduction-code", lambda d: (_r(d, 2, 4), _r(d, 2, 4), 3), ValueError,
                    "reduction must be 0 ('none'), 1 ('mean') or 2 ('sum')"),
               _bad("batch0-mean", lambda d: (_r(d, 0, 4), _r(d, 0, 4), 1), ValueError,
                    "mu has batch size 0"),
               _bad("dtype-mismatch", lambda d: (_r(d, 2, 4), _r(d, 2, 4, dtype=torch.float64), 1),
                    TypeError, "but mu has dtype")),
           nan_sample=lambda d: Sample("nan", (_nan_mu(d), _r(d, 3, 7), 1)),
           empty_samples=lambda d: [Sample(f"0x4-{red}", (_r(d, 0, 4), _r(d, 0, 4), code))
                                    for code, red in ((0, "none"), (2, "sum"))],
           bench_shapes={"vae-mnist": (128, 20)}),
)


# The twins as the wrappers call them: cast as the op's autocast kernel casts.
_reparameterize_kl_twin = autocast_like_op(reparameterize_kl_ref, 2)

# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and helpers the tests use.
REFERENCE = {"reparameterize": reparameterize_ref, "reparameterize_kl": reparameterize_kl_ref, "kl_divergence": kl_divergence_ref, **{f.__name__: f for f in (check_reparameterize_args, normal_noise, reparameterize_kl_given_noise)}}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
