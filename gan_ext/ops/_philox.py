"""The Philox-4x32-10 stream of the C++ Philox header, in PyTorch: the noise of
reparameterize and the mask of act_dropout are drawn from it, so the twins
give the kernels' numbers for the same generator state."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def philox4x32_10(counter: Tensor, key: tuple) -> Tensor:
    """Philox-4x32-10 on int64 tensors holding uint32 words: counter (n, 4) ->
    (n, 4). The same function as philox4x32_10 in the C++ Philox header."""
    c0, c1, c2, c3 = (counter[:, i].clone() for i in range(4))
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + _PHILOX_W0) & _MASK32, (k1 + _PHILOX_W1) & _MASK32
        # 32x32 -> 64-bit products, split in 16-bit halves so nothing overflows int64.
        hi0, lo0 = _mulhilo(_PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(_PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3], dim=1)


def _mulhilo(m: int, c: Tensor):
    m_lo, m_hi = m & 0xFFFF, m >> 16
    c_lo, c_hi = c & 0xFFFF, c >> 16
    ll, lh, hl, hh = c_lo * m_lo, c_lo * m_hi, c_hi * m_lo, c_hi * m_hi
    mid = (ll >> 16) + (lh & 0xFFFF) + (hl & 0xFFFF)
    lo = ((mid & 0xFFFF) << 16) | (ll & 0xFFFF)
    hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16)
    return hi & _MASK32, lo & _MASK32


def philox_counters(q: Tensor, offset: int) -> Tensor:
    """The Philox counters (n, 4) of blocks q for a call at `offset`: curand's
    layout, (lo(offset/4), hi(offset/4), lo(q), hi(q)) (why: the C++ Philox header)."""
    step = offset >> 2
    return torch.stack([torch.full_like(q, step & _MASK32), torch.full_like(q, (step >> 32) & _MASK32),
                        q & _MASK32, q >> 32], dim=1)


def generator_seed_offset(device: torch.device, generator: Optional[torch.Generator] = None):
    """(seed, offset) for one call, drawn as the kernels draw them (the C++ Philox header),
    advancing the generator the same way."""
    device = torch.device(device)
    if device.type == "cuda":
        gen = generator if generator is not None else torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()]
        seed, offset = gen.initial_seed(), gen.get_offset()
        gen.set_offset(offset + 4)
        return seed, offset
    if device.type != "cpu":
        raise ValueError(f"reparameterize: no noise generator for device type {device.type!r}")
    # Tensor.random_() on int64 draws random64() with the top bit cleared: the
    # CPU kernel uses exactly that as its seed.
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    return seed, 0


def philox_blocks(q: Tensor, seed: int, offset: int) -> Tensor:
    """The (n, 4) words of Philox blocks q of the (seed, offset) stream."""
    return philox4x32_10(philox_counters(q, offset), (seed & _MASK32, (seed >> 32) & _MASK32))
