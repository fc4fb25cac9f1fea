"""The model-step cases: one whole training step of a model (D update + G
update for the GANs), at the batch of the case's shape (``MODEL_CASES``,
``gan-ext bench --models``, ``benchmarks/test_bench_models.py``).

"fused" is the model as gan_ext builds it; "eager" is the plain-PyTorch build
of the same network (``fused=False``: ``nn.BatchNorm2d`` + ``nn.ReLU``,
``nn.LeakyReLU`` + ``nn.Dropout``, ``randn_like`` sampling) with every gan_ext
op on its PyTorch twin (``use_backend("reference")``); "compile" is that eager
build with each network wrapped in ``torch.compile``. All three start from the
same weights (same seed, same parameter order) and take the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Tuple

import torch
from torch import nn

from .._backend import use_backend
from ..memory import saved_tensor_bytes
from ..models import cyclegan, dcgan, gan, vae
from ..models._common import make_adam
from .registry import Block, Case, Prepared, Stream, compiled, register, sync_fn

__all__ = ["ModelBlock", "MODEL_CASES", "CASES", "VARIANTS", "variant_step", "d_step_saved_bytes"]

Step = Callable[[], None]
AdamLike = Callable[[torch.optim.Optimizer], torch.optim.Optimizer]


@dataclass(frozen=True)
class ModelBlock(Block):
    """``model(fused, channels_last)`` builds the model (channels_last None: the
    build's own choice), ``data(batch, gen)`` its training batch, and
    ``train_step(model, data, adam_like)`` makes its optimizers and returns a
    step. ``nets``: the networks "compile" wraps; ``single_d``: the model has
    one discriminator update (:func:`d_step_saved_bytes`)."""
    kind: ClassVar[str] = "model"
    model: Callable[[bool, Optional[bool]], nn.Module]
    data: Callable[[int, torch.Generator], torch.Tensor]
    train_step: Callable[[nn.Module, torch.Tensor, AdamLike], Step]
    nets: Tuple[str, ...] = ()
    single_d: bool = False

    def build(self, case: Case, fused: bool, device: torch.device, dtype: torch.dtype, seed: int,
              channels_last: Optional[bool] = None,
              fused_adam: Optional[bool] = None) -> Tuple[nn.Module, Step, torch.Tensor]:
        """(model, step, data). ``channels_last`` and ``fused_adam`` override
        the build's own choices (None: the gan_ext build takes both, the plain
        build neither), for :func:`variant_step`."""
        def adam_like(opt):
            if fused_adam is None:
                return opt
            d = opt.defaults
            return make_adam(opt.param_groups[0]["params"], lr=d["lr"], betas=d["betas"],
                             weight_decay=d["weight_decay"], fused=fused_adam)

        gen = torch.Generator().manual_seed(seed + Stream.MODEL_DATA)
        torch.manual_seed(seed + Stream.WEIGHTS)
        model = self.model(fused, channels_last)
        data = self.data(case.shape[0], gen)
        model = model.to(device=device, dtype=dtype).train()
        data = data.to(device=device, dtype=dtype)
        return model, self.train_step(model, data, adam_like), data

    def prepare(self, case: Case, impl: str, device: torch.device, dtype: torch.dtype,
                seed: int) -> Prepared:
        model, inner, _ = self.build(case, impl == "fused", device, dtype, seed)
        if impl == "compile":
            def compile_nets():
                for name in self.nets:
                    setattr(model, name, torch.compile(getattr(model, name)))
            compiled(compile_nets)
        return Prepared(case, impl, model, _on_backend(impl, inner), sync_fn(device))

    def saved_bytes(self, case: Case, impl: str, device: torch.device, dtype: torch.dtype,
                    seed: int) -> int:
        """Bytes saved for backward over one whole training step (every forward
        of the step, each storage counted once), beyond the parameters, buffers
        and data batch, which are alive anyway."""
        model, step, data = self.build(case, impl == "fused", device, dtype, seed)
        return saved_tensor_bytes(_on_backend(impl, step),
                                  alive=[*model.parameters(), *model.buffers(), data])


def _on_backend(impl: str, step: Step) -> Step:
    """The step with gan_ext's ops on the kernels ("fused") or on their
    PyTorch twins (the eager and compiled builds)."""
    backend = "fused" if impl == "fused" else "reference"

    def run():
        with use_backend(backend):
            step()
    return run


def d_step_saved_bytes(case: Case, impl: str, device="cpu", dtype: torch.dtype = torch.float32,
                       seed: int = 0) -> int:
    """Bytes the discriminator's forward on a real and a fake batch keeps for
    its backward (the D update of a GAN step), each storage once, beyond the
    parameters and the two input batches (alive anyway)."""
    block = case.spec
    if not getattr(block, "single_d", False):
        raise ValueError(f"{case.block} has no single discriminator step")
    device = torch.device(device)
    model, _, data = block.build(case, impl == "fused", device, dtype, seed)
    with torch.no_grad():
        fake = model.G(torch.randn(data.shape[0], model.G.nz, device=device, dtype=dtype))
    return saved_tensor_bytes(_on_backend(impl, lambda: model.loss.d_loss(model.D(data), model.D(fake))),
                              alive=[*model.parameters(), *model.buffers(), data, fake])


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
                 seed: int) -> Step:
    """One training step of ``case`` in a build of :data:`VARIANTS`: fused
    kernels (else the plain build on the reference backend), channels_last
    weights, PyTorch's fused Adam."""
    kernels, cl, adam = VARIANTS[variant]
    _, inner, _ = case.spec.build(case, kernels, device, dtype, seed, channels_last=cl, fused_adam=adam)
    return _on_backend("fused" if kernels else "eager", inner)


