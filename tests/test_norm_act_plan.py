"""The launch plans of the norm_act CUDA kernels (csrc/ops/norm_act/plan.h), checked
on the CPU through the debug ops gan_ext::_norm_act_plan_planes / _rows.

The coverage checks walk every thread of every block the way the kernels do
(plane_unit + PlaneCursor, row_unit in csrc/ops/norm_act/cuda.cu) and require each
vector of the tensor to be visited exactly once."""
from __future__ import annotations

import itertools
import os

import pytest
import torch

from conftest import requires_fused

pytestmark = requires_fused

THREADS, WARP = 256, 32
MAX_ROW_SPLITS = 64
VECS = (1, 2, 4, 8)  # float64 / float32 / half+bfloat16 128-bit packs, and scalars


def plan_planes(groups, segs, hw, C, vec, wave, legacy):
    return torch.ops.gan_ext._norm_act_plan_planes(groups, segs, hw, C, vec, wave, legacy)


def plan_rows(batches, rows, C, vec, unroll, wave, legacy):
    return torch.ops.gan_ext._norm_act_plan_rows(batches, rows, C, vec, unroll, wave, legacy)


def plane_visits(groups, segs, hwv, C, plan):
    """Visits per vector index (seg * C + group) * hwv + off, as the plane kernels walk."""
    _, team, splits, chunk, step_seg, step_off, blocks = plan
    total = segs * hwv
    visits = [0] * (groups * segs * hwv)  # N * C * hwv for both kinds of groups
    teams_per_block = THREADS // team
    for unit in range(blocks * teams_per_block):
        if unit >= groups * splits:  # the padding teams of the last block
            continue
        group, split = divmod(unit, splits)
        begin = split * chunk
        end = min(begin + chunk, total)
        for rank in range(team):
            j = begin + rank
            seg, off = divmod(j, hwv)
            while j < end:
                visits[(seg * C + group) * hwv + off] += 1
                j += team
                seg += step_seg
                off += step_off
                if off >= hwv:
                    off -= hwv
                    seg += 1
    return visits


