"""Issue 17: SyncBatchNormAct2d. One 2-rank gloo group (spawned once for the
module) runs every case; the tests compare each rank's results with
nn.BatchNorm2d + activation run on the whole batch in this process."""
import copy
import os
import traceback
import zlib
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import gan_ext
from gan_ext.nn import BatchNormAct2d, SyncBatchNormAct2d, convert_sync_batchnorm
from gan_ext.nn.sync import sync_batch_norm_act

C, H, W = 3, 4, 5
F64 = torch.float64
# name: (samples per rank, dtype, channels_last, activation, negative_slope, momentum)
CASES = {
    "relu-nchw": ((4, 4), F64, False, "relu", 0.01, 0.1),
    "relu-channels_last": ((4, 4), F64, True, "relu", 0.01, 0.1),
    "abn-nchw": ((4, 4), F64, False, "leaky_relu", 0.2, 0.1),  # in-place ABN: output saved
    "abn-channels_last": ((4, 4), F64, True, "leaky_relu", 0.2, 0.1),
    "leaky0-input-saved": ((4, 4), F64, False, "leaky_relu", 0.0, 0.1),  # input saved
    "identity-cumulative": ((4, 4), F64, True, "identity", 0.01, None),
    "uneven-3-5": ((3, 5), F64, False, "leaky_relu", 0.2, None),
    "uneven-5-3-relu": ((5, 3), F64, True, "relu", 0.01, 0.3),
    "empty-0-8": ((0, 8), F64, False, "relu", 0.01, 0.1),
    "empty-8-0-abn": ((8, 0), F64, True, "leaky_relu", 0.2, None),
    "float32": ((4, 4), torch.float32, True, "leaky_relu", 0.2, 0.1),
}
TOL = {F64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-4)}


def _data(name):
    """The whole batch and the layer's initial state, the same on every rank."""
    shards, dtype, cl, *_ = CASES[name]
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    n = sum(shards)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x1, g1, x2, g2 = (torch.randn(n, C, H, W, generator=gen, dtype=F64).to(dtype)
                      .contiguous(memory_format=fmt) for _ in range(4))
    sign = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    state = {"weight": (torch.rand(C, generator=gen, dtype=F64) + 0.5) * sign,
             "bias": 0.5 * torch.randn(C, generator=gen, dtype=F64),
             "running_mean": 0.3 * torch.randn(C, generator=gen, dtype=F64),
             "running_var": 0.5 + torch.rand(C, generator=gen, dtype=F64),
             "num_batches_tracked": torch.tensor(3)}
    return (x1, g1, x2, g2), {k: v.to(dtype) if v.is_floating_point() else v
                              for k, v in state.items()}


def _steps(model, norm, x1, g1, x2, g2):
    """A backward, then a gradient penalty step (a double backward)."""
    res = {}
    x1 = x1.clone().requires_grad_()
    out = model(x1)
    out.backward(g1)
    res.update(out=out.detach(), x_grad=x1.grad, w_grad=norm.weight.grad.clone(),
               b_grad=norm.bias.grad.clone())
    norm.weight.grad = norm.bias.grad = None
    x2 = x2.clone().requires_grad_()
    gx, = torch.autograd.grad((model(x2) * g2).sum(), x2, create_graph=True)
    gx.pow(2).sum().backward()
    # Without an activation the bias does not reach gx: no gradient (None) is zero.
    res.update(gx=gx.detach(), x2_grad=x2.grad, w2_grad=norm.weight.grad.clone(),
               b2_grad=torch.zeros_like(norm.bias) if norm.bias.grad is None else norm.bias.grad)
    res.update({k: v.clone() for k, v in norm.named_buffers()})
    return res


def _rank_case(name, rank, group=None):
    shards, dtype, cl, act, slope, momentum = CASES[name]
    lo, hi = sum(shards[:rank]), sum(shards[:rank + 1])
    layer = SyncBatchNormAct2d(C, momentum=momentum, activation=act, negative_slope=slope,
                               dtype=dtype, process_group=group)
    data, state = _data(name)
    layer.load_state_dict(state)
    return _steps(layer, layer, *(t[lo:hi] for t in data))


