"""Batches with exact resume: :class:`BatchPosition`, the order and position
every loader shares, and :class:`InMemoryLoader`, batches of in-memory tensors
(:class:`gan_ext.data.StreamingLoader` decodes image files per batch instead).

The order of epoch ``e`` is a permutation drawn from a generator seeded by
(``seed``, ``e``) alone, so the loader's whole state is two integers: the
epoch and the number of batches already handed out in it. A loader restored
from ``state_dict()`` mid-epoch therefore yields exactly the batches the
original would have yielded next, with no generator state to carry.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor

from .errors import DataError
from .._validate import check_int

__all__ = ["BatchPosition", "InMemoryLoader", "epoch_order", "shard_of"]

_FORMAT = "gan_ext.InMemoryLoader/1"


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"gan_ext.loader:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The sample order of ``epoch``: a permutation of range(n) drawn from
    (seed, epoch) alone (int64 (n,)); ``shuffle=False``: range(n)."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch)))


def shard_of(order: Tensor, i: int, batch_size: int, shard: Tuple[int, int]) -> Tensor:
    """Batch ``i`` of ``order``, rank's contiguous share for ``shard`` = (rank, world)."""
    idx = order[i * batch_size:(i + 1) * batch_size]
    rank, world = shard
    per = batch_size // world
    return idx[rank * per:(rank + 1) * per]


