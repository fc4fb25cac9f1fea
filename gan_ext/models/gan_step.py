"""Algorithm 1's alternating update (Goodfellow et al. 2014), which every
GAN family in :mod:`gan_ext.models` trains with: :func:`train_step`, and
``_Players``, G and D as one step calls them (labels, DiffAugment, the
joint real + fake call). :mod:`.gan` re-exports :func:`train_step`."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..nn import GANLoss
from ._checks import check_int, check_real
from . import stabilize
from .diffaugment import diff_augment, parse_policy

__all__ = ["train_step", "Batches"]

Batches = Union[Tensor, Sequence[Tensor]]


def _per_step(value, name: str, k: Optional[int]) -> list:
    """A tensor (k = 1) or a sequence of k tensors -> a list of k tensors."""
    if isinstance(value, Tensor):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise TypeError(f"{name} must be a Tensor or a list of k Tensors, "
                        f"got {type(value).__name__}")
    if k is not None and len(items) != k:
        raise ValueError(f"{name}: k={k} discriminator updates need k={k} batches, one each; "
                         f"got {len(items)} (pass a list of k tensors)")
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return items


class _Players:
    """G and D as one training step calls them, with class labels when G is
    class-conditional (``G.num_classes`` set). Every image D sees goes
    through :meth:`augmented` (DiffAugment's ``augment`` policies, fresh
    draws per call)."""

    def __init__(self, G: nn.Module, D: nn.Module,
                 sample_z: Callable[[int, torch.device], Tensor],
                 num_classes: Optional[int],
                 sample_labels: Optional[Callable[[int, torch.device], Tensor]] = None,
                 augment: Sequence[str] = ()) -> None:
        self.G, self.D, self.sample_z, self.num_classes = G, D, sample_z, num_classes
        self.sample_labels = sample_labels or (
            lambda n, device: torch.randint(num_classes, (n,), device=device))
        self.augment = tuple(augment)
        self.z: Optional[Tensor] = None   # the last generate()'s latents: regenerate() reuses them

    def augmented(self, x: Tensor) -> Tensor:
        return diff_augment(x, self.augment) if self.augment else x

    def generate(self, n: int, device: torch.device, y: Optional[Tensor] = None
                 ) -> Tuple[Tensor, Optional[Tensor]]:
        """n fakes and their labels (``y``, or drawn, for a conditional G)."""
        self.z = z = self.sample_z(n, device)                                # (B, nz)
        if self.num_classes is None:
            return self.G(z), None
        y = self.sample_labels(n, device) if y is None else y                # (B,)
        return self.G(z, y), y

    def regenerate(self, y: Optional[Tensor]) -> Tensor:
        """G's samples of the last latents (and labels ``y``) again: after a G update."""
        return self.G(self.z) if y is None else self.G(self.z, y)

    def score(self, x: Tensor, y: Optional[Tensor]) -> Tensor:
        x = self.augmented(x)
        return self.D(x) if self.num_classes is None else self.D(x, y)

    def score_both(self, real: Tensor, y_real: Optional[Tensor], fake: Tensor,
                   y_fake: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """D(real), D(fake) from one call on both batches concatenated: D's
        batch norms normalise real and fake with the same statistics."""
        y = None if y_real is None else torch.cat([y_real, y_fake])
        out = self.score(torch.cat([real, fake]), y)
        # A packing D gives one output per pack: real's share of the outputs.
        total = real.size(0) + fake.size(0)
        split, rest = divmod(out.size(0) * real.size(0), total)
        if rest:
            raise ValueError(f"joint_batch: D gave {out.size(0)} outputs for {real.size(0)} real "
                             f"and {fake.size(0)} fake samples; a pack would hold both")
        return out[:split], out[split:]


def _check_step_args(G: nn.Module, D: nn.Module, real: Batches, loss: GANLoss, k: Optional[int],
                     labels: Optional[Batches],
                     sample_z: Optional[Callable[[int, torch.device], Tensor]],
                     sample_labels: Optional[Callable[[int, torch.device], Tensor]] = None,
                     augment: Sequence[str] = ()):
    """(reals, ys, players): the k real batches, their k labels (None each
    without labels) and the players, with sample_z's default filled in."""
    if not isinstance(loss, GANLoss):
        raise TypeError(f"loss must be a gan_ext.nn.GANLoss, got {type(loss).__name__}")
    if k is not None:
        check_int("k", k)
    reals = _per_step(real, "real", k)
    k = check_int("k (the number of real batches)", len(reals))
    num_classes = getattr(G, "num_classes", None)
    if num_classes is not None and labels is None:
        raise ValueError(f"labels is required: G is class-conditional (num_classes={num_classes})")
    if num_classes is None and labels is not None:
        raise ValueError("labels were given but G is not class-conditional (no G.num_classes)")
    ys = _per_step(labels, "labels", k) if labels is not None else [None] * k
    if sample_z is None:
        nz = getattr(G, "nz", None)
        if nz is None:
            raise ValueError("G has no attribute nz: pass sample_z(batch_size, device)")
        dtype = reals[0].dtype

        def sample_z(n: int, device: torch.device) -> Tensor:
            return torch.randn(n, nz, device=device, dtype=dtype)

    if sample_labels is not None and num_classes is None:
        raise ValueError("sample_labels was given but G is not class-conditional (no "
                         "G.num_classes)")
    return reals, ys, _Players(G, D, sample_z, num_classes, sample_labels,
                               parse_policy(augment))


def _discriminator_step(players: _Players, opt_d: torch.optim.Optimizer, loss: GANLoss,
                        x: Tensor, y: Optional[Tensor], fake: Tensor, y_fake: Optional[Tensor],
                        joint: bool = False, r1_gamma: float = 0.0, r1_scale: float = 1.0,
                        gp_lambda: float = 0.0) -> Tuple[Tensor, Tensor, Tensor, Dict[str, Tensor]]:
    """One D update on a real batch and fakes; (detached loss, D(real),
    D(fake), the detached penalties by name). With ``r1_gamma`` the loss gains
    ``r1_scale`` times R1 = gamma / 2 E ||grad_x D(x)||^2 on the reals x (the
    images before any augmentation), from D's call on them; with ``joint``
    from one more D call on the reals alone (the joint call's gradient would
    mix the fakes in through batch norm). With ``gp_lambda`` it gains WGAN-GP's
    gp = lambda E[(||grad D(x_hat)||_2 - 1)^2] at interpolates of x and the
    fakes, from one more D call on them (with the reals' labels ``y``)."""
    if r1_gamma:
        x = x.detach().requires_grad_(True)
    if joint:
        d_real, d_fake = players.score_both(x, y, fake.detach(), y_fake)
    else:
        d_real, d_fake = players.score(x, y), players.score(fake.detach(), y_fake)
    loss_d = total = loss.d_loss(d_real, d_fake)
    penalties = {}
    if r1_gamma:
        r1 = r1_gamma / 2 * stabilize.r1_penalty(players.score(x, y) if joint else d_real, x)
        total = total + r1_scale * r1
        penalties["r1"] = r1.detach()
    if gp_lambda:
        x_hat = stabilize.interpolate(x, fake)
        gp = gp_lambda * stabilize.gradient_penalty(players.score(x_hat, y), x_hat)
        total = total + gp
        penalties["gp"] = gp.detach()
    opt_d.zero_grad(set_to_none=True)
    total.backward()
    opt_d.step()
    return loss_d.detach(), d_real, d_fake, penalties


def _generator_step(players: _Players, opt_g: torch.optim.Optimizer, loss: GANLoss,
                    fake: Tensor, y_fake: Optional[Tensor], objective=None,
                    real: Optional[Tensor] = None, y_real: Optional[Tensor] = None,
                    joint: bool = False) -> Tuple[Tensor, Tensor]:
    """One G update on fakes scored by the current D, whose trainable
    parameters are frozen meanwhile (and only those are unfrozen after);
    (loss, D(fake))."""
    frozen = [p for p in players.D.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        if objective is not None:
            loss_g, d_gen = objective(players, fake, y_fake, real, y_real)
        else:
            d_gen = (players.score_both(real, y_real, fake, y_fake)[1] if joint
                     else players.score(fake, y_fake))
            loss_g = loss.g_loss(d_gen)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return loss_g, d_gen


def train_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, real: Batches, loss: GANLoss, *,
               k: Optional[int] = None, labels: Optional[Batches] = None,
               sample_z: Optional[Callable[[int, torch.device], Tensor]] = None,
               g_objective: Optional[Callable] = None, joint_batch: bool = False,
               sample_labels: Optional[Callable[[int, torch.device], Tensor]] = None,
               augment: Sequence[str] = (), r1_gamma: float = 0.0, r1_every: int = 1,
               d_step: int = 0, gp_lambda: float = 0.0, g_steps: int = 1
               ) -> Dict[str, Tensor]:
    """One iteration of Algorithm 1: ``k`` discriminator updates, each on its own
    real batch, then one generator update.

    Args:
        real: the real images, one tensor (k = 1) or a list of k tensors.
        loss: the adversarial loss; ``GANLoss(minimax=True)`` is the paper's
            saturating ``log(1 - D(G(z)))`` for G, the default the
            non-saturating ``-log D(G(z))``.
        k: D updates per G update; ``None``: the number of real batches.
        labels: class labels for a class-conditional G and D (``G.num_classes``
            set): a (B,) integer tensor per real batch. Fake samples get labels
            drawn uniformly from ``range(G.num_classes)``.
        sample_z: ``sample_z(batch_size, device) -> z``; default N(0, I) of
            shape (B, G.nz) in the dtype of ``real``.
        sample_labels: ``sample_labels(batch_size, device) -> y``, the fake
            samples' labels of a class-conditional G; default uniform over
            ``range(G.num_classes)`` from the global RNG.
        g_objective: ``(players, fake, y_fake, real, y_real) -> (loss_g, d_gen)``
            in place of ``loss.g_loss(D(fake))`` (feature matching, unrolled
            D: :func:`gan_ext.models.cures.generator_objective`); ``real`` is
            the last D step's batch.
        joint_batch: D scores each real batch and its fakes in one call on
            both concatenated (the G step: on the last real batch and the
            fakes), so D's batch norms use one set of statistics for both.
            Separate calls (the default, as DCGAN does) let a D with batch
            norm see each batch only relative to itself: a collapsed G's
            near-identical fakes are normalised to look as varied as real data.
        augment: DiffAugment policies (:mod:`gan_ext.models.diffaugment`)
            applied to every image D sees, real and fake, in both steps.
        r1_gamma, r1_every, d_step: the R1 penalty gamma / 2 E ||grad_x
            D(x)||^2 on the real batch, lazily: on the D updates whose index
            over the run (``d_step`` for this call's first) is a multiple of
            ``r1_every``, added to D's loss times ``r1_every``. Logged as
            ``r1`` (its mean over this call's updates that computed it).
        gp_lambda: WGAN-GP (Gulrajani et al. 2017; with ``GANLoss("wasserstein")``):
            each D update's loss gains lambda E[(||grad D(x_hat)||_2 - 1)^2]
            at x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per sample, D
            called once more on x_hat (through ``augment``). D must have no
            batch norm (refused). A class-conditional G then draws each D
            update's fakes with the real batch's labels, so every x_hat lies
            between two samples of one class and is scored with it. Logged
            as ``gp`` (its mean over the k updates, times lambda).
        g_steps: generator updates after the k D updates, all on the same
            latents (and labels), regenerated by the updated G each time (as
            the VEEGAN/PacGAN stacked-MNIST code runs G's optimizer twice on
            one z so that D's loss does not go to zero).

    The generator step reuses the last D step's fakes (as pytorch/examples
    dcgan does), scored by the updated D. D's parameters are frozen during
    it, so no gradient is computed for them and their ``.grad`` keeps the D
    step's.

    Returns detached scalars: ``d_loss`` (mean over the k D updates),
    ``g_loss`` (mean over the G updates), and the mean D output on the last D update's real batch
    (``d_real``) and fakes (``d_fake``) and on the fakes in the G update
    (``d_gen``): probabilities sigmoid(logit) for the BCE losses, raw scores
    for lsgan/hinge/wasserstein.
    """
    reals, ys, players = _check_step_args(G, D, real, loss, k, labels, sample_z, sample_labels,
                                          augment)
    if joint_batch and g_objective is not None:
        raise ValueError("joint_batch takes the plain generator loss: g_objective (feature "
                         "matching, unrolled D) scores its own batches")
    check_real("r1_gamma", r1_gamma, 0)
    check_int("r1_every", r1_every)
    check_int("g_steps", g_steps)
    check_real("gp_lambda", gp_lambda, 0)
    if gp_lambda:
        stabilize.check_critic(D)
    k = len(reals)
    d_losses, penalties = [], {}
    for i, (x, y) in enumerate(zip(reals, ys)):
        # Only the last fakes feed the G update: the others need no graph through G.
        with torch.set_grad_enabled(i == k - 1):
            fake, y_fake = players.generate(x.size(0), x.device,
                                            y if gp_lambda else None)        # (B, C, H, W)
        due = r1_gamma if (d_step + i) % r1_every == 0 else 0.0
        loss_d, d_real, d_fake, pen = _discriminator_step(players, opt_d, loss, x, y, fake,
                                                          y_fake, joint_batch, due, r1_every,
                                                          gp_lambda)
        d_losses.append(loss_d)
        for name, v in pen.items():
            penalties.setdefault(name, []).append(v)
    g_losses = []
    for j in range(g_steps):
        if j:
            fake = players.regenerate(y_fake)
        loss_g, d_gen = _generator_step(players, opt_g, loss, fake, y_fake, g_objective, x, y,
                                        joint_batch)
        g_losses.append(loss_g.detach())

    with torch.no_grad():
        prob = torch.sigmoid if loss.mode == "vanilla" else (lambda t: t)
        stats = {"d_loss": torch.stack(d_losses).mean(), "g_loss": torch.stack(g_losses).mean(),
                 "d_real": prob(d_real.detach().float()).mean(),
                 "d_fake": prob(d_fake.detach().float()).mean(),
                 "d_gen": prob(d_gen.detach().float()).mean()}
        for name, vs in penalties.items():
            stats[name] = torch.stack(vs).mean()
        return stats
