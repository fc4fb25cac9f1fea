"""Whole training steps for :mod:`gan_ext.bench` (``MODEL_CASES``,
``gan-ext bench --models``, ``benchmarks/test_bench_models.py``).

"fused" is the model as gan_ext builds it; "eager" is the plain-PyTorch build
of the same network (``fused=False``: ``nn.BatchNorm2d`` + ``nn.ReLU``,
``nn.LeakyReLU`` + ``nn.Dropout``, ``randn_like`` sampling) with every gan_ext
op on its PyTorch twin (``use_backend("reference")``); "compile" is that eager
build with each network wrapped in ``torch.compile``. All three start from the
same weights (same seed, same parameter order) and take the same data.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from .. import _backend
from . import CompileUnavailable, Case, Prepared, _sync_fn

__all__ = ["prepare", "saved_bytes", "d_step_saved_bytes", "VARIANTS", "variant_step"]


def _build(case: Case, fused: bool, device: torch.device, dtype: torch.dtype, seed: int,
           channels_last: Optional[bool] = None, fused_adam: Optional[bool] = None):
    """(model, networks to compile by attribute name, step(model) -> None, data).

    ``channels_last`` and ``fused_adam`` override the build's own choices
    (None: the gan_ext build takes both, the plain build neither), for
    :func:`variant_step`."""
    from ..models import cyclegan, dcgan, gan, vae
    from ..models._common import make_adam

    def adam_like(opt):
        if fused_adam is None:
            return opt
        d = opt.defaults
        return make_adam(opt.param_groups[0]["params"], lr=d["lr"], betas=d["betas"],
                         weight_decay=d["weight_decay"], fused=fused_adam)

    B = case.shape[0]
    gen = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed)
    if case.block in ("step_dcgan64", "step_dcgan28"):
        size, nc = (64, 3) if case.block == "step_dcgan64" else (28, 1)
        model = dcgan.DCGAN(dcgan.DCGANConfig(nc=nc, image_size=size), fused=fused,
                            channels_last=channels_last)
        data = torch.rand(B, nc, size, size, generator=gen) * 2 - 1
        nets = ("G", "D")
    elif case.block == "step_mlp_gan":
        model = gan.GAN(gan.GANConfig(), fused=fused)
        data = torch.rand(B, 1, 28, 28, generator=gen) * 2 - 1
        nets = ("G", "D")
    elif case.block == "step_mlp_vae":
        model = vae.VAE(vae.VAEConfig(), fused=fused)
        data = torch.rand(B, 1, 28, 28, generator=gen)
        nets = ()
    elif case.block in ("step_cyclegan128", "step_cyclegan256"):
        size = 128 if case.block == "step_cyclegan128" else 256
        model = cyclegan.CycleGAN(cyclegan.CycleGANConfig(), fused=fused,
                                  channels_last=channels_last)
        data = torch.rand(2, B, 3, size, size, generator=gen) * 2 - 1
        nets = ("G_A", "G_B", "D_A", "D_B")
    else:
        raise ValueError(f"not a model case: {case.block!r}")
    model = model.to(device=device, dtype=dtype).train()
    data = data.to(device=device, dtype=dtype)
    if case.block == "step_mlp_vae":
        opt = adam_like(model.configure_optimizer())

        def step():
            model.train_step(data, opt)
    elif case.block in ("step_cyclegan128", "step_cyclegan256"):
        opt_g, opt_d = map(adam_like, model.make_optimizers())

        def step():
            model.train_step(data[0], data[1], opt_g, opt_d)
    else:
        opt_g, opt_d = map(adam_like, model.make_optimizers())

        def step():
            model.train_step(data, opt_g, opt_d)
    return model, nets, step, data


# Where a model step's gain comes from: (kernels, channels_last, fused Adam).
# "plain" is the eager baseline of the benchmarks, "gan_ext" the fused build.
VARIANTS = {
    "plain": (False, False, False),
    "plain+adam": (False, False, True),
    "plain+cl+adam": (False, True, True),
    "kernels": (True, False, False),
    "gan_ext": (True, True, True),
}


def variant_step(case: Case, variant: str, device: torch.device, dtype: torch.dtype,
                 seed: int) -> Callable[[], None]:
    """One training step of ``case`` in a build of :data:`VARIANTS`: fused
    kernels (else the plain build on the reference backend), channels_last
    weights, PyTorch's fused Adam."""
    kernels, cl, adam = VARIANTS[variant]
    _, _, inner, _ = _build(case, kernels, device, dtype, seed, channels_last=cl, fused_adam=adam)
    impl = "fused" if kernels else "eager"

    def step():
        with _backend_ctx(impl):
            inner()
    return step


def _backend_ctx(impl: str):
    return _backend.use_backend("fused") if impl == "fused" else _backend.use_backend("reference")


def prepare(case: Case, impl: str, device: torch.device, dtype: torch.dtype, seed: int) -> Prepared:
    model, nets, inner, _ = _build(case, impl == "fused", device, dtype, seed)
    if impl == "compile":
        import torch._dynamo as dynamo

        dynamo.reset()
        try:
            for name in nets:
                setattr(model, name, torch.compile(getattr(model, name)))
        except Exception as e:  # noqa: BLE001
            raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {e}") from e

    def step():
        with _backend_ctx(impl):
            inner()

    prepared = Prepared(case, impl, model, step, _sync_fn(device))
    if impl == "compile":
        try:
            step()
            prepared.sync()
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {msg}") from e
    return prepared


@contextlib.contextmanager
def _count_saved(storages: Dict[Tuple, int]):
    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        storages[(t.device, s.data_ptr())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def _drop_alive(storages: Dict[Tuple, int], tensors) -> int:
    """Removes storages that exist anyway (parameters, buffers, input batches):
    keeping a reference to them for backward costs no memory."""
    for t in tensors:
        storages.pop((t.device, t.untyped_storage().data_ptr()), None)
    return sum(storages.values())


def saved_bytes(case: Case, impl: str, device: torch.device, dtype: torch.dtype, seed: int) -> int:
    """Bytes saved for backward over one whole training step (every forward of
    the step, each storage counted once), beyond the parameters, buffers and
    data batch, which are alive anyway."""
    if impl == "compile":
        raise ValueError("saved_bytes measures the fused and eager builds")
    model, _, step, data = _build(case, impl == "fused", device, dtype, seed)
    storages: Dict[Tuple, int] = {}
    with _backend_ctx(impl), _count_saved(storages):
        step()
    return _drop_alive(storages, [*model.parameters(), *model.buffers(), data])


def d_step_saved_bytes(case: Case, impl: str, device="cpu", dtype: torch.dtype = torch.float32,
                       seed: int = 0) -> int:
    """Bytes the discriminator's forward on a real and a fake batch keeps for
    its backward (the D update of a GAN step), each storage once, beyond the
    parameters and the two input batches (alive anyway)."""
    if case.block not in ("step_dcgan64", "step_dcgan28", "step_mlp_gan"):
        raise ValueError(f"{case.block} has no single discriminator step")
    device = torch.device(device)
    model, _, _, data = _build(case, impl == "fused", device, dtype, seed)
    with torch.no_grad():
        fake = model.G(torch.randn(data.shape[0], model.G.nz, device=device, dtype=dtype))
    storages: Dict[Tuple, int] = {}
    with _backend_ctx(impl), _count_saved(storages):
        loss = model.loss.d_loss(model.D(data), model.D(fake))
    del loss
    return _drop_alive(storages, [*model.parameters(), *model.buffers(), data, fake])
