"""The loss and op cases: a fused gan_ext op (GAN losses, L1, the VAE
reparameterization with its KL, activation + dropout, minibatch
discrimination) against what a training script writes with
``torch.nn.functional``, forward and backward at the shapes the models use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..memory import saved_tensor_bytes
from .layers import LEAKY_SLOPE
from .registry import Block, Case, Prepared, Stream, compiled, register, sync_fn

__all__ = ["Operand", "FunctionBlock", "PairwiseBlock", "LOSS_CASES", "CASES", "QUICK_CASES"]

Outputs = Tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Operand:
    """One input of a function case: ``scale * randn(shape)``; ``grad``: the
    backward differentiates with respect to it (a network's output, not data)."""
    name: str
    scale: float = 1.0
    grad: bool = True


@dataclass(frozen=True)
class FunctionBlock(Block):
    """A function of tensors of the case's shape, returning a tuple of outputs:
    ``fused`` calls the gan_ext op, ``eager`` is plain PyTorch."""
    kind: ClassVar[str] = "loss"
    operands: Tuple[Operand, ...]
    fused: Callable[..., Outputs]
    eager: Callable[..., Outputs]

    def inputs(self, case: Case, device: torch.device, dtype: torch.dtype,
               seed: int) -> Dict[str, torch.Tensor]:
        # Drawn in operand order from one stream: the data of every case stays
        # as it was measured in benchmarks/RESULTS.md.
        gen = torch.Generator().manual_seed(seed + Stream.INPUTS)
        out = {}
        for op in self.operands:
            t = (torch.randn(case.shape, generator=gen) * op.scale).to(device=device, dtype=dtype)
            out[op.name] = t.requires_grad_(op.grad and case.mode == "fwd+bwd")
        return out

    def function(self, impl: str) -> Callable[..., Outputs]:
        return self.fused if impl == "fused" else self.eager

    def prepare(self, case: Case, impl: str, device: torch.device, dtype: torch.dtype,
                seed: int) -> Prepared:
        inputs = self.inputs(case, device, dtype, seed)
        fn = self.function(impl)
        if impl == "compile":
            fn = compiled(lambda: torch.compile(self.eager))
        leaves = [t for t in inputs.values() if t.requires_grad]
        # Gradient seeds as a training step sees them: 1 for a scalar loss; for the
        # VAE sample z, a fixed random gradient (what the decoder would send back).
        gen = torch.Generator().manual_seed(seed + Stream.GRADS)
        probe = fn(**inputs)
        seeds = [torch.ones_like(o) if o.dim() == 0 else
                 torch.randn(o.shape, generator=gen).to(device=device, dtype=dtype) for o in probe]
        del probe
        if case.mode == "fwd+bwd":
            def step():
                outs = fn(**inputs)
                torch.autograd.grad(outs, leaves, seeds)
        else:
            def step():
                with torch.no_grad():
                    fn(**inputs)
        return Prepared(case, impl, nn.Module(), step, sync_fn(device))

    def floor(self, case: Case, dtype: torch.dtype) -> Optional[Tuple[int, int]]:
        """Compulsory traffic: every operand read and every output written once;
        for fwd+bwd also each output's gradient read and each operand gradient
        written once (what no implementation can avoid moving)."""
        inputs = self.inputs(case, torch.device("cpu"), dtype, seed=0)
        with torch.no_grad():
            outputs = self.eager(**{k: v.detach() for k, v in inputs.items()})
        one = math.prod(case.shape) * dtype.itemsize
        out_bytes = sum(o.numel() * dtype.itemsize for o in outputs)
        total = len(inputs) * one + out_bytes
        if case.mode == "fwd+bwd":
            total += out_bytes + sum(one for t in inputs.values() if t.requires_grad)
        return total, one

    def saved_bytes(self, case: Case, impl: str, device: torch.device, dtype: torch.dtype,
                    seed: int) -> int:
        # Only what the forward allocates counts: its inputs (a network's
        # output, the data batch) are alive in any training step, and a loss
        # that keeps a reference to them costs nothing extra.
        train_case = Case(case.block, case.shape, case.layout, "fwd+bwd")
        inputs = self.inputs(train_case, device, dtype, seed)
        fn = self.function(impl)
        return saved_tensor_bytes(lambda: fn(**inputs), alive=inputs.values())


@dataclass(frozen=True)
class PairwiseBlock(FunctionBlock):
    """A function case whose work grows with the square of the batch (all
    pairs of samples): compute-bound, so it has no memory floor."""

    def floor(self, case: Case, dtype: torch.dtype) -> Optional[Tuple[int, int]]:
        return None


def _eager_d_bce(real, fake):
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)),)


def _eager_d_lsgan(real, fake):
    return (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)),)


def _eager_g_bce(fake):
    return (F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)),)


def _eager_reparam_kl(mu, logvar):
    std = torch.exp(0.5 * logvar)
    z = mu + torch.randn_like(std) * std
    kl = (-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)).mean()
    return z, kl


def _eager_l1(input, target):
    return (F.l1_loss(input, target),)


