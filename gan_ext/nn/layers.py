"""Normalization + activation layers backed by the fused ``gan_ext::norm_act`` op,
and conv blocks that fold their batch norm into the conv at inference.

``BatchNormAct2d`` and ``InstanceNormAct2d`` subclass the torch norms, so their
state_dict, ``reset_parameters`` and old-checkpoint handling are torch's: a
checkpoint of ``nn.BatchNorm2d`` loads into ``BatchNormAct2d`` and back, strictly.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.common_types import _size_2_t

from .. import ops
from .. import reference as ref

__all__ = ["BatchNormAct2d", "InstanceNormAct2d", "Conv2dNormAct", "ConvTranspose2dNormAct",
           "ActDropout"]


def _check_activation(activation: Optional[str]) -> str:
    """Validates ``activation``; ``None`` means no activation ("identity")."""
    if activation is None:
        return "identity"
    if not isinstance(activation, str) or activation not in ref.ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ref.ACTIVATIONS)} or None, got {activation!r}")
    return activation


def _check_negative_slope(negative_slope) -> float:
    try:
        return float(negative_slope)
    except (TypeError, ValueError):
        raise TypeError(f"negative_slope must be a real number, got {negative_slope!r}") from None


def _activation_repr(activation: str, negative_slope: float) -> str:
    if activation == "leaky_relu":
        return f"activation={activation}, negative_slope={negative_slope}"
    return f"activation={activation}"


def _activate_(x: Tensor, activation: str, negative_slope: float) -> Tensor:
    """Activation in place on a tensor this module just produced (a conv output)."""
    if activation == "relu":
        return torch.relu_(x)
    if activation == "leaky_relu":
        return F.leaky_relu_(x, negative_slope)
    return x


def _norm_kwargs(bias: bool) -> dict:
    # The keyword-only `bias` of torch norms is recent; only pass it when it
    # deviates from the default so older torch keeps working.
    return {} if bias else {"bias": False}


class _NormActMixin:
    """What BatchNormAct2d and InstanceNormAct2d add to the torch norm they
    subclass: a validated activation, and an input type check. Listed before the
    torch class, so super().__init__ below is the torch norm's."""

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, activation,
                 negative_slope, device, dtype, bias) -> None:
        activation = _check_activation(activation)
        negative_slope = _check_negative_slope(negative_slope)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device,
                         dtype=dtype, **_norm_kwargs(bias))
        self.activation = activation
        self.negative_slope = negative_slope

    def _check_is_tensor(self, input) -> None:
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__}: input must be a torch.Tensor, "
                            f"got {type(input).__name__}")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {_activation_repr(self.activation, self.negative_slope)}"


