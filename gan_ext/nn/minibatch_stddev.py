"""Minibatch standard deviation (Karras et al. 2018, "Progressive Growing of
GANs", section 3): one extra feature map holding how much the samples of a
small group differ, so D can tell a collapsed batch from a varied one."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validate import check_int

__all__ = ["MinibatchStdDev", "minibatch_stddev"]

EPS = 1e-8   # under the square root, as in ProGAN


def minibatch_stddev(x: Tensor, group_size: int = 4) -> Tensor:
    """x (N, C, H, W) or (N, F) -> one more channel (feature): for each group
    of ``group_size`` samples (sample i is in group i % (N / group_size)), the
    standard deviation over the group of every value (biased, + 1e-8 under
    the root), averaged over channels and pixels, replicated over the group
    and the pixels. ``N`` must be a multiple of the group size (or smaller:
    then the group is the whole batch)."""
    check_int("group_size", group_size)
    if not isinstance(x, Tensor) or x.dim() not in (2, 4):
        raise ValueError(f"x must be (N, C, H, W) or (N, F), got "
                         f"{list(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    n = x.shape[0]
    g = min(group_size, n)
    if g == 0:
        return torch.cat([x, x.new_zeros(0, 1, *x.shape[2:])], 1)
    if n % g:
        raise ValueError(f"minibatch stddev: the batch of {n} samples is not a multiple of the "
                         f"group size {g}; use a batch size divisible by {g}")
    y = x.float().reshape(g, n // g, -1)                        # (G, N/G, C*H*W)
    y = y - y.mean(0, keepdim=True)
    std = (y.square().mean(0) + EPS).sqrt().mean(1)             # (N/G,)
    std = std.to(x.dtype).repeat(g)                             # (N,): sample i -> group i % (N/G)
    extra = std.view(n, 1, *([1] * (x.dim() - 2))).expand(n, 1, *x.shape[2:])
    return torch.cat([x, extra], 1)


class MinibatchStdDev(nn.Module):
    """:func:`minibatch_stddev` as a layer: (N, C, H, W) -> (N, C + 1, H, W),
    (N, F) -> (N, F + 1). No parameters."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = check_int("group_size", group_size)

    def forward(self, x: Tensor) -> Tensor:
        return minibatch_stddev(x, self.group_size)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"