def _eager_cycle_l1(input1, target1, input2, target2):
    return (10.0 * F.l1_loss(input1, target1) + 10.0 * F.l1_loss(input2, target2),)


def _eager_minibatch_discrimination(M):
    # As the improved-gan code writes it: every pair by broadcasting, then the
    # diagonal's exp(0) = 1 taken off the row sums.
    d = (M.unsqueeze(1) - M.unsqueeze(0)).abs().sum(-1)  # (N, N, B)
    return (torch.exp(-d).sum(1) - 1,)


def _eager_lrelu_dropout(input):
    return (F.dropout(F.leaky_relu(input, LEAKY_SLOPE), 0.3, training=True),)


# GAN logits: scale 2, so that both signs and saturated sigmoids occur.
_REAL_FAKE = (Operand("real", 2.0), Operand("fake", 2.0))
_INPUT_TARGET = (Operand("input"), Operand("target", grad=False))

register(FunctionBlock(
    "d_bce", "D loss, BCE with logits: real vs 1, fake vs 0 (real and fake of the shape)",
    _REAL_FAKE, fused=lambda real, fake: (ops.d_loss(real, fake, "vanilla"),), eager=_eager_d_bce))
register(FunctionBlock(
    "d_lsgan", "D loss, LSGAN: (real - 1)^2 + fake^2 (real and fake of the shape)",
    _REAL_FAKE, fused=lambda real, fake: (ops.d_loss(real, fake, "lsgan"),), eager=_eager_d_lsgan))
register(FunctionBlock(
    "g_bce", "G loss, non-saturating BCE with logits",
    (Operand("fake", 2.0),), fused=lambda fake: (ops.g_loss(fake, "vanilla"),), eager=_eager_g_bce))
register(FunctionBlock(
    "reparam_kl", "VAE reparameterization z = mu + exp(lv/2) eps with the KL term (mean over batch)",
    (Operand("mu"), Operand("logvar", 0.5)),
    fused=lambda mu, logvar: ops.reparameterize_kl(mu, logvar, "mean"), eager=_eager_reparam_kl))
register(FunctionBlock(
    "l1", "L1 loss, input requires grad, target does not (cycle / identity term)",
    _INPUT_TARGET, fused=lambda input, target: (ops.l1_loss(input, target),), eager=_eager_l1))
register(FunctionBlock(
    "cycle_l1", "10 * L1(rec_A, A) + 10 * L1(rec_B, B), both pairs of the shape",
    (Operand("input1"), Operand("target1", grad=False), Operand("input2"),
     Operand("target2", grad=False)),
    fused=lambda input1, target1, input2, target2: (
        ops.cycle_l1_loss(input1, target1, input2, target2, 10.0, 10.0),),
    eager=_eager_cycle_l1))
register(FunctionBlock(
    "lrelu_dropout", "LeakyReLU(0.2) + Dropout(0.3), the MLP discriminator block (after its Linear)",
    (Operand("input"),), fused=lambda input: (ops.act_dropout(input, "leaky_relu", LEAKY_SLOPE, 0.3),),
    eager=_eager_lrelu_dropout))
register(PairwiseBlock(
    "minibatch_disc", "minibatch discrimination o[i, b] = sum_j!=i exp(-|M_ib - M_jb|_1), M (N, B, C)",
    (Operand("M"),), fused=lambda M: (ops.minibatch_discrimination(M),),
    eager=_eager_minibatch_discrimination))

# The op spec's shapes: B=100 kernels of C=5 (improved-gan's kernel dimension), batch 64 and 256.
_MBD_SHAPES = next(s.bench_shapes for m in ops.OP_MODULES for s in getattr(m, "SPECS", ())
                   if s.name == "minibatch_discrimination")

# Shapes the models use: DCGAN D logits (64, 1); PatchGAN (70x70) logits at
# 256x256 input, batch 1 and 16; a VAE latent (128, 20) and a large one;
# CycleGAN images at 256 (batch 1) and 128 (batch 16).
LOSS_CASES = (("d_bce", (64, 1)), ("d_bce", (1, 1, 30, 30)), ("d_bce", (16, 1, 30, 30)),
              ("d_lsgan", (1, 1, 30, 30)), ("d_lsgan", (16, 1, 30, 30)), ("g_bce", (64, 1)),
              ("reparam_kl", (128, 20)), ("reparam_kl", (4096, 512)),
              ("l1", (1, 3, 256, 256)), ("l1", (16, 3, 128, 128)), ("cycle_l1", (1, 3, 256, 256)),
              ("lrelu_dropout", (128, 1024)), ("lrelu_dropout", (128, 256)),
              *(("minibatch_disc", shape) for shape in _MBD_SHAPES.values()))
CASES: Tuple[Case, ...] = tuple(Case(block, shape, "nchw", "fwd+bwd") for block, shape in LOSS_CASES)
QUICK_CASES: Tuple[Case, ...] = (Case("d_bce", (64, 1), "nchw", "fwd+bwd"),
                                 Case("reparam_kl", (128, 20), "nchw", "fwd+bwd"),
                                 Case("l1", (16, 3, 128, 128), "nchw", "fwd+bwd"))
