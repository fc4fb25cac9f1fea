"""Synchronized batch statistics for models with fused layers.

:class:`SyncBatchNormAct2d` is :class:`~gan_ext.nn.BatchNormAct2d` with its
training statistics reduced over a process group (DDP): gloo on CPU, and by
the same code (all-reduces of device tensors) NCCL on CUDA. :func:`convert_sync_batchnorm` puts it into a model.

PyTorch's own recipe, ``nn.SyncBatchNorm.convert_sync_batchnorm``, replaces
every ``_BatchNorm`` by a plain ``nn.SyncBatchNorm``. A ``BatchNormAct2d`` is
a ``BatchNorm2d`` subclass, so it would be replaced too, and the activation
fused into it would silently disappear (:func:`~gan_ext.fuse` left an
``nn.Identity`` in the activation's slot). Importing gan_ext therefore guards
torch's converter: called on a model holding a ``BatchNormAct2d`` with an
activation, it raises an error naming :func:`convert_sync_batchnorm`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._backend import use_fused
from .. import reference as ref
from ..ops import batch_norm_act
from ..ops._common import activation_code
from ..ops._norm_act_backward import normalized
from .fuse import fuse_norm_act_pairs, rebuild_norm
from .norm_act import BatchNormAct2d

__all__ = ["SyncBatchNormAct2d", "convert_sync_batchnorm", "sync_batch_norm_act"]

_OP = "norm_act"


def _all_reduce(t: Tensor, group) -> Tensor:
    """Sum of ``t`` over ``group`` (None: this process alone). Recorded by
    autograd when grad mode is on (a backward with create_graph)."""
    if group is None:
        return t
    if torch.is_grad_enabled():
        return _AllReduceSum.apply(t, group)
    dist.all_reduce(t, group=group)
    return t


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        t = t.clone()
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx, grad):
        # Every rank's output is the sum of every rank's input, so an input's
        # gradient is the sum of every rank's output gradient.
        return _all_reduce(grad.contiguous(), ctx.group), None


@torch.no_grad()  # _SyncNormAct's backward differentiates the statistics
def _global_stats(input: Tensor, group):
    """(count, mean, biased var) per channel over every rank, in float64,
    with one all-reduce of (count, sum, sum of squares)."""
    N, C, H, W = input.shape
    n = N * H * W
    packed = input.new_zeros(1 + 2 * C, dtype=torch.float64)
    if n > 0:  # an empty rank contributes zeros but still joins the all-reduce
        var, mean = torch.var_mean(input.to(ref.stats_dtype(input.dtype)), dim=(0, 2, 3),
                                   correction=0)
        mean, var = mean.double(), var.double()
        packed[0] = n
        packed[1:C + 1] = n * mean
        # The local part two-pass; only the spread between ranks' means goes
        # through E[x^2] - mean^2, which in float64 loses ~1e-16 (mean/std)^2.
        packed[C + 1:] = n * (var + mean * mean)
    packed = _all_reduce(packed, group)
    count = packed[0]
    mean = packed[1:C + 1] / count
    return count, mean, (packed[C + 1:] / count - mean * mean).clamp_min(0)


class _SyncNormAct(torch.autograd.Function):
    """act(norm(input)) with the given global statistics. mean and invstd are
    outputs too, declared as functions of the input (as the op's are), so the
    gradient a double backward sends to them comes back here."""

    @staticmethod
    def forward(ctx, input, weight, bias, mean, var, count, eps, activation, negative_slope,
                group):
        fn = torch.ops.gan_ext.norm_act if use_fused(input, _OP) else ref.norm_act
        out, mean, invstd, _ = fn(input, weight, bias, mean, var, None, False, False, 0.0, eps,
                                  activation, negative_slope)
        mean = mean.clone()  # the op may hand back its argument; an output must be new
        from_output = ref.output_is_invertible(activation, negative_slope)
        ctx.save_for_backward(out if from_output else input, weight, bias, mean, invstd)
        ctx.args = (count, activation, negative_slope, from_output, group)
        ctx.set_materialize_grads(False)
        return out, mean, invstd

    @staticmethod
    def backward(ctx, grad_out, grad_mean, grad_invstd):
        saved, weight, bias, mean, invstd = ctx.saved_tensors
        count, act, slope, from_output, group = ctx.args
        sd = ref.stats_dtype(saved.dtype)
        s = saved.to(sd)  # half input: the whole backward in float32, rounded once
        C = s.shape[1]
        xhat, _, gamma, rs = normalized(s, weight, bias, mean, invstd, False, False, act, slope,
                                         from_output)
        if grad_out is None:
            gi, gw, gb = torch.zeros_like(s), s.new_zeros(C), s.new_zeros(C)
        else:
            # Normalizing with fixed statistics: the elementwise gradient and
            # the local sums (sum dz * xhat, sum dz) in one pass. With
            # create_graph the twin, whose ops autograd records.
            fused = not torch.is_grad_enabled() and use_fused(s, _OP)
            bw = torch.ops.gan_ext.norm_act_backward if fused else ref.norm_act_backward
            gi, gw, gb = bw(grad_out.to(sd), s, weight, bias, mean, invstd, False, False, act,
                            slope, from_output)
        g, r = gamma.reshape(C), rs.reshape(C)
        # This rank's dL/dmean and dL/dinvstd; summed over ranks they are the
        # whole batch's, and every x moves the global mean and invstd.
        d_mean, d_invstd = -g * r * gb.to(sd), g * gw.to(sd) / r
        if grad_mean is not None:
            d_mean = d_mean + grad_mean
        if grad_invstd is not None:
            d_invstd = d_invstd + grad_invstd
        total = _all_reduce(torch.stack([d_mean, d_invstd]), group)
        n = count.to(sd)
        # d mean / dx = 1 / n, d invstd / dx = -invstd^2 * xhat / n
        grad_input = torch.addcmul(gi.to(sd) + (total[0] / n).reshape(1, C, 1, 1), xhat,
                                   -(total[1] / n).reshape(1, C, 1, 1) * rs * rs)
        # gw is the effective weight's gradient (d_invstd needs it whole); the
        # weight's is zero where the floor clamps it, as the op's autograd gives.
        gw = ref.effective_weight_grad(weight, gw, act, slope)
        return (grad_input.to(saved.dtype), gw if weight is not None else None,
                gb if bias is not None else None, None, None, None, None, None, None, None)


def sync_batch_norm_act(input: Tensor, running_mean: Optional[Tensor],
                        running_var: Optional[Tensor], weight: Optional[Tensor],
                        bias: Optional[Tensor], momentum: Optional[float], eps: float,
                        activation: str = "relu", negative_slope: float = 0.01, *,
                        num_batches_tracked: Optional[Tensor] = None, group=None) -> Tensor:
    """:func:`gan_ext.ops.batch_norm_act` in training, with the statistics of
    the whole batch over every rank of ``group`` (a ProcessGroup; None: this
    process alone). Every rank must call it, also one with an empty batch.
    The running statistics are updated from the global batch, identically on
    every rank. ``weight``/``bias`` receive this rank's share of their
    gradient: summed over the ranks it is the whole batch's."""
    act = activation_code(activation)
    negative_slope = float(negative_slope)
    # The one-value-per-channel check is on the global count, below.
    ref.check_norm_act_args(input, weight, bias, running_mean, running_var, False, False, eps, act)
    ref.check_running_update_args(input, running_mean, running_var, num_batches_tracked, True,
                                  momentum)
    if eps == 0:
        raise ValueError("eps must be positive for batch norm in training (as in torch), got 0.0")
    count, mean, var = _global_stats(input, group)
    N, C, H, W = input.shape
    if N * H * W < 2:
        # Only here the global count is read (a host sync). When it is 0 or 1
        # every rank's local count is below 2, so every rank is here and takes
        # the same branch: none is left waiting in a collective.
        total = int(count.item())
        if total == 0:  # counted, statistics left alone, as for an empty batch
            return batch_norm_act(input, running_mean, running_var, weight, bias, True, momentum,
                                  eps, activation, negative_slope,
                                  num_batches_tracked=num_batches_tracked)
        if total == 1:
            raise ValueError(
                "Expected more than 1 value per channel when using input statistics (training), "
                f"got 1 over all ranks (input of shape {tuple(input.shape)} on this rank)")
    with torch.no_grad():
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        if running_mean is not None or running_var is not None:
            # As nn.BatchNorm2d on the whole batch: unbiased variance, factor
            # momentum or 1 / num_batches_tracked, in float64.
            f = 1.0 / num_batches_tracked.double() if momentum is None else momentum
            for running, batch in ((running_mean, mean), (running_var, var * count / (count - 1))):
                if running is not None:
                    running.copy_((1.0 - f) * running.double() + f * batch)
    sd = ref.stats_dtype(input.dtype)
    return _SyncNormAct.apply(input, weight, bias, mean.to(sd), var.to(sd), count, eps, act,
                              negative_slope, group)[0]


class SyncBatchNormAct2d(BatchNormAct2d):
    r""":class:`~gan_ext.nn.BatchNormAct2d` whose training statistics are those
    of the whole batch over every rank of ``process_group`` (default: the
    world), as ``nn.SyncBatchNorm`` followed by the activation.

    In training the local (count, sum, sum of squares) go to the other ranks
    in one all-reduce, the fused kernel normalizes with the global statistics,
    and backward all-reduces the two per-channel sums once before the
    elementwise pass. Ranks may hold different batch sizes, an empty batch
    included (every rank must call the layer). The running statistics are
    updated as ``nn.BatchNorm2d`` would on the whole batch, on every rank.
    ``weight.grad``/``bias.grad`` hold this rank's share (as in
    ``nn.SyncBatchNorm``): summed over the ranks they are the gradient of the
    sum of the ranks' losses, what one process gets on the whole batch; DDP's
    average of them is then the mean loss's, as for every other parameter.

    Without an initialized process group, with a group of one process, and in
    eval mode it is exactly ``BatchNormAct2d``. Same state_dict as
    ``BatchNormAct2d`` and ``nn.BatchNorm2d``. Autograd to any order.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 activation: Optional[str] = "relu", negative_slope: float = 0.01,
                 device=None, dtype=None, *, bias: bool = True, process_group=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, activation,
                         negative_slope, device, dtype, bias=bias)
        self.process_group = process_group

    def _sync_group(self):
        """The group to reduce over, or None when the statistics stay local."""
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        group = self._sync_group()
        if group is None:
            return super().forward(input)
        counter = self.num_batches_tracked if self.track_running_stats else None
        momentum = self.momentum
        if momentum is None and counter is None:
            momentum = 0.0  # torch's factor without a counter
        track = self.track_running_stats
        return sync_batch_norm_act(
            input, self.running_mean if track else None, self.running_var if track else None,
            self.weight, self.bias, momentum, self.eps, self.activation, self.negative_slope,
            num_batches_tracked=counter, group=group)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, for models
        with fused layers: every ``BatchNormAct2d`` and every plain
        ``nn.BatchNorm2d`` becomes a ``SyncBatchNormAct2d`` (a BatchNorm2d
        directly followed by ``nn.ReLU``/``nn.LeakyReLU`` in an
        ``nn.Sequential`` takes that activation, as :func:`~gan_ext.fuse`
        pairs them; the activation's slot becomes ``nn.Identity()``), holding
        the same Parameter and buffer objects under the same state_dict keys.
        Every other ``_BatchNorm`` becomes torch's ``SyncBatchNorm``. Returns
        the converted module (a new one when ``module`` is itself a norm)."""
        for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
            fuse_norm_act_pairs(seq, (nn.BatchNorm2d,))
        return cls._convert(module, process_group)

    @classmethod
    def _convert(cls, module: nn.Module, process_group) -> nn.Module:
        if isinstance(module, BatchNormAct2d) or type(module) is nn.BatchNorm2d:
            act = getattr(module, "activation", "identity")
            new = rebuild_norm(module, cls, act, getattr(module, "negative_slope", 0.01))
            new.process_group = process_group
            return new
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return _torch_convert(nn.SyncBatchNorm, module, process_group)
        for name, child in module.named_children():
            converted = cls._convert(child, process_group)
            if converted is not child:
                setattr(module, name, converted)
        return module


_current = nn.SyncBatchNorm.convert_sync_batchnorm.__func__
_torch_convert = getattr(_current, "_gan_ext_original", _current)  # torch's, even on a reload


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """:meth:`SyncBatchNormAct2d.convert_sync_batchnorm`: the model's batch
    norms synchronized over ``process_group``, fused activations kept."""
    return SyncBatchNormAct2d.convert_sync_batchnorm(module, process_group)


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
