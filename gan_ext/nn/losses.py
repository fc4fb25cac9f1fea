"""Loss modules on the fused loss kernels."""
from __future__ import annotations

from torch import Tensor, nn

from .. import ops

__all__ = ["GANLoss"]


class GANLoss(nn.Module):
    """The adversarial losses of a GAN, each computed with its gradient in one pass.

    ``mode``: ``"vanilla"`` (BCE with logits; ``real_label``/``fake_label`` are
    the targets, e.g. ``real_label=0.9`` for one-sided label smoothing),
    ``"lsgan"`` (least squares against the labels), ``"hinge"`` or
    ``"wasserstein"`` (the WGAN critic's ``mean(fake) - mean(real)``, G's
    ``-mean(fake)``; WGAN-GP's gradient penalty needs D itself:
    :func:`gan_ext.models.stabilize.gradient_penalty`). hinge and wasserstein
    take no labels.
    ``minimax=True`` selects the original paper's generator loss
    ``log(1 - D(G(z)))`` instead of the non-saturating ``-log D(G(z))``.

        crit = GANLoss("lsgan")
        loss_d = crit.d_loss(D(real), D(fake.detach()))
        loss_g = crit.g_loss(D(fake))
    """

    def __init__(self, mode: str = "vanilla", real_label: float = 1.0, fake_label: float = 0.0,
                 reduction: str = "mean", minimax: bool = False):
        super().__init__()
        # Validate eagerly (a typo should fail at construction, not at step 1000):
        # the functional forms run the same checks on every call.
        ops.choice_code(mode, ops.gan_loss.GAN_MODES, ops.D_MODES, "mode")
        ops.reduction_code(reduction)
        ops.check_hinge_labels(mode, real_label, fake_label)
        if minimax and mode != "vanilla":
            raise ValueError(f"minimax=True is the BCE ('vanilla') generator loss; got mode={mode!r}")
        for name, v in (("real_label", real_label), ("fake_label", fake_label)):
            ops.gan_loss.check_label(float(v), name, ops.gan_loss.GAN_MODES[mode])
        self.mode, self.reduction, self.minimax = mode, reduction, bool(minimax)
        self.real_label, self.fake_label = float(real_label), float(fake_label)

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """The discriminator's loss: real samples toward real, fakes toward fake."""
        return ops.d_loss(real_logits, fake_logits, self.mode, self.real_label, self.fake_label,
                          self.reduction)

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        """The generator's loss on the discriminator's logits for its samples."""
        return ops.g_loss(fake_logits, self.mode, self.real_label, self.fake_label, self.reduction,
                          self.minimax)

    def forward(self, *args, **kwargs):
        raise TypeError("GANLoss has two losses: call .d_loss(real_logits, fake_logits) for the "
                        "discriminator and .g_loss(fake_logits) for the generator")

    def extra_repr(self) -> str:
        s = f"mode={self.mode!r}, real_label={self.real_label}, fake_label={self.fake_label}, " \
            f"reduction={self.reduction!r}"
        return s + (", minimax=True" if self.minimax else "")
