"""Layers users put in their models: fused norm + activation (``norm_act``),
conv blocks (``conv_norm_act``), activation + dropout (``act_dropout``), the
GAN losses, synchronized batch norm, minibatch statistics for D
(``minibatch_stddev``, ``minibatch_discrimination``), and :func:`fuse` to
convert an existing model."""
from . import layers  # noqa: F401  (the modules' old home: gan_ext.nn.layers.X still resolves)
from .act_dropout import ActDropout
from .conv_norm_act import Conv2dNormAct, ConvTranspose2dNormAct
from .norm_act import BatchNormAct2d, InstanceNormAct2d
from .fuse import fuse
from .losses import GANLoss
from .minibatch_discrimination import MinibatchDiscrimination
from .minibatch_stddev import MinibatchStdDev, minibatch_stddev
from .sync import SyncBatchNormAct2d, convert_sync_batchnorm

__all__ = ["BatchNormAct2d", "InstanceNormAct2d", "Conv2dNormAct", "ConvTranspose2dNormAct",
           "ActDropout", "fuse", "GANLoss", "SyncBatchNormAct2d", "convert_sync_batchnorm",
           "MinibatchStdDev", "minibatch_stddev", "MinibatchDiscrimination"]
