"""Issue 13, section 3: torch's SyncBatchNorm converter on a fused model must
not silently drop the fused activation; gan_ext.nn.convert_sync_batchnorm
keeps the function, the parameters and the state_dict (issue 17: into
SyncBatchNormAct2d, tested on two ranks in test_sync_batchnorm.py)."""
import copy

import pytest
import torch
from torch import nn

import gan_ext
from gan_ext.models import DCGAN, DCGANConfig
from gan_ext.nn import BatchNormAct2d, SyncBatchNormAct2d, convert_sync_batchnorm


def _dcgan_d():
    torch.manual_seed(0)
    return DCGAN(DCGANConfig(nc=1, image_size=32, ndf=8, ngf=8)).D


def test_torch_converter_refuses_a_fused_model_and_names_ours():
    D = _dcgan_d()
    with pytest.raises(TypeError, match=r"gan_ext.nn.convert_sync_batchnorm") as e:
        nn.SyncBatchNorm.convert_sync_batchnorm(D)
    assert "BatchNormAct2d" in str(e.value) and "drop" in str(e.value)
    assert any(isinstance(m, BatchNormAct2d) for m in D.modules())  # untouched


def test_torch_converter_still_converts_plain_models():
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          BatchNormAct2d(4, activation="identity"))
    out = nn.SyncBatchNorm.convert_sync_batchnorm(plain)
    assert isinstance(out[1], nn.SyncBatchNorm) and isinstance(out[3], nn.SyncBatchNorm)


@pytest.mark.parametrize("train", [True, False])
def test_our_converter_keeps_the_function_and_state_dict(train):
    D = _dcgan_d()
    for m in D.modules():  # non-trivial running statistics for eval
        if isinstance(m, BatchNormAct2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ref = copy.deepcopy(D).train(train)
    params = {id(p) for p in D.parameters()}
    keys = list(D.state_dict())
    conv = convert_sync_batchnorm(D).train(train)
    assert not any(type(m) is BatchNormAct2d for m in conv.modules())
    synced = [m for m in conv.modules() if isinstance(m, SyncBatchNormAct2d)]
    assert synced and all(m.activation == "leaky_relu" for m in synced)
    assert {id(p) for p in conv.parameters()} == params
    assert list(conv.state_dict()) == keys
    x = torch.randn(6, 1, 32, 32)
    # no process group: SyncBatchNormAct2d is BatchNormAct2d
    assert torch.equal(conv(x), ref(x))
    if train:
        for a, b in zip(conv.modules(), ref.modules()):
            if isinstance(b, BatchNormAct2d):
                torch.testing.assert_close(a.running_var, b.running_var)
                assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1


def test_relu_layer_converts_to_relu():
    layer = BatchNormAct2d(3, activation="relu").eval()
    conv = convert_sync_batchnorm(nn.Sequential(layer))[0]
    assert conv.activation == "relu" and "relu" in repr(conv)
    x = torch.randn(2, 3, 4, 4)
    assert (conv(x) >= 0).all()
    torch.testing.assert_close(conv(x), layer(x))


def test_guard_is_installed_once():
    import importlib
    import gan_ext.nn.sync as sync
    importlib.reload(sync)
    with pytest.raises(TypeError, match="gan_ext.nn.convert_sync_batchnorm"):
        nn.SyncBatchNorm.convert_sync_batchnorm(_dcgan_d())
    out = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(2))
    assert type(out) is nn.SyncBatchNorm
    assert gan_ext.nn.convert_sync_batchnorm is not None
