"""The learning-rate schedule of the official CycleGAN and pix2pix training
(``lr_policy='linear'``) and the checks of the config fields it reads."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import check_int, check_real

__all__ = ["LinearDecay", "make_linear_decay_schedulers", "check_schedule", "step_decay_factor"]


@dataclass
class LinearDecay:
    """The official ``lr_policy='linear'`` multiplier for ``LambdaLR``: 1 for the
    first ``n_epochs``, then linearly to 0 over ``n_epochs_decay``
    (``epoch_count``: the epoch training starts at, 1 for a fresh run). A class,
    not a lambda, so ``LambdaLR.state_dict()`` saves it."""
    n_epochs: int = 100
    n_epochs_decay: int = 100
    epoch_count: int = 1

    def __call__(self, epoch: int) -> float:
        decayed = max(0, epoch + self.epoch_count - self.n_epochs)
        return 1.0 - decayed / float(self.n_epochs_decay + 1)


def step_decay_factor(step: int, total: int, decay_steps: int) -> float:
    """The GANs' ``--decay-epochs``: the multiplier of the learning rate for
    the step after ``step`` of ``total``: 1, then over the last ``decay_steps``
    steps linearly down to 1/(decay_steps + 1), as the official rule per epoch
    (a function of the step alone: a resume continues it exactly)."""
    decay_steps = min(max(decay_steps, 0), total)
    done = step + 1 - (total - decay_steps)
    return 1.0 - max(0, done) / float(decay_steps + 1)


def make_linear_decay_schedulers(config, *optimizers):
    """One ``LambdaLR`` with :class:`LinearDecay` per optimizer, from the
    ``n_epochs``, ``n_epochs_decay`` and ``epoch_count`` of ``config``."""
    rule = LinearDecay(config.n_epochs, config.n_epochs_decay, config.epoch_count)
    return tuple(torch.optim.lr_scheduler.LambdaLR(opt, rule) for opt in optimizers)


def check_schedule(cfg) -> None:
    """The optimizer and schedule fields of a CycleGAN or pix2pix config."""
    check_real("lr", cfg.lr, 0.0)
    check_real("beta1", cfg.beta1, 0, 1, high_open=True)
    check_int("n_epochs", cfg.n_epochs, 0)
    check_int("n_epochs_decay", cfg.n_epochs_decay, 0)
    check_int("epoch_count", cfg.epoch_count, 1)
