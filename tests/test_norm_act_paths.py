"""The CPU kernel's reduction schemes (csrc/ops/norm_act/cpu.cpp), each taken
on purpose: channels_last row chunks (register tiles of up to 4 vectors with a
partial last strip, several chunks per segment with a short last one, sub-blocks),
NCHW batch statistics in memory order (planes of >= 256 values), as wide rows
(smaller planes, one row of C*HW lanes per sample) and by channel group
(instance statistics; small planes with more lanes than wide rows take). Fused op vs the float64 twin in
float64 (tight) and float32, forward and backward, plus gradcheck at a shape of
each scheme."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from gan_ext import reference as ref
from conftest import make_input, skip_unless_fused_on

EPS = 1e-5
CODE = ref.ACTIVATIONS

# (shape, layout, scheme it takes on the CPU)
PATHS = [
    ((2, 70, 9, 7), "channels_last", "row chunks: 2 full tiles + a 6-wide strip (float32)"),
    ((3, 130, 5, 5), "channels_last", "row chunks: tiles of 4, 4 and 1 strips, strip tail"),
    ((2, 60, 6, 5), "channels_last", "row chunks: a last tile of 4 strips, the 4th partial"),
    ((4, 3, 70, 80), "channels_last", "row chunks: C < one vector, 3 chunks, the last short"),
    ((3, 64, 33, 20), "channels_last", "row chunks: 2 chunks per sample, the last short"),
    ((3, 5, 17, 19), "nchw", "memory order: planes of 323 values (batch)"),
    ((2, 4, 16, 16), "nchw", "memory order: planes of exactly 256 values (batch)"),
    ((4, 6, 15, 17), "nchw", "wide rows: planes of 255 values, 1530 lanes"),
    ((3, 19, 5, 7), "nchw", "wide rows: 665 lanes, a last tile of 4 strips"),
    ((2, 70, 16, 15), "nchw", "groups: planes of 240 values, too many lanes for wide rows"),
]
IDS = [f"{'x'.join(map(str, s))}-{l}" for s, l, _ in PATHS]


def _params(C, dtype):
    g = torch.Generator().manual_seed(C)
    sign = torch.where(torch.arange(C) % 3 == 1, -1.0, 1.0).double()
    w = ((torch.rand(C, generator=g, dtype=torch.float64) + 0.5) * sign).to(dtype)
    b = (0.5 * torch.randn(C, generator=g, dtype=torch.float64)).to(dtype)
    return w, b


@pytest.mark.parametrize("act,slope", [("relu", 0.0), ("leaky_relu", 0.2)], ids=["relu", "leaky0.2"])
@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,layout,why", PATHS, ids=IDS)
def test_fused_matches_twin_on_every_path(shape, layout, why, dtype, norm, act, slope):
    skip_unless_fused_on("cpu")
    C = shape[1]
    x = make_input(shape, dtype, "cpu", layout, offset=3.0)
    w, b = _params(C, dtype)
    rm, rv = torch.zeros(C, dtype=dtype), torch.ones(C, dtype=dtype)
    rm2, rv2 = rm.double(), rv.double()  # the twin's, updated in place in float64
    instance = norm == "instance"
    got = torch.ops.gan_ext.norm_act(x, w, b, rm, rv, None, True, instance, 0.1, EPS, CODE[act], slope)
    want = ref.norm_act(x.double(), w.double(), b.double(), rm2, rv2, None, True,
                        instance, 0.1, EPS, CODE[act], slope)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for a, e, name in zip(got[:3], want[:3], ("out", "mean", "invstd")):
        torch.testing.assert_close(a.double(), e.double(), **tol, msg=lambda m: f"{why}: {name}: {m}")
    torch.testing.assert_close(rm.double(), rm2, **tol)
    torch.testing.assert_close(rv.double(), rv2, **tol)
    assert got[0].is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                                else torch.contiguous_format)

    g = make_input(shape, dtype, "cpu", layout)
    saved_out = act == "leaky_relu"
    saved = got[0] if saved_out else x
    gi, gw, gb = torch.ops.gan_ext.norm_act_backward(g, saved, w, b, got[1], got[2], True, instance,
                                                     CODE[act], slope, saved_out)
    saved64 = want[0] if saved_out else x.double()
    ei, ew, eb = ref.norm_act_backward(g.double(), saved64, w.double(), b.double(), want[1], want[2],
                                       True, instance, CODE[act], slope, saved_out)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, e, name in ((gi, ei, "grad_input"), (gw, ew, "grad_weight"), (gb, eb, "grad_bias")):
        torch.testing.assert_close(a.double(), e.double(), **tol, msg=lambda m: f"{why}: {name}: {m}")


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape,layout", [((2, 3, 16, 16), "nchw"), ((3, 5, 3, 4), "nchw"),
                                          ((1, 70, 2, 3), "channels_last"),
                                          ((2, 9, 3, 2), "channels_last")],
                         ids=["nchw-memory-order", "nchw-wide-rows", "cl-tiles", "cl-instance-chunks"])
def test_gradcheck_on_each_scheme(shape, layout, mode):
    skip_unless_fused_on("cpu")
    C = shape[1]
    x = make_input(shape, torch.float64, "cpu", layout, requires_grad=True)
    w, b = (t.requires_grad_() for t in _params(C, torch.float64))
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64) * 1.5
    instance = layout == "channels_last" and shape[0] == 2

    def fn(x, w, b):
        return torch.ops.gan_ext.norm_act(x, w, b, rm, rv, None, mode == "train", instance, 0.1,
                                          EPS, CODE["leaky_relu"], 0.2)[0]

    assert gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6, rtol=1e-5)
