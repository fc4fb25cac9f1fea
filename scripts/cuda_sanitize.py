"""Runs every gan_ext kernel once per code path: the workload that
`make gpu-check` puts under compute-sanitizer (memcheck, racecheck, synccheck,
initcheck). It checks no values (the tests do that); it makes each kernel
launch in each configuration that selects a different template, vector width,
layout kernel, split/finalize path or runtime branch, and fails loudly when a
call raises.

    python3 scripts/cuda_sanitize.py [--device cuda|cpu] [--level paths|full] [-k WORDS] [--list]

On the CPU the same cases run the CPU kernels (the tests use that to keep the
case list working without a GPU). Shapes are small except where a path needs
size (the split/finalize shapes, D > 4096, 2^24 + 3 loss values), because a
sanitizer slows every launch by orders of magnitude.

The norm_act kernels have two designs on CUDA, chosen by
GAN_EXT_CUDA_NORM_ACT (``legacy``: today's; unset: the new one); gpu_check.py
runs this driver once per setting, each in its own process, so it does not
matter when the extension reads the variable.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gan_ext  # noqa: E402
from gan_ext import ops  # noqa: E402
from gan_ext import reference as ref  # noqa: E402

LEVELS = ("paths", "full")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
LAYOUTS = ("nchw", "channels_last", "strided")
# The review's first-run shapes: tails everywhere (35), vectorizable planes
# (256), the row kernels on H*W == 1, an odd plane with one channel.
NORM_SHAPES = ((2, 3, 5, 7), (4, 8, 16, 16), (8, 64, 1, 1), (2, 1, 33, 33))
# (activation, negative_slope, saved_is_output): saved_is_output needs an
# invertible activation (leaky_relu with a positive slope).
NORM_ACTS = (("relu", 0.01, False), ("leaky_relu", 0.2, True), ("leaky_relu", 0.2, False),
             ("identity", 0.01, False))
# Shapes whose statistics or backward sums are split over several blocks and
# merged by a finalize kernel on a GPU the size of an H100/H200.
SPLIT_CASES = (("batch", (2, 3, 256, 256), "nchw"), ("batch", (16, 64, 64, 64), "channels_last"),
               ("instance", (64, 32, 8, 8), "nchw"), ("instance", (2, 3, 512, 512), "nchw"))
# Shapes the one-block-per-group kernels take in training (csrc/ops/norm_act/plan.h,
# takes_group_blocks): batch norm, and instance norm with the last block's
# grad_weight/grad_bias merge by a warp (< 32 samples) and by the block.
GROUP_BLOCK_CASES = (("batch", (4, 100, 8, 8), "nchw"), ("instance", (2, 64, 16, 16), "nchw"),
                     ("instance", (40, 8, 16, 16), "nchw"))
BIG_LOSS = 2 ** 24 + 3


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[torch.device], None]


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _randn(shape, dtype, device, scale=1.0, offset=0.0, gen=None):
    # Drawn on the CPU in float64 and converted: the same values on every
    # device, and no RNG kernel of torch's inside the sanitized region besides
    # the copy.
    t = torch.randn(shape, dtype=torch.float64, generator=gen) * scale + offset
    return t.to(dtype).to(device)


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    # tests/conftest.py's to_layout, repeated so that the driver needs no pytest.
    if layout == "nchw":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    raise ValueError(f"unknown layout {layout!r}")


def _unaligned(shape, dtype, device) -> torch.Tensor:
    """A contiguous tensor whose data starts one element into its storage: a
    base no 16-byte vector load may assume aligned."""
    n = 1
    for s in shape:
        n *= s
    flat = _randn((n + 1,), dtype, device)
    return flat[1:].view(shape)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ norm_act
def _affine(C, dtype, device, kind):
    if kind == "none":
        return None, None
    pdt = torch.float32 if kind == "float32" else dtype
    w = (torch.rand(C, dtype=torch.float64) + 0.5).to(pdt).to(device)
    b = (0.5 * torch.randn(C, dtype=torch.float64)).to(pdt).to(device)
    return w, b


def norm_act_once(x, *, instance: bool, train: bool, act: str, slope: float, saved_is_output: bool,
                  affine: str = "same") -> None:
    """Forward op, then the backward op with the forward's input or output
    saved: both kernels of one configuration."""
    device, dtype = x.device, x.dtype
    C = x.shape[1]
    w, b = _affine(C, dtype, device, affine)
    pdt = torch.float32 if affine == "float32" else dtype
    rm = (0.3 * torch.randn(C, dtype=torch.float64)).to(pdt).to(device)
    rv = (0.5 + torch.rand(C, dtype=torch.float64)).to(pdt).to(device)
    code = ref.ACTIVATIONS[act]
    # The running statistics are updated in place in training (kernel code too).
    out, mean, invstd, _ = torch.ops.gan_ext.norm_act(x, w, b, rm, rv, None, train, instance, 0.1,
                                                      1e-5, code, slope)
    g = _layout(_randn(x.shape, dtype, device), "channels_last"
                if x.is_contiguous(memory_format=torch.channels_last) else "nchw")
    saved = out if saved_is_output else x
    torch.ops.gan_ext.norm_act_backward(g, saved, w, b, mean, invstd, train, instance, code, slope,
                                        saved_is_output)


def _norm_cases(level: str) -> List[Case]:
    cases = []
    combos = list(itertools.product(DTYPES, LAYOUTS, ("batch", "instance"), ("train", "eval"),
                                    range(len(NORM_ACTS))))
    for i, (dtype, layout, norm, mode, a) in enumerate(combos):
        # "paths": one shape per configuration, rotated so that every shape
        # meets every layout, norm and activation; "full": every shape.
        # Instance statistics of one value per plane are refused (H*W = 1).
        usable = [s for s in NORM_SHAPES
                  if not (norm == "instance" and mode == "train" and s[2] * s[3] == 1)]
        shapes = usable if level == "full" else (usable[i % len(usable)],)
        act, slope, sio = NORM_ACTS[a]
        lowp = dtype in (torch.float16, torch.bfloat16)
        affines = ("same", "float32", "none") if lowp else ("same", "none")
        affine = affines[i % len(affines)]
        for shape in shapes:
            name = (f"norm_act {norm} {mode} {_dt(dtype)} {layout} {'x'.join(map(str, shape))} "
                    f"{act}{'/out' if sio else ''} affine={affine}")

            def run(device, shape=shape, dtype=dtype, layout=layout, norm=norm, mode=mode, act=act,
                    slope=slope, sio=sio, affine=affine):
                x = _layout(_randn(shape, dtype, device), layout)
                norm_act_once(x, instance=norm == "instance", train=mode == "train", act=act,
                              slope=slope, saved_is_output=sio, affine=affine)
            cases.append(Case(name, run))
    # x[1:] of a contiguous tensor, and a base one element into its storage
    # with vectorizable extents (H*W = 256): the aligned() checks.
    for dtype in DTYPES:
        def run_view(device, dtype=dtype):
            base = _randn((5, 3, 5, 7), dtype, device)
            norm_act_once(base[1:], instance=False, train=True, act="leaky_relu", slope=0.2,
                          saved_is_output=True)

        def run_unaligned(device, dtype=dtype):
            for layout, norm in (("nchw", "batch"), ("nchw", "instance"), ("channels_last", "batch")):
                x = (_unaligned((2, 16, 16, 8), dtype, device).permute(0, 3, 1, 2)
                     if layout == "channels_last" else _unaligned((2, 8, 16, 16), dtype, device))
                norm_act_once(x, instance=norm == "instance", train=True, act="relu", slope=0.01,
                              saved_is_output=False)
        cases.append(Case(f"norm_act x[1:] view {_dt(dtype)} 4x3x5x7", run_view))
        cases.append(Case(f"norm_act unaligned base {_dt(dtype)} 2x8x16x16", run_unaligned))
    # Channels_last half with C not a multiple of the vector width, and with
    # C = 264 (more channel columns than one warp covers).
    for shape in ((3, 19, 5, 7), (2, 264, 9, 9)):
        for norm in ("batch", "instance"):
            def run_cl(device, shape=shape, norm=norm):
                x = _layout(_randn(shape, torch.float16, device), "channels_last")
                norm_act_once(x, instance=norm == "instance", train=True, act="leaky_relu",
                              slope=0.2, saved_is_output=True)
            cases.append(Case(f"norm_act channels_last float16 {norm} {'x'.join(map(str, shape))}",
                              run_cl))
    for kind, norm, shape, layout in ([("split", *c) for c in SPLIT_CASES] +
                                      [("group-block", *c) for c in GROUP_BLOCK_CASES]):
        for dtype, mode, (act, slope, sio) in ((torch.float32, "train", NORM_ACTS[1]),
                                               (torch.bfloat16, "train", NORM_ACTS[0]),
                                               (torch.float32, "eval", NORM_ACTS[0])):
            def run_split(device, shape=shape, layout=layout, norm=norm, dtype=dtype, mode=mode,
                          act=act, slope=slope, sio=sio):
                x = _layout(_randn(shape, dtype, device), layout)
                norm_act_once(x, instance=norm == "instance", train=mode == "train", act=act,
                              slope=slope, saved_is_output=sio)
            cases.append(Case(f"norm_act {kind} {norm} {mode} {_dt(dtype)} {layout} "
                              f"{'x'.join(map(str, shape))} {act}", run_split))
    # Through the public layer: autograd, the running-statistics update and
    # the empty batch.
    for layout in ("nchw", "channels_last"):
        def run_layer(device, layout=layout):
            m = gan_ext.nn.BatchNormAct2d(16, activation="leaky_relu", negative_slope=0.2).to(device)
            x = _layout(_randn((4, 16, 8, 8), torch.float32, device), layout).requires_grad_(True)
            m(x).backward(_layout(_randn((4, 16, 8, 8), torch.float32, device), layout))
            m.eval()
            with torch.no_grad():
                m(x)
            m.train()
            m(torch.empty(0, 16, 8, 8, device=device))
        cases.append(Case(f"BatchNormAct2d layer {layout} fwd+bwd, eval, empty", run_layer))
    return cases


# -------------------------------------------------------------------- losses
LOSS_DTYPES = DTYPES


def _loss_backward(loss: torch.Tensor, leaves, scale: float) -> None:
    # scale != 1: the backward that multiplies by a grad_output on the device.
    torch.autograd.grad(loss * scale if scale != 1.0 else loss, leaves)


def _loss_cases(level: str) -> List[Case]:
    cases = []
    shapes = ((3, 1, 29, 31), (64, 1)) if level == "full" else ((3, 1, 29, 31),)
    for dtype, reduction in itertools.product(LOSS_DTYPES, ("mean", "sum")):
        for shape in shapes:
            n = "x".join(map(str, shape))

            def run_d(device, dtype=dtype, reduction=reduction, shape=shape):
                for i, mode in enumerate(("vanilla", "lsgan", "hinge", "wasserstein")):
                    real = _randn(shape, dtype, device, 2.0).requires_grad_(True)
                    fake = _randn((5, 7), dtype, device, 2.0).requires_grad_(True)
                    labels = {} if mode in ("hinge", "wasserstein") else {"real_label": 0.9}
                    with torch.no_grad():  # the loss-only op
                        ops.d_loss(real, fake, mode, reduction=reduction, **labels)
                    loss = ops.d_loss(real, fake, mode, reduction=reduction, **labels)
                    _loss_backward(loss, [real, fake], 1.0 if i % 2 == 0 else 2.0)

            def run_g(device, dtype=dtype, reduction=reduction, shape=shape):
                for i, (mode, minimax) in enumerate((("vanilla", False), ("vanilla", True),
                                                     ("lsgan", False), ("hinge", False),
                                                     ("wasserstein", False))):
                    fake = _randn(shape, dtype, device, 2.0).requires_grad_(True)
                    with torch.no_grad():
                        ops.g_loss(fake, mode, reduction=reduction, minimax=minimax)
                    loss = ops.g_loss(fake, mode, reduction=reduction, minimax=minimax)
                    _loss_backward(loss, [fake], 1.0 if i % 2 == 0 else 0.5)

            def run_pairs(device, dtype=dtype, reduction=reduction, shape=shape):
                x = _randn(shape, dtype, device, 2.0).requires_grad_(True)
                y = torch.rand(shape, dtype=torch.float64).to(dtype).to(device).requires_grad_(True)
                with torch.no_grad():
                    ops.bce_with_logits(x, y, reduction)
                _loss_backward(ops.bce_with_logits(x, y, reduction), [x, y], 1.0)
                _loss_backward(ops.bce_with_logits(x, y.detach(), reduction), [x], 3.0)
                t = _randn(shape, dtype, device)
                _loss_backward(ops.l1_loss(x, t, reduction), [x], 1.0)
                t2 = t.clone().requires_grad_(True)
                _loss_backward(ops.l1_loss(x, t2, reduction), [x, t2], 2.0)
                x2 = _randn(shape, dtype, device).requires_grad_(True)
                _loss_backward(ops.cycle_l1_loss(x, t, x2, t, 10.0, 5.0, reduction), [x, x2], 1.0)
            cases += [Case(f"d_loss {_dt(dtype)} {reduction} {n}", run_d),
                      Case(f"g_loss {_dt(dtype)} {reduction} {n}", run_g),
                      Case(f"bce/l1/cycle_l1 {_dt(dtype)} {reduction} {n}", run_pairs)]
    for dtype in (torch.float16, torch.float32):
        def run_misaligned(device, dtype=dtype):
            real = _unaligned((1001,), dtype, device).requires_grad_(True)
            fake = _unaligned((999,), dtype, device).requires_grad_(True)
            _loss_backward(ops.d_loss(real, fake, "vanilla"), [real, fake], 1.0)
            _loss_backward(ops.g_loss(fake, "lsgan"), [fake], 1.0)
            t = _unaligned((999,), dtype, device)
            _loss_backward(ops.l1_loss(fake, t), [fake], 1.0)
            _loss_backward(ops.bce_with_logits(fake, t.sigmoid()), [fake], 1.0)
        cases.append(Case(f"losses misaligned views {_dt(dtype)} n=1001/999", run_misaligned))

    def run_empty_real(device):
        for dtype in (torch.float32, torch.float16):
            real = torch.empty(0, 1, device=device, dtype=dtype, requires_grad=True)
            fake = _randn((13, 1), dtype, device).requires_grad_(True)
            for mode in ("vanilla", "lsgan", "hinge", "wasserstein"):
                _loss_backward(ops.d_loss(real, fake, mode, reduction="sum"), [real, fake], 1.0)
    cases.append(Case("d_loss empty real, fake of 13, sum", run_empty_real))

    for dtype in (torch.float32, torch.bfloat16):
        def run_big(device, dtype=dtype):
            real = _randn((BIG_LOSS,), dtype, device).requires_grad_(True)
            fake = _randn((BIG_LOSS,), dtype, device).requires_grad_(True)
            _loss_backward(ops.d_loss(real, fake, "vanilla"), [real, fake], 1.0)
            _loss_backward(ops.l1_loss(real, fake.detach()), [real], 1.0)
        cases.append(Case(f"losses 2^24+3 values {_dt(dtype)}", run_big))
    return cases


# ------------------------------------------------------------------ reparam
REPARAM_SHAPES = ((3, 20001), (7, 5003), (40000, 20))


def _reparam_cases(level: str) -> List[Case]:
    cases = []
    dtypes = DTYPES if level == "full" else (torch.float32, torch.float16, torch.float64)
    for shape, dtype in itertools.product(REPARAM_SHAPES, dtypes):
        def run(device, shape=shape, dtype=dtype):
            mu = _randn(shape, dtype, device).requires_grad_(True)
            lv = _randn(shape, dtype, device, 0.5).requires_grad_(True)
            gz = _randn(shape, dtype, device)
            z = ops.reparameterize(mu, lv)
            torch.autograd.grad(z, [mu, lv], gz)
            for reduction in ("none", "mean", "sum"):
                z, kl = ops.reparameterize_kl(mu, lv, reduction)
                gkl = torch.ones_like(kl) if reduction != "none" else _randn(kl.shape, kl.dtype, device)
                torch.autograd.grad((z, kl), [mu, lv], (gz, gkl))
                # KL alone (grad_z absent), and z alone (grad_kl absent).
                torch.autograd.grad(ops.reparameterize_kl(mu, lv, reduction)[1].sum(), [mu, lv])
                torch.autograd.grad(ops.reparameterize_kl(mu, lv, reduction)[0], [mu, lv], gz)
            with torch.no_grad():
                ops.reparameterize_kl(mu, lv, "mean")
        D = shape[1]
        cases.append(Case(f"reparameterize(_kl) {_dt(dtype)} {shape[0]}x{D} "
                          f"(D {'>' if D > 4096 else '<='} 4096) none/mean/sum", run))

    def run_unaligned_half(device):
        for dtype in (torch.float16, torch.bfloat16):
            mu_full = _randn((9, 37), dtype, device).requires_grad_(True)
            lv_full = _randn((9, 37), dtype, device, 0.5).requires_grad_(True)
            mu, lv = mu_full[1:], lv_full[1:]  # 37 elements in: unaligned for 16-byte loads
            z, kl = ops.reparameterize_kl(mu, lv, "none")
            torch.autograd.grad((z, kl), [mu_full, lv_full],
                                (torch.ones_like(z), torch.ones_like(kl)))
            flat = _unaligned((8, 40), dtype, device).requires_grad_(True)
            z = ops.reparameterize(flat, flat.detach() * 0.1)
            torch.autograd.grad(z.sum(), [flat])
    cases.append(Case("reparameterize unaligned half mu[1:] and 1-element offset", run_unaligned_half))
    return cases


# --------------------------------------------------------------- act_dropout
def _act_dropout_cases(level: str) -> List[Case]:
    cases = []
    for dtype, layout in itertools.product(DTYPES, LAYOUTS):
        def run(device, dtype=dtype, layout=layout):
            for act, slope in (("relu", 0.0), ("leaky_relu", 0.2), ("identity", 0.0)):
                for p in (0.0, 0.3):
                    x = _layout(_randn((3, 5, 7, 9), dtype, device), layout).requires_grad_(True)
                    y = ops.act_dropout(x, act, slope, p)
                    torch.autograd.grad(y, [x], torch.ones_like(y))
        cases.append(Case(f"act_dropout {_dt(dtype)} {layout} relu/leaky/identity p=0/0.3", run))

    def run_edges(device):
        x = _randn((1000,), torch.float32, device)
        x[::7] = float("nan")
        ops.act_dropout(x, "relu", 0.0, 0.5)
        ops.act_dropout(x, "leaky_relu", 0.2, 0.5)
        e = torch.empty(0, 8, device=device, requires_grad=True)
        y = ops.act_dropout(e, "leaky_relu", 0.2, 0.5)
        torch.autograd.grad(y, [e], torch.ones_like(y))
        big = _unaligned((128, 1024 + 3), torch.bfloat16, device).requires_grad_(True)
        y = ops.act_dropout(big, "leaky_relu", 0.2, 0.3)
        torch.autograd.grad(y, [big], torch.ones_like(y))
        w = _randn((64, 33), torch.float64, device).requires_grad_(True)
        y = ops.act_dropout(w, "leaky_relu", 0.2, 0.5)
        torch.autograd.grad(y, [w], torch.ones_like(y))
        # An explicit generator instead of the default one.
        gen = torch.Generator(device=device).manual_seed(3)
        ops.act_dropout(x, "leaky_relu", 0.2, 0.5, generator=gen)
        ops.reparameterize_kl(x.view(10, 100), x.view(10, 100) * 0.1, "none", generator=gen)
    cases.append(Case("act_dropout NaN, empty p>0, unaligned bf16, float64 leaky, generator=",
                      run_edges))
    return cases


def _minibatch_discrimination_cases(level: str) -> List[Case]:
    """The all-pairs L1 kernels (issue 16), forward and backward: a batch of
    one, tails of the sample and feature loops, a strided view, NaN, and the
    double backward's re-entry into the backward op."""
    cases = []
    for dtype in DTYPES:
        def run(device, dtype=dtype):
            for shape in ((1, 5, 3), (33, 7, 9), (64, 100, 5)):
                M = _randn(shape, dtype, device, 0.3).requires_grad_(True)
                o = ops.minibatch_discrimination(M)
                torch.autograd.grad(o, [M], torch.ones_like(o))
            wide = _randn((17, 6, 10), dtype, device, 0.3)[:, :, ::2].requires_grad_(True)
            o = ops.minibatch_discrimination(wide)
            torch.autograd.grad(o, [wide], torch.ones_like(o))
        cases.append(Case(f"minibatch_discrimination {_dt(dtype)} N=1/33/64, strided", run))

    def run_edges(device):
        M = _randn((9, 4, 3), torch.float32, device)
        M[2, 1, 0] = float("nan")
        ops.minibatch_discrimination(M)
        ops.minibatch_discrimination(torch.empty(0, 4, 3, device=device))
        M = _randn((5, 3, 4), torch.float64, device, 0.3).requires_grad_(True)
        o = ops.minibatch_discrimination(M)
        (g,) = torch.autograd.grad(o, [M], torch.ones_like(o), create_graph=True)
        torch.autograd.grad(g.sum(), [M])
    cases.append(Case("minibatch_discrimination NaN, empty, double backward", run_edges))
    return cases


