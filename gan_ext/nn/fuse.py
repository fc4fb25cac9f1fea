"""``fuse(model)``: swap norm + activation pairs of an existing model for the
fused layers, keeping parameters, buffers and state_dict keys."""
from __future__ import annotations

from torch import nn

from .act_dropout import ActDropout
from .norm_act import BatchNormAct2d, InstanceNormAct2d

__all__ = ["fuse"]

# Exact classes only: subclasses (SyncBatchNorm, the fused layers themselves,
# user norms with their own forward) may not mean the same thing.
_FUSED_NORMS = {nn.BatchNorm2d: BatchNormAct2d, nn.InstanceNorm2d: InstanceNormAct2d}
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


def _has_hooks(m: nn.Module) -> bool:
    # A hook on the norm would see the activated output after fusing, and one
    # on the activation would never run: leave such pairs alone.
    return any(getattr(m, name, None) for name in _HOOK_DICTS)


def activation_of(act: nn.Module):
    """(activation, negative_slope) of an nn.ReLU / nn.LeakyReLU."""
    if type(act) is nn.ReLU:
        return "relu", 0.01
    return "leaky_relu", act.negative_slope


def rebuild_norm(norm: nn.Module, cls, activation: str, negative_slope: float) -> nn.Module:
    """A ``cls`` (a fused norm class) computing ``norm`` then the activation,
    holding ``norm``'s own Parameter and buffer objects."""
    extra = {} if (not norm.affine or norm.bias is not None) else {"bias": False}
    # Built on the meta device, then handed the original Parameter and buffer
    # objects: nothing is copied, optimizers holding them keep working, and the
    # state_dict is the original's.
    fused = cls(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats,
                activation, negative_slope, device="meta", **extra)
    fused._parameters = type(norm._parameters)(norm._parameters)
    fused._buffers = type(norm._buffers)(norm._buffers)
    fused._non_persistent_buffers_set = set(norm._non_persistent_buffers_set)
    fused.train(norm.training)
    return fused


def _act_dropout(act: nn.Module, drop: nn.Dropout):
    activation, negative_slope = activation_of(act)
    if negative_slope < 0:  # the fused backward needs slope >= 0
        return None
    return ActDropout(activation, negative_slope, drop.p)


def fuse_norm_act_pairs(seq: nn.Sequential, norms=tuple(_FUSED_NORMS)) -> None:
    """Fuses each norm of an exact class in ``norms`` that is directly followed
    by nn.ReLU / nn.LeakyReLU in ``seq``; the activation becomes nn.Identity()."""
    names = list(seq._modules)
    for norm_name, act_name in zip(names, names[1:]):
        norm, act = seq._modules[norm_name], seq._modules[act_name]
        if type(norm) not in norms or type(act) not in _ACTIVATIONS:
            continue
        if _has_hooks(norm) or _has_hooks(act):
            continue
        setattr(seq, norm_name, rebuild_norm(norm, _FUSED_NORMS[type(norm)], *activation_of(act)))
        setattr(seq, act_name, nn.Identity())


def _fuse_sequential(seq: nn.Sequential) -> None:
    # norm -> activation first; then any activation still directly followed by
    # nn.Dropout (an MLP block: Linear -> LeakyReLU -> Dropout).
    fuse_norm_act_pairs(seq)
    names = list(seq._modules)
    for act_name, drop_name in zip(names, names[1:]):
        act, drop = seq._modules[act_name], seq._modules[drop_name]
        if type(act) not in _ACTIVATIONS or type(drop) is not nn.Dropout:
            continue
        if _has_hooks(act) or _has_hooks(drop):
            continue
        fused = _act_dropout(act, drop)
        if fused is None:
            continue
        fused.train(drop.training)
        setattr(seq, act_name, fused)
        setattr(seq, drop_name, nn.Identity())


def fuse(model: nn.Module) -> nn.Module:
    """Fuses every ``nn.BatchNorm2d`` / ``nn.InstanceNorm2d`` that is directly
    followed by ``nn.ReLU`` / ``nn.LeakyReLU`` inside an ``nn.Sequential``
    (anywhere in ``model``) into :class:`~gan_ext.nn.BatchNormAct2d` /
    :class:`~gan_ext.nn.InstanceNormAct2d`; the activation becomes
    ``nn.Identity()`` so indices and state_dict keys do not move. Then every
    remaining ``nn.ReLU`` / ``nn.LeakyReLU`` (slope >= 0) directly followed by
    ``nn.Dropout`` becomes :class:`~gan_ext.nn.ActDropout` and the dropout
    ``nn.Identity()`` (the dropout masks then come from gan_ext's stream: same
    distribution, different draws).

    ``model`` is modified **in place** and returned. The fused layers share the
    original Parameter and buffer objects, so an optimizer built before fusing
    keeps training the model. Outputs and gradients equal the original's to
    float tolerance (a norm followed by ``LeakyReLU(s > 0)`` uses its weight as
    ``sign(w) * max(|w|, 1e-5)``, which only differs for weights within 1e-5 of
    zero). Pairs where either module has hooks, and subclasses of the norms, are
    left as they are. Fusing twice is a no-op.

    Example::

        netG = gan_ext.fuse(Generator())  # DCGAN: ConvTranspose2d, BatchNorm2d, ReLU, ...
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # Collect first: the walk must not see the modules it is replacing.
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        _fuse_sequential(seq)
    return model
