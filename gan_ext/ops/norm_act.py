"""Batch/instance norm + activation: ``torch.ops.gan_ext.norm_act``, the
functional forms, the pure-PyTorch twin, the fake kernel and the op spec. Its
backward op's twin, fake kernel and the twin op of the double backward are in
_norm_act_backward.py (this file would otherwise pass 450 lines)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from ._spec import BadInput, OpSpec, Sample, leaf
from ._common import (IDENTITY, LEAKY_RELU, RELU, activation_code, check_activation, check_tensor,
                      stats_dtype)

__all__ = ["batch_norm_act", "instance_norm_act"]

OP = "norm_act"
KERNELS = ("norm_act", "norm_act_backward")
# Mirrors kMinAbsWeight in the C++ norm_act checks.
MIN_ABS_WEIGHT = 1e-5

_lib = torch.ops.gan_ext


# ------------------------------------------------------------------ wrappers
def _call(input, running_mean, running_var, num_batches_tracked, weight, bias,
          use_input_stats, momentum, eps, instance, act, negative_slope):
    # The op (or its twin) updates the running statistics and the counter in place.
    if use_input_stats and running_mean is not None and _backend.vmap_active():
        raise ValueError(
            f"{'instance' if instance else 'batch'}_norm_act under torch.func.vmap with input "
            "statistics would update the running statistics in place from every vmapped "
            "sample; use eval mode, a layer with track_running_stats=False, or pass "
            "running_mean=None and running_var=None")
    fn = _lib.norm_act if _backend.use_fused(input, OP) else norm_act
    return fn(input, weight, bias, running_mean, running_var, num_batches_tracked,
              use_input_stats, instance, momentum, eps, act, negative_slope)[0]


def batch_norm_act(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                   weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                   training: bool = False, momentum: Optional[float] = 0.1, eps: float = 1e-5,
                   activation: str = "relu", negative_slope: float = 0.01, *,
                   num_batches_tracked: Optional[Tensor] = None) -> Tensor:
    """``act(F.batch_norm(input, ...))`` in one fused pass (two in training).

    Arguments follow :func:`torch.nn.functional.batch_norm`. In training the
    running statistics are updated in place by the op, and
    ``num_batches_tracked`` (if given) is incremented; ``momentum=None`` is
    ``nn.BatchNorm2d``'s cumulative average, ``1 / num_batches_tracked``, and
    requires the counter.
    """
    check_tensor(input)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm_act: running_mean and running_var are required when training=False")
    return _call(input, running_mean, running_var, num_batches_tracked, weight, bias, training,
                 momentum, eps, False, activation_code(activation), negative_slope)


def instance_norm_act(input: Tensor, running_mean: Optional[Tensor] = None,
                      running_var: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                      bias: Optional[Tensor] = None, use_input_stats: bool = True,
                      momentum: float = 0.1, eps: float = 1e-5, activation: str = "relu",
                      negative_slope: float = 0.01) -> Tensor:
    """``act(F.instance_norm(input, ...))`` in one fused pass (two with input stats)."""
    check_tensor(input)
    if not use_input_stats and (running_mean is None or running_var is None):
        raise ValueError("instance_norm_act: running_mean and running_var are required when "
                         "use_input_stats=False")
    return _call(input, running_mean, running_var, None, weight, bias, use_input_stats,
                 momentum, eps, True, activation_code(activation), negative_slope)


# ---------------------------------------------------------------------- twin
def output_is_invertible(activation: int, negative_slope: float) -> bool:
    return activation == LEAKY_RELU and negative_slope > 0


def effective_weight(weight: Optional[Tensor], activation: int, negative_slope: float) -> Optional[Tensor]:
    """The weight the op really multiplies by (see MIN_ABS_WEIGHT)."""
    if weight is None or not output_is_invertible(activation, negative_slope):
        return weight
    sign = torch.where(weight < 0, -1.0, 1.0).to(weight.dtype)
    return sign * weight.abs().clamp_min(MIN_ABS_WEIGHT)


def effective_weight_grad(weight: Optional[Tensor], grad: Optional[Tensor], activation: int,
                          negative_slope: float) -> Optional[Tensor]:
    """weight's gradient from that of the effective weight (what norm_act_backward
    returns as grad_weight): d w_eff / d w is 1 where |w| >= MIN_ABS_WEIGHT and 0
    below, where the clamp is flat (w = 0, where w_eff jumps from -floor to +floor,
    included), as autograd differentiates effective_weight. The C++ autograd of
    norm_act applies the same rule."""
    if weight is None or grad is None or not output_is_invertible(activation, negative_slope):
        return grad
    return torch.where(weight.abs() >= MIN_ABS_WEIGHT, grad, torch.zeros_like(grad))


def activate(z: Tensor, activation: int, negative_slope: float) -> Tensor:
    if activation == RELU:
        return torch.relu(z)
    if activation == LEAKY_RELU:
        return torch.nn.functional.leaky_relu(z, negative_slope)
    return z


def _stats(x: Tensor, instance: bool):
    """Biased mean/var over (N, H, W) per channel, or over (H, W) per (n, c)."""
    xs = x.to(stats_dtype(x.dtype))
    dims = (2, 3) if instance else (0, 2, 3)
    var, mean = torch.var_mean(xs, dim=dims, correction=0)
    return mean.reshape(-1), var.reshape(-1)


def _per_channel(t: Tensor, x: Tensor, instance: bool, per_sample: bool) -> Tensor:
    """Broadcast a (C,) or (N*C,) vector against x of shape (N, C, H, W)."""
    N, C = x.shape[:2]
    if instance and per_sample:
        return t.reshape(N, C, 1, 1)
    return t.reshape(1, C, 1, 1)


def check_norm_act_args(input, weight, bias, running_mean, running_var, use_input_stats,
                        instance, eps, activation) -> None:
    """The twin of check_norm_act_args in the C++ norm_act checks: both backends reject
    the same input with the same message (without it the fallback would, say,
    normalize a single value per channel to zero where the kernel raises)."""
    if input.dim() != 4:
        raise ValueError(f"input must be a 4-D (N, C, H, W) tensor, got a {input.dim()}-D tensor "
                         f"of shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError("input must be a floating point tensor (float32, float64, bfloat16 or "
                        f"float16), got {input.dtype}")
    check_activation(activation)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if eps == 0 and use_input_stats and not instance:
        raise ValueError("eps must be positive for batch norm in training (as in torch), got 0.0")
    N, C, H, W = input.shape
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is None:
            continue
        if t.dim() != 1 or t.shape[0] != C:
            raise ValueError(f"{name} must be a 1-D tensor of size {C} (the channel count of "
                             f"input), got shape {tuple(t.shape)}")
        if t.device != input.device:
            raise ValueError(f"{name} must be on {input.device}, got {t.device}")
        mixed = t.dtype == torch.float32 and input.dtype in (torch.float16, torch.bfloat16)
        if t.dtype != input.dtype and not mixed:
            raise TypeError(f"{name} has dtype {t.dtype} but input has dtype {input.dtype}; they "
                            f"must match (float32 {name} is also accepted for float16/bfloat16 input)")
    if use_input_stats and input.numel() > 0 and (H * W if instance else N * H * W) <= 1:
        raise ValueError("Expected more than 1 value per channel when using input statistics "
                         f"(training), got input of shape {tuple(input.shape)}")


def check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                              use_input_stats, momentum) -> None:
    """The twin of check_running_update_args in the C++ norm_act checks."""
    nbt = num_batches_tracked
    if nbt is not None:
        if nbt.dtype != torch.int64 or nbt.numel() != 1:
            raise TypeError("num_batches_tracked must be a one-element int64 tensor, got dtype "
                            f"{nbt.dtype} and shape {tuple(nbt.shape)}")
        if nbt.device != input.device:
            raise ValueError(f"num_batches_tracked must be on {input.device}, got {nbt.device}")
        if not use_input_stats:
            raise ValueError("num_batches_tracked is only counted when use_input_stats is true "
                             "(training); pass None")
    if (momentum is None and use_input_stats and nbt is None
            and (running_mean is not None or running_var is not None)):
        raise ValueError("momentum=None (a cumulative average) requires num_batches_tracked")


@torch.no_grad()
def _update_running(running_mean, running_var, num_batches_tracked, momentum, mean, var,
                    input: Tensor, instance: bool) -> None:
    """In place, as the kernels do it (the CPU kernel's update_running_stats):
    running = (1 - f) * running + f * batch in float64, the variance unbiased, the
    per-sample statistics of instance norm averaged over the batch."""
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    if input.numel() == 0:
        return
    N, C, H, W = input.shape
    # 1 / count as a tensor, not float(): no device sync, no torch.compile graph break.
    f = 1.0 / num_batches_tracked.double() if momentum is None else momentum
    count = H * W * (1 if instance else N)
    for running, stat, scale in ((running_mean, mean, 1.0), (running_var, var, count / (count - 1))):
        if running is not None:
            batch = stat.double().reshape(-1, C).mean(0) * scale
            running.copy_((1.0 - f) * running.double() + f * batch)


def norm_act(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
             running_mean: Optional[Tensor], running_var: Optional[Tensor],
             num_batches_tracked: Optional[Tensor], use_input_stats: bool, instance: bool,
             momentum: Optional[float], eps: float, activation: int, negative_slope: float):
    """Twin of ``torch.ops.gan_ext.norm_act``; returns (out, mean, invstd, var) and,
    with input statistics, updates the running statistics in place."""
    check_norm_act_args(input, weight, bias, running_mean, running_var, use_input_stats, instance,
                        eps, activation)
    check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                              use_input_stats, momentum)
    if use_input_stats is False and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are required when use_input_stats is false")
    sd = stats_dtype(input.dtype)
    if use_input_stats:
        mean, var = _stats(input, instance)
    else:
        mean, var = running_mean.to(sd), running_var.to(sd)
    invstd = torch.rsqrt(var + eps)
    per_sample = use_input_stats
    xs = input.to(sd)
    y = (xs - _per_channel(mean, input, instance, per_sample)) * _per_channel(invstd, input, instance, per_sample)
    w = effective_weight(weight, activation, negative_slope)
    if w is not None:
        y = y * w.to(sd).reshape(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.to(sd).reshape(1, -1, 1, 1)
    out = activate(y, activation, negative_slope).to(input.dtype)
    if use_input_stats:
        _update_running(running_mean, running_var, num_batches_tracked, momentum, mean, var, input,
                        instance)
    return out, mean, invstd, var


# ------------------------------------------------------- fake kernels, twin op
def _kernel_memory_format(t: torch.Tensor) -> torch.memory_format:
    # Mirrors use_channels_last() in the C++ norm_act checks.
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _register() -> None:
    # Autograd of norm_act is registered in C++: the Python register_autograd
    # wrapper cost more per call than eager BatchNorm2d+ReLU on small tensors.
    # norm_act_backward stays a separate op; its fake kernel, twin and twin op
    # are in _norm_act_backward.py.
    @torch.library.register_fake("gan_ext::norm_act")
    def _norm_act_fake(input, weight, bias, running_mean, running_var, num_batches_tracked,
                       use_input_stats, instance, momentum, eps, activation, negative_slope):
        # The running statistics are mutated in place (the schema says so); a fake
        # kernel only describes the outputs.
        check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                                  use_input_stats, momentum)
        out = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                          memory_format=_kernel_memory_format(input))
        n = input.shape[0] * input.shape[1] if (instance and use_input_stats) else input.shape[1]
        sd = stats_dtype(input.dtype)
        stats = [input.new_empty((n,), dtype=sd) for _ in range(3)]
        return (out, *stats)


# --------------------------------------------------------------------- spec
_ACTS = {"identity": (IDENTITY, 0.01), "relu": (RELU, 0.01), "leaky0.2": (LEAKY_RELU, 0.2)}
_ACT_NAMES = {IDENTITY: "identity", RELU: "relu", LEAKY_RELU: "leaky_relu"}
_MOMENTUM, _EPS = 0.1, 1e-5


def _params(C, dtype, device, affine="full", requires_grad=True):
    """Weight away from 0 (the leaky_relu path clamps |w| >= 1e-5), both signs."""
    w = b = None
    if affine in ("full", "weight"):
        sign = torch.where(torch.arange(C) % 3 == 1, -1, 1)
        w = leaf((torch.rand(C, dtype=torch.float64) + 0.5) * sign, dtype, device,
                 requires_grad=requires_grad)
    if affine == "full":
        b = leaf(0.5 * torch.randn(C, dtype=torch.float64), dtype, device, requires_grad=requires_grad)
    return w, b


def _running(C, dtype, device):
    return (leaf(0.3 * torch.randn(C, dtype=torch.float64), dtype, device),
            leaf(0.5 + torch.rand(C, dtype=torch.float64), dtype, device))


def _sample(name, shape, dtype, device, layout, norm, mode, act, affine="full", pdtype=None):
    C = shape[1]
    x = leaf(torch.randn(shape, dtype=torch.float64), dtype, device, layout, True)
    # float32 parameters and statistics for half/bfloat16 input, as the layers keep them.
    pdtype = pdtype or (torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
    w, b = _params(C, pdtype, device, affine)
    rm, rv = _running(C, pdtype, device)
    code, slope = _ACTS[act]
    return Sample(name, (x, w, b, rm, rv, None, mode == "train", norm == "instance", _MOMENTUM,
                         _EPS, code, slope))


def _samples(dtype, device, layout):
    """C = 19, not a multiple of any vector width: the scalar tails run."""
    return [_sample(f"{norm}-{mode}-{act}", (3, 19, 5, 7), dtype, device, layout, norm, mode, act)
            for norm in ("batch", "instance") for mode in ("train", "eval") for act in _ACTS]


def _grad_samples(device):
    out = [_sample(f"{norm}-{mode}-{act}-{layout}", (2, 3, 4, 4), torch.float64, device, layout,
                   norm, mode, act)
           for norm in ("batch", "instance") for mode in ("train", "eval") for act in _ACTS
           for layout in ("contiguous", "channels_last")]
    out += [_sample(f"{norm}-{mode}-{act}-affine_{affine}", (2, 3, 4, 4), torch.float64, device,
                    "contiguous", norm, mode, act, affine)
            for norm in ("batch", "instance") for mode in ("train", "eval")
            for act in ("identity", "leaky0.2") for affine in ("none", "weight")]
    return out


def _gradgrad_samples(device):
    # A second derivative costs a Jacobian per input: the training cases, where
    # the statistics depend on the input (tests/test_double_backward.py has more).
    return [s for s in _grad_samples(device)
            if s.name.endswith("-contiguous") and "-train-" in s.name and "relu" not in s.name]


def _public(s):
    x, w, b, rm, rv, _, uis, instance, momentum, eps, act, slope = s.args
    if instance:
        return instance_norm_act(x, rm, rv, w, b, uis, momentum, eps, _ACT_NAMES[act], slope)
    return batch_norm_act(x, rm, rv, w, b, uis, momentum, eps, _ACT_NAMES[act], slope)


def _torch(x, w, b, rm, rv, nbt, uis, instance, momentum, eps, act, slope):
    F = torch.nn.functional
    if instance:
        y = F.instance_norm(x, rm, rv, w, b, uis, momentum, eps)
    else:
        y = F.batch_norm(x, rm, rv, w, b, uis, momentum, eps)
    return activate(y, act, slope)


def _opchecks(device):
    L = torch.ops.gan_ext
    out = {}
    for case in ("batch-train-cl-leaky", "instance-train-relu-noaffine", "batch-eval-identity",
                 "instance-eval-bf16", "batch-train-cumulative", "batch-train-nostats"):
        norm, mode = case.split("-")[:2]
        dtype = torch.bfloat16 if "bf16" in case else torch.float32
        layout = "channels_last" if "-cl-" in case else "contiguous"
        act = "leaky0.2" if "leaky" in case else "relu" if "relu" in case else "identity"
        x = leaf(torch.randn(2, 5, 4, 3, dtype=torch.float64), dtype, device, layout,
                 dtype == torch.float32)
        w, b = _params(5, torch.float32, device, "none" if "noaffine" in case else "full")
        rm, rv = _running(5, torch.float32, device) if "nostats" not in case else (None, None)
        # The counter with every batch-norm training case: its in-place update is checked too.
        nbt = torch.tensor(3, device=device) if norm == "batch" and mode == "train" else None
        momentum = None if "cumulative" in case else _MOMENTUM
        out[f"forward-{case}"] = (L.norm_act.default,
                                  (x, w, b, rm, rv, nbt, mode == "train", norm == "instance",
                                   momentum, _EPS, *_ACTS[act]))
    for saved_is_output in (False, True):
        x = leaf(torch.randn(3, 19, 5, 7, dtype=torch.float64), torch.float32, device, "channels_last")
        w, b = _params(19, torch.float32, device, requires_grad=False)
        o, mean, invstd, _ = norm_act(x, w, b, None, None, None, True, False, _MOMENTUM, _EPS,
                                      LEAKY_RELU, 0.2)
        g = leaf(torch.randn(x.shape, dtype=torch.float64), torch.float32, device, "channels_last")
        out[f"backward-saved_{'output' if saved_is_output else 'input'}"] = (
            L.norm_act_backward.default,
            (g, o if saved_is_output else x, w, b, mean, invstd, True, False, LEAKY_RELU, 0.2,
             saved_is_output))
    return out


def _bad(name, make, error, match):
    return BadInput(name, lambda d: Sample(name, make(d)), error, match)


def _x(d, *shape, dtype=torch.float32):
    return torch.randn(*shape, device=d).to(dtype)


def _nan_input(d):
    x = _x(d, 2, 3, 5, 7)
    x[1, 2, 3, 4] = float("nan")
    return x


def _args(x, w=None, uis=True, instance=False, eps=_EPS, act=RELU, nbt=None, momentum=_MOMENTUM,
          rm=None, rv=None):
    return (x, w, None, rm, rv, nbt, uis, instance, momentum, eps, act, 0.01)


SPECS = (OpSpec(
    "norm_act", norm_act, _samples, _public, outputs=(0, 1, 2, 3), baseline=_torch,
    layouts=("contiguous", "channels_last", "strided"), grad_samples=_grad_samples,
    gradgrad_samples=_gradgrad_samples,
    gradcheck=dict(eps=1e-6, atol=1e-6, rtol=1e-5), opchecks=_opchecks,
    bad_inputs=(
        _bad("3d-input", lambda d: _args(_x(d, 2, 3, 4)), ValueError,
             "input must be a 4-D (N, C, H, W) tensor, got a 3-D tensor"),
        _bad("int-input", lambda d: _args(torch.ones(2, 3, 4, 4, dtype=torch.int64, device=d)),
             TypeError, "input must be a floating point tensor"),
        _bad("weight-size", lambda d: _args(_x(d, 2, 3, 4, 4), w=_x(d, 4)), ValueError,
             "weight must be a 1-D tensor of size 3"),
        _bad("weight-dtype", lambda d: _args(_x(d, 2, 3, 4, 4), w=_x(d, 3, dtype=torch.float64)),
             TypeError, "must match (float32 weight is also accepted"),
        _bad("eps0-batch-train", lambda d: _args(_x(d, 2, 3, 4, 4), eps=0.0), ValueError,
             "eps must be positive for batch norm in training"),
        _bad("one-value-per-channel", lambda d: _args(_x(d, 1, 3, 1, 1)), ValueError,
             "Expected more than 1 value per channel"),
        _bad("activation-code", lambda d: _args(_x(d, 2, 3, 4, 4), act=3), ValueError,
             "activation must be 0 (identity), 1 (relu) or 2 (leaky_relu), got 3"),
        _bad("nbt-dtype", lambda d: _args(_x(d, 2, 3, 4, 4), nbt=torch.zeros((), device=d)),
             TypeError, "num_batches_tracked must be a one-element int64 tensor"),
        _bad("cumulative-without-nbt", lambda d: _args(_x(d, 2, 3, 4, 4), momentum=None,
                                                       rm=_x(d, 3), rv=_x(d, 3).abs()),
             ValueError, "momentum=None (a cumulative average) requires num_batches_tracked")),
    nan_sample=lambda d: Sample("nan", _args(_nan_input(d))),
    empty_samples=lambda d: [Sample("N0-eval", _args(_x(d, 0, 3, 4, 4), uis=False, rm=_x(d, 3),
                                                     rv=_x(d, 3).abs() + 0.5))],
    bench_shapes={"dcgan-64": (64, 128, 16, 16), "cyclegan-instance": (1, 256, 64, 64)}),)


# What gan_ext.reference exposes from this module: the twin under the op's
# name, and the checks and helpers the tests use.
REFERENCE = {"norm_act": norm_act, "MIN_ABS_WEIGHT": MIN_ABS_WEIGHT, **{f.__name__: f for f in (activate, check_norm_act_args, check_running_update_args, effective_weight, effective_weight_grad, output_is_invertible)}}

if _backend.extension_loaded:
    _register()
_backend.register_op(OP, KERNELS)
