"""Synchronized batch statistics for models with fused layers.

PyTorch's multi-GPU recipe, ``nn.SyncBatchNorm.convert_sync_batchnorm``,
replaces every ``_BatchNorm`` by a plain ``nn.SyncBatchNorm``. A
:class:`~gan_ext.nn.BatchNormAct2d` is a ``BatchNorm2d`` subclass, so it would
be replaced too, and the activation fused into it would silently disappear
(:func:`~gan_ext.fuse` left an ``nn.Identity`` in the activation's slot). So:

* :func:`convert_sync_batchnorm` converts a model the way torch's converter
  does, but turns each ``BatchNormAct2d`` into a :class:`SyncBatchNormThenAct`:
  torch's ``SyncBatchNorm`` followed by the same activation, with the same
  parameters, buffers and state_dict keys, so the model computes the same
  function with statistics reduced over the process group.
* Importing gan_ext guards torch's converter: called on a model holding a
  ``BatchNormAct2d`` with an activation, it raises an error naming
  :func:`convert_sync_batchnorm` instead of dropping the activation.

The synced layer is not fused: it runs torch's SyncBatchNorm kernel and then
the activation (the statistics' all-reduce is the same either way).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .norm_act import BatchNormAct2d

__all__ = ["SyncBatchNormThenAct", "convert_sync_batchnorm"]


class SyncBatchNormThenAct(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` followed by ``relu``/``leaky_relu`` (or nothing):
    what :func:`convert_sync_batchnorm` makes of a ``BatchNormAct2d``. Same
    state_dict as the layer it replaces. (The fused in-place-ABN mode keeps
    |weight| >= 1e-5 so that its backward can invert the activation; this
    layer does not need to, so weights smaller than that differ.)"""

    def __init__(self, *args, activation: str = "relu", negative_slope: float = 0.01,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.activation = activation
        self.negative_slope = negative_slope

    def forward(self, input: Tensor) -> Tensor:
        out = super().forward(input)
        if self.activation == "relu":
            return F.relu(out)
        if self.activation == "leaky_relu":
            return F.leaky_relu(out, self.negative_slope)
        return out

    def extra_repr(self) -> str:
        act = (f"leaky_relu({self.negative_slope})" if self.activation == "leaky_relu"
               else self.activation)
        return f"{super().extra_repr()}, activation={act}"


_current = nn.SyncBatchNorm.convert_sync_batchnorm.__func__
_torch_convert = getattr(_current, "_gan_ext_original", _current)  # torch's, even on a reload


def _synced(layer: BatchNormAct2d, process_group) -> SyncBatchNormThenAct:
    new = SyncBatchNormThenAct(layer.num_features, layer.eps, layer.momentum, layer.affine,
                               layer.track_running_stats, process_group,
                               activation=layer.activation, negative_slope=layer.negative_slope)
    if layer.affine:  # the same Parameter objects: an optimizer built before keeps working
        new.weight, new.bias = layer.weight, layer.bias
    new.running_mean, new.running_var = layer.running_mean, layer.running_var
    new.num_batches_tracked = layer.num_batches_tracked
    new.train(layer.training)
    return new


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, for models with
    gan_ext's fused layers: every ``BatchNormAct2d`` becomes a
    :class:`SyncBatchNormThenAct` (same parameters, buffers and state_dict
    keys), every other ``_BatchNorm`` a ``SyncBatchNorm``. Returns the
    converted module (the root itself when it is not a norm layer)."""
    if isinstance(module, BatchNormAct2d):
        return _synced(module, process_group)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _torch_convert(nn.SyncBatchNorm, module, process_group)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, process_group)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _fused_with_activation(module: nn.Module):
    return [name or "(the module itself)" for name, m in module.named_modules()
            if isinstance(m, BatchNormAct2d) and m.activation != "identity"]


def _guarded_convert(cls, module, process_group=None):
    fused = _fused_with_activation(module)
    if fused:
        more = f" and {len(fused) - 1} more" if len(fused) > 1 else ""
        raise TypeError(
            f"torch.nn.SyncBatchNorm.convert_sync_batchnorm would replace the "
            f"gan_ext.nn.BatchNormAct2d at {fused[0]!r}{more} by a plain SyncBatchNorm and drop "
            "its fused activation; use gan_ext.nn.convert_sync_batchnorm(model) instead")
    return _torch_convert(cls, module, process_group)


def install_guard() -> None:
    """Makes torch's converter refuse models whose fused activation it would
    drop (idempotent; other models convert exactly as before)."""
    if hasattr(nn.SyncBatchNorm.convert_sync_batchnorm.__func__, "_gan_ext_original"):
        return
    _guarded_convert._gan_ext_original = _torch_convert
    nn.SyncBatchNorm.convert_sync_batchnorm = classmethod(_guarded_convert)


install_guard()
