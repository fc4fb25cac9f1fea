"""NaN and inf in every lane of the vector loops and their tails, for
norm_act and reparameterize (the losses: tests/test_losses_op.py; act_dropout:
tests/test_act_dropout_op.py). The fused op must give NaN exactly where its
twin does, in the outputs and in every gradient (issue 13, section 5: no
silent finite value where the twin says NaN, and no NaN where it says a
number, such as the gradient at a -inf input in eval)."""
import pytest
import torch

import gan_ext
from gan_ext import ops

from conftest import skip_unless_fused_on

# A run of 37 values along the vectorised dimension: two AVX-512 float
# vectors (four AVX2 ones) and a scalar tail of 5.
RUN = 37
SHAPES = {"nchw": (2, 2, 1, RUN), "channels_last": (2, RUN, 1, 2)}


def _norm_case(x, kind, train, act, slope, w, b, rm, rv):
    if kind == "batch":
        return ops.batch_norm_act(x, None if train else rm, None if train else rv, w, b, train,
                                  0.1, 1e-5, act, slope)
    return ops.instance_norm_act(x, None if train else rm, None if train else rv, w, b, train,
                                 0.1, 1e-5, act, slope)


def _norm_params(C):
    """weight, bias, running mean and running variance for C channels."""
    return torch.rand(C) + 0.5, torch.randn(C) * 0.1, torch.randn(C) * 0.1, torch.rand(C) + 0.5


def _both(fn, inputs):
    outs = {}
    for name in ("fused", "reference"):
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        with gan_ext.use_backend(name):
            out = fn(*leaves)
            grads = torch.autograd.grad(out.float().sum(), leaves, allow_unused=True)
        outs[name] = (out.detach(), grads)
    return outs


def _same_nan_pattern(outs, where):
    (o, gs), (o_ref, gs_ref) = outs["fused"], outs["reference"]
    assert torch.equal(torch.isnan(o), torch.isnan(o_ref)), f"output {where}"
    torch.testing.assert_close(o, o_ref, equal_nan=True, rtol=1e-4, atol=1e-4,
                               msg=lambda m: f"output {where}: {m}")
    for i, (g, g_ref) in enumerate(zip(gs, gs_ref)):
        if g is None or g_ref is None:
            assert g is None and g_ref is None
            continue
        assert torch.equal(torch.isnan(g), torch.isnan(g_ref)), f"grad {i} {where}"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("act,slope", [("relu", 0.0), ("leaky_relu", 0.2), ("identity", 0.0)],
                         ids=["relu", "leaky0.2", "identity"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", ["batch", "instance"])
@pytest.mark.parametrize("layout", list(SHAPES))
def test_norm_act_nonfinite_in_every_lane(kind, train, act, slope, value, layout):
    skip_unless_fused_on("cpu")
    torch.manual_seed(0)
    shape = SHAPES[layout]
    C = shape[1]
    w, b, rm, rv = _norm_params(C)
    base = torch.randn(shape)
    fn = lambda x, w, b: _norm_case(x, kind, train, act, slope, w, b, rm, rv)  # noqa: E731
    for pos in range(RUN):
        x = base.clone()
        if layout == "nchw":
            x[1, 1, 0, pos] = value
        else:
            x[1, pos, 0, 1] = value
            x = x.contiguous(memory_format=torch.channels_last)
        _same_nan_pattern(_both(fn, [x, w, b]), f"{kind} {layout} position {pos}")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("which", ["mu", "logvar"])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_reparameterize_nonfinite_in_every_lane(which, value, reduction):
    skip_unless_fused_on("cpu")
    torch.manual_seed(1)
    mu, lv = torch.randn(2, RUN), torch.randn(2, RUN) * 0.5

    def fn(mu, lv):
        z, kl = ops.reparameterize_kl(mu, lv, reduction,
                                      generator=torch.Generator().manual_seed(5))
        return torch.cat([z.flatten(), kl.flatten()])

    for pos in range(RUN):
        m, v = mu.clone(), lv.clone()
        (m if which == "mu" else v)[1, pos] = value
        outs = _both(fn, [m, v])
        (o, gs), (o_ref, gs_ref) = outs["fused"], outs["reference"]
        where = f"{which} position {pos}"
        assert torch.equal(torch.isnan(o), torch.isnan(o_ref)), where
        torch.testing.assert_close(o, o_ref, equal_nan=True, rtol=1e-4, atol=1e-4)
        for g, g_ref in zip(gs, gs_ref):
            assert not (torch.isnan(g_ref) & ~torch.isnan(g)).any(), where  # never finite for NaN
            # The kernel recovers std * eps as z - mu (eps is not stored): at a
            # non-finite mu the logvar gradient is NaN where the twin's is a
            # number (documented); nowhere else.
            extra = torch.isnan(g) & ~torch.isnan(g_ref)
            assert (extra <= ~torch.isfinite(m)).all(), where


@pytest.mark.parametrize("act,slope", [("relu", 0.0), ("leaky_relu", 0.2)], ids=["relu", "leaky0.2"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", list(SHAPES))
def test_backward_op_and_its_twin_agree_at_nonfinite_input(layout, train, act, slope):
    """The backward op and gan_ext.reference.norm_act_backward (the twin the
    double backward differentiates) give the same gradients at a NaN or
    infinite saved input: relu's mask passes the gradient at a NaN
    pre-activation in both."""
    skip_unless_fused_on("cpu")
    from gan_ext import reference as ref
    torch.manual_seed(2)
    shape = SHAPES[layout]
    C = shape[1]
    w, b, rm, rv = _norm_params(C)
    code = ref.ACTIVATIONS[act]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for value in (float("nan"), float("inf"), float("-inf")):
        x = torch.randn(shape)
        x.view(-1)[7] = value
        x = x.contiguous(memory_format=fmt)
        _, mean, invstd, _ = ref.norm_act(x, w, b, rm.clone(), rv.clone(), None, train, False,
                                          0.1, 1e-5, code, slope)
        dy = torch.randn(shape).contiguous(memory_format=fmt)
        args = (dy, x, w, b, mean, invstd, train, False, code, slope, False)
        for g, h in zip(torch.ops.gan_ext.norm_act_backward(*args), ref.norm_act_backward(*args)):
            torch.testing.assert_close(g, h, equal_nan=True, rtol=1e-4, atol=1e-4)
