"""The norm + activation layer cases: a block built from the public
:mod:`gan_ext.nn` layers ("fused") against its plain PyTorch counterpart
("eager", e.g. ``nn.BatchNorm2d`` followed by ``nn.ReLU(inplace=True)``), at the
shapes of the DCGAN generator and discriminator at batch 64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, List, Optional, Tuple

import torch
from torch import nn

from .. import nn as gnn  # the public layers, so the benchmark exercises them
from ..memory import saved_tensor_bytes
from .registry import LAYOUTS, Block, Case, Prepared, Stream, compiled, memory_format, register, sync_fn

__all__ = ["LayerBlock", "LEAKY_SLOPE", "GENERATOR_SHAPES", "DISCRIMINATOR_SHAPES", "CONVT_SHAPES",
           "CYCLEGAN_SHAPES", "CASES", "QUICK_CASES"]

# DCGAN (Radford et al.) at batch 64: the generator's BatchNorm+ReLU inputs and
# the discriminator's BatchNorm+LeakyReLU(0.2) inputs.
GENERATOR_SHAPES = ((64, 512, 4, 4), (64, 256, 8, 8), (64, 128, 16, 16), (64, 64, 32, 32))
DISCRIMINATOR_SHAPES = ((64, 128, 16, 16), (64, 256, 8, 8), (64, 512, 4, 4))
# Input of the generator's ConvTranspose2d(128, 64, 4, 2, 1) + BN + ReLU block.
CONVT_SHAPES = ((64, 128, 16, 16),)
CYCLEGAN_SHAPES = ((1, 64, 256, 256), (1, 128, 128, 128), (1, 256, 64, 64))

LEAKY_SLOPE = 0.2


def _same_shape(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    return shape


@dataclass(frozen=True)
class LayerBlock(Block):
    """A layer applied to one (N, C, H, W) input; ``fused`` and ``eager`` build
    it from the channel count C, ``output_shape`` maps the input shape to the
    output's (the shape of the gradient fed to backward)."""
    kind: ClassVar[str] = "norm"
    fused: Callable[[int], nn.Module]
    eager: Callable[[int], nn.Module]
    output_shape: Callable[[Tuple[int, ...]], Tuple[int, ...]] = _same_shape
    # Passes over the input a norm + activation must make per mode, when the
    # tensor does not stay in cache between passes: statistics need a read
    # before the normalizing read + write (3); eval is one read + write (2);
    # the backward reads dy and the saved tensor for its sums, then again to
    # write dx (5). None: not bandwidth-bound (the convolution blocks).
    floor_passes: Optional[Tuple[Tuple[str, int], ...]] = (("fwd", 3), ("eval", 2), ("fwd+bwd", 8))

    def module(self, case: Case, impl: str, device: torch.device, dtype: torch.dtype,
               seed: int) -> nn.Module:
        torch.manual_seed(seed + Stream.WEIGHTS)
        module = (self.fused if impl == "fused" else self.eager)(case.shape[1])
        _randomize_norms(module, torch.Generator().manual_seed(seed + Stream.NORM_STATE))
        module = module.to(device=device, dtype=dtype, memory_format=memory_format(case.layout))
        module.train(case.training)
        return module

    def input(self, case: Case, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed + Stream.INPUTS)
        x = torch.randn(case.shape, generator=gen).to(device=device, dtype=dtype)
        return x.contiguous(memory_format=memory_format(case.layout))

    def prepare(self, case: Case, impl: str, device: torch.device, dtype: torch.dtype,
                seed: int) -> Prepared:
        module = self.module(case, impl, device, dtype, seed)
        x = self.input(case, device, dtype, seed)
        runner: Callable = module
        if impl == "compile":
            runner = compiled(lambda: torch.compile(module))

        if case.mode == "fwd+bwd":
            x.requires_grad_(True)
            inputs = [x] + [p for p in module.parameters() if p.requires_grad]
            # In the case's layout, as the layer above would send it.
            gen = torch.Generator().manual_seed(seed + Stream.GRADS)
            grad_out = torch.randn(self.output_shape(case.shape), generator=gen)
            grad_out = grad_out.to(device=device, dtype=dtype).contiguous(
                memory_format=memory_format(case.layout))

            def step():
                out = runner(x)
                torch.autograd.grad(out, inputs, grad_out)
        else:
            def step():
                with torch.no_grad():
                    runner(x)
        return Prepared(case, impl, module, step, sync_fn(device))

    def saved_bytes(self, case: Case, impl: str, device: torch.device, dtype: torch.dtype,
                    seed: int) -> int:
        train_case = Case(case.block, case.shape, case.layout, "fwd+bwd")
        module = self.module(train_case, impl, device, dtype, seed)
        x = self.input(train_case, device, dtype, seed).requires_grad_(True)
        return saved_tensor_bytes(lambda: module(x))


    def floor(self, case: Case, dtype: torch.dtype) -> Optional[Tuple[int, int]]:
        if self.floor_passes is None:
            return None
        nbytes = math.prod(case.shape) * dtype.itemsize
        return dict(self.floor_passes)[case.mode] * nbytes, nbytes