class BatchPosition:
    """What every gan_ext loader shares: the epoch's order (a permutation
    drawn from (seed, epoch) alone), the position (epoch, batches handed out
    in it), iteration across epochs and the state_dict of an exact resume.
    A subclass sets ``num_samples``, ``batch_size``, ``shuffle``,
    ``drop_last``, ``seed`` and ``shard`` (:meth:`_setup`) and implements
    :meth:`_fetch`."""

    _format = ""

    def _setup(self, num_samples: int, batch_size: int, shuffle: bool, drop_last: bool,
               seed: int, shard: Tuple[int, int]) -> None:
        self.batch_size = check_int("batch_size", batch_size)
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.num_samples = num_samples
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = check_int("seed", seed, 0)
        if self.num_samples == 0:
            raise DataError("the dataset is empty (0 samples)")
        if drop_last and self.num_samples < self.batch_size:
            raise DataError(f"batch_size {self.batch_size} is larger than the dataset "
                            f"({self.num_samples} samples), so drop_last leaves no batch; "
                            f"use a batch size <= {self.num_samples}")
        rank, world = shard
        check_int("shard world size", world)
        if not 0 <= rank < world or self.batch_size % world or not drop_last and world > 1:
            raise DataError(f"shard {shard}: needs 0 <= rank < world, a batch_size divisible by "
                            f"world (got {self.batch_size}) and drop_last")
        self.shard = (rank, world)
        self.epoch = 0      # the current epoch
        self.position = 0   # batches of the current epoch already handed out
        self._order: Optional[Tuple[int, Tensor]] = None  # (epoch, its permutation)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """The sample order of ``epoch`` (int64 (N,)); the same for the same seed."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.num_samples, self.seed, epoch, self.shuffle))
        return self._order[1]

    def indices(self, epoch: int, i: int) -> Tensor:
        """The sample indices of batch ``i`` of ``epoch``, this shard's share."""
        return shard_of(self.order(epoch), i, self.batch_size, self.shard)

    def _fetch(self, epoch: int, i: int) -> Tuple[Tensor, ...]:
        raise NotImplementedError

    def _next(self) -> Tuple[Tensor, ...]:
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        batch = self._fetch(self.epoch, self.position)
        # Counted before it is handed out: a checkpoint taken after using this
        # batch resumes with the next one.
        self.position += 1
        return batch

    def __iter__(self) -> Iterator[Tuple[Tensor, ...]]:
        """The rest of the current epoch (all of it when at its start)."""
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        while self.position < len(self):
            yield self._next()
        self.epoch, self.position = self.epoch + 1, 0

    def batches(self, steps: Optional[int] = None) -> Iterator[Tuple[int, Tuple[Tensor, ...]]]:
        """``(epoch, batch)`` for ``steps`` batches (None: forever), crossing
        epoch boundaries; ``epoch`` is the epoch the batch belongs to."""
        if steps is not None:
            steps = check_int("steps", steps, 0)
        done = 0
        while steps is None or done < steps:
            batch = self._next()
            done += 1
            yield self.epoch, batch

    @property
    def steps_done(self) -> int:
        """Batches handed out since epoch 0 began."""
        return self.epoch * len(self) + self.position

    def close(self) -> None:
        """Frees what the loader holds besides its position (worker processes)."""

    def state_dict(self) -> Dict[str, object]:
        return {"format": self._format, "epoch": self.epoch, "position": self.position,
                "seed": self.seed, "num_samples": self.num_samples,
                "batch_size": self.batch_size, "shuffle": self.shuffle,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restores a position saved by :meth:`state_dict`. The data layout
        (size, batch size, shuffle, drop_last) must match, else the position
        would mean other batches: DataError naming the difference."""
        name = type(self).__name__
        if not isinstance(state, dict) or state.get("format") != self._format:
            article = "an" if name[0] in "AEIOU" else "a"
            raise DataError(f"not {article} {name} state_dict (missing or wrong 'format')")
        for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
            if state.get(key) != getattr(self, key):
                raise DataError(f"loader state was saved with {key}={state.get(key)!r} but this "
                                f"loader has {key}={getattr(self, key)!r}; resume with the same "
                                f"data and batch size")
        epoch, position = state.get("epoch"), state.get("position")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (epoch, position)) or position > len(self):
            raise DataError(f"loader state has an invalid position (epoch={epoch!r}, "
                            f"position={position!r})")
        self.seed = check_int("seed", state["seed"], 0)
        self.epoch, self.position = epoch, position
        self._order = None


class InMemoryLoader(BatchPosition):
    """``InMemoryLoader(images, labels, batch_size=64)``: iterating yields
    tuples ``(images[idx], labels[idx])`` of one batch (the same indices in
    every tensor), one epoch per ``for`` loop; ``len()`` is the number of
    batches per epoch. ``shuffle=False`` keeps the stored order;
    ``drop_last`` drops the last, smaller batch. Leaving a ``for`` loop early
    and iterating again continues where it stopped; :meth:`batches` runs
    across epochs.

    ``state_dict()`` / ``load_state_dict()`` save and restore the position
    (epoch, batch within it) for an exact resume.

    ``shard=(rank, world)``: each batch is this rank's contiguous
    ``batch_size // world`` of the global batch; every rank's loader walks
    the same global batches, so one state resumes them all."""

    _format = _FORMAT

    def __init__(self, *tensors: Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0,
                 shard: Tuple[int, int] = (0, 1)) -> None:
        if not tensors:
            raise DataError("InMemoryLoader needs at least one tensor")
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"tensor {i} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() == 0:
                raise DataError(f"tensor {i} is a scalar; the loader batches along dim 0")
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) != 1:
            raise DataError(f"all tensors must have the same length (dim 0), got {sizes}")
        self.tensors: Tuple[Tensor, ...] = tuple(tensors)
        self._setup(sizes[0], batch_size, shuffle, drop_last, seed, shard)

    def _fetch(self, epoch: int, i: int) -> Tuple[Tensor, ...]:
        idx = self.indices(epoch, i)
        return tuple(t[idx.to(t.device)] for t in self.tensors)

    def __repr__(self) -> str:
        return (f"InMemoryLoader({self.num_samples} samples x {len(self.tensors)} tensors, "
                f"batch_size={self.batch_size}, {len(self)} batches/epoch, shuffle={self.shuffle}, "
                f"epoch={self.epoch}, position={self.position})")
