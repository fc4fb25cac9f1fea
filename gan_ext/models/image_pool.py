"""The image pool of CycleGAN's discriminators (Shrivastava et al. 2017)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import check_int

__all__ = ["ImagePool"]


class ImagePool:
    """The history of generated images (Shrivastava et al. 2017) that CycleGAN's
    discriminators see instead of only the latest fakes.

    ``query(images)``, per image of the batch: while the pool holds fewer than
    ``pool_size`` images, store it and return it; once full, with probability
    0.5 return a random stored image and store the new one in its place,
    otherwise return the new image. ``pool_size=0`` returns the input as is;
    otherwise the result is detached. Randomness comes from ``generator`` or
    torch's default generator, so ``torch.manual_seed`` reproduces it.
    ``state_dict()`` / ``load_state_dict()`` save and restore the stored images
    (and the state of ``generator``, if one was given) with a training checkpoint.
    """

    def __init__(self, pool_size: int = 50, generator: Optional[torch.Generator] = None) -> None:
        self.pool_size = check_int("pool_size", pool_size, 0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, "
                            f"got {type(generator).__name__}")
        self.generator = generator
        self.images: list[Tensor] = []  # each (C, H, W), detached

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"ImagePool.query: images must be a torch.Tensor, "
                            f"got {type(images).__name__}")
        if self.pool_size == 0:
            return images
        if images.dim() < 2:
            raise ValueError(f"ImagePool.query: images must be a batch (B, C, H, W), "
                             f"got shape {tuple(images.shape)}")
        if self.images and self.images[0].shape != images.shape[1:]:
            raise ValueError(f"ImagePool.query: the pool holds images of shape "
                             f"{tuple(self.images[0].shape)}, got a batch of "
                             f"{tuple(images.shape[1:])}")
        images = images.detach()  # (B, C, H, W)
        n_store = min(images.size(0), self.pool_size - len(self.images))
        # Clones, so the pool does not keep whole batches alive or see later
        # in-place changes to them.
        self.images += [img.clone() for img in images[:n_store]]
        n_rest = images.size(0) - n_store
        if n_rest == 0:
            return images
        device = self.generator.device if self.generator is not None else "cpu"
        swap = torch.rand(n_rest, generator=self.generator, device=device) > 0.5
        slot = torch.randint(self.pool_size, (n_rest,), generator=self.generator, device=device)
        out = None
        for i, (s, k) in enumerate(zip(swap.tolist(), slot.tolist()), start=n_store):
            if s:
                out = images.clone() if out is None else out
                old, self.images[k] = self.images[k], images[i].clone()
                out[i] = old
        return images if out is None else out

    def state_dict(self) -> dict:
        state = {"pool_size": self.pool_size, "images": list(self.images)}
        if self.generator is not None:
            state["generator_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or "images" not in state_dict:
            raise TypeError("ImagePool.load_state_dict: expected the dict of "
                            "ImagePool.state_dict() (with 'pool_size' and 'images')")
        if state_dict.get("pool_size") != self.pool_size:
            raise ValueError(f"ImagePool.load_state_dict: the state has pool_size="
                             f"{state_dict.get('pool_size')}, this pool has {self.pool_size}")
        images = list(state_dict["images"])
        if len(images) > self.pool_size or not all(isinstance(t, Tensor) for t in images):
            raise ValueError(f"ImagePool.load_state_dict: 'images' must be at most "
                             f"{self.pool_size} tensors")
        self.images = [t.detach().clone() for t in images]
        if self.generator is not None and "generator_state" in state_dict:
            self.generator.set_state(state_dict["generator_state"])
