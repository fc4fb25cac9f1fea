"""Fused-vs-PyTorch timing: the library behind ``gan-ext bench``, ``make demo``
and the pytest-benchmark suite in ``benchmarks/`` (which reuses the cases and
builders defined here, so both always measure the same thing).

Every case pairs a block built from the public :mod:`gan_ext.nn` layers
("fused") with its plain PyTorch counterpart ("eager", e.g. ``nn.BatchNorm2d``
followed by ``nn.ReLU(inplace=True)``) and, on request, ``torch.compile`` of the
eager block ("compile"). Shapes are those of the DCGAN generator and
discriminator at batch 64.

Method: modules and inputs come from fixed seeds; each implementation is warmed
up, then the repetitions are interleaved (fused, eager, fused, eager, ...) so
that drifting clocks and caches hit both alike; on CUDA the device is
synchronized inside the timed region; the figure reported is the median.

Modes:
  fwd      training-mode forward (batch statistics, running stats updated), no autograd graph
  fwd+bwd  training-mode forward and backward, gradients of the input and all parameters
  eval     eval-mode forward under torch.no_grad (running statistics; the fused
           ConvTranspose2dNormAct folds its norm into the convolution)
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import torch
from torch import nn

__all__ = ["Case", "Prepared", "Result", "CompileUnavailable", "IMPLS", "LAYOUTS", "MODES",
           "cases", "select", "prepare", "saved_bytes", "time_case", "run", "fused_path"]

IMPLS = ("fused", "eager", "compile")
LAYOUTS = ("nchw", "channels_last")
MODES = ("fwd", "fwd+bwd", "eval")

# DCGAN (Radford et al.) at batch 64: the generator's BatchNorm+ReLU inputs and
# the discriminator's BatchNorm+LeakyReLU(0.2) inputs.
GENERATOR_SHAPES = ((64, 512, 4, 4), (64, 256, 8, 8), (64, 128, 16, 16), (64, 64, 32, 32))
DISCRIMINATOR_SHAPES = ((64, 128, 16, 16), (64, 256, 8, 8), (64, 512, 4, 4))
# Input of the generator's ConvTranspose2d(128, 64, 4, 2, 1) + BN + ReLU block.
CONVT_SHAPES = ((64, 128, 16, 16),)

LEAKY_SLOPE = 0.2

NORM_BLOCKS = {
    "bn_relu": "BatchNorm2d + ReLU",
    "bn_lrelu": f"BatchNorm2d + LeakyReLU({LEAKY_SLOPE})",
    "convT_bn_relu": "ConvTranspose2d(C, C/2, 4, 2, 1) + BatchNorm2d + ReLU",
}
# The losses: fused op vs what a training script writes with torch.nn.functional.
LOSS_BLOCKS = {
    "d_bce": "D loss, BCE with logits: real vs 1, fake vs 0 (real and fake of the shape)",
    "d_lsgan": "D loss, LSGAN: (real - 1)^2 + fake^2 (real and fake of the shape)",
    "g_bce": "G loss, non-saturating BCE with logits",
    "reparam_kl": "VAE reparameterization z = mu + exp(lv/2) eps with the KL term (mean over batch)",
    "l1": "L1 loss, input requires grad, target does not (cycle / identity term)",
    "cycle_l1": "10 * L1(rec_A, A) + 10 * L1(rec_B, B), both pairs of the shape",
    "lrelu_dropout": "LeakyReLU(0.2) + Dropout(0.3), the MLP discriminator block (after its Linear)",
}
# One full training step of a model (D update + G update for the GANs), at
# the batch of the case's shape. "eager" is the plain-PyTorch build of the same
# network (fused=False: nn.BatchNorm2d + nn.ReLU, nn.Dropout, randn_like ...)
# with every gan_ext op on its PyTorch twin; same initial weights.
MODEL_BLOCKS = {
    "step_dcgan64": "DCGAN 64x64 (nz 100, ngf = ndf = 64, nc 3) training step",
    "step_dcgan28": "DCGAN for MNIST 28x28 (nc 1) training step",
    "step_mlp_gan": "MLP GAN on MNIST (G 100-256-512-1024-784, D 784-1024-512-256-1, dropout 0.3) step",
    "step_mlp_vae": "MLP VAE of PyTorch's examples (784-400-20) step, BCE + KL",
    "step_cyclegan128": "CycleGAN 128x128 (resnet_9blocks, 70x70 PatchGAN, LSGAN, pool 50) step",
    # Not in MODEL_CASES (too slow for a CPU): the GPU check's CycleGAN-256.
    "step_cyclegan256": "CycleGAN 256x256 (resnet_9blocks, 70x70 PatchGAN, LSGAN, pool 50) step",
}
MODEL_CASES = (("step_dcgan64", (64,)), ("step_dcgan28", (128,)), ("step_mlp_gan", (128,)),
               ("step_mlp_vae", (128,)), ("step_cyclegan128", (1,)))
BLOCKS = {**NORM_BLOCKS, **LOSS_BLOCKS, **MODEL_BLOCKS}
# Shapes the models use: DCGAN D logits (64, 1); PatchGAN (70x70) logits at
# 256x256 input, batch 1 and 16; a VAE latent (128, 20) and a large one;
# CycleGAN images at 256 (batch 1) and 128 (batch 16).
LOSS_CASES = (("d_bce", (64, 1)), ("d_bce", (1, 1, 30, 30)), ("d_bce", (16, 1, 30, 30)),
              ("d_lsgan", (1, 1, 30, 30)), ("d_lsgan", (16, 1, 30, 30)), ("g_bce", (64, 1)),
              ("reparam_kl", (128, 20)), ("reparam_kl", (4096, 512)),
              ("l1", (1, 3, 256, 256)), ("l1", (16, 3, 128, 128)), ("cycle_l1", (1, 3, 256, 256)),
              ("lrelu_dropout", (128, 1024)), ("lrelu_dropout", (128, 256)))


class CompileUnavailable(RuntimeError):
    """torch.compile could not build or run the eager block on this machine."""


@dataclass(frozen=True)
class Case:
    block: str                      # a key of BLOCKS
    shape: Tuple[int, ...]          # input: (N, C, H, W) for the norm blocks
    layout: str                     # "nchw" | "channels_last"
    mode: str                       # "fwd" | "fwd+bwd" | "eval"

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    @property
    def group(self) -> str:
        """Human-readable name, also the pytest-benchmark group."""
        return f"{self.block} {'x'.join(map(str, self.shape))} {self.layout} {self.mode}"

    @property
    def id(self) -> str:
        """Identifier without spaces (pytest parameter ids)."""
        return self.group.replace(" ", "-")

    @property
    def training(self) -> bool:
        return self.mode != "eval"

    @property
    def is_loss(self) -> bool:
        return self.block in LOSS_BLOCKS

    @property
    def is_model(self) -> bool:
        return self.block in MODEL_BLOCKS


def cases(quick: bool = False, kind: str = "all") -> List[Case]:
    """The benchmark cases; ``quick`` is a handful that runs in seconds.
    ``kind``: "all" (blocks and losses), "norm" (norm + activation blocks),
    "loss" or "model" (whole training steps: slow, never part of "all")."""
    if kind not in ("all", "norm", "loss", "model"):
        raise ValueError(f"kind must be 'all', 'norm', 'loss' or 'model', got {kind!r}")
    if kind == "model":
        return [Case(block, shape, "nchw", "fwd+bwd") for block, shape in MODEL_CASES]
    norm, loss = [], []
    if quick:
        norm = [
            Case("bn_relu", (64, 128, 16, 16), "nchw", "fwd"),
            Case("bn_relu", (64, 128, 16, 16), "nchw", "fwd+bwd"),
            Case("bn_relu", (64, 128, 16, 16), "channels_last", "fwd+bwd"),
            Case("bn_lrelu", (64, 256, 8, 8), "nchw", "fwd+bwd"),
            Case("convT_bn_relu", (64, 128, 16, 16), "nchw", "fwd+bwd"),
            Case("convT_bn_relu", (64, 128, 16, 16), "nchw", "eval"),
        ]
        loss = [Case("d_bce", (64, 1), "nchw", "fwd+bwd"), Case("reparam_kl", (128, 20), "nchw", "fwd+bwd"),
                Case("l1", (16, 3, 128, 128), "nchw", "fwd+bwd")]
    else:
        for block, shapes, modes in (("bn_relu", GENERATOR_SHAPES, ("fwd", "fwd+bwd")),
                                     ("bn_lrelu", DISCRIMINATOR_SHAPES, ("fwd", "fwd+bwd")),
                                     ("convT_bn_relu", CONVT_SHAPES, ("fwd+bwd", "eval"))):
            for shape in shapes:
                for layout in LAYOUTS:
                    for mode in modes:
                        norm.append(Case(block, shape, layout, mode))
        loss = [Case(block, shape, "nchw", "fwd+bwd") for block, shape in LOSS_CASES]
    return {"all": norm + loss, "norm": norm, "loss": loss}[kind]


def select(all_cases: Iterable[Case], pattern: Optional[str]) -> List[Case]:
    """Cases whose group name contains every whitespace-separated word of pattern."""
    words = (pattern or "").split()
    return [c for c in all_cases if all(w in c.group for w in words)]


# ------------------------------------------------------------------- builders
def _memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


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


def _eager_block(case: Case) -> nn.Module:
    C = case.shape[1]
    if case.block == "bn_relu":
        return nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=True))
    if case.block == "bn_lrelu":
        return nn.Sequential(nn.BatchNorm2d(C), nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
    return nn.Sequential(nn.ConvTranspose2d(C, C // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(C // 2),
                         nn.ReLU(inplace=True))


def _fused_block(case: Case) -> nn.Module:
    from .. import nn as gnn  # the public layers, so the benchmark exercises them

    C = case.shape[1]
    if case.block == "bn_relu":
        return gnn.BatchNormAct2d(C, activation="relu")
    if case.block == "bn_lrelu":
        return gnn.BatchNormAct2d(C, activation="leaky_relu", negative_slope=LEAKY_SLOPE)
    return gnn.ConvTranspose2dNormAct(C, C // 2, 4, 2, 1, bias=False, norm="batch", activation="relu")


def _output_shape(case: Case) -> Tuple[int, int, int, int]:
    N, C, H, W = case.shape
    if case.block == "convT_bn_relu":
        return (N, C // 2, 2 * H, 2 * W)  # kernel 4, stride 2, padding 1
    return (N, C, H, W)


def _sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass
class Prepared:
    """A ready-to-time case: ``step()`` runs one repetition (no sync)."""
    case: Case
    impl: str
    module: nn.Module
    step: Callable[[], None]
    sync: Callable[[], None]


def _make_module(case: Case, impl: str, device: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    module = _fused_block(case) if impl == "fused" else _eager_block(case)
    _randomize_norms(module, torch.Generator().manual_seed(seed + 1))
    module = module.to(device=device, dtype=dtype, memory_format=_memory_format(case.layout))
    module.train(case.training)
    return module


def _make_input(case: Case, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(case.shape, generator=gen).to(device=device, dtype=dtype)
    return x.contiguous(memory_format=_memory_format(case.layout))



# ---------------------------------------------------------------- loss cases
def _loss_inputs(case: Case, device: torch.device, dtype: torch.dtype, seed: int) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 2)

    def rand(shape, scale=1.0, grad=False):
        t = (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype)
        return t.requires_grad_(grad and case.mode == "fwd+bwd")

    if case.block in ("d_bce", "d_lsgan"):
        return {"real": rand(case.shape, 2.0, True), "fake": rand(case.shape, 2.0, True)}
    if case.block == "g_bce":
        return {"fake": rand(case.shape, 2.0, True)}
    if case.block == "reparam_kl":
        return {"mu": rand(case.shape, 1.0, True), "logvar": rand(case.shape, 0.5, True)}
    if case.block == "l1":
        return {"input": rand(case.shape, 1.0, True), "target": rand(case.shape)}
    if case.block == "lrelu_dropout":
        return {"input": rand(case.shape, 1.0, True)}
    return {"input1": rand(case.shape, 1.0, True), "target1": rand(case.shape),
            "input2": rand(case.shape, 1.0, True), "target2": rand(case.shape)}


def _loss_fn(case: Case, impl: str) -> Callable[..., Tuple[torch.Tensor, ...]]:
    """The loss as fused op ("fused") or as plain torch.nn.functional code; returns a tuple of outputs."""
    import torch.nn.functional as F

    from .. import ops

    b = case.block
    if impl == "fused":
        return {
            "d_bce": lambda real, fake: (ops.d_loss(real, fake, "vanilla"),),
            "d_lsgan": lambda real, fake: (ops.d_loss(real, fake, "lsgan"),),
            "g_bce": lambda fake: (ops.g_loss(fake, "vanilla"),),
            "reparam_kl": lambda mu, logvar: ops.reparameterize_kl(mu, logvar, "mean"),
            "l1": lambda input, target: (ops.l1_loss(input, target),),
            "cycle_l1": lambda input1, target1, input2, target2: (
                ops.cycle_l1_loss(input1, target1, input2, target2, 10.0, 10.0),),
            "lrelu_dropout": lambda input: (ops.act_dropout(input, "leaky_relu", LEAKY_SLOPE, 0.3),),
        }[b]

    def d_bce(real, fake):
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)),)

    def d_lsgan(real, fake):
        return (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)),)

    def g_bce(fake):
        return (F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)),)

    def reparam_kl(mu, logvar):
        std = torch.exp(0.5 * logvar)
        z = mu + torch.randn_like(std) * std
        kl = (-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)).mean()
        return z, kl

    def l1(input, target):
        return (F.l1_loss(input, target),)

    def cycle_l1(input1, target1, input2, target2):
        return (10.0 * F.l1_loss(input1, target1) + 10.0 * F.l1_loss(input2, target2),)

    def lrelu_dropout(input):
        return (F.dropout(F.leaky_relu(input, LEAKY_SLOPE), 0.3, training=True),)

    return {"d_bce": d_bce, "d_lsgan": d_lsgan, "g_bce": g_bce, "reparam_kl": reparam_kl, "l1": l1,
            "cycle_l1": cycle_l1, "lrelu_dropout": lrelu_dropout}[b]


def _prepare_loss(case: Case, impl: str, device: torch.device, dtype: torch.dtype,
                  seed: int) -> "Prepared":
    inputs = _loss_inputs(case, device, dtype, seed)
    fn = _loss_fn(case, "eager" if impl == "compile" else impl)
    if impl == "compile":
        import torch._dynamo as dynamo

        dynamo.reset()
        try:
            fn = torch.compile(fn)
        except Exception as e:  # noqa: BLE001
            raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {e}") from e
    leaves = [t for t in inputs.values() if t.requires_grad]
    # Gradient seeds as a training step sees them: 1 for a scalar loss; for the
    # VAE sample z, a fixed random gradient (what the decoder would send back).
    gen = torch.Generator().manual_seed(seed + 3)
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
    return Prepared(case, impl, nn.Module(), step, _sync_fn(device))


def prepare(case: Case, impl: str, device="cpu", dtype: torch.dtype = torch.float32,
            seed: int = 0) -> Prepared:
    """Build the module, input and step function of one (case, impl).

    For ``impl="compile"`` the eager block is compiled and run once here, so a
    machine where torch.compile cannot work raises :class:`CompileUnavailable`
    up front instead of failing mid-measurement.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    device = torch.device(device)
    if case.is_model:
        from . import models as bench_models

        return bench_models.prepare(case, impl, device, dtype, seed)
    if case.is_loss:
        prepared = _prepare_loss(case, impl, device, dtype, seed)
        if impl == "compile":
            try:
                prepared.step()
                prepared.sync()
            except Exception as e:  # noqa: BLE001
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {msg}") from e
        return prepared
    module = _make_module(case, "eager" if impl == "compile" else impl, device, dtype, seed)
    x = _make_input(case, device, dtype, seed)
    runner: Callable = module
    if impl == "compile":
        import torch._dynamo as dynamo

        # Every case compiles the same Sequential.forward code object; a reset
        # keeps earlier cases from filling dynamo's recompile budget (past
        # which it silently runs eager).
        dynamo.reset()
        try:
            runner = torch.compile(module)
        except Exception as e:  # noqa: BLE001  (e.g. unsupported Python/platform)
            raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {e}") from e

    if case.mode == "fwd+bwd":
        x.requires_grad_(True)
        inputs = [x] + [p for p in module.parameters() if p.requires_grad]
        # In the case's layout, as the layer above would send it.
        grad_out = torch.randn(_output_shape(case), generator=torch.Generator().manual_seed(seed + 3))
        grad_out = grad_out.to(device=device, dtype=dtype).contiguous(
            memory_format=_memory_format(case.layout))

        def step():
            out = runner(x)
            torch.autograd.grad(out, inputs, grad_out)
    else:
        def step():
            with torch.no_grad():
                runner(x)

    prepared = Prepared(case, impl, module, step, _sync_fn(device))
    if impl == "compile":
        try:
            step()
            prepared.sync()
        except Exception as e:  # noqa: BLE001  (no C++ compiler, unsupported op, ...)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CompileUnavailable(f"torch.compile failed: {type(e).__name__}: {msg}") from e
    return prepared


