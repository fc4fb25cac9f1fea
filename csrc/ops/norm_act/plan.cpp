// gan_ext::_norm_act_plan_planes / _rows / _group: the launch plans of the
// norm_act CUDA kernels (ops/norm_act/plan.h), computed on the host of any
// build. Debug ops: the tests check the plans' index coverage and grid sizes on
// the CPU, and a GPU check can print the plan of a shape it measures.
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <vector>

#include "ops/norm_act/plan.h"

namespace gan_ext {
namespace {

void check_positive(int64_t v, const char* name) {
  TORCH_CHECK_VALUE(v > 0, name, " must be positive, got ", v);
}

bool resolve(c10::optional<bool> legacy) {
  return legacy.has_value() ? *legacy : plan::cuda_norm_act_legacy();
}

// [hwv, team, splits, chunk, step_seg, step_off, blocks]
std::vector<int64_t> plan_planes_op(int64_t groups, int64_t segs, int64_t hw, int64_t C,
                                    int64_t vec, int64_t wave, c10::optional<bool> legacy) {
  for (auto [v, n] : {std::pair{groups, "groups"}, {segs, "segs"}, {hw, "hw"}, {C, "C"},
                      {vec, "vec"}, {wave, "wave"}})
    check_positive(v, n);
  TORCH_CHECK_VALUE(hw % vec == 0, "hw must be a multiple of vec, got ", hw, " and ", vec);
  const plan::PlaneGeometry g =
      plan::plan_planes(groups, segs, hw, C, static_cast<int>(vec), wave, resolve(legacy));
  return {g.hwv, g.team, g.splits, g.chunk, g.step_seg, g.step_off, plan::plane_blocks(g)};
}

// [cv, tx, ty, col_blocks, splits, chunk, blocks]
std::vector<int64_t> plan_rows_op(int64_t batches, int64_t rows, int64_t C, int64_t vec,
                                  int64_t unroll, int64_t wave,
                                  c10::optional<bool> legacy) {
  for (auto [v, n] : {std::pair{batches, "batches"}, {rows, "rows"}, {C, "C"}, {vec, "vec"},
                      {unroll, "unroll"}, {wave, "wave"}})
    check_positive(v, n);
  TORCH_CHECK_VALUE(C % vec == 0, "C must be a multiple of vec, got ", C, " and ", vec);
  const plan::RowGeometry g = plan::plan_rows(batches, rows, C, static_cast<int>(vec),
                                              static_cast<int>(unroll), wave, resolve(legacy));
  return {g.cv, g.tx, g.ty, g.col_blocks, g.splits, g.chunk, plan::row_blocks(g)};
}

// [] when the one-block-per-group kernels do not take the shape, else the
// plane plan they run, as plan_planes_op returns it.
std::vector<int64_t> plan_group_op(int64_t N, int64_t C, int64_t hw, int64_t elem_size,
                                   bool channels_last, bool instance, bool use_input_stats,
                                   int64_t vec, c10::optional<bool> legacy) {
  for (auto [v, n] : {std::pair{N, "N"}, {C, "C"}, {hw, "hw"}, {elem_size, "elem_size"},
                      {vec, "vec"}})
    check_positive(v, n);
  TORCH_CHECK_VALUE(hw % vec == 0, "hw must be a multiple of vec, got ", hw, " and ", vec);
  const bool per_sample = instance && use_input_stats;
  const int64_t groups = per_sample ? N * C : C;
  const int64_t segs = per_sample ? 1 : N;
  if (!plan::takes_group_blocks(groups, segs * hw, static_cast<int>(elem_size),
                                plan::uses_rows(channels_last, hw), use_input_stats,
                                resolve(legacy)))
    return {};
  const plan::PlaneGeometry g = plan::plan_group_blocks(groups, segs, hw, C, static_cast<int>(vec));
  return {g.hwv, g.team, g.splits, g.chunk, g.step_seg, g.step_off, plan::plane_blocks(g)};
}

}  // namespace

// No tensor arguments: one kernel for every dispatch key.
TORCH_LIBRARY_IMPL(gan_ext, CompositeImplicitAutograd, m) {
  m.impl("_norm_act_plan_planes", &plan_planes_op);
  m.impl("_norm_act_plan_rows", &plan_rows_op);
  m.impl("_norm_act_plan_group", &plan_group_op);
}

}  // namespace gan_ext
