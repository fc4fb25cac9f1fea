"""Loading the published checkpoints of the official
junyanz/pytorch-CycleGAN-and-pix2pix (``latest_net_G.pth``, ...) into the
networks of :mod:`gan_ext.models.networks`, the way its ``load_networks`` does."""
from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["OfficialCheckpoint", "drop_untracked_instance_norm_stats", "load_official_state_dict"]


def drop_untracked_instance_norm_stats(module: nn.Module, state_dict: dict, prefix: str,
                                       *args) -> None:
    """load_state_dict pre-hook: checkpoints saved with torch < 0.4 carry
    ``running_mean`` / ``running_var`` / ``num_batches_tracked`` for every
    InstanceNorm, which since 0.4 tracks no statistics by default. Drop exactly
    those keys, for exactly those modules (the official
    ``__patch_instance_norm_state_dict``); any other unexpected key still fails
    a strict load."""
    for name, m in module.named_modules():
        if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats:
            base = f"{prefix}{name}." if name else prefix
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                state_dict.pop(base + key, None)


class OfficialCheckpoint(nn.Module):
    """Base of the networks: strict ``load_state_dict`` accepts the official
    checkpoints, including pre-0.4 ones with InstanceNorm running statistics
    (see :func:`drop_untracked_instance_norm_stats`)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_pre_hook(drop_untracked_instance_norm_stats)


def load_official_state_dict(module: nn.Module, path_or_state_dict, strict: bool = True,
                             map_location="cpu"):
    """Loads an official pytorch-CycleGAN-and-pix2pix checkpoint
    (``latest_net_G.pth``, ``latest_net_D_A.pth``, a path or an already loaded
    dict) into ``module``, the way the official ``load_networks`` does: the
    ``_metadata`` of the file is dropped, a ``module.`` prefix left by
    ``nn.DataParallel`` is stripped, and the InstanceNorm running statistics of
    pre-0.4 checkpoints are ignored (the networks' load hook). Returns
    ``load_state_dict``'s result; a strict load still fails on any other
    mismatch."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        state_dict = torch.load(path_or_state_dict, map_location=map_location, weights_only=True)
    else:
        state_dict = path_or_state_dict
    if not isinstance(state_dict, dict):
        raise TypeError("path_or_state_dict must be a path or a state_dict (a dict of tensors), "
                        f"got {type(state_dict).__name__}")
    # A fresh dict has no _metadata: versions then read as "old", which is what
    # the official loader relies on (e.g. BatchNorm fills in num_batches_tracked).
    keys = list(state_dict)
    strip = bool(keys) and all(k.startswith("module.") for k in keys)
    state_dict = {(k[len("module."):] if strip else k): v for k, v in state_dict.items()}
    if not isinstance(module, OfficialCheckpoint):
        drop_untracked_instance_norm_stats(module, state_dict, "")
    return module.load_state_dict(state_dict, strict=strict)