def saved_bytes(case: Case, impl: str, device="cpu", dtype: torch.dtype = torch.float32,
                seed: int = 0) -> int:
    """Bytes the forward of (case, impl) keeps alive for backward, counted once
    per storage with ``torch.autograd.graph.saved_tensors_hooks`` (for the
    losses: beyond the storages of their inputs). Shows the
    In-Place ABN saving: fused BN+LeakyReLU keeps only its output, eager keeps
    the BatchNorm input and the activation output."""
    if impl == "compile":
        raise ValueError("saved_bytes measures the eager and fused blocks; compiled graphs "
                         "do not report their saved tensors to saved_tensors_hooks")
    device = torch.device(device)
    if case.is_model:
        from . import models as bench_models

        return bench_models.saved_bytes(case, impl, device, dtype, seed)
    train_case = case if case.mode == "fwd+bwd" else Case(case.block, case.shape, case.layout, "fwd+bwd")
    storages: Dict[Tuple, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        storages[(t.device, s.data_ptr())] = s.nbytes()
        return t

    if case.is_loss:
        # For a loss, only what the forward allocates counts: its inputs (a
        # network's output, the data batch) are alive in any training step,
        # and a loss that keeps a reference to them costs nothing extra.
        inputs = _loss_inputs(train_case, device, dtype, seed)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = _loss_fn(case, impl)(**inputs)
        del out
        for t in inputs.values():
            storages.pop((t.device, t.untyped_storage().data_ptr()), None)
        return sum(storages.values())
    module = _make_module(train_case, impl, device, dtype, seed)
    x = _make_input(train_case, device, dtype, seed).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    del out
    return sum(storages.values())


# --------------------------------------------------------------------- timing
@dataclass
class Result:
    case: Case
    seconds: Dict[str, List[float]] = field(default_factory=dict)  # impl -> per-call time of each rep
    errors: Dict[str, str] = field(default_factory=dict)            # impl -> why it did not run
    saved: Dict[str, int] = field(default_factory=dict)             # impl -> bytes saved for backward
    number: int = 1                                                 # calls per timed repetition

    def median(self, impl: str) -> Optional[float]:
        t = self.seconds.get(impl)
        return statistics.median(t) if t else None

    def ratio(self, impl: str, base: str = "fused") -> Optional[float]:
        """median(impl) / median(base): > 1 means base is faster."""
        a, b = self.median(impl), self.median(base)
        return a / b if a is not None and b else None


def time_case(case: Case, impls: Sequence[str] = ("fused", "eager"), device="cpu",
              dtype: torch.dtype = torch.float32, reps: int = 50, warmup: int = 5,
              min_rep_seconds: float = 1e-3, seed: int = 0, measure_memory: bool = True) -> Result:
    """Time one case for each impl, repetitions interleaved across impls.

    A repetition runs the step ``number`` times, with ``number`` chosen after
    warm-up so that a repetition of the fastest impl lasts ``min_rep_seconds``
    (timer and launch jitter would dominate single calls of the small shapes).
    """
    if reps < 1 or warmup < 0:
        raise ValueError(f"reps must be >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    result = Result(case)
    prepared: Dict[str, Prepared] = {}
    for impl in impls:
        try:
            prepared[impl] = prepare(case, impl, device, dtype, seed)
        except CompileUnavailable as e:
            result.errors[impl] = str(e)
    if not prepared:
        return result
    sync = next(iter(prepared.values())).sync

    for p in prepared.values():
        for _ in range(warmup):
            p.step()
        sync()

    # Calibrate the calls per repetition on the fastest impl.
    fastest = math.inf
    for p in prepared.values():
        sync()
        t0 = time.perf_counter()
        p.step()
        sync()
        fastest = min(fastest, time.perf_counter() - t0)
    number = max(1, min(1000, math.ceil(min_rep_seconds / max(fastest, 1e-9))))
    result.number = number

    times: Dict[str, List[float]] = {impl: [] for impl in prepared}
    for _ in range(reps):
        for impl, p in prepared.items():  # interleaved: fused, eager, [compile], fused, ...
            step = p.step
            sync()
            t0 = time.perf_counter()
            for _ in range(number):
                step()
            sync()
            times[impl].append((time.perf_counter() - t0) / number)
    result.seconds = times

    if measure_memory and case.mode == "fwd+bwd":
        for impl in prepared:
            if impl != "compile":
                result.saved[impl] = saved_bytes(case, impl, device, dtype, seed)
    return result


def fused_path(device="cpu") -> str:
    """What the 'fused' side really runs on ``device``: the compiled kernel or
    the pure-PyTorch reference (so a table is never misread)."""
    from .. import _backend

    dev = torch.device(device).type
    if not _backend.extension_loaded:
        return "reference (extension not loaded)"
    if _backend.backend != "fused":
        return f"reference (backend set to {_backend.backend!r})"
    if dev not in _backend.compiled_devices:
        return f"reference (no compiled {dev} kernel)"
    return f"compiled {dev} kernel"


def _fmt_ms(s: Optional[float]) -> str:
    return "n/a" if s is None else f"{s * 1e3:.3f}"


def _fmt_ratio(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def _fmt_mib(saved: Dict[str, int]) -> str:
    if "fused" not in saved or "eager" not in saved:
        return ""
    return f"{saved['fused'] / 2**20:.1f}/{saved['eager'] / 2**20:.1f}"


def run(selected: Sequence[Case], device="cpu", dtype: torch.dtype = torch.float32, reps: int = 50,
        warmup: int = 5, compile: bool = False, out: TextIO = sys.stdout) -> List[Result]:
    """Time every case and print one table row per case as it finishes."""
    impls = ("fused", "eager", "compile") if compile else ("fused", "eager")
    device = torch.device(device)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"device {device}{threads} | dtype {str(dtype).replace('torch.', '')} | "
          f"fused = {fused_path(device)} | median of {reps} reps", file=out)
    cols = ["case", "fused ms", "eager ms", "eager/fused"]
    if compile:
        cols += ["compile ms", "compile/fused"]
    cols.append("saved MiB f/e")
    w0 = max([len(cols[0])] + [len(c.group) for c in selected])
    widths = [w0] + [max(len(c), 9) for c in cols[1:]]

    def line(cells):
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    print(line(cols), file=out)
    out.flush()
    results, notes = [], []
    for case in selected:
        r = time_case(case, impls, device, dtype, reps=reps, warmup=warmup)
        cells = [case.group, _fmt_ms(r.median("fused")), _fmt_ms(r.median("eager")),
                 _fmt_ratio(r.ratio("eager"))]
        if compile:
            cells += [_fmt_ms(r.median("compile")), _fmt_ratio(r.ratio("compile"))]
        cells.append(_fmt_mib(r.saved))
        print(line(cells).rstrip(), file=out)
        out.flush()
        for impl, err in r.errors.items():
            if err not in notes:
                notes.append(err)
        results.append(r)
    print("ratio = other median / fused median (> 1: fused is faster); "
          "saved MiB f/e = memory kept for backward, fused/eager", file=out)
    for n in notes:
        print(f"note: compile: {n}", file=out)
    return results