class BatchNormAct2d(_NormActMixin, nn.BatchNorm2d):
    r"""``nn.BatchNorm2d`` followed by an activation, as one fused op.

    Behaves exactly like ``nn.Sequential(nn.BatchNorm2d(...), act)`` in training
    and eval (batch statistics in training or without running statistics,
    ``num_batches_tracked``, ``momentum=None`` as a cumulative average), with the
    same state_dict. With ``activation="leaky_relu"`` and ``negative_slope > 0``
    only the output is kept for backward (In-Place Activated BatchNorm); the
    affine weight is then used as ``sign(w) * max(|w|, 1e-5)`` so that the
    activation can be inverted.

    Args:
        activation: ``"relu"``, ``"leaky_relu"``, ``"identity"`` or ``None``.
        negative_slope: slope of ``leaky_relu`` for negative input.
        Others: as :class:`torch.nn.BatchNorm2d`.

    Shape: (N, C, H, W) -> (N, C, H, W); NCHW and channels_last input.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 activation: Optional[str] = "relu", negative_slope: float = 0.01,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, activation,
                         negative_slope, device, dtype, bias)

    def _check_input_dim(self, input: Tensor) -> None:
        self._check_is_tensor(input)
        if input.dim() != 4:
            raise ValueError(f"{type(self).__name__}: expected 4D input (got {input.dim()}D input)")
        if input.size(1) != self.num_features:
            raise ValueError(
                f"{type(self).__name__}: input has {input.size(1)} channels (dim 1) but the layer "
                f"was built with num_features={self.num_features}")

    def uses_running_stats(self) -> bool:
        """Whether forward normalizes with the running statistics (as torch decides)."""
        return not self.training and self.running_mean is not None and self.running_var is not None

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        # Mirrors torch.nn.modules.batchnorm._BatchNorm.forward; the op increments
        # num_batches_tracked and, for momentum=None, averages with 1 / its value.
        counter = None
        if self.training and self.track_running_stats:
            counter = self.num_batches_tracked
        momentum = self.momentum
        if momentum is None and counter is None:
            momentum = 0.0  # torch's factor without a counter
        if self.training:
            bn_training = True
        else:
            bn_training = self.running_mean is None and self.running_var is None
        pass_stats = not self.training or self.track_running_stats
        return ops.batch_norm_act(
            input,
            self.running_mean if pass_stats else None,
            self.running_var if pass_stats else None,
            self.weight, self.bias, bn_training, momentum, self.eps,
            self.activation, self.negative_slope, num_batches_tracked=counter)


class InstanceNormAct2d(_NormActMixin, nn.InstanceNorm2d):
    r"""``nn.InstanceNorm2d`` followed by an activation, as one fused op.

    Same state_dict and semantics as ``nn.InstanceNorm2d`` (input statistics in
    training or without ``track_running_stats``; unbatched (C, H, W) input is
    accepted), then the activation. See :class:`BatchNormAct2d` for
    ``activation`` and ``negative_slope``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = False, track_running_stats: bool = False,
                 activation: Optional[str] = "relu", negative_slope: float = 0.01,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, activation,
                         negative_slope, device, dtype, bias)

    def _check_input_dim(self, input: Tensor) -> None:
        self._check_is_tensor(input)
        if input.dim() not in (3, 4):
            raise ValueError(
                f"{type(self).__name__}: expected 3D or 4D input (got {input.dim()}D input)")

    def uses_running_stats(self) -> bool:
        return not self.training and self.track_running_stats

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        channels = input.size(-3)
        if channels != self.num_features:
            # torch only warns when nothing per-channel is stored; with weights or
            # running statistics the shapes cannot match, so say so up front.
            if self.affine or self.track_running_stats:
                raise ValueError(
                    f"{type(self).__name__}: input has {channels} channels (dim {input.dim() - 3}) "
                    f"but the layer was built with num_features={self.num_features}")
            warnings.warn(
                f"input's size at dim={input.dim() - 3} does not match num_features. You can "
                "silence this warning by not passing in num_features, which is not used because "
                "affine=False", stacklevel=2)
        if input.dim() == 3:
            return self._norm_act(input.unsqueeze(0)).squeeze(0)
        return self._norm_act(input)

    def _norm_act(self, input: Tensor) -> Tensor:
        return ops.instance_norm_act(
            input, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0, self.eps,
            self.activation, self.negative_slope)


# ------------------------------------------------------------------ conv blocks
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
        activation = _check_activation(activation)
        negative_slope = _check_negative_slope(negative_slope)
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
        return _activate_(y, self._activation, self._negative_slope)

    def extra_repr(self) -> str:
        if self.norm is None:
            return _activation_repr(self._activation, self._negative_slope)
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
            return _activate_(y, self.norm.activation, self.norm.negative_slope)
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
            return _activate_(y, self.norm.activation, self.norm.negative_slope)
        return self._norm_act(self.conv(input, output_size))


# ------------------------------------------------------ activation + dropout
class ActDropout(nn.Module):
    r"""An activation followed by ``nn.Dropout(p)``, as one fused op: the MLP
    discriminator block ``Linear -> LeakyReLU(0.2) -> Dropout``.

    In training the keep mask is drawn inside the kernel from PyTorch's
    generator (``torch.manual_seed`` reproduces it; the stream is not
    ``nn.Dropout``'s, so masks differ from it but have the same distribution),
    and backward keeps no mask: it regenerates it. In eval mode it is the
    activation alone. ``negative_slope`` must be ``>= 0`` (the backward reads
    the activation's derivative from the sign of the output).

    Args:
        activation: ``"leaky_relu"`` (default), ``"relu"``, ``"identity"`` or ``None``.
        negative_slope: slope of ``leaky_relu`` for negative input.
        p: probability of an element being zeroed, in [0, 1].

    Shape: any; the output is contiguous.
    """

    def __init__(self, activation: Optional[str] = "leaky_relu", negative_slope: float = 0.2,
                 p: float = 0.5) -> None:
        super().__init__()
        self.activation = _check_activation(activation)
        self.negative_slope = _check_negative_slope(negative_slope)
        if self.activation == "leaky_relu" and not self.negative_slope >= 0:
            raise ValueError(f"negative_slope must be >= 0 for ActDropout, got {negative_slope}")
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise TypeError(f"p must be a real number, got {p!r}") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, input: Tensor) -> Tensor:
        return ops.act_dropout(input, self.activation, self.negative_slope, self.p, self.training)

    def extra_repr(self) -> str:
        return f"{_activation_repr(self.activation, self.negative_slope)}, p={self.p}"
