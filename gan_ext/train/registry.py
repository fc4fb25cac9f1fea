"""MODEL name -> its trainer class."""
from __future__ import annotations

from typing import Dict, Type

from .autoencoder import AETrainer, DAETrainer, VAETrainer
from .gan import CGANTrainer, DCGANTrainer, GANTrainer
from .loop import Trainer
from .options import MODELS
from .translation import CycleGANTrainer, Pix2PixTrainer

__all__ = ["TRAINERS", "trainer_class"]

TRAINERS: Dict[str, Type[Trainer]] = {t.name: t for t in (
    GANTrainer, DCGANTrainer, CGANTrainer, AETrainer, DAETrainer, VAETrainer,
    CycleGANTrainer, Pix2PixTrainer)}
assert tuple(TRAINERS) == MODELS


def trainer_class(model: str) -> Type[Trainer]:
    if model not in TRAINERS:
        raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    return TRAINERS[model]
