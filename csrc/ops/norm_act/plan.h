// Launch plans of the norm_act CUDA kernels (ops/norm_act/cuda.cu), in plain
// C++: the CPU build exposes them as gan_ext::_norm_act_plan_planes/_rows
// (ops/norm_act/plan.cpp), so the tests check index coverage and grid sizes
// without a GPU, and a GPU check can print the plan of any shape.
//
// Two generations, selected per call (GAN_EXT_CUDA_NORM_ACT=legacy, see
// cuda_norm_act_legacy below):
//   legacy: split groups until the grid covers one wave, rounding up (576
//     blocks for 528 slots at (64, 64, 32, 32)), row splits unbounded;
//   default: grids of at most one wave or at least four (a grid just over a
//     wave runs a second, nearly empty wave); when the groups alone overshoot
//     one wave, smaller teams put more groups in a block instead; row splits
//     at most kMaxRowSplits per channel.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace gan_ext {
namespace plan {

using index_t = int64_t;

constexpr int kThreads = 256;  // block size (common/device_common.cuh checks it matches)
constexpr int kWarpSize = 32;
constexpr int kUnroll = 4;     // vectors in flight per thread in the plane kernels
// Partials per channel of a channels_last reduction: each split is one more
// C-vector the merge reads.
constexpr index_t kMaxRowSplits = 64;

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

inline index_t next_pow2(index_t v) {
  index_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// GAN_EXT_CUDA_NORM_ACT=legacy: the CUDA paths of the first release (launch
// plans, separate finalize kernels, eval statistics prepared on the host),
// kept until a GPU run has compared them with the default ones. Read on every
// call (one getenv) so that a test or a benchmark can flip it in-process.
inline bool cuda_norm_act_legacy() {
  const char* v = std::getenv("GAN_EXT_CUDA_NORM_ACT");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "default") == 0) return false;
  TORCH_CHECK_VALUE(std::strcmp(v, "legacy") == 0,
                    "GAN_EXT_CUDA_NORM_ACT must be 'legacy', 'default' or unset, got '", v, "'");
  return true;
}

// ---------------------------------------------------------------- NCHW
// Group g has `segs` runs of hwv vectors; run k starts at vector
// (k * C + g) * hwv. Channel statistics: groups = C, segs = N. Instance
// statistics: groups = N * C planes, segs = 1 (run 0 of plane g starts at g * hwv).
// The channel of group g is g % C in both cases.
struct PlaneGeometry {
  index_t groups, segs, hwv, C;
  index_t splits;  // units per group
  index_t chunk;   // vectors per unit (the last unit of a group may get fewer)
  int team;        // threads per unit: power of two in [kWarpSize, kThreads]
  index_t step_seg, step_off;  // `team` vectors as whole runs + remainder
};

inline index_t plane_blocks(const PlaneGeometry& geo) {
  return ceil_div(geo.groups * geo.splits, kThreads / geo.team);
}

// groups x segs runs of hw elements, read as vectors of `vec`; `wave` blocks
// fill the device once.
inline PlaneGeometry plan_planes(index_t groups, index_t segs, index_t hw, index_t C, int vec,
                                 index_t wave, bool legacy) {
  PlaneGeometry geo;
  geo.groups = groups;
  geo.segs = segs;
  geo.hwv = hw / vec;
  geo.C = C;
  const index_t per_group = segs * geo.hwv;
  // A warp for tiny groups (a whole block would idle), up to a block for big
  // ones, with about kUnroll vectors per thread.
  const index_t want = next_pow2(ceil_div(per_group, kUnroll));
  int team = static_cast<int>(std::min<index_t>(kThreads, std::max<index_t>(kWarpSize, want)));
  index_t splits = 1;
  if (legacy) {
    // Split groups only while the GPU is not full, and never below a full
    // unrolled iteration per thread.
    splits = ceil_div(wave * (kThreads / team), groups);
    splits = std::min(splits, std::max<index_t>(1, per_group / (static_cast<index_t>(team) * kUnroll)));
  } else {
    index_t blocks = ceil_div(groups, kThreads / team);
    if (blocks > wave && blocks < 4 * wave) {
      while (team > kWarpSize && ceil_div(groups, kThreads / team) > wave) team /= 2;
      blocks = ceil_div(groups, kThreads / team);
    }
    if (blocks <= wave) {
      // The most splits that keep groups * splits units within one wave.
      splits = wave * (kThreads / team) / groups;
      splits = std::min(splits, std::max<index_t>(1, per_group / (static_cast<index_t>(team) * kUnroll)));
    }
  }
  splits = std::max<index_t>(splits, 1);
  geo.team = team;
  geo.chunk = ceil_div(per_group, splits);
  geo.splits = ceil_div(per_group, geo.chunk);  // no empty units
  geo.step_seg = geo.team / geo.hwv;
  geo.step_off = geo.team % geo.hwv;
  return geo;
}