def _rank_checks(rank):
    """What a group of one, a global single value, an all-empty batch and bad
    input do on each rank."""
    res = {}
    groups = [dist.new_group([r]) for r in range(2)]  # every rank creates both
    x = torch.randn(4, C, H, W, generator=torch.Generator().manual_seed(rank))
    sync = SyncBatchNormAct2d(C, activation="leaky_relu", negative_slope=0.2,
                              process_group=groups[rank])
    plain = BatchNormAct2d(C, activation="leaky_relu", negative_slope=0.2)
    res["group_of_one"] = (sync(x), plain(x), sync.running_var, plain.running_var)
    try:
        SyncBatchNormAct2d(C)(torch.randn(1 - rank, C, 1, 1))
    except ValueError as e:
        res["single_value"] = str(e)
    layer = SyncBatchNormAct2d(C)
    out = layer(torch.randn(0, C, H, W, requires_grad=True))
    out.sum().backward()
    res["all_empty"] = (out.shape, int(layer.num_batches_tracked), layer.running_mean,
                        layer.running_var)
    for bad in (torch.randn(2, C, H), torch.randn(2, C + 1, H, W)):
        try:
            SyncBatchNormAct2d(C)(bad)
        except ValueError as e:
            res.setdefault("bad", []).append(str(e))
    return res


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    path = os.path.join(out_dir, f"rank{rank}")
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=2, timeout=timedelta(seconds=60))
        res = {name: _rank_case(name, rank) for name in CASES}
        res["checks"] = _rank_checks(rank)
        torch.save(res, path + ".pt")
    except BaseException:
        with open(path + ".err", "w") as f:
            f.write(traceback.format_exc())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    d = tmp_path_factory.mktemp("sync_bn")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, str(d / "init"), str(d))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    errors = [(d / f"rank{r}.err").read_text() for r in range(2) if (d / f"rank{r}.err").exists()]
    assert not errors, "\n".join(errors)
    return [torch.load(d / f"rank{r}.pt") for r in range(2)]


def _reference(name):
    """nn.BatchNorm2d + activation on the whole batch in one process."""
    shards, dtype, cl, act, slope, momentum = CASES[name]
    norm = nn.BatchNorm2d(C, momentum=momentum, dtype=F64)
    acts = {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(slope), "identity": nn.Identity()}
    data, state = _data(name)
    norm.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    return _steps(nn.Sequential(norm, acts[act]), norm, *(t.double() for t in data))


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process_on_the_whole_batch(ranks, name):
    shards, dtype, cl = CASES[name][:3]
    ref = _reference(name)
    tol = TOL[dtype]
    for rank in range(2):
        got, lo, hi = ranks[rank][name], sum(shards[:rank]), sum(shards[:rank + 1])
        for key in ("out", "x_grad", "gx", "x2_grad"):
            assert got[key].dtype == dtype
            torch.testing.assert_close(got[key].double(), ref[key][lo:hi], **tol, msg=key)
        if cl and hi > lo:
            assert got["out"].is_contiguous(memory_format=torch.channels_last)
        for key in ("running_mean", "running_var"):  # every rank holds the global update
            torch.testing.assert_close(got[key].double(), ref[key], **tol, msg=key)
        assert int(got["num_batches_tracked"]) == int(ref["num_batches_tracked"]) == 5
    # Each rank holds its share of the weight and bias gradients; their sum
    # (DDP's all-reduce, before its division by the world size) is the whole batch's.
    for key in ("w_grad", "b_grad", "w2_grad", "b2_grad"):
        torch.testing.assert_close((ranks[0][name][key] + ranks[1][name][key]).double(),
                                   ref[key], **tol, msg=key)


def test_a_group_of_one_is_batchnormact2d(ranks):
    for rank in range(2):
        sync_out, plain_out, sync_rv, plain_rv = ranks[rank]["checks"]["group_of_one"]
        assert torch.equal(sync_out, plain_out) and torch.equal(sync_rv, plain_rv)


def test_one_value_per_channel_over_all_ranks_raises_on_every_rank(ranks):
    for rank in range(2):
        assert "Expected more than 1 value per channel" in ranks[rank]["checks"]["single_value"]


def test_an_empty_global_batch_is_counted_and_leaves_the_statistics(ranks):
    for rank in range(2):
        shape, counted, rm, rv = ranks[rank]["checks"]["all_empty"]
        assert shape == (0, C, H, W) and counted == 1
        assert torch.equal(rm, torch.zeros(C)) and torch.equal(rv, torch.ones(C))


def _errors(layer_cls):
    out = []
    for bad in (torch.randn(2, C, H), torch.randn(2, C + 1, H, W)):
        with pytest.raises(ValueError) as e:
            layer_cls(C)(bad)
        out.append(str(e.value))
    return out


def test_bad_input_gets_batchnormact2d_errors(ranks):
    expected = [m.replace("BatchNormAct2d", "SyncBatchNormAct2d") for m in _errors(BatchNormAct2d)]
    assert "expected 4D input (got 3D input)" in expected[0] and "num_features=3" in expected[1]
    assert _errors(SyncBatchNormAct2d) == expected  # no process group
    for rank in range(2):
        assert ranks[rank]["checks"]["bad"] == expected


