"""Normalization + activation layers backed by the fused ``gan_ext::norm_act`` op.

``BatchNormAct2d`` and ``InstanceNormAct2d`` subclass the torch norms, so their
state_dict, ``reset_parameters`` and old-checkpoint handling are torch's: a
checkpoint of ``nn.BatchNorm2d`` loads into ``BatchNormAct2d`` and back, strictly.
"""
from __future__ import annotations

import warnings
from typing import Optional

from torch import Tensor, nn

from .. import ops
from ._activation import activation_repr, check_activation, check_negative_slope

__all__ = ["BatchNormAct2d", "InstanceNormAct2d"]


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
        activation = check_activation(activation)
        negative_slope = check_negative_slope(negative_slope)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device,
                         dtype=dtype, **_norm_kwargs(bias))
        self.activation = activation
        self.negative_slope = negative_slope

    def _check_is_tensor(self, input) -> None:
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__}: input must be a torch.Tensor, "
                            f"got {type(input).__name__}")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {activation_repr(self.activation, self.negative_slope)}"


class BatchNormAct2d(_NormActMixin, nn.BatchNorm2d):
    r"""``nn.BatchNorm2d`` followed by an activation, as one fused op.

    Behaves exactly like ``nn.Sequential(nn.BatchNorm2d(...), act)`` in training
    and eval (batch statistics in training or without running statistics,
    ``num_batches_tracked``, ``momentum=None`` as a cumulative average), with the
    same state_dict. With ``activation="leaky_relu"`` and ``negative_slope > 0``
    only the output is kept for backward (In-Place Activated BatchNorm); the
    affine weight is then used as ``sign(w) * max(|w|, 1e-5)`` so that the
    activation can be inverted (a weight with ``|w| < 1e-5`` gets a zero
    gradient: the clamp is flat there).

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
