"""Quality metrics that need no download.

A small MNIST classifier shipped with the package (``mnist_classifier.pt``,
see :mod:`gan_ext.metrics.classifier`) stands in for Inception-v3:

    inception_score      exp(E KL(p(y|x) || p(y))) over splits: 1 (one image) .. 10
    mnist_fid            Frechet distance of its 128-d features to the real test set
    frechet_distance     the float64, scipy-free Frechet distance of two Gaussians
    class_coverage       which digits the samples are: the mode-collapse report
    classifier_accuracy  how recognisable conditional samples are
    mixture_modes        modes covered / high-quality samples / reverse KL on the
                         2-D ring and grid mixtures (the mode-collapse papers')
    stacked_mnist_modes  modes covered of 1,000 and KL to uniform on stacked MNIST

and per model family: ``vae_test_nelbo``, ``vae_importance_nll`` (the
importance-weighted NLL), ``ae_test_mse``,
``translation_scores`` / ``digit_accuracy_of_mnist_like`` (CycleGAN on
``gan_ext.data.mnist_pair``, with the shipped A/B style classifier) and
``pix2pix_l1``. ``fid_with_backend`` / ``scores_with_backend`` call
torch-fidelity or clean-fid when installed, for Inception FIDs comparable
with papers; ``fid_kid`` (FID and KID of RGB images of any size) runs them
on the features of a hook (``set_feature_extractor``, ``pooled_pixels``).

Conventions: MNIST metrics take float tensors (N, 1, 28, 28) or (N, 28, 28)
in [0, 1]; translation metrics take (N, 3, 32, 32) in [-1, 1]. Everything runs
under ``torch.no_grad()`` in batches of 500 on the classifier's device.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Public name -> submodule. Loaded on first use (PEP 562): importing the
# package stays cheap, and `python -m gan_ext.metrics.retrain` does not
# find its own module already imported by the package (runpy warns then).
_EXPORTS = {
    "mnist_like_to_unit": "_checks",
    "BACKENDS": "backends", "fid_with_backend": "backends",
    "scores_with_backend": "backends", "installed_backend": "backends",
    "kernel_inception_distance": "image_fid", "fid_from_features": "image_fid",
    "fid_kid": "image_fid", "to_rgb_uint8": "image_fid", "set_feature_extractor": "image_fid",
    "feature_extractor": "image_fid", "pooled_pixels": "image_fid",
    "MNISTClassifier": "classifier", "DomainClassifier": "classifier",
    "load_classifier": "classifier", "load_domain_classifier": "classifier",
    "CoverageReport": "coverage", "class_coverage": "coverage",
    "vae_test_nelbo": "families", "ae_test_mse": "families",
    "digit_accuracy_of_mnist_like": "families", "translation_scores": "families",
    "pix2pix_l1": "families",
    "vae_importance_nll": "likelihood", "IWEstimate": "likelihood",
    "frechet_distance": "fid", "feature_stats": "fid", "reference_stats": "fid",
    "mnist_fid": "fid",
    "inception_score": "scores", "class_log_probs": "scores", "classifier_accuracy": "scores",
    "Mixture": "modes", "RING": "modes", "GRID": "modes", "MIXTURES": "modes",
    "mixture_modes": "modes", "kl_to_uniform": "modes", "stacked_mnist": "modes",
    "stacked_mnist_modes": "modes",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the names eagerly
    from ._checks import mnist_like_to_unit
    from .backends import BACKENDS, fid_with_backend, installed_backend, scores_with_backend
    from .image_fid import (feature_extractor, fid_from_features, fid_kid,
                            kernel_inception_distance, pooled_pixels, set_feature_extractor,
                            to_rgb_uint8)
    from .classifier import (DomainClassifier, MNISTClassifier, load_classifier,
                             load_domain_classifier)
    from .coverage import CoverageReport, class_coverage
    from .families import (ae_test_mse, digit_accuracy_of_mnist_like, pix2pix_l1,
                           translation_scores, vae_test_nelbo)
    from .fid import feature_stats, frechet_distance, mnist_fid, reference_stats
    from .likelihood import IWEstimate, vae_importance_nll
    from .modes import (GRID, MIXTURES, RING, Mixture, kl_to_uniform, mixture_modes,
                        stacked_mnist, stacked_mnist_modes)
    from .scores import class_log_probs, classifier_accuracy, inception_score
