"""The argument checks the model families share (gan_ext.models._checks), and
that every family reports bad images the same way through them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gan_ext.models import _checks as C
from gan_ext.models.autoencoder import ConvAutoencoder
from gan_ext.models.dcgan import Discriminator
from gan_ext.models.gan import MLPDiscriminator
from gan_ext.models.networks import NLayerDiscriminator, ResnetGenerator, UnetGenerator
from gan_ext.models.vae import VAE, ConvVAE, VAEConfig


# ---------------------------------------------------------------- check_real
@pytest.mark.parametrize("value,kwargs", [
    (0, dict(low=0.0)), (0.5, dict(low=0, high=1, high_open=True)),
    (1e-9, dict(low=0, low_open=True)),
    (1.0, dict(low=0.0, high=1.0)), (-3, dict()), (np.float32(0.25), dict(low=0, high=1)),
])
def test_check_real_accepts(value, kwargs):
    out = C.check_real("v", value, **kwargs)
    assert type(out) is float and out == float(value)


@pytest.mark.parametrize("value,kwargs,message", [
    (-0.5, dict(low=0.0), "v must be >= 0.0, got -0.5"),
    (0.0, dict(low=0, low_open=True), "v must be > 0, got 0.0"),
    (1, dict(low=0, high=1, high_open=True), r"v must lie in \[0, 1\), got 1.0"),
    (0.0, dict(low=0.0, high=1.0, low_open=True), r"v must lie in \(0.0, 1.0\], got 0.0"),
    (math.nan, dict(), "v must be >= -inf, got nan"),
    (math.inf, dict(low=0, high=1), r"v must lie in \[0, 1\], got inf"),
])
def test_check_real_rejects_out_of_range(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        C.check_real("v", value, **kwargs)


@pytest.mark.parametrize("value", [True, "0.5", None, torch.tensor(0.5), [0.5]])
def test_check_real_rejects_non_numbers(value):
    with pytest.raises(TypeError, match=r"^v must be a real number, got "):
        C.check_real("v", value)


# -------------------------------------------------------------- check_images
def test_check_images_symbolic_sizes_match_anything():
    C.check_images(torch.zeros(2, 3, 5, 7), (3, "H", "W"))
    C.check_images(torch.zeros(0, 3, 1, 1), (3, "H", "W"))
    with pytest.raises(ValueError,
                       match=r"^G: input must have shape \(B, 3, H, W\), got \(2, 4, 5, 7\)$"):
        C.check_images(torch.zeros(2, 4, 5, 7), (3, "H", "W"), name="input", who="G")


@pytest.mark.parametrize("x,exc,message", [
    (torch.zeros(2, 1, 28, 27), ValueError,
     r"^x must have shape \(B, 1, 28, 28\), got \(2, 1, 28, 27\)$"),
    (torch.zeros(1, 28, 28), ValueError,
     r"^x must have shape \(B, 1, 28, 28\), got \(1, 28, 28\)$"),
    (torch.zeros(2, 1, 28, 28, 1), ValueError, r"must have shape"),
    ([[0.0]], TypeError, r"^x must be a torch.Tensor, got list$"),
])
def test_check_images_rejects(x, exc, message):
    with pytest.raises(exc, match=message):
        C.check_images(x, (1, 28, 28))


def test_check_images_floating_only_when_asked():
    ints = torch.zeros(2, 1, 28, 28, dtype=torch.int64)
    C.check_images(ints, (1, 28, 28))
    with pytest.raises(TypeError, match=r"^AE: x must be a floating point tensor \(images in "
                                        r"\[0, 1\]\), got dtype torch.int64$"):
        C.check_images(ints, (1, 28, 28), who="AE", floating=C.UNIT_IMAGES)


# ---------------------------------------------------------- the other checks
def test_check_code():
    C.check_code(torch.zeros(3, 4), 4, "M.decode")
    with pytest.raises(ValueError, match=r"^M.decode: expected z of shape \(B, 4\), got \[3, 5\]$"):
        C.check_code(torch.zeros(3, 5), 4, "M.decode")
    with pytest.raises(ValueError, match="expected z of shape"):
        C.check_code(torch.zeros(4), 4, "M.decode")
    with pytest.raises(TypeError, match=r"^M.decode: z must be a torch.Tensor, got list$"):
        C.check_code([0.0] * 4, 4, "M.decode")


def test_check_choice_bool_ints():
    assert C.check_choice("norm", "batch", ("batch", "none")) == "batch"
    with pytest.raises(ValueError, match=r"^norm must be one of 'batch', 'none', got 'x'$"):
        C.check_choice("norm", "x", ("batch", "none"))
    with pytest.raises(ValueError, match="norm must be one of"):
        C.check_choice("norm", None, ("batch", "none"))
    assert C.check_bool("fused", False) is False
    with pytest.raises(TypeError, match=r"^fused must be a bool, got int \(1\)$"):
        C.check_bool("fused", 1)
    assert C.check_ints("shape", [1, 2]) == (1, 2)
    assert C.check_ints("shape", (), allow_empty=True) == ()
    with pytest.raises(ValueError, match="shape must not be empty"):
        C.check_ints("shape", ())
    with pytest.raises(TypeError, match="shape must be a tuple of ints"):
        C.check_ints("shape", "12")


# ------------------------------------------- one message format in every family
@pytest.mark.parametrize("make,x,message", [
    (lambda: ConvAutoencoder(), torch.rand(2, 1, 32, 32),
     r"^ConvAutoencoder: x must have shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)$"),
    (lambda: VAE(), torch.rand(2, 780), r"^VAE: x must have shape \(B, 784\), got \(2, 780\)$"),
    (lambda: ConvVAE(VAEConfig(kind="conv")), torch.rand(2, 3, 28, 28),
     r"^ConvVAE: x must have shape \(B, 1, 28, 28\), got \(2, 3, 28, 28\)$"),
    (lambda: Discriminator(nc=1, ndf=4, image_size=28), torch.rand(2, 1, 32, 32),
     r"^Discriminator: x must have shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)$"),
    (lambda: MLPDiscriminator(hidden=(8,)), torch.rand(2, 784),
     r"^MLPDiscriminator: x must have shape \(B, 1, 28, 28\), got \(2, 784\)$"),
    (lambda: ResnetGenerator(ngf=4, n_blocks=0), torch.rand(1, 1, 16, 16),
     r"^ResnetGenerator: input must have shape \(B, 3, H, W\), got \(1, 1, 16, 16\)$"),
    (lambda: NLayerDiscriminator(input_nc=6, ndf=4), torch.rand(1, 3, 32, 32),
     r"^NLayerDiscriminator: input must have shape \(B, 6, H, W\), got \(1, 3, 32, 32\)$"),
    (lambda: UnetGenerator(num_downs=5, ngf=4), torch.rand(3, 32, 32),
     r"^UnetGenerator: input must have shape \(B, 3, H, W\), got \(3, 32, 32\)$"),
])
def test_families_report_bad_images_alike(make, x, message):
    with pytest.raises(ValueError, match=message):
        make()(x)
