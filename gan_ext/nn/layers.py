"""The fused layers under their first module name, kept so that
``from gan_ext.nn.layers import BatchNormAct2d`` (and pickles of models that
name this module) keep working; they live in :mod:`.norm_act`,
:mod:`.conv_norm_act` and :mod:`.act_dropout`."""
from .act_dropout import ActDropout
from .conv_norm_act import Conv2dNormAct, ConvTranspose2dNormAct
from .norm_act import BatchNormAct2d, InstanceNormAct2d

__all__ = ["BatchNormAct2d", "InstanceNormAct2d", "Conv2dNormAct", "ConvTranspose2dNormAct",
           "ActDropout"]