# ---------------------------------------------------------------------- main
def cases(level: str = "paths") -> List[Case]:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return (_norm_cases(level) + _loss_cases(level) + _reparam_cases(level)
            + _act_dropout_cases(level) + _minibatch_discrimination_cases(level))


def select(all_cases: List[Case], words: Optional[str]) -> List[Case]:
    ws = (words or "").split()
    return [c for c in all_cases if all(w in c.name for w in ws)]


def run(selected: List[Case], device: torch.device, out=sys.stdout, verbose: bool = False) -> List[str]:
    """Runs the cases; returns the failures as 'name: error' lines (a failure
    is reported and the next case runs, so one bad path hides no other)."""
    failures = []
    for c in selected:
        t0 = time.perf_counter()
        try:
            torch.manual_seed(0)
            c.run(device)
            _sync(device)
        except Exception as e:  # noqa: BLE001  (reported, and the exit status says so)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            failures.append(f"{c.name}: {type(e).__name__}: {msg}")
            print(f"FAIL {c.name}: {type(e).__name__}: {msg}", file=out, flush=True)
            if device.type == "cuda" and ("CUDA error" in str(e) or "illegal" in str(e)):
                # A device fault poisons the context: later cases would only
                # repeat it.
                print("stopping: the CUDA context is unusable after this error", file=out)
                break
            continue
        if verbose:
            print(f"ok {time.perf_counter() - t0:7.3f}s {c.name}", file=out, flush=True)
    return failures


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--level", default="paths", choices=LEVELS,
                   help="paths: one shape per configuration (default); full: every shape")
    p.add_argument("-k", "--filter", default=None, metavar="WORDS",
                   help="only cases whose name contains every word")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    selected = select(cases(args.level), args.filter)
    if args.list:
        for c in selected:
            print(c.name)
        print(f"{len(selected)} cases")
        return 0
    if not selected:
        print("cuda_sanitize: no case matches the filter", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("cuda_sanitize: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    from gan_ext import _backend

    if device.type not in _backend.compiled_devices:
        print(f"cuda_sanitize: gan_ext._C has no {device.type} kernels "
              f"({_backend.load_error or 'built without them'})", file=sys.stderr)
        return 2
    setting = os.environ.get("GAN_EXT_CUDA_NORM_ACT", "") or "default"
    t0 = time.perf_counter()
    failures = run(selected, device, verbose=args.verbose)
    print(f"cuda_sanitize: {len(selected) - len(failures)}/{len(selected)} cases ran on "
          f"{device.type} (level {args.level}, GAN_EXT_CUDA_NORM_ACT={setting}) in "
          f"{time.perf_counter() - t0:.1f}s; {len(failures)} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
