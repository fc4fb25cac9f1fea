"""Scores from the MNIST classifier's class probabilities: the (classifier)
Inception Score and the accuracy on labelled images.

Images: float tensors (N, 1, 28, 28) or (N, 28, 28) in [0, 1].
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._checks import check_int, check_labels, model_device, run_batched, unit_images
from .classifier import MNISTClassifier, load_classifier

__all__ = ["class_log_probs", "inception_score", "classifier_accuracy"]


def class_log_probs(images, classifier: Optional[MNISTClassifier] = None,
                    batch_size: int = 500) -> Tensor:
    """log p(y | x) of each image, (N, 10) float64, from the shipped
    classifier unless another is given."""
    x = unit_images(images)
    batch_size = check_int("batch_size", batch_size)
    classifier = load_classifier() if classifier is None else classifier
    logits = run_batched(classifier, x, batch_size, model_device(classifier))
    return torch.log_softmax(logits.double(), dim=1)


def inception_score(images, classifier: Optional[MNISTClassifier] = None, splits: int = 10,
                    batch_size: int = 500) -> Tuple[float, float]:
    """Inception Score with the MNIST classifier (Salimans et al. 2016):
    ``exp(E_x KL(p(y|x) || p(y)))``, p(y) the mean prediction, on each of
    ``splits`` consecutive chunks; returns (mean, std) over the chunks.
    1 for a single repeated image, at most 10 (sharp and balanced classes);
    the real MNIST test set scores ~9.8 with the shipped classifier."""
    splits = check_int("splits", splits)
    logp = class_log_probs(images, classifier, batch_size)  # (N, 10)
    n = logp.shape[0]
    if n < splits:
        raise ValueError(f"images: need at least splits={splits} images, got {n}; pass fewer "
                         f"splits")
    scores = []
    for chunk in torch.tensor_split(logp, splits):
        log_py = torch.logsumexp(chunk, 0) - math.log(chunk.shape[0])          # (10,)
        kl = (chunk.exp() * (chunk - log_py)).sum(1)                           # (n_chunk,)
        scores.append(kl.mean().exp().item())
    s = torch.tensor(scores, dtype=torch.float64)
    return s.mean().item(), (s.std(unbiased=False).item() if splits > 1 else 0.0)


def classifier_accuracy(images, labels, classifier: Optional[MNISTClassifier] = None,
                        batch_size: int = 500) -> float:
    """Fraction of ``images`` the classifier assigns to ``labels`` (int (N,),
    0..9): how recognisable a conditional model's digits are."""
    x = unit_images(images)
    labels = check_labels(labels, x.shape[0])
    pred = class_log_probs(x, classifier, batch_size).argmax(1)
    return (pred == labels).double().mean().item()
