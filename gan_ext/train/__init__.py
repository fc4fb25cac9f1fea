"""Training, sampling and evaluation of every model family (``gan-ext
train|sample|eval``): one shared loop (:func:`fit`) and one small trainer per
family (:data:`TRAINERS`)."""
from .checkpoint import (FORMAT, CheckpointError, atomic_save, load_checkpoint, rng_state,
                         set_rng_state)
from .grid import make_grid, save_grid
from .inference import evaluate_checkpoint, load_trained, sample_checkpoint
from .loop import RunResult, Trainer, TrainingInterrupted, fit, resolve_device
from .monitor import plot_losses
from .options import MODELS, TrainOptions
from .registry import TRAINERS, trainer_class

__all__ = ["FORMAT", "CheckpointError", "atomic_save", "load_checkpoint", "rng_state",
           "set_rng_state", "make_grid", "save_grid", "evaluate_checkpoint", "load_trained",
           "sample_checkpoint", "RunResult", "Trainer", "TrainingInterrupted", "fit",
           "resolve_device", "plot_losses", "MODELS", "TrainOptions", "TRAINERS",
           "trainer_class"]
