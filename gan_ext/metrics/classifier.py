"""The feature networks of the metrics, and their shipped weights.

:class:`MNISTClassifier` plays the part Inception-v3 plays for natural images:
its class probabilities give the (classifier) Inception Score and the class
coverage report, its 128-d penultimate features give the Frechet distance.
:class:`DomainClassifier` reads 32x32 RGB images of the unpaired MNIST task
(``gan_ext.data.mnist_pair``): is this A style (grey digit on black) or B style
(coloured stroke, textured background), and which digit is it, in either style.

The weights are shipped in the package (``mnist_classifier.pt``,
``domain_classifier.pt``, fp32 state_dicts, < 1 MB each) rather than trained
when a metric is first asked for: a metric is only comparable across runs,
machines and papers if every run measures with the same network, evaluation
stays offline and costs no training time, and the numbers can be reproduced.
Each file has a JSON next to it (test accuracy, epochs, seed, sha256 of the
.pt, the command). They were trained with this project's own code::

    python -m gan_ext.metrics.retrain --train --out gan_ext/metrics/mnist_classifier.pt
    python -m gan_ext.metrics.retrain --train-domain --out gan_ext/metrics/domain_classifier.pt

(seed 0, Adam, CPU, 2 threads; see ``retrain.py``, which imports this module,
never the other way round). Retraining on another
machine or PyTorch version gives a network of the same accuracy, not the same
bits: metric values are comparable only between runs that used the same
weights, which is why the FID reference statistics are keyed by the sha256.

Both networks are plain ``torch.nn`` (not the fused gan_ext layers) so that a
metric never depends on which backend or kernels are active.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import io
import os
import threading
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ["MNISTClassifier", "DomainClassifier", "load_classifier", "load_domain_classifier",
           "CLASSIFIER_FILE", "DOMAIN_CLASSIFIER_FILE", "weights_sha256"]

CLASSIFIER_FILE = "mnist_classifier.pt"
DOMAIN_CLASSIFIER_FILE = "domain_classifier.pt"
_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> list:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _channels_last(x: Tensor) -> Tensor:
    # oneDNN's channels_last convs, pools and norms run ~9x faster than NCHW
    # on CPU at these sizes (10k MNIST images: 0.6 s instead of 5.5 s on 2 cores).
    return x.contiguous(memory_format=torch.channels_last)


class MNISTClassifier(nn.Module):
    """Small CNN for (N, 1, 28, 28) images in [0, 1]::

        conv5x5 stride 2, 32 -> BN -> ReLU    (N, 32, 14, 14)
        conv3x3 64 -> BN -> ReLU -> maxpool   (N, 64, 7, 7)
        conv3x3 64 -> BN -> ReLU -> maxpool   (N, 64, 4, 4)  (ceil mode)
        fc 1024 -> 128 -> ReLU                (N, 128)       = features(x)
        dropout -> fc 128 -> 10               (N, 10)        = forward(x), logits

    ~190k parameters; the shipped weights reach >= 99% test accuracy. The
    conv weights and activations are channels_last (the fast CPU path)."""

    feature_dim = 128
    num_classes = 10

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(1, 32, 5, 2),                              # (N, 32, 14, 14)
            *_conv_bn_relu(32, 64), nn.MaxPool2d(2),                  # (N, 64, 7, 7)
            *_conv_bn_relu(64, 64), nn.MaxPool2d(2, ceil_mode=True),  # (N, 64, 4, 4)
            nn.Flatten(1),                                            # (N, 1024)
            nn.Linear(1024, self.feature_dim), nn.ReLU(inplace=True),  # (N, 128)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.to(memory_format=torch.channels_last)

    def features(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) in [0, 1] -> penultimate activations (N, 128)."""
        return self.body(_channels_last((x - _MNIST_MEAN) / _MNIST_STD))

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) in [0, 1] -> logits (N, 10)."""
        return self.head(self.dropout(self.features(x)))


class DomainClassifier(nn.Module):
    """Two heads on one small CNN for (N, 3, 32, 32) images in [-1, 1]::

        conv5x5 stride 2, 16 -> BN -> ReLU                  (N, 16, 16, 16)
        conv3x3 32, 64, each BN -> ReLU -> maxpool          (N, 64, 4, 4)
        fc 1024 -> 128 -> ReLU                              (N, 128)
        domain head 128 -> 1    logit of "B style" (coloured stroke, textured background)
        digit head  128 -> 10   digit logits, trained on both styles

    ``forward(x) -> (domain_logits (N,), digit_logits (N, 10))``."""

    feature_dim = 128

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(3, 16, 5, 2),               # (N, 16, 16, 16)
            *_conv_bn_relu(16, 32), nn.MaxPool2d(2),   # (N, 32, 8, 8)
            *_conv_bn_relu(32, 64), nn.MaxPool2d(2),   # (N, 64, 4, 4)
            nn.Flatten(1),                             # (N, 1024)
            nn.Linear(1024, self.feature_dim), nn.ReLU(inplace=True),  # (N, 128)
        )
        self.dropout = nn.Dropout(dropout)
        self.domain_head = nn.Linear(self.feature_dim, 1)
        self.digit_head = nn.Linear(self.feature_dim, 10)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.dropout(self.body(_channels_last(x)))      # (N, 128)
        return self.domain_head(h).squeeze(1), self.digit_head(h)  # (N,), (N, 10)

    def prob_b(self, x: Tensor) -> Tensor:
        """Probability that each image is in the B style, (N,)."""
        return torch.sigmoid(self(x)[0])


# --------------------------------------------------------------------- loading
_CACHE: Dict[tuple, nn.Module] = {}
_LOCK = threading.Lock()


def weights_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_weights(path: Optional[Union[str, os.PathLike]], filename: str) -> Tuple[bytes, str]:
    """(bytes, where) of the given file, or of the one shipped in the package
    (read through importlib.resources, so it works from a wheel or a zip)."""
    if path is None:
        resource = importlib.resources.files("gan_ext.metrics").joinpath(filename)
        try:
            return resource.read_bytes(), f"gan_ext/metrics/{filename}"
        except (FileNotFoundError, OSError):
            flag = "--train" if filename == CLASSIFIER_FILE else "--train-domain"
            raise ValueError(
                f"the shipped weights gan_ext/metrics/{filename} are missing from this install; "
                f"reinstall gan_ext or recreate them with 'python -m gan_ext.metrics.retrain "
                f"{flag} --out gan_ext/metrics/{filename}'") from None
    if not os.path.isfile(path):
        raise ValueError(f"path: no weights file at {os.fspath(path)!r}")
    with open(path, "rb") as f:
        return f.read(), os.fspath(path)


def _load(cls, path, device, filename: str) -> nn.Module:
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, os.PathLike or None, got {type(path).__name__}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: not a torch device ({device!r}): {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but CUDA is not available; use device='cpu'")
    key = (cls.__name__, None if path is None else os.path.abspath(os.fspath(path)), str(device))
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            data, where = _read_weights(path, filename)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            model = cls()
            try:
                model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                       for k, v in state.items()})
            except (RuntimeError, AttributeError) as e:
                raise ValueError(f"{where} is not a {cls.__name__} state_dict: {e}") from None
            model.eval().requires_grad_(False).to(device)
            model.sha256 = weights_sha256(data)  # keys the FID reference statistics
            _CACHE[key] = model
    return model


def load_classifier(path: Optional[Union[str, os.PathLike]] = None,
                    device: Union[str, torch.device] = "cpu") -> MNISTClassifier:
    """The MNIST classifier in eval mode, without gradients, on ``device``;
    the shipped weights when ``path`` is None. Cached per (path, device): do
    not modify the returned module. ``model.sha256`` is the weights' hash."""
    return _load(MNISTClassifier, path, device, CLASSIFIER_FILE)


def load_domain_classifier(path: Optional[Union[str, os.PathLike]] = None,
                           device: Union[str, torch.device] = "cpu") -> DomainClassifier:
    """The A/B style classifier of the unpaired MNIST task, as :func:`load_classifier`."""
    return _load(DomainClassifier, path, device, DOMAIN_CLASSIFIER_FILE)
