"""Pure-PyTorch twins of every gan_ext op.

Each twin has the signature and the semantics of the op of the same name in
``torch.ops.gan_ext``. They serve twice: as the fallback when the C++
extension is not built (or ``GAN_EXT_BACKEND=reference``), and as the oracle the
tests check the kernels against. They are written for clarity, not speed, and
are differentiable with ordinary autograd.

Each twin lives beside its op in ``gan_ext/ops/<op>.py`` (named ``<op>_ref``
there when the public wrapper has the op's name); this module gathers them
under the op names, with the codes and checks they share.
"""
from __future__ import annotations

from .ops._common import (ACTIVATIONS, IDENTITY, LEAKY_RELU, MEAN, NONE, REDUCTIONS, RELU, SUM,  # noqa: F401
                          check_pair_args, check_scale_loss_grads_args, stats_dtype)
from .ops._philox import (generator_seed_offset, philox4x32_10, philox_blocks,  # noqa: F401
                          philox_counters)
from .ops.act_dropout import (act_dropout_ref as act_dropout, check_act_dropout_args,  # noqa: F401
                              dropout_keep, dropout_scale, dropout_threshold)
from .ops.bce_with_logits import bce_with_logits_ref as bce_with_logits  # noqa: F401
from .ops.gan_loss import (GAN_MODES, HINGE, LSGAN, MINIMAX, VANILLA, _check_label,  # noqa: F401
                           check_d_loss_args, check_g_loss_args, d_loss_ref as d_loss,
                           g_loss_ref as g_loss)
from .ops.l1_loss import cycle_l1_loss_ref as cycle_l1_loss, l1_loss_ref as l1_loss  # noqa: F401
from .ops._norm_act_backward import (invert_activation, norm_act_backward,  # noqa: F401
                                     norm_act_backward_with_stats)
from .ops.norm_act import (MIN_ABS_WEIGHT, activate, check_norm_act_args,  # noqa: F401
                           check_running_update_args, effective_weight, norm_act,
                           output_is_invertible)
from .ops.reparameterize import (check_reparameterize_args, kl_divergence_ref as kl_divergence,  # noqa: F401
                                 normal_noise, reparameterize_kl_given_noise,
                                 reparameterize_kl_ref as reparameterize_kl,
                                 reparameterize_ref as reparameterize)
