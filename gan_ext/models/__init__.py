"""The model zoo, built on the fused layers and losses: one file per family.

    gan          the original GAN (Goodfellow et al. 2014): MLP G and D, k D steps
    dcgan        DCGAN (Radford et al. 2015) at 28/32/64; 64x64 loads pytorch/examples checkpoints
    cgan         class-conditional DCGAN (label channels or projection discriminator)
    autoencoder  the convolutional (denoising) autoencoder
    vae          the MLP VAE of pytorch/examples (same state_dict) and a conv VAE
    cyclegan     CycleGAN (Zhu et al. 2017), state_dicts of the official implementation
    pix2pix      pix2pix (Isola et al. 2017): U-Net generator, 6-channel PatchGAN
    modes        the mode-collapse benchmarks' networks (2-D mixtures, stacked MNIST)
    cures        mode-collapse cures every GAN family's config takes (pack, minibatch
                 stddev/discrimination, feature matching, unrolled D, G EMA)

Shared by cyclegan and pix2pix: ``networks`` (the official ResNet, U-Net and
PatchGAN networks), ``official`` (loading the published checkpoints),
``image_pool`` and ``schedule`` (the linear learning-rate decay).

Every model is a plain ``nn.Module``; ``fused=False`` builds the same network
from plain ``torch.nn`` layers (``gan_ext.fuse`` turns it into the fused one).
"""
from . import (autoencoder, cgan, cures, cyclegan, dcgan, gan, image_pool, modes, networks,
               official, pix2pix, schedule, vae)
from ._common import init_normal_, num_parameters
from .autoencoder import AEConfig, ConvAutoencoder
from .cgan import CGANConfig, ConditionalDiscriminator, ConditionalGAN, ConditionalGenerator
from .cyclegan import CycleGAN, CycleGANConfig
from .dcgan import DCGAN, DCGANConfig, Discriminator, Generator
from .gan import GAN, GANConfig, MLPDiscriminator, MLPGenerator, TrainConfig, train_step
from .image_pool import ImagePool
from .networks import NLayerDiscriminator, PixelDiscriminator, ResnetGenerator, UnetGenerator
from .official import load_official_state_dict
from .pix2pix import Pix2Pix, Pix2PixConfig
from .vae import VAE, ConvVAE, VAEConfig, VAEOutput, build_vae

__all__ = ["gan", "dcgan", "cgan", "autoencoder", "vae", "cyclegan", "pix2pix", "modes", "cures",
           "networks", "official", "image_pool", "schedule",
           "init_normal_", "num_parameters",
           "TrainConfig", "GANConfig", "MLPGenerator", "MLPDiscriminator", "GAN", "train_step",
           "DCGANConfig", "Generator", "Discriminator", "DCGAN",
           "CGANConfig", "ConditionalGenerator", "ConditionalDiscriminator", "ConditionalGAN",
           "AEConfig", "ConvAutoencoder", "VAEConfig", "VAEOutput", "VAE", "ConvVAE", "build_vae",
           "CycleGANConfig", "CycleGAN", "ResnetGenerator", "NLayerDiscriminator", "PixelDiscriminator",
           "ImagePool",
           "load_official_state_dict", "Pix2PixConfig", "Pix2Pix", "UnetGenerator"]