def row_visits(batches, rows, plan):
    cv, tx, ty, col_blocks, splits, chunk, blocks = plan
    visits = [0] * (batches * rows * cv)
    for b in range(blocks):
        cb, rest = b % col_blocks, b // col_blocks
        split, batch = rest % splits, rest // splits
        begin, end = split * chunk, min(split * chunk + chunk, rows)
        for t in range(THREADS):
            col = cb * tx + t % tx
            if col >= cv:
                continue
            for r in range(begin + t // tx, end, ty):
                visits[(batch * rows + r) * cv + col] += 1
    return visits


def check_plane_plan(groups, segs, hw, C, vec, wave, legacy):
    plan = plan_planes(groups, segs, hw, C, vec, wave, legacy)
    hwv, team, splits, chunk, step_seg, step_off, blocks = plan
    per_group = segs * hwv
    assert hwv == hw // vec
    assert team in (32, 64, 128, 256)
    assert step_seg * hwv + step_off == team and 0 <= step_off < hwv
    assert splits >= 1 and splits * chunk >= per_group and (splits - 1) * chunk < per_group
    assert blocks == -(-groups * splits // (THREADS // team))
    if not legacy:
        # One wave at most or four at least; in between only when nothing can
        # shrink the grid (unsplit groups in warp-sized teams).
        assert blocks <= wave or blocks >= 4 * wave or (splits == 1 and team == WARP), plan
    return plan


def check_row_plan(batches, rows, C, vec, unroll, wave, legacy):
    plan = plan_rows(batches, rows, C, vec, unroll, wave, legacy)
    cv, tx, ty, col_blocks, splits, chunk, blocks = plan
    assert cv == C // vec and tx * ty == THREADS and col_blocks * tx >= cv > (col_blocks - 1) * tx
    assert splits >= 1 and splits * chunk >= rows and (splits - 1) * chunk < rows
    assert blocks == batches * splits * col_blocks
    if not legacy:
        assert splits <= MAX_ROW_SPLITS
        assert blocks <= wave or blocks >= 4 * wave or splits == 1, plan
    return plan


# ------------------------------------------------------------------ coverage
@pytest.mark.parametrize("legacy", [False, True], ids=["default", "legacy"])
@pytest.mark.parametrize("instance", [False, True], ids=["batch", "instance"])
def test_plane_plans_visit_every_vector_once(legacy, instance):
    shapes = [(2, 3, 5, 7), (4, 8, 16, 16), (8, 64, 1, 1), (2, 1, 33, 33), (3, 5, 40, 40),
              (1, 2, 64, 96), (16, 3, 8, 8)]
    for (N, C, H, W), vec, wave in itertools.product(shapes, VECS, (1, 4, 30, 132)):
        hw = H * W
        if hw % vec:
            continue
        groups, segs = (N * C, 1) if instance else (C, N)
        plan = check_plane_plan(groups, segs, hw, C, vec, wave, legacy)
        visits = plane_visits(groups, segs, hw // vec, C, plan)
        assert visits == [1] * len(visits), ((N, C, H, W), vec, wave, plan)


@pytest.mark.parametrize("legacy", [False, True], ids=["default", "legacy"])
@pytest.mark.parametrize("instance", [False, True], ids=["batch", "instance"])
def test_row_plans_visit_every_vector_once(legacy, instance):
    shapes = [(2, 3, 5, 7), (3, 19, 5, 7), (2, 264, 9, 9), (4, 64, 16, 16), (1, 8, 200, 50),
              (8, 64, 1, 1)]
    for (N, C, H, W), vec, wave in itertools.product(shapes, VECS, (1, 4, 30, 132)):
        if C % vec:
            continue
        unroll = 2 if vec >= 8 else 4
        batches, rows = (N, H * W) if instance else (1, N * H * W)
        plan = check_row_plan(batches, rows, C, vec, unroll, wave, legacy)
        visits = row_visits(batches, rows, plan)
        assert visits == [1] * len(visits), ((N, C, H, W), vec, wave, plan)


# ----------------------------------------------------------------- grid sizes
def test_grid_rule_over_a_sweep_of_shapes():
    """The default plans keep every grid within one wave or at >= 4 waves
    (checked inside check_*_plan) over ~10k shape/wave combinations."""
    waves = (132, 264, 528, 1056, 108 * 4)
    for N, C, hw, wave in itertools.product((1, 2, 8, 16, 64, 256), (3, 16, 64, 128, 256, 512),
                                            (1, 16, 64, 256, 1024, 4096, 16384), waves):
        for vec in (1, 4, 8):
            if hw % vec == 0:
                check_plane_plan(C, N, hw, C, vec, wave, False)
                check_plane_plan(N * C, 1, hw, C, vec, wave, False)
            if C % vec == 0:
                check_row_plan(1, N * hw, C, vec, 4, wave, False)
                check_row_plan(N, hw, C, vec, 4, wave, False)


def test_review_overshoots_are_gone():
    """The grids the review measured (H200, 132 SMs): 576 blocks for 528 slots in
    the (64, 64, 32, 32) NCHW forward, 384 for 264 in the (64, 128, 16, 16)
    backward reduce. The legacy plans reproduce them; the default ones fit."""
    assert plan_planes(64, 64, 1024, 64, 4, 528, True)[-1] == 576
    assert plan_planes(64, 64, 1024, 64, 4, 528, False)[-1] <= 528
    assert plan_planes(128, 64, 256, 128, 4, 264, True)[-1] == 384
    assert plan_planes(128, 64, 256, 128, 4, 264, False)[-1] <= 264
    # Instance norm (16, 64, 128, 128): 1024 planes of 4096 vectors, 1.9 waves of
    # whole-block teams; half-block teams fit them in one wave, unsplit.
    legacy, default = (plan_planes(1024, 1, 16384, 64, 4, 528, x) for x in (True, False))
    assert legacy[-1] == 1024
    assert default[1] == 128 and default[2] == 1 and default[-1] == 512


def test_row_splits_are_capped():
    # Batch norm (16, 64, 64, 64) channels_last: one column block, so the legacy
    # plan splits the rows of every channel ~wave times.
    legacy = plan_rows(1, 16 * 64 * 64, 64, 4, 4, 528, True)
    default = plan_rows(1, 16 * 64 * 64, 64, 4, 4, 528, False)
    assert legacy[4] == 512 and default[4] == MAX_ROW_SPLITS


def test_environment_variable_selects_the_legacy_plans(monkeypatch):
    """legacy=None follows GAN_EXT_CUDA_NORM_ACT, read on every call, as the
    CUDA kernels read it; unknown values are refused."""
    args = (64, 64, 1024, 64, 4, 528)
    monkeypatch.delenv("GAN_EXT_CUDA_NORM_ACT", raising=False)
    assert plan_planes(*args, None) == plan_planes(*args, False)
    monkeypatch.setenv("GAN_EXT_CUDA_NORM_ACT", "legacy")
    assert plan_planes(*args, None) == plan_planes(*args, True) != plan_planes(*args, False)
    monkeypatch.setenv("GAN_EXT_CUDA_NORM_ACT", "default")
    assert plan_planes(*args, None) == plan_planes(*args, False)
    monkeypatch.setenv("GAN_EXT_CUDA_NORM_ACT", "fast")
    with pytest.raises(ValueError, match="GAN_EXT_CUDA_NORM_ACT must be 'legacy'"):
        plan_planes(*args, None)
    assert os.environ["GAN_EXT_CUDA_NORM_ACT"] == "fast"


def test_plan_ops_reject_bad_arguments():
    with pytest.raises(ValueError, match="hw must be a multiple of vec"):
        plan_planes(2, 2, 6, 2, 4, 10, False)
    with pytest.raises(ValueError, match="wave must be positive"):
        plan_rows(1, 10, 8, 4, 4, 0, False)


# --------------------------------------------------- one block per group
def plan_group(shape, elem_size, channels_last, instance, vec, use_input_stats=True, legacy=False):
    N, C, H, W = shape
    return torch.ops.gan_ext._norm_act_plan_group(N, C, H * W, elem_size, channels_last, instance,
                                                  use_input_stats, vec, legacy)


def test_group_block_rule_takes_the_target_shapes():
    """>= 100 NCHW groups of 256 elements .. 256 KB, training only, never legacy
    nor channels_last (csrc/ops/norm_act/plan.h, takes_group_blocks)."""
    taken = [((64, 128, 16, 16), 4, False), ((64, 256, 8, 8), 4, False), ((64, 512, 4, 4), 4, False),
             ((64, 128, 16, 16), 2, False), ((64, 128, 32, 32), 4, False),  # exactly 256 KB
             ((16, 64, 128, 128), 4, True), ((16, 64, 128, 128), 8, True), ((4, 100, 8, 8), 4, False)]
    refused = [((64, 64, 32, 32), 4, False),     # 64 groups
               ((16, 64, 64, 64), 2, False),     # 64 groups
               ((64, 128, 32, 32), 8, False),    # 512 KB per group
               ((2, 99, 16, 16), 4, False),      # 99 groups
               ((64, 32, 8, 8), 4, True),        # 64 elements per group
               ((2, 128, 11, 11), 4, False),     # 242 elements per group
               ((512, 256, 1, 1), 4, False)]     # H*W == 1: the row kernels
    for shape, size, instance in taken:
        plan = plan_group(shape, size, False, instance, 1)
        groups = shape[0] * shape[1] if instance else shape[1]
        assert plan and plan[1] == THREADS and plan[2] == 1 and plan[-1] == groups, (shape, plan)
        assert plan_group(shape, size, True, instance, 1) == [], shape  # channels_last
        assert plan_group(shape, size, False, instance, 1, use_input_stats=False) == [], shape
        assert plan_group(shape, size, False, instance, 1, legacy=True) == [], shape
    for shape, size, instance in refused:
        assert plan_group(shape, size, False, instance, 1) == [], shape


def test_group_block_rule_follows_the_environment_variable(monkeypatch):
    args = (64, 128, 256, 4, False, False, True, 4)
    monkeypatch.setenv("GAN_EXT_CUDA_NORM_ACT", "legacy")
    assert torch.ops.gan_ext._norm_act_plan_group(*args, None) == []
    monkeypatch.delenv("GAN_EXT_CUDA_NORM_ACT")
    assert torch.ops.gan_ext._norm_act_plan_group(*args, None) == plan_group(
        (64, 128, 16, 16), 4, False, False, 4)


@pytest.mark.parametrize("instance", [False, True], ids=["batch", "instance"])
def test_group_block_plans_visit_every_vector_once(instance):
    """Every thread of every block walks its group as plane_group_*_kernel do
    (plane_unit + PlaneCursor with one whole-block team per group)."""
    shapes = [(4, 100, 8, 8), (2, 128, 12, 12), (1, 112, 16, 20), (2, 64, 16, 16),
              (1, 100, 32, 32), (3, 104, 10, 10)]
    checked = 0
    for (N, C, H, W), vec in itertools.product(shapes, VECS):
        hw = H * W
        if hw % vec:
            continue
        plan = plan_group((N, C, H, W), 4, False, instance, vec)
        if not plan:
            continue
        checked += 1
        groups, segs = (N * C, 1) if instance else (C, N)
        hwv, team, splits, chunk, step_seg, step_off, blocks = plan
        assert (hwv, team, splits, chunk, blocks) == (hw // vec, THREADS, 1, segs * hwv, groups)
        assert step_seg * hwv + step_off == team and 0 <= step_off < hwv
        visits = plane_visits(groups, segs, hwv, C, plan)
        assert visits == [1] * len(visits), ((N, C, H, W), vec, plan)
    assert checked >= 10
