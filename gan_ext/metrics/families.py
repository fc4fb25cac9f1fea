"""Per-family evaluation: VAE test -ELBO, autoencoder test MSE, unpaired
translation (CycleGAN on ``gan_ext.data.mnist_pair``) and pix2pix L1.

All run under ``torch.no_grad()`` in eval mode (the model's mode is restored
afterwards), in batches, on the model's device; they return Python floats.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor, nn

from ._checks import (check_float_tensor, check_int, check_labels, mnist_like_to_unit,
                      model_device, run_batched, signed_images, _check_range)
from .classifier import DomainClassifier, MNISTClassifier, load_domain_classifier
from .scores import classifier_accuracy

__all__ = ["vae_test_nelbo", "ae_test_mse", "digit_accuracy_of_mnist_like", "translation_scores",
           "pix2pix_l1", "TARGETS"]

TARGETS = ("A", "B")


def _check_model(model, name: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_vae(model, method: str) -> nn.Module:
    """A module with ``method`` (e.g. ``"negative_elbo(x)"``): a gan_ext VAE."""
    _check_model(model)
    if not callable(getattr(model, method.split("(")[0], None)):
        raise TypeError(f"model must provide {method} (a gan_ext.models.vae VAE or ConvVAE), "
                        f"got {type(model).__name__}")
    return model


def _unit_batch(images, name: str) -> Tensor:
    """Float images in [0, 1], any (N, ...) shape the model takes; (N, H, W)
    gets a channel dimension. The model checks the rest of the shape."""
    check_float_tensor(images, name, "images in [0, 1]; divide uint8 images by 255")
    if images.dim() < 2 or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N >= 1, got {list(images.shape)}")
    if images.dim() == 3:  # (N, H, W) -> (N, 1, H, W); (N, 784) stays flat for the MLP VAE
        images = images.unsqueeze(1)
    _check_range(images, name, 0.0, 1.0,
                 "images in [-1, 1] (tanh outputs) map to [0, 1] with (x + 1) / 2")
    return images.detach().clamp(0.0, 1.0)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def vae_test_nelbo(model: nn.Module, images_unit, batch_size: int = 500, sample: bool = True,
                   seed: int = 0) -> float:
    """Negative ELBO in nats per image, averaged over ``images_unit`` (float
    (N, C, H, W) in [0, 1], or (N, 784) for the MLP VAE), with the model's own
    ``negative_elbo`` (``gan_ext.models.vae``) in eval mode.

    ``sample=True`` (default) decodes one z ~ q(z|x) per image: an unbiased
    estimate of the -ELBO, an upper bound of -log p(x) and the number papers
    report; the noise comes from torch's generator seeded with ``seed`` inside
    a forked RNG state, so the value is reproducible and the caller's random
    stream is untouched. ``sample=False`` decodes z = mu (deterministic, usually
    a little below the true -ELBO)."""
    _check_vae(model, "negative_elbo(x)")
    batch_size = check_int("batch_size", batch_size)
    seed = check_int("seed", seed, 0)
    x = _unit_batch(images_unit, "images_unit")
    device = model_device(model)
    devices = [device] if device.type == "cuda" else []
    total = 0.0
    with _eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            b = x[i:i + batch_size].to(device)
            total += float(model.negative_elbo(b, sample=sample)) * b.shape[0]
    return total / x.shape[0]


def ae_test_mse(model: nn.Module, images_unit, batch_size: int = 500) -> float:
    """Mean squared error per pixel between ``model(x)`` (a reconstruction in
    [0, 1]) and x, over ``images_unit`` (float (N, C, H, W) in [0, 1]), in
    eval mode (no denoising corruption)."""
    _check_model(model)
    batch_size = check_int("batch_size", batch_size)
    x = _unit_batch(images_unit, "images_unit")
    device = model_device(model)
    total = 0.0
    with _eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            b = x[i:i + batch_size].to(device)
            rec = model(b)
            if not isinstance(rec, Tensor) or rec.shape != b.shape:
                raise ValueError(f"model must return a reconstruction shaped like its input "
                                 f"{list(b.shape)}, got "
                                 f"{list(rec.shape) if isinstance(rec, Tensor) else type(rec).__name__}")
            total += (rec.double() - b.double()).square().sum().item()
    return total / x.numel()


def digit_accuracy_of_mnist_like(images, labels, classifier: Optional[MNISTClassifier] = None,
                                 batch_size: int = 500) -> float:
    """Digit accuracy of A-domain (MNIST style) generator outputs, (N, 3 or 1,
    32, 32) in [-1, 1], with the shipped MNIST classifier after
    :func:`mnist_like_to_unit` (channel mean, crop 32 -> 28, to [0, 1]). This
    is the content check of an unpaired translation: translate B -> A and ask
    whether the digit of the B source survived."""
    x = mnist_like_to_unit(images)
    return classifier_accuracy(x, labels, classifier, batch_size)


def translation_scores(images, labels, target: str = "B",
                       domain_classifier: Optional[DomainClassifier] = None,
                       classifier: Optional[MNISTClassifier] = None,
                       batch_size: int = 500) -> dict:
    """Scores of translated images (N, 3, 32, 32) in [-1, 1] of the
    ``mnist_pair`` task whose sources had digit ``labels``:

    * ``domain_score``: mean probability, from the shipped A/B style
      classifier, that the images are in the ``target`` style (1: every image
      looks like the target domain);
    * ``digit_accuracy``: whether the digit survived the translation. For
      ``target="A"`` (B -> A, MNIST-like outputs) the MNIST classifier reads
      them (:func:`digit_accuracy_of_mnist_like`). For ``target="B"`` a grey
      conversion is no MNIST image (a coloured textured background), so the
      style classifier's digit head, trained on both styles, reads them;
      ``digit_accuracy_of_mnist_like`` on the B -> A direction is the
      cleaner content check.

    Returns ``{"target", "n", "domain_score", "digit_accuracy"}``."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} (the domain the images were "
                         f"translated to), got {target!r}")
    x = signed_images(images, "images")
    labels = check_labels(labels, x.shape[0])
    batch_size = check_int("batch_size", batch_size)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grey A-style images: the style net reads RGB
    net = load_domain_classifier() if domain_classifier is None else domain_classifier

    def heads(b: Tensor) -> Tensor:
        d, c = net(b)
        return torch.cat([torch.sigmoid(d)[:, None], c], 1)  # (B, 1 + 10)

    out = run_batched(heads, x, batch_size, model_device(net))
    p_b = out[:, 0].double()
    domain_score = (p_b if target == "B" else 1.0 - p_b).mean().item()
    if target == "A":
        digit_accuracy = digit_accuracy_of_mnist_like(x, labels, classifier, batch_size)
    else:
        digit_accuracy = (out[:, 1:].argmax(1) == labels).double().mean().item()
    return {"target": target, "n": int(x.shape[0]), "domain_score": domain_score,
            "digit_accuracy": digit_accuracy}


def pix2pix_l1(pred, target) -> float:
    """Mean absolute error between generated and real images of the same
    shape (any range; pix2pix images are in [-1, 1]), computed in float64."""
    for name, t in (("pred", pred), ("target", target)):
        check_float_tensor(t, name, "images")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} "
                         f"and {list(target.shape)}")
    if pred.numel() == 0:
        raise ValueError("pred is empty")
    diff = (pred.detach().double() - target.detach().to(pred.device).double()).abs()
    value = diff.mean().item()
    if value != value or value == float("inf"):
        raise ValueError("pred or target contains NaN or inf")
    return value
