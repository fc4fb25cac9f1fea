"""Layers users put in their models: fused norm + activation, conv blocks, and
:func:`fuse` to convert an existing model."""
from .layers import (ActDropout, BatchNormAct2d, Conv2dNormAct, ConvTranspose2dNormAct,
                     InstanceNormAct2d)
from .fuse import fuse
from .losses import GANLoss
from .sync import SyncBatchNormThenAct, convert_sync_batchnorm

__all__ = ["BatchNormAct2d", "InstanceNormAct2d", "Conv2dNormAct", "ConvTranspose2dNormAct",
           "ActDropout", "fuse", "GANLoss", "SyncBatchNormThenAct", "convert_sync_batchnorm"]
