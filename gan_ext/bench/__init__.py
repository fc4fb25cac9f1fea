"""Fused-vs-PyTorch timing: the library behind ``gan-ext bench``, ``make demo``
and the pytest-benchmark suite in ``benchmarks/`` (which reuses the cases and
builders defined here, so both always measure the same thing). The core of
gan_ext never imports it.

Every case pairs a fused gan_ext block, op or model with its plain PyTorch
counterpart ("eager", e.g. ``nn.BatchNorm2d`` followed by
``nn.ReLU(inplace=True)``) and, on request, ``torch.compile`` of the eager
block ("compile"); modules and inputs come from fixed seeds (:class:`Stream`).

    registry   Block (a registered kind of case), Case, prepare, saved_bytes,
               the compile wrapper, the seed streams
    layers     norm + activation layers at the DCGAN batch-64 shapes
    losses     GAN/L1 losses, VAE reparameterization, activation + dropout
    models     whole training steps of the models
    suite      cases(), select()
    timing     the interleaved timing loop (time_case)
    report     the table of ``gan-ext bench`` (run, fused_path)

Modes:
  fwd      training-mode forward (batch statistics, running stats updated), no autograd graph
  fwd+bwd  training-mode forward and backward, gradients of the input and all parameters
  eval     eval-mode forward under torch.no_grad (running statistics; the fused
           ConvTranspose2dNormAct folds its norm into the convolution)
"""
from __future__ import annotations

from .layers import CONVT_SHAPES, DISCRIMINATOR_SHAPES, GENERATOR_SHAPES, LEAKY_SLOPE
from .losses import LOSS_CASES
from .models import MODEL_CASES
from .registry import (BLOCKS, IMPLS, LAYOUTS, MODES, Case, CompileUnavailable, Prepared, Stream,
                       prepare, saved_bytes, sync_fn)
from .report import fused_path, run
from .suite import cases, select
from .timing import Result, time_case

__all__ = ["Case", "Prepared", "Result", "CompileUnavailable", "IMPLS", "LAYOUTS", "MODES", "BLOCKS",
           "Stream", "cases", "select", "prepare", "saved_bytes", "time_case", "run", "fused_path",
           "sync_fn", "GENERATOR_SHAPES", "DISCRIMINATOR_SHAPES", "CONVT_SHAPES", "LEAKY_SLOPE",
           "LOSS_CASES", "MODEL_CASES"]