# ------------------------------------------------------- one process, no group
@pytest.mark.parametrize("act,slope", [("relu", 0.01), ("leaky_relu", 0.2)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_a_group_it_is_batchnormact2d(act, slope, momentum):
    torch.manual_seed(0)
    sync = SyncBatchNormAct2d(C, momentum=momentum, activation=act, negative_slope=slope)
    sync.weight.data.uniform_(0.5, 1.5)
    plain = BatchNormAct2d(C, momentum=momentum, activation=act, negative_slope=slope)
    plain.load_state_dict(sync.state_dict())
    assert list(sync.state_dict()) == list(nn.BatchNorm2d(C).state_dict())
    for train in (True, True, False):
        sync.train(train), plain.train(train)
        x = torch.randn(4, C, H, W).contiguous(memory_format=torch.channels_last)
        xs, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
        ys, yp = sync(xs), plain(xp)
        assert torch.equal(ys, yp)
        ys.sum().backward(), yp.sum().backward()
        assert torch.equal(xs.grad, xp.grad)
    for a, b in zip(list(sync.parameters()) + list(sync.buffers()),
                    list(plain.parameters()) + list(plain.buffers())):
        assert torch.equal(a, b) and (a.grad is None or torch.equal(a.grad, b.grad))


@pytest.mark.parametrize("act,slope", [("relu", 0.01), ("leaky_relu", 0.2), ("identity", 0.01)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_and_gradgradcheck_of_the_synced_path(act, slope, layout, affine):
    """The synced path (statistics, the apply, the backward with its sums)
    run in one process: group=None reduces over this process alone."""
    torch.manual_seed(1)
    x = torch.randn(3, C, 3, 2, dtype=F64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    plain = BatchNormAct2d(C, activation=act, negative_slope=slope, affine=affine, dtype=F64)
    if affine:
        plain.weight.data.uniform_(0.5, 1.5).mul_(torch.tensor([1.0, -1.0, 1.0], dtype=F64))
        plain.bias.data.normal_()
    params = [p.detach().clone().requires_grad_() for p in plain.parameters()]

    def f(x, *wb):
        return sync_batch_norm_act(x, None, None, *(wb or (None, None)), 0.1, 1e-5, act, slope)
    out = f(x, *params)
    torch.testing.assert_close(out, plain(x), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, [x, *params], g),
                               torch.autograd.grad(plain(x), [x, *plain.parameters()], g),
                               rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_in_place_abn_weight_floor_as_batchnormact2d():
    """In-place ABN uses sign(w) * max(|w|, 1e-5): the synced path too."""
    torch.manual_seed(4)
    plain = BatchNormAct2d(C, activation="leaky_relu", negative_slope=0.2, dtype=F64)
    plain.weight.data.copy_(torch.tensor([1e-7, -1e-9, 0.0], dtype=F64))
    w, b = (p.detach().clone().requires_grad_() for p in plain.parameters())
    x = torch.randn(4, C, H, W, dtype=F64, requires_grad=True)
    out = sync_batch_norm_act(x, None, None, w, b, 0.1, 1e-5, "leaky_relu", 0.2)
    ref = plain(x)
    assert out.abs().max() > 1e-6  # the floor, not w, scales the output
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-15)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, w, b], g)
    want = torch.autograd.grad(ref, [x, *plain.parameters()], g)
    # Below the floor weight's gradient is zero (the clamp is flat there), on
    # both backends and in the synced layer's own backward.
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert torch.equal(got[1], torch.zeros_like(got[1]))


def test_bfloat16_input_keeps_float32_statistics():
    torch.manual_seed(2)
    x = (3.0 + torch.randn(4, C, H, W)).bfloat16()
    w, b = torch.rand(C) + 0.5, torch.randn(C)
    rm, rv = torch.zeros(C), torch.ones(C)
    out = sync_batch_norm_act(x, rm, rv, w, b, 0.1, 1e-5, "relu")
    plain = BatchNormAct2d(C).train()
    plain.weight.data.copy_(w), plain.bias.data.copy_(b)
    assert out.dtype == torch.bfloat16 and rm.dtype == torch.float32
    torch.testing.assert_close(out, plain(x))
    torch.testing.assert_close(rv, plain.running_var)


# ----------------------------------------------------------------- converter
def _model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU(),
                         BatchNormAct2d(C, activation="leaky_relu", negative_slope=0.2),
                         nn.BatchNorm2d(C), nn.Sequential(nn.BatchNorm2d(C), nn.LeakyReLU(0.1)))


@pytest.mark.parametrize("train", [True, False])
def test_converter_keeps_parameters_keys_and_function(train):
    model = _model().train(train)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    ref = copy.deepcopy(model)
    ids = [id(t) for t in list(model.parameters()) + list(model.buffers())]
    keys = list(model.state_dict())
    conv = SyncBatchNormAct2d.convert_sync_batchnorm(model, process_group=None)
    synced = [m for m in conv.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [type(m) for m in synced] == [SyncBatchNormAct2d] * 4
    assert [(m.activation, m.negative_slope) for m in synced] == [
        ("relu", 0.01), ("leaky_relu", 0.2), ("identity", 0.01), ("leaky_relu", 0.1)]
    assert type(conv[2]) is nn.Identity and type(conv[5][1]) is nn.Identity
    assert [id(t) for t in list(conv.parameters()) + list(conv.buffers())] == ids
    assert list(conv.state_dict()) == keys
    x = torch.randn(4, 2, H, W)
    torch.testing.assert_close(conv(x), ref(x))


def test_module_converter_and_other_norms():
    bn = nn.BatchNorm2d(C)
    new = convert_sync_batchnorm(bn)
    assert type(new) is SyncBatchNormAct2d and new.weight is bn.weight and new.activation == "identity"
    group = object()
    model = nn.Sequential(nn.BatchNorm1d(C), BatchNormAct2d(C))
    out = convert_sync_batchnorm(model, group)
    assert type(out[0]) is nn.SyncBatchNorm and out[1].process_group is group
