"""Training, sampling and evaluation of every model family (``gan-ext
train|sample|eval``): one shared loop (:func:`fit`) and one small trainer per
family (:data:`TRAINERS`)."""
# The trainer modules register their trainers (base.register) when imported:
# importing them here fills TRAINERS before anything can look a model up.
from . import autoencoder, gan, modes, translation  # noqa: F401  (registers the trainers)
from .base import TRAINERS, Trainer, register, trainer_class
from .checkpoint import (FORMAT, CheckpointError, atomic_save, load_checkpoint, rng_state,
                         set_rng_state)
from .grid import make_grid, save_grid
from .inference import evaluate_checkpoint, load_trained, sample_checkpoint
from .loop import (CheckpointSaveError, RunResult, TrainingDiverged, TrainingInterrupted, fit,
                   resolve_device)
from .monitor import plot_losses
from .options import MODELS, TrainOptions

# In MODELS order, whatever order the trainer modules were imported in.
TRAINERS.update({m: TRAINERS.pop(m) for m in MODELS if m in TRAINERS})
if tuple(TRAINERS) != MODELS:
    raise ImportError(f"gan_ext.train: trainers registered for {sorted(TRAINERS)}, "
                      f"expected one for each of {MODELS}")

__all__ = ["FORMAT", "CheckpointError", "atomic_save", "load_checkpoint", "rng_state",
           "set_rng_state", "make_grid", "save_grid", "evaluate_checkpoint", "load_trained",
           "sample_checkpoint", "RunResult", "Trainer", "TrainingInterrupted", "TrainingDiverged",
           "CheckpointSaveError", "fit", "resolve_device", "plot_losses", "MODELS",
           "TrainOptions", "TRAINERS", "trainer_class", "register"]
