"""Conv -> norm -> activation blocks that fold their norm into the conv at
inference (eval mode, running statistics, no autograd through the parameters)."""
from __future__ import annotations

import weakref
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.common_types import _size_2_t

from .. import reference as ref
from ._activation import activate_, activation_repr, check_activation, check_negative_slope
from .norm_act import BatchNormAct2d, InstanceNormAct2d

__all__ = ["Conv2dNormAct", "ConvTranspose2dNormAct"]


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


def _has_forward_hooks(m: nn.Module) -> bool:
    return any(getattr(m, name, None) for name in _HOOK_DICTS)


def _global_forward_hooks() -> bool:
    mod = nn.modules.module
    return bool(getattr(mod, "_global_forward_hooks", None)
                or getattr(mod, "_global_forward_pre_hooks", None))


def _tensor_key(t: Optional[Tensor]):
    if t is None:
        return None
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))


class _ConvNormAct(nn.Module):
    """Shared machinery: builds ``norm`` and keeps the eval-mode fold of a norm
    that uses running statistics into the conv's weight and bias."""

    conv: Union[nn.Conv2d, nn.ConvTranspose2d]
    norm: Optional[Union[BatchNormAct2d, InstanceNormAct2d]]

    def _build_norm(self, out_channels: int, norm: Optional[str], activation: Optional[str],
                    negative_slope: float, eps: float, momentum: Optional[float],
                    affine: Optional[bool], track_running_stats: Optional[bool], factory: dict):
        activation = check_activation(activation)
        negative_slope = check_negative_slope(negative_slope)
        if norm == "batch":
            self.norm = BatchNormAct2d(
                out_channels, eps, momentum, True if affine is None else affine,
                True if track_running_stats is None else track_running_stats,
                activation, negative_slope, **factory)
        elif norm == "instance":
            self.norm = InstanceNormAct2d(
                out_channels, eps, momentum, False if affine is None else affine,
                False if track_running_stats is None else track_running_stats,
                activation, negative_slope, **factory)
        elif norm is None or norm == "none":
            self.register_module("norm", None)
        else:
            raise ValueError(f"norm must be 'batch', 'instance' or None, got {norm!r}")
        # Without a norm the block applies the activation itself; with one, the
        # norm carries it (norm.activation), so there is a single source of truth.
        self._activation = activation if self.norm is None else None
        self._negative_slope = negative_slope if self.norm is None else None
        self._fold_cache = None

    @property
    def activation(self) -> str:
        return self.norm.activation if self.norm is not None else self._activation

    @property
    def negative_slope(self) -> float:
        return self.norm.negative_slope if self.norm is not None else self._negative_slope

    # -- the fold ---------------------------------------------------------------
    def _weight_scale(self, scale: Tensor) -> Tensor:
        """(C_out,) per-output-channel scale, shaped to broadcast against conv.weight."""
        raise NotImplementedError

    def _fold_inputs(self):
        """The six tensors the fold reads, or None when the norm must run:
        training / input statistics, autograd needs the parameters, or hooks
        (spectral norm, feature taps) must see the ordinary module calls."""
        norm = self.norm
        if norm is None or not norm.uses_running_stats():
            return None
        conv = self.conv
        tensors = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean,
                   norm.running_var)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors[:4]):
            return None
        if _has_forward_hooks(conv) or _has_forward_hooks(norm) or _global_forward_hooks():
            return None
        return tensors

    @torch.no_grad()
    def _compute_fold(self):
        """W' = W * s, b' = (b_conv - running_mean) * s + beta with
        s = gamma_eff / sqrt(running_var + eps), computed in at least float32."""
        conv, norm = self.conv, self.norm
        w = conv.weight
        cdt = torch.promote_types(w.dtype, torch.float32)
        act = ref.ACTIVATIONS[norm.activation]
        # The op multiplies by the effective weight (clamped away from 0 for an
        # invertible leaky_relu); fold the same number so both paths agree.
        gamma = ref.effective_weight(norm.weight, act, norm.negative_slope)
        scale = torch.rsqrt(norm.running_var.to(cdt) + norm.eps)
        if gamma is not None:
            scale = scale * gamma.to(cdt)
        shift = -norm.running_mean.to(cdt) * scale
        if conv.bias is not None:
            shift = shift + conv.bias.to(cdt) * scale
        if norm.bias is not None:
            shift = shift + norm.bias.to(cdt)
        weight = (w.to(cdt) * self._weight_scale(scale)).to(w.dtype)
        return weight, shift.to(w.dtype)

    def _folded(self):
        """(weight, bias) of the conv with the norm folded in, or None when the
        norm must run (see _fold_inputs)."""
        tensors = self._fold_inputs()
        if tensors is None:
            return None
        if torch.compiler.is_compiling():
            return self._compute_fold()  # traced into the graph; no Python-side cache
        if any(t is not None and t.is_inference() for t in tensors):
            return self._compute_fold()  # inference tensors have no version counter
        norm = self.norm
        # A stale fold is a silent wrong answer: key on identity, storage, version
        # (in-place updates: optimizer steps, load_state_dict, running stats),
        # dtype/device/shape, and every scalar the fold reads.
        key = (tuple(_tensor_key(t) for t in tensors), norm.eps, norm.activation,
               norm.negative_slope, torch.is_inference_mode_enabled())
        cache = self._fold_cache
        if cache is not None and cache[0] == key and all(
                (r is None) if t is None else (r is not None and r() is t)
                for r, t in zip(cache[1], tensors)):
            return cache[2], cache[3]
        weight, bias = self._compute_fold()
        refs = tuple(None if t is None else weakref.ref(t) for t in tensors)
        self._fold_cache = (key, refs, weight, bias)
        return weight, bias

    def invalidate_fold(self) -> None:
        """Drops the cached fold. Needed only after writing parameters through
        ``.data`` (``p.data.copy_(...)``), which bypasses the version counter the
        cache is keyed on; ``torch.no_grad()`` in-place updates, optimizers,
        ``load_state_dict`` and ``.to()`` are detected automatically."""
        self._fold_cache = None

    def train(self, mode: bool = True):
        self._fold_cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._fold_cache = None
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state["_fold_cache"] = None  # holds weakrefs, which do not pickle
        return state

    def _norm_act(self, y: Tensor) -> Tensor:
        if self.norm is not None:
            return self.norm(y)
        # y is the conv's fresh output: nothing else holds it, so act in place.
        return activate_(y, self._activation, self._negative_slope)

    def extra_repr(self) -> str:
        if self.norm is None:
            return activation_repr(self._activation, self._negative_slope)
        return ""