// With H*W == 1 both layouts are the same bytes; the row kernels read them
// coalesced, where the plane kernels would gather with stride C.
inline bool uses_rows(bool channels_last, index_t hw) { return channels_last || hw == 1; }

// ------------------------------------------------ one block per group
// Training (input statistics) over many mid-sized NCHW groups: one block owns
// a whole group and does every pass over it in one kernel per direction
// (statistics then normalize; backward sums then grad_input), re-reading the
// group from L2 instead of launching a second kernel that reads it from DRAM.
//   >= kGroupBlockMinGroups groups: the grid fills the device without splits;
//   <= kGroupBlockMaxBytes per group: the groups of one wave stay in L2 (H200:
//     50 MB for 132 SMs) until the block re-reads them;
//   >= kThreads elements per group: a smaller group would leave most of the
//     block idle, where the plane plans give it a warp.
// The row layout (uses_rows) is never taken: a row block's tile is up to 32
// vectors of channels wide, so one block per tile over all rows gives
// ceil(C / (32 * VEC)) blocks for batch statistics and N times that for
// instance statistics, under 100 at every target shape.
constexpr index_t kGroupBlockMinGroups = 100;
constexpr index_t kGroupBlockMaxBytes = 256 * 1024;

inline bool takes_group_blocks(index_t groups, index_t group_elems, int elem_size,
                               bool rows, bool input_stats, bool legacy) {
  return !legacy && input_stats && !rows && groups >= kGroupBlockMinGroups &&
         group_elems >= kThreads && group_elems * elem_size <= kGroupBlockMaxBytes;
}

// The plane walk with one unsplit whole-block team per group: block g is group g.
inline PlaneGeometry plan_group_blocks(index_t groups, index_t segs, index_t hw, index_t C,
                                       int vec) {
  PlaneGeometry geo;
  geo.groups = groups;
  geo.segs = segs;
  geo.hwv = hw / vec;
  geo.C = C;
  geo.team = kThreads;
  geo.splits = 1;
  geo.chunk = segs * geo.hwv;
  geo.step_seg = geo.team / geo.hwv;
  geo.step_off = geo.team % geo.hwv;
  return geo;
}

// ---------------------------------------------------------------- NHWC
// Batch b (a sample n for instance statistics, else the whole tensor) is `rows`
// rows of C contiguous channels; row r of batch b starts at element
// (b * rows + r) * C. Group (b, c) has index b * C + c.
// Grid: blockIdx.x = (batch * splits + split) * col_blocks + col_block.
struct RowGeometry {
  index_t batches, rows, C, cv;  // cv = C / VEC
  index_t splits, chunk;         // row ranges per (batch, column block), rows per range
  index_t col_blocks;
  int tx, ty;                    // block tile: tx vector columns x ty rows, tx * ty == kThreads
};

inline index_t row_blocks(const RowGeometry& geo) {
  return geo.batches * geo.splits * geo.col_blocks;
}

// batches x rows rows of C channels, read as vectors of `vec` channels.
inline RowGeometry plan_rows(index_t batches, index_t rows, index_t C, int vec, int unroll,
                             index_t wave, bool legacy) {
  RowGeometry geo;
  geo.batches = batches;
  geo.rows = rows;
  geo.C = C;
  geo.cv = C / vec;
  geo.tx = static_cast<int>(std::min<index_t>(kWarpSize, next_pow2(geo.cv)));
  geo.ty = kThreads / geo.tx;
  geo.col_blocks = ceil_div(geo.cv, geo.tx);
  const index_t base_blocks = batches * geo.col_blocks;
  // At least two unrolled iterations per thread: each block writes C partials
  // per split, which must stay small next to the rows it reads.
  const index_t min_rows = static_cast<index_t>(geo.ty) * unroll * 2;
  const index_t most = std::max<index_t>(1, rows / min_rows);
  index_t splits = 1;
  if (legacy) {
    splits = std::min(ceil_div(wave, base_blocks), most);
  } else if (base_blocks < wave) {
    // The tile is fixed, so an unsplit grid over one wave stays as it is.
    splits = std::min({wave / base_blocks, most, kMaxRowSplits});
  }
  splits = std::max<index_t>(splits, 1);
  geo.chunk = ceil_div(rows, splits);
  geo.splits = ceil_div(rows, geo.chunk);
  return geo;
}

}  // namespace plan
}  // namespace gan_ext
