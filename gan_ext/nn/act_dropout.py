"""Activation + dropout as one layer backed by the fused ``gan_ext::act_dropout`` op."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import ops
from ._activation import activation_repr, check_activation, check_negative_slope

__all__ = ["ActDropout"]


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

    Shape: any; the output keeps the input's memory layout (channels_last
    in, channels_last out), as ``gan_ext.ops.act_dropout`` does.
    """

    def __init__(self, activation: Optional[str] = "leaky_relu", negative_slope: float = 0.2,
                 p: float = 0.5) -> None:
        super().__init__()
        self.activation = check_activation(activation)
        self.negative_slope = check_negative_slope(negative_slope)
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
        return f"{activation_repr(self.activation, self.negative_slope)}, p={self.p}"