# ------------------------------------------------------------- the models
def _images(channels: int, size: int, signed: bool = True):
    """A batch of uniform images in [-1, 1] (a tanh generator's range), or in
    [0, 1] when not ``signed`` (the VAE's sigmoid output and BCE target)."""
    def draw(batch: int, gen: torch.Generator) -> torch.Tensor:
        x = torch.rand(batch, channels, size, size, generator=gen)
        return x * 2 - 1 if signed else x
    return draw


def _image_pairs(size: int):
    """CycleGAN's batch: a real A and a real B image of size x size each."""
    def draw(batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(2, batch, 3, size, size, generator=gen) * 2 - 1
    return draw


def _gan_step(model, data, adam_like) -> Step:
    opt_g, opt_d = map(adam_like, model.make_optimizers())
    return lambda: model.train_step(data, opt_g, opt_d)


def _vae_step(model, data, adam_like) -> Step:
    opt = adam_like(model.configure_optimizer())
    return lambda: model.train_step(data, opt)


def _cyclegan_step(model, data, adam_like) -> Step:
    opt_g, opt_d = map(adam_like, model.make_optimizers())
    return lambda: model.train_step(data[0], data[1], opt_g, opt_d)


def _dcgan(nc: int, size: int):
    return lambda fused, cl: dcgan.DCGAN(dcgan.DCGANConfig(nc=nc, image_size=size), fused=fused,
                                         channels_last=cl)


def _cyclegan(fused: bool, cl: Optional[bool]) -> nn.Module:
    return cyclegan.CycleGAN(cyclegan.CycleGANConfig(), fused=fused, channels_last=cl)


_CYCLEGAN_NETS = ("G_A", "G_B", "D_A", "D_B")

register(ModelBlock(
    "step_dcgan64", "DCGAN 64x64 (nz 100, ngf = ndf = 64, nc 3) training step",
    model=_dcgan(3, 64), data=_images(3, 64), train_step=_gan_step, nets=("G", "D"), single_d=True))
register(ModelBlock(
    "step_dcgan28", "DCGAN for MNIST 28x28 (nc 1) training step",
    model=_dcgan(1, 28), data=_images(1, 28), train_step=_gan_step, nets=("G", "D"), single_d=True))
register(ModelBlock(
    "step_mlp_gan",
    "MLP GAN on MNIST (G 100-256-512-1024-784, D 784-1024-512-256-1, dropout 0.3) step",
    # The MLPs have no 4-D activations: channels_last does not apply.
    model=lambda fused, cl: gan.GAN(gan.GANConfig(), fused=fused), data=_images(1, 28),
    train_step=_gan_step, nets=("G", "D"), single_d=True))
register(ModelBlock(
    "step_mlp_vae", "MLP VAE of PyTorch's examples (784-400-20) step, BCE + KL",
    model=lambda fused, cl: vae.VAE(vae.VAEConfig(), fused=fused), data=_images(1, 28, signed=False),
    train_step=_vae_step))
register(ModelBlock(
    "step_cyclegan128", "CycleGAN 128x128 (resnet_9blocks, 70x70 PatchGAN, LSGAN, pool 50) step",
    model=_cyclegan, data=_image_pairs(128), train_step=_cyclegan_step, nets=_CYCLEGAN_NETS))
# Not in MODEL_CASES (too slow for a CPU): the GPU check's CycleGAN-256.
register(ModelBlock(
    "step_cyclegan256", "CycleGAN 256x256 (resnet_9blocks, 70x70 PatchGAN, LSGAN, pool 50) step",
    model=_cyclegan, data=_image_pairs(256), train_step=_cyclegan_step, nets=_CYCLEGAN_NETS))

MODEL_CASES = (("step_dcgan64", (64,)), ("step_dcgan28", (128,)), ("step_mlp_gan", (128,)),
               ("step_mlp_vae", (128,)), ("step_cyclegan128", (1,)))
CASES: Tuple[Case, ...] = tuple(Case(block, shape, "nchw", "fwd+bwd") for block, shape in MODEL_CASES)
