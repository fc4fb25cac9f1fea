"""Pure-PyTorch twins of every gan_ext op.

Each twin has the signature and the semantics of the op of the same name in
``torch.ops.gan_ext``. They serve twice: as the fallback when the C++
extension is not built (or ``GAN_EXT_BACKEND=reference``), and as the oracle the
tests check the kernels against. They are written for clarity, not speed, and
are differentiable with ordinary autograd.

Each twin lives beside its op in ``gan_ext/ops/<op>.py`` (named ``<op>_ref``
there when the public wrapper has the op's name). This module gathers them
under the op names: every module of the ops index (``gan_ext.ops.OP_MODULES``)
lists in ``REFERENCE`` what it contributes, so a new op needs no line here.
The codes, checks and Philox stream the twins share come from the ops'
private modules.
"""
from __future__ import annotations

from .ops import OP_MODULES
from .ops._common import (ACTIVATIONS, IDENTITY, LEAKY_RELU, MEAN, NONE, REDUCTIONS, RELU, SUM,  # noqa: F401
                          check_pair_args, stats_dtype)
from .ops._norm_act_backward import (invert_activation, norm_act_backward,  # noqa: F401
                                     norm_act_backward_with_stats)
from .ops._philox import (generator_seed_offset, philox4x32_10, philox_blocks,  # noqa: F401
                          philox_counters)


def _gather() -> None:
    for module in OP_MODULES:
        for name, value in module.REFERENCE.items():
            if name in globals():
                raise ImportError(f"gan_ext.reference: {module.__name__} and another module "
                                  f"both define {name!r}")
            globals()[name] = value


_gather()
__all__ = sorted(n for n, v in globals().items()
                 if not n.startswith("_") and n not in ("annotations", "OP_MODULES"))