class Conv2dNormAct(_ConvNormAct):
    r"""``nn.Conv2d`` -> norm -> activation, the conv block of GAN discriminators
    and encoders.

    The conv arguments are ``nn.Conv2d``'s, in its positional order. ``bias=None``
    (default) means no conv bias with ``norm="batch"`` (the norm's shift makes it
    redundant) and a bias otherwise. ``norm`` is ``"batch"``, ``"instance"`` or
    ``None``; ``eps``, ``momentum``, ``affine`` and ``track_running_stats`` go to
    the norm (``None``: the torch default of that norm).

    In eval mode, when the norm uses running statistics and autograd does not
    need the parameters, the norm is folded into the conv weight and bias, so a
    forward is one conv plus an in-place activation. The fold is cached and
    recomputed whenever any tensor it reads changes (see :meth:`invalidate_fold`
    for the one case that cannot be detected).

    Submodules: ``conv`` (``nn.Conv2d``) and ``norm`` (:class:`BatchNormAct2d`,
    :class:`InstanceNormAct2d` carrying the activation, or ``None``).

    Shape: (N, C_in, H, W) -> (N, C_out, H_out, W_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _size_2_t,
                 stride: _size_2_t = 1, padding: Union[str, _size_2_t] = 0,
                 dilation: _size_2_t = 1, groups: int = 1, bias: Optional[bool] = None,
                 padding_mode: str = "zeros", *, norm: Optional[str] = "batch",
                 activation: Optional[str] = "relu", negative_slope: float = 0.01,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: Optional[bool] = None, track_running_stats: Optional[bool] = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if bias is None:
            bias = norm != "batch"
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                              groups, bias, padding_mode, **factory)
        self._build_norm(out_channels, norm, activation, negative_slope, eps, momentum, affine,
                         track_running_stats, factory)

    def _weight_scale(self, scale: Tensor) -> Tensor:
        return scale.reshape(-1, 1, 1, 1)  # weight: (C_out, C_in/groups, kh, kw)

    def forward(self, input: Tensor) -> Tensor:
        folded = self._folded()
        if folded is not None:
            y = self.conv._conv_forward(input, *folded)
            return activate_(y, self.norm.activation, self.norm.negative_slope)
        return self._norm_act(self.conv(input))


class ConvTranspose2dNormAct(_ConvNormAct):
    r"""``nn.ConvTranspose2d`` -> norm -> activation, the upsampling block of GAN
    generators (DCGAN, pix2pix, CycleGAN decoders).

    Arguments, submodules and the eval-mode fold as :class:`Conv2dNormAct`, with
    ``nn.ConvTranspose2d``'s conv arguments in its positional order;
    ``forward(input, output_size=None)`` accepts ``output_size`` like it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _size_2_t,
                 stride: _size_2_t = 1, padding: _size_2_t = 0, output_padding: _size_2_t = 0,
                 groups: int = 1, bias: Optional[bool] = None, dilation: _size_2_t = 1,
                 padding_mode: str = "zeros", *, norm: Optional[str] = "batch",
                 activation: Optional[str] = "relu", negative_slope: float = 0.01,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: Optional[bool] = None, track_running_stats: Optional[bool] = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if bias is None:
            bias = norm != "batch"
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding,
                                       output_padding, groups, bias, dilation, padding_mode,
                                       **factory)
        self._build_norm(out_channels, norm, activation, negative_slope, eps, momentum, affine,
                         track_running_stats, factory)

    def _weight_scale(self, scale: Tensor) -> Tensor:
        # weight: (C_in, C_out/groups, kh, kw); output channel g*opg + j is column j
        # of the rows of input-channel group g.
        conv = self.conv
        g = conv.groups
        ipg, opg = conv.in_channels // g, conv.out_channels // g
        return scale.reshape(g, 1, opg).expand(g, ipg, opg).reshape(conv.in_channels, opg, 1, 1)

    def forward(self, input: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        folded = self._folded()
        if folded is not None:
            conv = self.conv
            output_padding = conv._output_padding(input, output_size, conv.stride, conv.padding,
                                                  conv.kernel_size, 2, conv.dilation)
            y = F.conv_transpose2d(input, folded[0], folded[1], conv.stride, conv.padding,
                                   output_padding, conv.groups, conv.dilation)
            return activate_(y, self.norm.activation, self.norm.negative_slope)
        return self._norm_act(self.conv(input, output_size))