def _randomize_norms(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial affine parameters and running statistics (fresh ones are
    1/0/0/1, which would make eval mode an identity-like special case)."""
    with torch.no_grad():
        for m in module.modules():
            rv = getattr(m, "running_var", None)
            if isinstance(rv, torch.Tensor) and rv.dim() == 1:
                C = rv.numel()
                rv.copy_(torch.rand(C, generator=gen) + 0.5)
                m.running_mean.copy_(torch.randn(C, generator=gen) * 0.1)
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.rand(C, generator=gen) + 0.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(C, generator=gen) * 0.1)


def _convT_output(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    N, C, H, W = shape
    return (N, C // 2, 2 * H, 2 * W)  # kernel 4, stride 2, padding 1


register(LayerBlock(
    "bn_relu", "BatchNorm2d + ReLU",
    fused=lambda C: gnn.BatchNormAct2d(C, activation="relu"),
    eager=lambda C: nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=True))))
register(LayerBlock(
    "bn_lrelu", f"BatchNorm2d + LeakyReLU({LEAKY_SLOPE})",
    fused=lambda C: gnn.BatchNormAct2d(C, activation="leaky_relu", negative_slope=LEAKY_SLOPE),
    eager=lambda C: nn.Sequential(nn.BatchNorm2d(C), nn.LeakyReLU(LEAKY_SLOPE, inplace=True))))
register(LayerBlock(
    "convT_bn_relu", "ConvTranspose2d(C, C/2, 4, 2, 1) + BatchNorm2d + ReLU",
    fused=lambda C: gnn.ConvTranspose2dNormAct(C, C // 2, 4, 2, 1, bias=False, norm="batch",
                                               activation="relu"),
    eager=lambda C: nn.Sequential(nn.ConvTranspose2d(C, C // 2, 4, 2, 1, bias=False),
                                  nn.BatchNorm2d(C // 2), nn.ReLU(inplace=True)),
    output_shape=_convT_output, floor_passes=None))
# CycleGAN's norm: InstanceNorm2d without affine parameters or running
# statistics (the official networks.py), then ReLU; at its generator's shapes.
register(LayerBlock(
    "in_relu", "InstanceNorm2d + ReLU (CycleGAN: no affine, no running statistics)",
    fused=lambda C: gnn.InstanceNormAct2d(C, activation="relu"),
    eager=lambda C: nn.Sequential(nn.InstanceNorm2d(C), nn.ReLU(inplace=True))))


def _suite() -> List[Case]:
    cases = []
    for block, shapes, modes in (("bn_relu", GENERATOR_SHAPES, ("fwd", "fwd+bwd")),
                                 ("bn_lrelu", DISCRIMINATOR_SHAPES, ("fwd", "fwd+bwd")),
                                 ("in_relu", CYCLEGAN_SHAPES, ("fwd", "fwd+bwd")),
                                 ("convT_bn_relu", CONVT_SHAPES, ("fwd+bwd", "eval"))):
        for shape in shapes:
            for layout in LAYOUTS:
                for mode in modes:
                    cases.append(Case(block, shape, layout, mode))
    return cases


CASES: Tuple[Case, ...] = tuple(_suite())
QUICK_CASES: Tuple[Case, ...] = (
    Case("bn_relu", (64, 128, 16, 16), "nchw", "fwd"),
    Case("bn_relu", (64, 128, 16, 16), "nchw", "fwd+bwd"),
    Case("bn_relu", (64, 128, 16, 16), "channels_last", "fwd+bwd"),
    Case("bn_lrelu", (64, 256, 8, 8), "nchw", "fwd+bwd"),
    Case("convT_bn_relu", (64, 128, 16, 16), "nchw", "fwd+bwd"),
    Case("convT_bn_relu", (64, 128, 16, 16), "nchw", "eval"),
)
