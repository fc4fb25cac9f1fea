// CUDA kernels of gan_ext::norm_act and gan_ext::norm_act_backward.
//
// Semantics: gan_ext/reference.py (norm_act, norm_act_backward). Passes:
//   forward : statistics (Welford per thread, Chan merges across threads and
//             blocks) -> [tiny merge kernel when a group was split over
//             several blocks] -> fused normalize + affine + activation.
//   backward: reduction of (sum dz, sum dz*xhat) per group -> tiny per-channel
//             kernel (grad_weight, grad_bias and per-group totals) ->
//             elementwise grad_input. With running statistics grad_input does
//             not depend on the sums, so the reduction pass writes it and the
//             elementwise pass is skipped.
// No activation-sized temporaries: only per-(group, split) partials.
//
// Two layouts, each with its own kernels:
//   NCHW ("plane" kernels): a group (a channel, or an (n, c) plane for instance
//     statistics) is `segs` runs of H*W contiguous elements. A team of threads
//     (a warp up to a whole block) walks one contiguous slice of the group's
//     flattened runs with a division-free cursor; one group is split over
//     several teams when the groups alone cannot fill the GPU.
//   NHWC ("row" kernels): rows of C contiguous channels. A block is a tile of
//     tx vector-columns x ty rows; threads keep per-channel state in registers
//     and the ty rows of the tile are merged in shared memory.
// Reductions are deterministic: fixed partitions and fixed merge order, no
// atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "common/device_common.cuh"
#include "ops/norm_act/checks.h"
#include "ops/norm_act/plan.h"

namespace gan_ext {
namespace {

constexpr int kUnroll = plan::kUnroll;       // loads in flight per thread per iteration
static_assert(plan::kThreads == kThreads && plan::kWarpSize == kWarpSize,
              "the launch plans assume the kernels' block shape");
using plan::PlaneGeometry;
using plan::RowGeometry;
using plan::plan_planes;
using plan::plan_rows;
using plan::plane_blocks;
using plan::row_blocks;
// Row kernels keep VEC channels of state per thread; with 8-wide vectors
// (half/bfloat16) a smaller unroll keeps them at >= 2 blocks per SM.
template <int VEC>
constexpr int kRowUnroll = VEC >= 8 ? 2 : kUnroll;
// Blocks per SM the plane backward kernels ask for: they took 79-128
// registers (two blocks per SM); three cap them at 80, which ptxas -v (sm_90)
// shows spill-free for float and half (4 bytes for half x8), not for bfloat16
// x8 or double: those ask for two (<= 128, as before; with one, ptxas took
// 137). The row kernels (VEC channels of state per thread) keep the default.
template <typename scalar_t>
constexpr int kBackwardMinBlocks =
    std::is_same<scalar_t, float>::value || std::is_same<scalar_t, c10::Half>::value ? 3 : 2;

// The one-block-per-group backward (plane_group_backward_kernel) capped at 80
// registers spilled 32 bytes for half x8 on sm_90 (ptxas -v); float fits.
template <typename scalar_t>
constexpr int kGroupBackwardMinBlocks = std::is_same<scalar_t, float>::value ? 3 : 2;

__device__ __forceinline__ index_t imin(index_t a, index_t b) { return a < b ? a : b; }

// ------------------------------------------------------- Welford / Chan
template <typename acc_t>
struct Welford {
  acc_t mean, m2, n;  // n as acc_t: exact far beyond any per-thread count
};

// Chan et al.'s parallel merge. Branch-free; an empty side (n == 0) leaves
// the other side unchanged.
template <typename acc_t>
__device__ __forceinline__ Welford<acc_t> welford_merge(const Welford<acc_t>& a,
                                                        const Welford<acc_t>& b) {
  const acc_t n = a.n + b.n;
  const acc_t wb = n > acc_t(0) ? b.n / n : acc_t(0);
  const acc_t delta = b.mean - a.mean;
  return {a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.n * wb, n};
}

template <typename acc_t>
__device__ __forceinline__ Welford<acc_t> warp_merge(Welford<acc_t> w) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) {
    const Welford<acc_t> o{__shfl_down_sync(0xffffffffu, w.mean, off),
                           __shfl_down_sync(0xffffffffu, w.m2, off),
                           __shfl_down_sync(0xffffffffu, w.n, off)};
    w = welford_merge(w, o);
  }
  return w;
}

template <typename acc_t>
__device__ __forceinline__ void warp_sum2(acc_t& a, acc_t& b) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
  }
}

// Merges the states of each team of `team` consecutive threads (a power of two,
// kWarpSize..kThreads); the result is valid in the team's first thread. Every
// thread of the block must call it (it may synchronize the block).
template <typename acc_t>
__device__ Welford<acc_t> team_merge(Welford<acc_t> w, int team) {
  w = warp_merge(w);
  if (team == kWarpSize) return w;  // `team` is a kernel argument: uniform over the block
  __shared__ acc_t sh[3][kWarps];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  if (lane == 0) {
    sh[0][warp] = w.mean;
    sh[1][warp] = w.m2;
    sh[2][warp] = w.n;
  }
  __syncthreads();
  const int warps_per_team = team / kWarpSize;
  if (warp % warps_per_team == 0) {
    Welford<acc_t> o{acc_t(0), acc_t(0), acc_t(0)};
    if (lane < warps_per_team) o = {sh[0][warp + lane], sh[1][warp + lane], sh[2][warp + lane]};
    w = warp_merge(o);
  }
  return w;
}

// Same for two plain sums.
template <typename acc_t>
__device__ void team_sum2(acc_t& a, acc_t& b, int team) {
  warp_sum2(a, b);
  if (team == kWarpSize) return;
  __shared__ acc_t sh[2][kWarps];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  if (lane == 0) {
    sh[0][warp] = a;
    sh[1][warp] = b;
  }
  __syncthreads();
  const int warps_per_team = team / kWarpSize;
  if (warp % warps_per_team == 0) {
    a = lane < warps_per_team ? sh[0][warp + lane] : acc_t(0);
    b = lane < warps_per_team ? sh[1][warp + lane] : acc_t(0);
    warp_sum2(a, b);
  }
}

// Mean and M2 of the first `valid` packs, two-pass in registers (exact enough:
// at most kUnroll * VEC values), ready for one Chan merge per iteration instead
// of one Welford division per element.
template <typename acc_t, typename scalar_t, int VEC>
__device__ __forceinline__ Welford<acc_t> pack_moments(const Pack<scalar_t, VEC> (&v)[kUnroll],
                                                       int valid) {
  acc_t sum = acc_t(0);
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {
    if (k < valid) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) sum += static_cast<acc_t>(v[k].val[i]);
    }
  }
  const acc_t n = static_cast<acc_t>(valid * VEC);
  const acc_t mean = sum / n;
  acc_t m2 = acc_t(0);
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {
    if (k < valid) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const acc_t d = static_cast<acc_t>(v[k].val[i]) - mean;
        m2 += d * d;
      }
    }
  }
  return {mean, m2, n};
}

// The counter protocol of the kernels that finish with a merge: every thread
// of every block calls it after its writes; true in every thread of the last
// block to arrive, which may then read all the other blocks' writes (with
// __ldcg: they are in L2, maybe not in this SM's L1). The counter is zeroed per
// call by a memset in the stream (as PyTorch's own reductions do), not reset
// here: a counter kept between calls would be shared by concurrent streams.
__device__ __forceinline__ bool arrive_last(unsigned int* blocks_done) {
  __shared__ bool last;
  __threadfence();  // release: this thread's writes before the count
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(blocks_done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (last) __threadfence();  // acquire: the other blocks' writes after their counts
  return last;
}

// Where a statistics pass puts its result: the final (mean, var, invstd) when a
// group was reduced by a single unit, otherwise one partial per (group, split),
// merged by stats_finalize_kernel (legacy paths) or by the last block of the
// pass to finish (default paths, see finish()).
template <typename acc_t>
struct StatsOut {
  acc_t* mean;
  acc_t* var;
  acc_t* invstd;
  acc_t* partial;         // [3][groups * splits]: mean, m2, n
  index_t partial_stride;  // groups * splits
  acc_t count;            // elements per group
  acc_t eps;
  // Blocks done, zeroed before the launch; null: no merge in this kernel.
  unsigned int* blocks_done;
  index_t groups, splits;

  // Every thread of every block calls it after its writes. The last block to
  // arrive (arrive_last) merges each group's partials in split order, so the
  // result does not depend on which block that is (deterministic).
  __device__ __forceinline__ void finish() const {
    if (blocks_done == nullptr) return;  // uniform over the grid
    if (!arrive_last(blocks_done)) return;
    for (index_t g = threadIdx.x; g < groups; g += blockDim.x) {
      Welford<acc_t> w{acc_t(0), acc_t(0), acc_t(0)};
      for (index_t s = 0; s < splits; ++s) {
        const index_t i = g * splits + s;
        // __ldcg: from L2, where the other SMs' writes are; this SM's L1 may
        // not hold them.
        w = welford_merge(w, Welford<acc_t>{__ldcg(partial + i), __ldcg(partial + partial_stride + i),
                                            __ldcg(partial + 2 * partial_stride + i)});
      }
      write_final(g, w);
    }
  }

  // Returns invstd.
  __device__ acc_t write_final(index_t g, const Welford<acc_t>& w) const {
    const acc_t v = w.m2 / count;  // biased variance
    const acc_t rs = acc_t(1) / sqrt(v + eps);  // correctly rounded, unlike rsqrt()
    mean[g] = w.mean;
    var[g] = v;
    invstd[g] = rs;
    return rs;
  }

  __device__ void write(index_t g, index_t split, index_t splits, const Welford<acc_t>& w) const {
    if (splits == 1) {
      write_final(g, w);
    } else {
      const index_t i = g * splits + split;
      partial[i] = w.mean;
      partial[partial_stride + i] = w.m2;
      partial[2 * partial_stride + i] = w.n;
    }
  }
};

// One warp per group merges its `splits` partials in a fixed order.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    stats_finalize_kernel(const StatsOut<acc_t> out, index_t groups, index_t splits) {
  const index_t g = static_cast<index_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (g >= groups) return;  // warp-uniform, so the shuffles below see full warps
  const acc_t* p = out.partial;
  const index_t stride = out.partial_stride;
  Welford<acc_t> w{acc_t(0), acc_t(0), acc_t(0)};
  for (index_t s = lane; s < splits; s += kWarpSize) {
    const index_t i = g * splits + s;
    w = welford_merge(w, Welford<acc_t>{p[i], p[stride + i], p[2 * stride + i]});
  }
  w = warp_merge(w);
  if (lane == 0) out.write_final(g, w);
}

// -------------------------------------------------- per-element math
// The affine parameters as the op really uses them. weight/bias may be float32
// with half/bfloat16 input, each independently; nullptr means gamma=1 / beta=0.
template <typename scalar_t>
struct Affine {
  using acc_t = acc_type<scalar_t>;
  const void* weight;
  const void* bias;
  bool weight_is_float;
  bool bias_is_float;
  bool clamp_weight;     // invertible leaky_relu: gamma = sign(w) * max(|w|, min_abs_weight)
  acc_t min_abs_weight;  // kMinAbsWeight rounded to the weight's dtype, as reference.py computes it

  __device__ __forceinline__ static acc_t load(const void* p, bool is_float, index_t c) {
    return is_float ? static_cast<acc_t>(static_cast<const float*>(p)[c])
                    : static_cast<acc_t>(static_cast<const scalar_t*>(p)[c]);
  }

  __device__ acc_t gamma(index_t c) const {
    if (weight == nullptr) return acc_t(1);
    const acc_t w = load(weight, weight_is_float, c);
    if (!clamp_weight) return w;
    acc_t mag = w < acc_t(0) ? -w : w;
    mag = mag < min_abs_weight ? min_abs_weight : mag;  // NaN stays NaN, like clamp_min
    return w < acc_t(0) ? -mag : mag;                    // -0 and +0 both become +min
  }

  __device__ acc_t beta(index_t c) const {
    return bias == nullptr ? acc_t(0) : load(bias, bias_is_float, c);
  }
};

// activation: 0 identity, 1 relu, 2 leaky_relu. The kind is uniform over the
// grid, so the branches cost a few predicated instructions in a memory-bound loop.
template <typename acc_t>
struct Act {
  // An int rather than the int64 Activation: the struct is a kernel argument.
  static constexpr int kReLU = static_cast<int>(Activation::ReLU);
  static constexpr int kLeakyReLU = static_cast<int>(Activation::LeakyReLU);
  int kind;
  acc_t slope;

  __device__ __forceinline__ acc_t forward(acc_t z) const {
    if (kind == kReLU) return z < acc_t(0) ? acc_t(0) : z;  // NaN propagates, like torch.relu
    if (kind == kLeakyReLU) return z > acc_t(0) ? z : z * slope;
    return z;
  }

  __device__ __forceinline__ acc_t backward(acc_t z, acc_t dy) const {
    // As torch's backward at a NaN pre-activation: relu passes dy (its mask is
    // "output <= 0"), leaky_relu takes the slope; the CPU kernel does the same.
    if (kind == kReLU) return z <= acc_t(0) ? acc_t(0) : dy;
    if (kind == kLeakyReLU) return z > acc_t(0) ? dy : dy * slope;
    return dy;
  }
};

// In-place update of the running statistics and num_batches_tracked (schema in
// ops/norm_act/norm_act.cpp), done by block 0 of the forward's elementwise kernel: that
// kernel starts after the statistics are final, so the update needs no launch
// of its own, and a single block sums instance norm's per-sample statistics in
// a fixed order. The arithmetic is update_running_stats' in
// ops/norm_act/cpu.cpp: double, samples summed in order, unbiased variance,
// no NaN fix-up. Every pointer may be null (nothing to do for it).
template <typename scalar_t>
struct RunningUpdate {
  using acc_t = acc_type<scalar_t>;
  const acc_t* batch_mean;  // [batches * C] statistics of this call
  const acc_t* batch_var;   // biased
  void* mean;               // running_mean: scalar_t, or float with half/bfloat16 input
  void* var;
  int64_t* count;           // num_batches_tracked
  index_t mean_stride, var_stride;
  bool mean_is_float, var_is_float;
  bool cumulative;          // momentum None: the batch weighs 1 / count
  double momentum;
  double unbias;            // n / (n - 1)
  index_t C, batches;

  __device__ static void blend(void* p, bool is_float, index_t i, double f, double batch) {
    if (is_float) {
      float* q = static_cast<float*>(p) + i;
      *q = static_cast<float>((1.0 - f) * static_cast<double>(*q) + f * batch);
    } else {
      scalar_t* q = static_cast<scalar_t*>(p) + i;
      *q = static_cast<scalar_t>((1.0 - f) * static_cast<double>(*q) + f * batch);
    }
  }

  // Every thread of one block calls it, before any early return (it synchronizes).
  __device__ void run() const {
    int64_t seen = 0;
    if (count != nullptr) {  // uniform over the block
      seen = *count + 1;
      __syncthreads();  // every thread has read the old count before it changes
      if (threadIdx.x == 0) *count = seen;
    }
    if (mean == nullptr && var == nullptr) return;
    const double f = cumulative ? 1.0 / static_cast<double>(seen) : momentum;
    for (index_t c = threadIdx.x; c < C; c += blockDim.x) {
      double m = 0.0, v = 0.0;
      for (index_t b = 0; b < batches; ++b) {
        // __ldcg: the one-block-per-group kernel runs this in its last block,
        // after other blocks wrote the statistics (arrive_last).
        m += static_cast<double>(__ldcg(batch_mean + b * C + c));
        v += static_cast<double>(__ldcg(batch_var + b * C + c));
      }
      if (mean != nullptr) blend(mean, mean_is_float, c * mean_stride, f, m / batches);
      if (var != nullptr) blend(var, var_is_float, c * var_stride, f, v / batches * unbias);
    }
  }
};

// Eval in one launch (default paths): the elementwise kernel reads the running
// statistics itself, where the legacy path first made float copies and
// rsqrt(var + eps) on the host (three launches); block 0 also writes the op's
// mean/var/invstd outputs from them.
template <typename scalar_t>
struct RunningRead {
  using acc_t = acc_type<scalar_t>;
  const void* mean;  // running_mean: scalar_t, or float with half/bfloat16 input; null: unused
  const void* var;
  index_t mean_stride, var_stride;
  bool mean_is_float, var_is_float;
  acc_t eps;
  acc_t* out_mean;  // [C] each
  acc_t* out_var;
  acc_t* out_invstd;
  index_t C;

  __device__ acc_t mean_of(index_t c) const {
    return Affine<scalar_t>::load(mean, mean_is_float, c * mean_stride);
  }
  __device__ acc_t var_of(index_t c) const {
    return Affine<scalar_t>::load(var, var_is_float, c * var_stride);
  }
  __device__ acc_t invstd_of(acc_t v) const { return acc_t(1) / sqrt(v + eps); }

  __device__ void write_outputs() const {
    for (index_t c = threadIdx.x; c < C; c += blockDim.x) {
      const acc_t v = var_of(c);
      out_mean[c] = mean_of(c);
      out_var[c] = v;
      out_invstd[c] = invstd_of(v);
    }
  }
};

// Where the forward's elementwise kernel gets its statistics, and the
// bookkeeping its block 0 does on the side.
template <typename scalar_t>
struct ForwardStats {
  using acc_t = acc_type<scalar_t>;
  const acc_t* mean;    // per group, when `running.mean` is null
  const acc_t* invstd;
  RunningRead<scalar_t> running;  // eval, default paths
  RunningUpdate<scalar_t> update;  // training

  // Every thread calls it first thing (RunningUpdate::run synchronizes block 0).
  __device__ void prologue() const {
    if (blockIdx.x != 0) return;
    update.run();
    if (running.mean != nullptr) running.write_outputs();
  }

  __device__ void get(index_t group, index_t c, acc_t& mu, acc_t& rs) const {
    if (running.mean != nullptr) {  // uniform over the grid
      mu = running.mean_of(c);
      rs = running.invstd_of(running.var_of(c));
    } else {
      mu = mean[group];
      rs = invstd[group];
    }
  }
};

// Per-group constants of the backward and the (dz, xhat) of one element.
// xhat = (u - shift) * mul, where u is the saved input x (shift = mean,
// mul = invstd) or, when saved_is_output, the un-activated z recovered from the
// saved output (shift = beta, mul = 1 / gamma). Five values per channel keep
// the channels-last kernels, which hold VEC channels per thread, in registers.
template <typename acc_t>
struct BackwardMath {
  acc_t shift, mul, gamma, beta;
  acc_t scale;           // gamma * invstd: d(out of the affine) / dx at fixed statistics
  acc_t inv_slope;       // 1 / negative_slope, for inverting leaky_relu
  bool saved_is_output;  // saved is y (In-Place ABN) rather than x
  Act<acc_t> act;

  __device__ __forceinline__ void operator()(acc_t dy, acc_t s, acc_t& dz, acc_t& xhat) const {
    acc_t z;
    if (saved_is_output) {
      z = s >= acc_t(0) ? s : s * inv_slope;
      xhat = (z - shift) * mul;
    } else {
      xhat = (s - shift) * mul;
      z = xhat * gamma + beta;
    }
    dz = act.backward(z, dy);
  }
};

template <typename scalar_t>
struct BackwardArgs {
  using acc_t = acc_type<scalar_t>;
  const acc_t* mean;    // per group
  const acc_t* invstd;  // per group
  Affine<scalar_t> affine;
  Act<acc_t> act;
  acc_t inv_slope;
  bool saved_is_output;

  __device__ BackwardMath<acc_t> math(index_t group, index_t channel) const {
    BackwardMath<acc_t> m;
    const acc_t rs = invstd[group];
    m.gamma = affine.gamma(channel);
    m.beta = affine.beta(channel);
    m.scale = m.gamma * rs;
    if (saved_is_output) {
      m.shift = m.beta;
      m.mul = acc_t(1) / m.gamma;  // gamma is clamped away from 0 in this mode
    } else {
      m.shift = mean[group];
      m.mul = rs;
    }
    m.inv_slope = inv_slope;
    m.saved_is_output = saved_is_output;
    m.act = act;
    return m;
  }
};

// Where the backward reduction puts its sums, and how they become the
// per-group totals the elementwise pass needs (totals, absent with running
// statistics) and grad_weight / grad_bias:
//   * direct (default paths, one unit per channel: batch norm, unsplit): the
//     unit writes them itself; nothing to merge;
//   * blocks_done (default paths, C <= kWarps): the last block of the reduction
//     to finish merges, as one backward_finalize_kernel block would;
//   * otherwise partials [2][groups * splits] for backward_finalize_kernel.
// The merge of channel c is one warp: for each batch b, the splits of group
// (b * C + c) in lane order and a fixed shuffle tree, then the batches in order.
// The same code in both places: the same (deterministic) result either way.
template <typename scalar_t>
struct BackwardSums {
  using acc_t = acc_type<scalar_t>;
  acc_t* partial;
  acc_t* totals;  // [2][batches * C] or null
  void* grad_weight;
  void* grad_bias;
  bool grads_are_float;
  bool direct;
  unsigned int* blocks_done;  // zeroed before the launch; null: no merge in the reduction
  bool block_per_channel;     // merge_channel_block instead of merge_channel
  index_t C, batches, splits;

  __device__ void store_grads(index_t c, acc_t dz, acc_t dzx) const {
    if (grads_are_float) {
      static_cast<float*>(grad_weight)[c] = static_cast<float>(dzx);
      static_cast<float*>(grad_bias)[c] = static_cast<float>(dz);
    } else {
      static_cast<scalar_t*>(grad_weight)[c] = static_cast<scalar_t>(dzx);
      static_cast<scalar_t*>(grad_bias)[c] = static_cast<scalar_t>(dz);
    }
  }

  __device__ void write(index_t group, index_t split, acc_t dz, acc_t dzx) const {
    if (direct) {  // group == channel
      if (totals != nullptr) {
        totals[group] = dz;
        totals[C + group] = dzx;
      }
      store_grads(group, dz, dzx);
    } else {
      const index_t i = group * splits + split;
      partial[i] = dz;
      partial[batches * C * splits + i] = dzx;
    }
  }

  // Warp-uniform c; lane = threadIdx.x % kWarpSize.
  __device__ __forceinline__ void merge_channel(index_t c, int lane) const {
    const index_t units = batches * C * splits;
    acc_t channel_dz = acc_t(0), channel_dzx = acc_t(0);
    for (index_t b = 0; b < batches; ++b) {
      const index_t g = b * C + c;
      acc_t dz = acc_t(0), dzx = acc_t(0);
      for (index_t s = lane; s < splits; s += kWarpSize) {
        // __ldcg: other SMs' writes are in L2, maybe not in this SM's L1.
        dz += __ldcg(partial + g * splits + s);
        dzx += __ldcg(partial + units + g * splits + s);
      }
      warp_sum2(dz, dzx);
      if (lane == 0) {
        if (totals != nullptr) {
          totals[g] = dz;
          totals[batches * C + g] = dzx;
        }
        channel_dz += dz;
        channel_dzx += dzx;
      }
    }
    if (lane == 0) store_grads(c, channel_dz, channel_dzx);
  }

  // Channel c by the whole block, for many groups per channel (instance norm
  // with batches >= kWarpSize, where one warp looping over the batch left the
  // GPU idle: N=4096, C=3 kept 3 warps busy). Thread t owns groups b = t,
  // t + kThreads, ... with all their splits in order, then a fixed tree over
  // the block: deterministic. Every thread of the block calls it.
  __device__ __forceinline__ void merge_channel_block(index_t c) const {
    const index_t units = batches * C * splits;
    acc_t channel_dz = acc_t(0), channel_dzx = acc_t(0);
    for (index_t b = threadIdx.x; b < batches; b += kThreads) {
      const index_t g = b * C + c;
      acc_t dz = acc_t(0), dzx = acc_t(0);
      for (index_t s = 0; s < splits; ++s) {
        dz += __ldcg(partial + g * splits + s);
        dzx += __ldcg(partial + units + g * splits + s);
      }
      if (totals != nullptr) {
        totals[g] = dz;
        totals[batches * C + g] = dzx;
      }
      channel_dz += dz;
      channel_dzx += dzx;
    }
    team_sum2(channel_dz, channel_dzx, kThreads);  // valid in thread 0
    if (threadIdx.x == 0) store_grads(c, channel_dz, channel_dzx);
    __syncthreads();  // team_sum2's shared scratch is reused for the next channel
  }

  // Every thread of every block of the reduction calls it after its writes
  // (arrive_last).
  __device__ __forceinline__ void finish() const {
    if (blocks_done == nullptr) return;  // uniform over the grid
    if (!arrive_last(blocks_done)) return;
    if (block_per_channel) {
      for (index_t c = 0; c < C; ++c) merge_channel_block(c);
    } else {
      for (index_t c = threadIdx.x / kWarpSize; c < C; c += kWarps) {
        merge_channel(c, threadIdx.x % kWarpSize);
      }
    }
  }
};

// ================================================================ NCHW
// PlaneGeometry (ops/norm_act/plan.h): group g has `segs` runs of hwv vectors.
struct PlaneUnit {
  index_t group, split, begin, end;  // vectors [begin, end) of the group's flattened runs
  int rank;                          // thread rank in the team
  bool active;                       // false for the padding teams of the last block
};

__device__ __forceinline__ PlaneUnit plane_unit(const PlaneGeometry& geo) {
  PlaneUnit u;
  const index_t unit =
      static_cast<index_t>(blockIdx.x) * (kThreads / geo.team) + threadIdx.x / geo.team;
  u.rank = threadIdx.x % geo.team;
  u.active = unit < geo.groups * geo.splits;
  u.group = unit / geo.splits;
  u.split = unit - u.group * geo.splits;
  u.begin = u.split * geo.chunk;
  u.end = u.active ? imin(u.begin + geo.chunk, geo.segs * geo.hwv) : u.begin;
  return u;
}

// Walks flat vector indices j, j + team, ... of one group, keeping (run, offset)
// up to date with adds instead of a 64-bit division per vector.
struct PlaneCursor {
  index_t j, seg, off;

  __device__ __forceinline__ PlaneCursor(const PlaneGeometry& geo, index_t j0) : j(j0) {
    seg = j0 / geo.hwv;
    off = j0 - seg * geo.hwv;
  }
  // Element offset of the current vector.
  __device__ __forceinline__ index_t element(const PlaneGeometry& geo, index_t group, int vec) const {
    return ((seg * geo.C + group) * geo.hwv + off) * vec;
  }
  __device__ __forceinline__ void advance(const PlaneGeometry& geo) {
    j += geo.team;
    seg += geo.step_seg;
    off += geo.step_off;
    if (off >= geo.hwv) {
      off -= geo.hwv;
      ++seg;
    }
  }
};

// This thread's Welford state over its share of unit u.
template <typename scalar_t, int VEC>
__device__ __forceinline__ Welford<acc_type<scalar_t>> plane_moments(
    const scalar_t* __restrict__ x, const PlaneGeometry& geo, const PlaneUnit& u) {
  using acc_t = acc_type<scalar_t>;
  Welford<acc_t> w{acc_t(0), acc_t(0), acc_t(0)};
  PlaneCursor cur(geo, u.begin + u.rank);
  while (cur.j < u.end) {
    // Issue all kUnroll loads before using any of them.
    Pack<scalar_t, VEC> v[kUnroll];
    int valid = 0;
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (cur.j < u.end) {
        v[k] = load_pack<true, VEC>(x + cur.element(geo, u.group, VEC));
        ++valid;  // j only grows, so the valid packs are a prefix
      }
      cur.advance(geo);
    }
    w = welford_merge(w, pack_moments<acc_t>(v, valid));
  }
  return w;
}

// y = act((x - mu) * scale + shift) over this thread's share of unit u.
template <typename scalar_t, int VEC>
__device__ __forceinline__ void plane_apply(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                            const PlaneGeometry& geo, const PlaneUnit& u,
                                            acc_type<scalar_t> mu, acc_type<scalar_t> scale,
                                            acc_type<scalar_t> shift,
                                            const Act<acc_type<scalar_t>>& act) {
  using acc_t = acc_type<scalar_t>;
  PlaneCursor cur(geo, u.begin + u.rank);
  while (cur.j < u.end) {
    Pack<scalar_t, VEC> v[kUnroll];
    index_t at[kUnroll];
    int valid = 0;
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (cur.j < u.end) {
        at[k] = cur.element(geo, u.group, VEC);
        v[k] = load_pack<true, VEC>(x + at[k]);
        ++valid;
      }
      cur.advance(geo);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (k < valid) {
        Pack<scalar_t, VEC> o;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const acc_t z = (static_cast<acc_t>(v[k].val[i]) - mu) * scale + shift;
          o.val[i] = static_cast<scalar_t>(act.forward(z));
        }
        store_pack<true, VEC>(y + at[k], o);
      }
    }
  }
}

// (sum dz, sum dz*xhat) over this thread's share of unit u, added to the two
// sums. With grad_in (running statistics) also writes grad_input =
// dz * gamma * invstd, which needs no sums.
template <typename scalar_t, int VEC>
__device__ __forceinline__ void plane_backward_sums(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ saved,
    scalar_t* __restrict__ grad_in, const PlaneGeometry& geo, const PlaneUnit& u,
    const BackwardMath<acc_type<scalar_t>>& m, acc_type<scalar_t>& sum_dz,
    acc_type<scalar_t>& sum_dzx) {
  using acc_t = acc_type<scalar_t>;
  PlaneCursor cur(geo, u.begin + u.rank);
  while (cur.j < u.end) {
    Pack<scalar_t, VEC> g[kUnroll], s[kUnroll];
    index_t at[kUnroll];
    int valid = 0;
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (cur.j < u.end) {
        at[k] = cur.element(geo, u.group, VEC);
        g[k] = load_pack<true, VEC>(dy + at[k]);
        s[k] = load_pack<true, VEC>(saved + at[k]);
        ++valid;
      }
      cur.advance(geo);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (k < valid) {
        acc_t dz[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          acc_t xhat;
          m(static_cast<acc_t>(g[k].val[i]), static_cast<acc_t>(s[k].val[i]), dz[i], xhat);
          sum_dz += dz[i];
          sum_dzx += dz[i] * xhat;
        }
        if (grad_in != nullptr) {  // uniform branch
          Pack<scalar_t, VEC> o;
#pragma unroll
          for (int i = 0; i < VEC; ++i) o.val[i] = static_cast<scalar_t>(dz[i] * m.scale);
          store_pack<true, VEC>(grad_in + at[k], o);
        }
      }
    }
  }
}

// grad_input = gamma * invstd * (dz - mean_dz - xhat * mean_dzx) over this
// thread's share of unit u.
template <typename scalar_t, int VEC>
__device__ __forceinline__ void plane_grad_input(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ saved,
    scalar_t* __restrict__ grad_in, const PlaneGeometry& geo, const PlaneUnit& u,
    const BackwardMath<acc_type<scalar_t>>& m, acc_type<scalar_t> mean_dz,
    acc_type<scalar_t> mean_dzx) {
  using acc_t = acc_type<scalar_t>;
  PlaneCursor cur(geo, u.begin + u.rank);
  while (cur.j < u.end) {
    Pack<scalar_t, VEC> g[kUnroll], s[kUnroll];
    index_t at[kUnroll];
    int valid = 0;
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (cur.j < u.end) {
        at[k] = cur.element(geo, u.group, VEC);
        g[k] = load_pack<true, VEC>(dy + at[k]);
        s[k] = load_pack<true, VEC>(saved + at[k]);
        ++valid;
      }
      cur.advance(geo);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (k < valid) {
        Pack<scalar_t, VEC> o;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          acc_t dz, xhat;
          m(static_cast<acc_t>(g[k].val[i]), static_cast<acc_t>(s[k].val[i]), dz, xhat);
          o.val[i] = static_cast<scalar_t>(m.scale * (dz - mean_dz - xhat * mean_dzx));
        }
        store_pack<true, VEC>(grad_in + at[k], o);
      }
    }
  }
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    plane_stats_kernel(const scalar_t* __restrict__ x, const PlaneGeometry geo,
                       const StatsOut<acc_type<scalar_t>> out) {
  const PlaneUnit u = plane_unit(geo);
  auto w = team_merge(plane_moments<scalar_t, VEC>(x, geo, u), geo.team);
  if (u.active && u.rank == 0) out.write(u.group, u.split, geo.splits, w);
  out.finish();
}

// out = act((x - mean) * invstd * gamma + beta)
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    plane_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                         const PlaneGeometry geo, const ForwardStats<scalar_t> stats,
                         const Affine<scalar_t> affine, const Act<acc_type<scalar_t>> act) {
  using acc_t = acc_type<scalar_t>;
  stats.prologue();
  const PlaneUnit u = plane_unit(geo);
  if (!u.active) return;  // no block-wide synchronization below
  const index_t c = u.group % geo.C;
  acc_t mu, rs;
  stats.get(u.group, c, mu, rs);
  plane_apply<scalar_t, VEC>(x, y, geo, u, mu, rs * affine.gamma(c), affine.beta(c), act);
}

// Partial (sum dz, sum dz*xhat) per unit into partial[0|1][group * splits + split].
// With running statistics (grad_in != nullptr) also writes grad_input.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocks<scalar_t>)
    plane_backward_reduce_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ saved,
                                 scalar_t* __restrict__ grad_in, const PlaneGeometry geo,
                                 const BackwardArgs<scalar_t> args,
                                 const BackwardSums<scalar_t> sums) {
  using acc_t = acc_type<scalar_t>;
  const PlaneUnit u = plane_unit(geo);
  BackwardMath<acc_t> m{};
  if (u.active) m = args.math(u.group, u.group % geo.C);
  acc_t sum_dz = acc_t(0), sum_dzx = acc_t(0);
  plane_backward_sums<scalar_t, VEC>(dy, saved, grad_in, geo, u, m, sum_dz, sum_dzx);
  team_sum2(sum_dz, sum_dzx, geo.team);
  if (u.active && u.rank == 0) sums.write(u.group, u.split, sum_dz, sum_dzx);
  sums.finish();
}

// grad_input = gamma * invstd * (dz - sum_dz / M - xhat * sum_dz_xhat / M)
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocks<scalar_t>)
    plane_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ saved,
                          scalar_t* __restrict__ grad_in, const PlaneGeometry geo,
                          const BackwardArgs<scalar_t> args,
                          const acc_type<scalar_t>* __restrict__ totals,  // [2][groups]
                          acc_type<scalar_t> count) {
  using acc_t = acc_type<scalar_t>;
  const PlaneUnit u = plane_unit(geo);
  if (!u.active) return;
  const BackwardMath<acc_t> m = args.math(u.group, u.group % geo.C);
  plane_grad_input<scalar_t, VEC>(dy, saved, grad_in, geo, u, m, totals[u.group] / count,
                                  totals[geo.groups + u.group] / count);
}

// ------------------------------------------------- one block per group
// plan_group_blocks (ops/norm_act/plan.h): block g is group g, whole, so
// each direction is one kernel that re-reads its group from L2 for the second
// half. Deterministic: fixed walk, fixed block merge tree, and the cross-block
// work (running statistics; instance norm's grad_weight/grad_bias over the
// batch) done by the last block to finish in a fixed order.

// Statistics, then normalize + affine + activation; the last block updates the
// running statistics (update.run()) when `blocks_done` is set.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    plane_group_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                               const PlaneGeometry geo, const StatsOut<acc_type<scalar_t>> out,
                               const RunningUpdate<scalar_t> update, unsigned int* blocks_done,
                               const Affine<scalar_t> affine, const Act<acc_type<scalar_t>> act) {
  using acc_t = acc_type<scalar_t>;
  __shared__ acc_t stats[2];
  const PlaneUnit u = plane_unit(geo);  // active: one block per group
  const auto w = team_merge(plane_moments<scalar_t, VEC>(x, geo, u), kThreads);
  if (threadIdx.x == 0) {
    stats[0] = w.mean;
    stats[1] = out.write_final(u.group, w);
  }
  __syncthreads();
  const index_t c = u.group % geo.C;
  plane_apply<scalar_t, VEC>(x, y, geo, u, stats[0], stats[1] * affine.gamma(c), affine.beta(c),
                             act);
  if (blocks_done == nullptr) return;  // uniform over the grid
  if (arrive_last(blocks_done)) update.run();
}

// Backward sums, then grad_input; grad_weight/grad_bias through `sums`
// (direct for batch statistics; the last block's merge over the batch for
// instance statistics).
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads, kGroupBackwardMinBlocks<scalar_t>)
    plane_group_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ saved,
                                scalar_t* __restrict__ grad_in, const PlaneGeometry geo,
                                const BackwardArgs<scalar_t> args,
                                const BackwardSums<scalar_t> sums, acc_type<scalar_t> count) {
  using acc_t = acc_type<scalar_t>;
  __shared__ acc_t totals[2];
  const PlaneUnit u = plane_unit(geo);  // active: one block per group
  const BackwardMath<acc_t> m = args.math(u.group, u.group % geo.C);
  acc_t sum_dz = acc_t(0), sum_dzx = acc_t(0);
  plane_backward_sums<scalar_t, VEC>(dy, saved, nullptr, geo, u, m, sum_dz, sum_dzx);
  team_sum2(sum_dz, sum_dzx, kThreads);
  if (threadIdx.x == 0) {
    totals[0] = sum_dz;
    totals[1] = sum_dzx;
    sums.write(u.group, 0, sum_dz, sum_dzx);
  }
  __syncthreads();
  plane_grad_input<scalar_t, VEC>(dy, saved, grad_in, geo, u, m, totals[0] / count,
                                  totals[1] / count);
  sums.finish();
}

// ================================================================ NHWC
// RowGeometry (ops/norm_act/plan.h): batch b is `rows` rows of C contiguous
// channels; group (b, c) has index b * C + c, the n * C + c order of instance
// statistics and plain c otherwise.
struct RowUnit {
  index_t batch, split, col;  // col: this thread's vector column
  index_t begin, end;         // the block's rows
  int tx_i, ty_i;
  bool active;                // col < cv
};

__device__ __forceinline__ RowUnit row_unit(const RowGeometry& geo) {
  RowUnit u;
  index_t b = blockIdx.x;
  const index_t cb = b % geo.col_blocks;
  b /= geo.col_blocks;
  u.split = b % geo.splits;
  u.batch = b / geo.splits;
  u.tx_i = threadIdx.x % geo.tx;
  u.ty_i = threadIdx.x / geo.tx;
  u.col = cb * geo.tx + u.tx_i;
  u.active = u.col < geo.cv;
  u.begin = u.split * geo.chunk;
  u.end = imin(u.begin + geo.chunk, geo.rows);
  return u;
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    row_stats_kernel(const scalar_t* __restrict__ x, const RowGeometry geo,
                     const StatsOut<acc_type<scalar_t>> out) {
  using acc_t = acc_type<scalar_t>;
  constexpr int UNROLL = kRowUnroll<VEC>;
  // [VEC][kThreads]: thread-minor so the tree below is free of bank conflicts.
  __shared__ acc_t sh_mean[VEC * kThreads];
  __shared__ acc_t sh_m2[VEC * kThreads];
  __shared__ acc_t sh_n[kThreads];
  const RowUnit u = row_unit(geo);
  acc_t mean[VEC], m2[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) mean[i] = m2[i] = acc_t(0);
  acc_t n = acc_t(0);  // rows seen: the same for the VEC channels of a thread
  if (u.active) {
    const scalar_t* base = x + u.batch * geo.rows * geo.C + u.col * VEC;
    for (index_t r = u.begin + u.ty_i; r < u.end; r += static_cast<index_t>(geo.ty) * UNROLL) {
      Pack<scalar_t, VEC> v[UNROLL];
      int valid = 0;
#pragma unroll
      for (int k = 0; k < UNROLL; ++k) {
        const index_t rr = r + static_cast<index_t>(k) * geo.ty;
        if (rr < u.end) {
          v[k] = load_pack<true, VEC>(base + rr * geo.C);
          ++valid;
        }
      }
#pragma unroll
      for (int k = 0; k < UNROLL; ++k) {
        if (k < valid) {
          // Welford: one division per row, shared by the VEC channels.
          n += acc_t(1);
          const acc_t inv_n = acc_t(1) / n;
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const acc_t xv = static_cast<acc_t>(v[k].val[i]);
            const acc_t d = xv - mean[i];
            mean[i] += d * inv_n;
            m2[i] += d * (xv - mean[i]);
          }
        }
      }
    }
  }
  // Tree over the ty rows of the tile (ty is a power of two).
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    sh_mean[i * kThreads + threadIdx.x] = mean[i];
    sh_m2[i * kThreads + threadIdx.x] = m2[i];
  }
  sh_n[threadIdx.x] = n;
  __syncthreads();
  for (int off = geo.ty / 2; off > 0; off >>= 1) {
    if (u.ty_i < off) {
      const int o = threadIdx.x + off * geo.tx;
      const acc_t on = sh_n[o];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const Welford<acc_t> r = welford_merge(
            Welford<acc_t>{mean[i], m2[i], n},
            Welford<acc_t>{sh_mean[i * kThreads + o], sh_m2[i * kThreads + o], on});
        mean[i] = r.mean;
        m2[i] = r.m2;
        sh_mean[i * kThreads + threadIdx.x] = r.mean;
        sh_m2[i * kThreads + threadIdx.x] = r.m2;
      }
      n += on;
      sh_n[threadIdx.x] = n;
    }
    __syncthreads();
  }
  if (u.ty_i == 0 && u.active) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      out.write(u.batch * geo.C + u.col * VEC + i, u.split, geo.splits,
                Welford<acc_t>{mean[i], m2[i], n});
    }
  }
  out.finish();
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    row_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                       const RowGeometry geo, const ForwardStats<scalar_t> stats,
                       const Affine<scalar_t> affine, const Act<acc_type<scalar_t>> act) {
  using acc_t = acc_type<scalar_t>;
  constexpr int UNROLL = kRowUnroll<VEC>;
  stats.prologue();
  const RowUnit u = row_unit(geo);
  if (!u.active) return;
  acc_t mu[VEC], scale[VEC], shift[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const index_t c = u.col * VEC + i;
    acc_t rs;
    stats.get(u.batch * geo.C + c, c, mu[i], rs);
    scale[i] = rs * affine.gamma(c);
    shift[i] = affine.beta(c);
  }
  const index_t base = u.batch * geo.rows * geo.C + u.col * VEC;
  for (index_t r = u.begin + u.ty_i; r < u.end; r += static_cast<index_t>(geo.ty) * UNROLL) {
    Pack<scalar_t, VEC> v[UNROLL];
    int valid = 0;
#pragma unroll
    for (int k = 0; k < UNROLL; ++k) {
      const index_t rr = r + static_cast<index_t>(k) * geo.ty;
      if (rr < u.end) {
        v[k] = load_pack<true, VEC>(x + base + rr * geo.C);
        ++valid;
      }
    }
#pragma unroll
    for (int k = 0; k < UNROLL; ++k) {
      if (k < valid) {
        Pack<scalar_t, VEC> o;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const acc_t z = (static_cast<acc_t>(v[k].val[i]) - mu[i]) * scale[i] + shift[i];
          o.val[i] = static_cast<scalar_t>(act.forward(z));
        }
        store_pack<true, VEC>(y + base + (r + static_cast<index_t>(k) * geo.ty) * geo.C, o);
      }
    }
  }
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    row_backward_reduce_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ saved,
                               scalar_t* __restrict__ grad_in, const RowGeometry geo,
                               const BackwardArgs<scalar_t> args,
                               const BackwardSums<scalar_t> sums) {
  using acc_t = acc_type<scalar_t>;
  constexpr int UNROLL = kRowUnroll<VEC>;
  __shared__ acc_t sh_dz[VEC * kThreads];
  __shared__ acc_t sh_dzx[VEC * kThreads];
  const RowUnit u = row_unit(geo);
  acc_t sum_dz[VEC], sum_dzx[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) sum_dz[i] = sum_dzx[i] = acc_t(0);
  if (u.active) {
    BackwardMath<acc_t> m[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const index_t c = u.col * VEC + i;
      m[i] = args.math(u.batch * geo.C + c, c);
    }
    const index_t base = u.batch * geo.rows * geo.C + u.col * VEC;
    for (index_t r = u.begin + u.ty_i; r < u.end; r += static_cast<index_t>(geo.ty) * UNROLL) {
      Pack<scalar_t, VEC> g[UNROLL], s[UNROLL];
      int valid = 0;
#pragma unroll
      for (int k = 0; k < UNROLL; ++k) {
        const index_t rr = r + static_cast<index_t>(k) * geo.ty;
        if (rr < u.end) {
          g[k] = load_pack<true, VEC>(dy + base + rr * geo.C);
          s[k] = load_pack<true, VEC>(saved + base + rr * geo.C);
          ++valid;
        }
      }
#pragma unroll
      for (int k = 0; k < UNROLL; ++k) {
        if (k < valid) {
          acc_t dz[VEC];
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            acc_t xhat;
            m[i](static_cast<acc_t>(g[k].val[i]), static_cast<acc_t>(s[k].val[i]), dz[i], xhat);
            sum_dz[i] += dz[i];
            sum_dzx[i] += dz[i] * xhat;
          }
          if (grad_in != nullptr) {  // uniform branch
            Pack<scalar_t, VEC> o;
#pragma unroll
            for (int i = 0; i < VEC; ++i) o.val[i] = static_cast<scalar_t>(dz[i] * m[i].scale);
            store_pack<true, VEC>(grad_in + base + (r + static_cast<index_t>(k) * geo.ty) * geo.C, o);
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    sh_dz[i * kThreads + threadIdx.x] = sum_dz[i];
    sh_dzx[i * kThreads + threadIdx.x] = sum_dzx[i];
  }
  __syncthreads();
  for (int off = geo.ty / 2; off > 0; off >>= 1) {
    if (u.ty_i < off) {
      const int o = threadIdx.x + off * geo.tx;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        sum_dz[i] += sh_dz[i * kThreads + o];
        sum_dzx[i] += sh_dzx[i * kThreads + o];
        sh_dz[i * kThreads + threadIdx.x] = sum_dz[i];
        sh_dzx[i * kThreads + threadIdx.x] = sum_dzx[i];
      }
    }
    __syncthreads();
  }
  if (u.ty_i == 0 && u.active) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) sums.write(u.batch * geo.C + u.col * VEC + i, u.split, sum_dz[i], sum_dzx[i]);
  }
  sums.finish();
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    row_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ saved,
                        scalar_t* __restrict__ grad_in, const RowGeometry geo,
                        const BackwardArgs<scalar_t> args,
                        const acc_type<scalar_t>* __restrict__ totals,  // [2][batches * C]
                        acc_type<scalar_t> count) {
  using acc_t = acc_type<scalar_t>;
  constexpr int UNROLL = kRowUnroll<VEC>;
  const RowUnit u = row_unit(geo);
  if (!u.active) return;
  BackwardMath<acc_t> m[VEC];
  acc_t mean_dz[VEC], mean_dzx[VEC];
  const index_t groups = geo.batches * geo.C;
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const index_t c = u.col * VEC + i;
    const index_t g = u.batch * geo.C + c;
    m[i] = args.math(g, c);
    mean_dz[i] = totals[g] / count;
    mean_dzx[i] = totals[groups + g] / count;
  }
  const index_t base = u.batch * geo.rows * geo.C + u.col * VEC;
  for (index_t r = u.begin + u.ty_i; r < u.end; r += static_cast<index_t>(geo.ty) * UNROLL) {
    Pack<scalar_t, VEC> g[UNROLL], s[UNROLL];
    int valid = 0;
#pragma unroll
    for (int k = 0; k < UNROLL; ++k) {
      const index_t rr = r + static_cast<index_t>(k) * geo.ty;
      if (rr < u.end) {
        g[k] = load_pack<true, VEC>(dy + base + rr * geo.C);
        s[k] = load_pack<true, VEC>(saved + base + rr * geo.C);
        ++valid;
      }
    }
#pragma unroll
    for (int k = 0; k < UNROLL; ++k) {
      if (k < valid) {
        Pack<scalar_t, VEC> o;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          acc_t dz, xhat;
          m[i](static_cast<acc_t>(g[k].val[i]), static_cast<acc_t>(s[k].val[i]), dz, xhat);
          o.val[i] = static_cast<scalar_t>(m[i].scale * (dz - mean_dz[i] - xhat * mean_dzx[i]));
        }
        store_pack<true, VEC>(grad_in + base + (r + static_cast<index_t>(k) * geo.ty) * geo.C, o);
      }
    }
  }
}

// ===================================================== backward finalize
// One warp per channel (BackwardSums::merge_channel), or one block per channel
// when block_per_channel.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) backward_finalize_kernel(const BackwardSums<scalar_t> sums) {
  if (sums.block_per_channel) {  // uniform over the grid
    sums.merge_channel_block(blockIdx.x);
    return;
  }
  const index_t c = static_cast<index_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpSize;
  if (c >= sums.C) return;  // warp-uniform
  sums.merge_channel(c, threadIdx.x % kWarpSize);
}

// ============================================================ host side

// Blocks of `kernel` that fit on one SM, times the SM count: the grid size
// that fills the device in one wave. Cached per (device, kernel); only a
// performance hint, never needed for correctness.
template <typename Kernel>
index_t wave_blocks(Kernel kernel, int device) {
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, index_t> cache;
  const auto key = std::make_pair(device, reinterpret_cast<const void*>(kernel));
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  int sms = 0, per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  const index_t blocks = static_cast<index_t>(std::max(sms, 1)) * std::max(per_sm, 1);
  std::lock_guard<std::mutex> lock(mutex);
  cache[key] = blocks;
  return blocks;
}

unsigned int grid_size(index_t blocks) {
  TORCH_CHECK(blocks > 0 && blocks <= std::numeric_limits<int32_t>::max(),
              "gan_ext norm_act: tensor too large for one launch (", blocks, " blocks)");
  return static_cast<unsigned int>(blocks);
}

// Runs f(std::integral_constant<int, VEC>) with 128-bit vectors when `vectorize`,
// else with scalars.
template <typename scalar_t, typename F>
void with_vec(bool vectorize, F&& f) {
  constexpr int kVec = vec_size<scalar_t>();
  if (vectorize) {
    f(std::integral_constant<int, kVec>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// kMinAbsWeight rounded to the weight's dtype, as effective_weight() computes it.
double min_abs_weight_in(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return static_cast<float>(c10::Half(static_cast<float>(kMinAbsWeight)));
    case at::kBFloat16:
      return static_cast<float>(c10::BFloat16(static_cast<float>(kMinAbsWeight)));
    case at::kFloat:
      return static_cast<float>(kMinAbsWeight);
    default:
      return kMinAbsWeight;
  }
}

const at::Tensor* present(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? &*t : nullptr;
}

// The layout view of one (N, C, H, W) tensor in kernel_memory_format.
struct Layout {
  index_t N, C, HW;
  bool channels_last;  // use the row (NHWC) kernels
  bool per_sample;  // one group per (n, c) (instance statistics), else per channel
  bool legacy;      // GAN_EXT_CUDA_NORM_ACT=legacy (plan::cuda_norm_act_legacy)

  index_t groups() const { return per_sample ? N * C : C; }
  PlaneGeometry plane_plan(int vec, index_t wave) const {
    return per_sample ? plan_planes(N * C, 1, HW, C, vec, wave, legacy)
                      : plan_planes(C, N, HW, C, vec, wave, legacy);
  }
  RowGeometry row_plan(int vec, int unroll, index_t wave) const {
    return per_sample ? plan_rows(N, HW, C, vec, unroll, wave, legacy)
                      : plan_rows(1, N * HW, C, vec, unroll, wave, legacy);
  }
  index_t count() const { return per_sample ? HW : N * HW; }  // elements per group
  // The one-block-per-group kernels (plan::takes_group_blocks) take this call.
  bool group_blocks(int elem_size, bool input_stats) const {
    return plan::takes_group_blocks(groups(), count(), elem_size, channels_last, input_stats,
                                    legacy);
  }
  PlaneGeometry group_plan(int vec) const {
    return per_sample ? plan::plan_group_blocks(N * C, 1, HW, C, vec)
                      : plan::plan_group_blocks(C, N, HW, C, vec);
  }
  // Vector loads need the vectorized extent to divide evenly and aligned bases.
  bool vectorizable(int vec) const { return (channels_last ? C : HW) % vec == 0; }
};

template <typename scalar_t>
Affine<scalar_t> make_affine(const at::Tensor* weight, const at::Tensor* bias, bool clamp) {
  Affine<scalar_t> a;
  a.weight = weight ? weight->const_data_ptr() : nullptr;
  a.bias = bias ? bias->const_data_ptr() : nullptr;
  a.weight_is_float = weight && weight->scalar_type() == at::kFloat;
  a.bias_is_float = bias && bias->scalar_type() == at::kFloat;
  a.clamp_weight = clamp;
  a.min_abs_weight = static_cast<acc_type<scalar_t>>(
      min_abs_weight_in(weight ? weight->scalar_type() : at::kDouble));
  return a;
}

// The statistics outputs of a use_input_stats forward, unsplit (no partials,
// no block counter): what the split plans start from.
template <typename acc_t>
StatsOut<acc_t> stats_out(const at::Tensor& mean, const at::Tensor& var, const at::Tensor& invstd,
                          const Layout& lay, double eps) {
  StatsOut<acc_t> so{};
  so.mean = mean.mutable_data_ptr<acc_t>();
  so.var = var.mutable_data_ptr<acc_t>();
  so.invstd = invstd.mutable_data_ptr<acc_t>();
  so.partial = nullptr;
  so.partial_stride = 0;
  so.count = static_cast<acc_t>(lay.count());
  so.eps = static_cast<acc_t>(eps);
  so.blocks_done = nullptr;
  so.groups = lay.groups();
  so.splits = 1;
  return so;
}

// One-block-per-group forward: statistics, normalization and the running
// update in one launch.
template <typename scalar_t, int VEC>
void forward_group_blocks(const scalar_t* xp, scalar_t* yp, const at::Tensor& x, const Layout& lay,
                          const StatsOut<acc_type<scalar_t>>& so,
                          const RunningUpdate<scalar_t>& update, const Affine<scalar_t>& affine,
                          const Act<acc_type<scalar_t>>& act, cudaStream_t stream) {
  at::Tensor counter;
  unsigned int* blocks_done = nullptr;
  if (update.count != nullptr || update.mean != nullptr || update.var != nullptr) {
    counter = at::empty({1}, x.options().dtype(at::kInt));
    blocks_done = reinterpret_cast<unsigned int*>(counter.mutable_data_ptr<int32_t>());
    C10_CUDA_CHECK(cudaMemsetAsync(blocks_done, 0, sizeof(unsigned int), stream));
  }
  const PlaneGeometry geo = lay.group_plan(VEC);
  plane_group_forward_kernel<scalar_t, VEC><<<grid_size(plane_blocks(geo)), kThreads, 0, stream>>>(
      xp, yp, geo, so, update, blocks_done, affine, act);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The statistics pass: per-group mean/var/invstd into `so`, split over blocks
// by the plan (partials merged by the last block, or by stats_finalize_kernel
// on the legacy paths).
template <typename scalar_t, int VEC>
void forward_stats(const scalar_t* xp, const at::Tensor& mean, const Layout& lay,
                   StatsOut<acc_type<scalar_t>> so, int device, cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  const index_t groups = so.groups;
  at::Tensor partial;
  index_t splits = 1;
  // Partials (and, default paths, the block counter behind them) for a split plan.
  auto prepare = [&](index_t plan_splits) {
    splits = so.splits = plan_splits;
    if (splits == 1) return;
    const index_t n = 3 * groups * splits;
    partial = at::empty({n + (lay.legacy ? 0 : 1)}, mean.options());
    so.partial = partial.mutable_data_ptr<acc_t>();
    so.partial_stride = groups * splits;
    if (!lay.legacy) {
      so.blocks_done = reinterpret_cast<unsigned int*>(so.partial + n);
      C10_CUDA_CHECK(cudaMemsetAsync(so.blocks_done, 0, sizeof(unsigned int), stream));
    }
  };
  if (!lay.channels_last) {
    auto kernel = plane_stats_kernel<scalar_t, VEC>;
    const PlaneGeometry geo = lay.plane_plan(VEC, wave_blocks(kernel, device));
    prepare(geo.splits);
    kernel<<<grid_size(plane_blocks(geo)), kThreads, 0, stream>>>(xp, geo, so);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    auto kernel = row_stats_kernel<scalar_t, VEC>;
    const RowGeometry geo = lay.row_plan(VEC, kRowUnroll<VEC>, wave_blocks(kernel, device));
    prepare(geo.splits);
    kernel<<<grid_size(row_blocks(geo)), kThreads, 0, stream>>>(xp, geo, so);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (splits > 1 && lay.legacy) {
    stats_finalize_kernel<acc_t><<<grid_size(ceil_div(groups, kWarps)), kThreads, 0, stream>>>(
        so, groups, splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The normalize + affine + activation pass.
template <typename scalar_t, int VEC>
void forward_apply(const scalar_t* xp, scalar_t* yp, const Layout& lay,
                   const ForwardStats<scalar_t>& stats, const Affine<scalar_t>& affine,
                   const Act<acc_type<scalar_t>>& act, int device, cudaStream_t stream) {
  if (!lay.channels_last) {
    auto kernel = plane_forward_kernel<scalar_t, VEC>;
    const index_t wave = wave_blocks(kernel, device);
    const PlaneGeometry geo = lay.plane_plan(VEC, wave);
    kernel<<<grid_size(plane_blocks(geo)), kThreads, 0, stream>>>(xp, yp, geo, stats, affine, act);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    auto kernel = row_forward_kernel<scalar_t, VEC>;
    const index_t wave = wave_blocks(kernel, device);
    const RowGeometry geo = lay.row_plan(VEC, kRowUnroll<VEC>, wave);
    kernel<<<grid_size(row_blocks(geo)), kThreads, 0, stream>>>(xp, yp, geo, stats, affine, act);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename scalar_t>
void forward_impl(const at::Tensor& x, const at::Tensor& out, const Layout& lay,
                  const at::Tensor* weight, const at::Tensor* bias, bool use_input_stats,
                  const at::Tensor& mean, const at::Tensor& var, const at::Tensor& invstd,
                  double eps, int64_t activation, double negative_slope,
                  ForwardStats<scalar_t> stats) {
  using acc_t = acc_type<scalar_t>;
  constexpr int kVec = vec_size<scalar_t>();
  const int device = x.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vectorize = lay.vectorizable(kVec) && aligned(x.const_data_ptr()) &&
                         aligned(out.const_data_ptr());
  const Affine<scalar_t> affine =
      make_affine<scalar_t>(weight, bias, output_is_invertible(activation, negative_slope));
  const Act<acc_t> act{static_cast<int>(activation), static_cast<acc_t>(negative_slope)};
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = out.mutable_data_ptr<scalar_t>();

  with_vec<scalar_t>(vectorize, [&](auto vec_tag) {
    constexpr int VEC = decltype(vec_tag)::value;
    if (lay.group_blocks(sizeof(scalar_t), use_input_stats)) {
      forward_group_blocks<scalar_t, VEC>(xp, yp, x, lay, stats_out<acc_t>(mean, var, invstd, lay, eps),
                                          stats.update, affine, act, stream);
      return;
    }
    if (use_input_stats) {
      forward_stats<scalar_t, VEC>(xp, mean, lay, stats_out<acc_t>(mean, var, invstd, lay, eps),
                                   device, stream);
    }
    stats.mean = mean.const_data_ptr<acc_t>();
    stats.invstd = invstd.const_data_ptr<acc_t>();
    forward_apply<scalar_t, VEC>(xp, yp, lay, stats, affine, act, device, stream);
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& dy, const at::Tensor& saved, const at::Tensor& grad_in,
                   const Layout& lay, const at::Tensor* weight, const at::Tensor* bias,
                   const at::Tensor& mean, const at::Tensor& invstd, bool use_input_stats,
                   int64_t activation, double negative_slope, bool saved_is_output,
                   const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  using acc_t = acc_type<scalar_t>;
  constexpr int kVec = vec_size<scalar_t>();
  const int device = saved.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vectorize = lay.vectorizable(kVec) && aligned(dy.const_data_ptr()) &&
                         aligned(saved.const_data_ptr()) && aligned(grad_in.const_data_ptr());

  BackwardArgs<scalar_t> args;
  args.mean = mean.const_data_ptr<acc_t>();
  args.invstd = invstd.const_data_ptr<acc_t>();
  args.affine = make_affine<scalar_t>(weight, bias, output_is_invertible(activation, negative_slope));
  args.act = Act<acc_t>{static_cast<int>(activation), static_cast<acc_t>(negative_slope)};
  // Only used when saved_is_output, which requires negative_slope > 0.
  args.inv_slope = saved_is_output ? static_cast<acc_t>(1.0 / negative_slope) : acc_t(0);
  args.saved_is_output = saved_is_output;

  const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
  const scalar_t* sp = saved.const_data_ptr<scalar_t>();
  scalar_t* gip = grad_in.mutable_data_ptr<scalar_t>();
  const index_t groups = lay.groups();
  const index_t batches = lay.per_sample ? lay.N : 1;
  const acc_t count = static_cast<acc_t>(lay.count());
  // With running statistics grad_input needs no sums: the reduction writes it.
  scalar_t* reduce_writes = use_input_stats ? nullptr : gip;

  with_vec<scalar_t>(vectorize, [&](auto vec_tag) {
    constexpr int VEC = decltype(vec_tag)::value;
    if (lay.group_blocks(sizeof(scalar_t), use_input_stats)) {
      // Batch statistics: a block is a channel and writes its grads directly;
      // instance statistics: partials per (n, c), merged by the last block.
      BackwardSums<scalar_t> sums{};
      sums.grad_weight = grad_weight.mutable_data_ptr();
      sums.grad_bias = grad_bias.mutable_data_ptr();
      sums.grads_are_float = grad_weight.scalar_type() == at::kFloat;
      sums.C = lay.C;
      sums.batches = batches;
      sums.splits = 1;
      sums.direct = batches == 1;
      sums.block_per_channel = batches >= kWarpSize;
      at::Tensor partial;
      if (!sums.direct) {
        const index_t n = 2 * groups;
        partial = at::empty({n + 1}, mean.options());
        sums.partial = partial.mutable_data_ptr<acc_t>();
        sums.blocks_done = reinterpret_cast<unsigned int*>(sums.partial + n);
        C10_CUDA_CHECK(cudaMemsetAsync(sums.blocks_done, 0, sizeof(unsigned int), stream));
      }
      const PlaneGeometry geo = lay.group_plan(VEC);
      plane_group_backward_kernel<scalar_t, VEC><<<grid_size(plane_blocks(geo)), kThreads, 0, stream>>>(
          dyp, sp, gip, geo, args, sums, count);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    // ---- reduction pass, with grad_weight, grad_bias and per-group totals
    // (BackwardSums: in the reduction itself on the default paths where it can)
    at::Tensor partial, totals;
    if (use_input_stats) totals = at::empty({2 * groups}, mean.options());
    BackwardSums<scalar_t> sums{};
    sums.totals = use_input_stats ? totals.mutable_data_ptr<acc_t>() : nullptr;
    sums.grad_weight = grad_weight.mutable_data_ptr();
    sums.grad_bias = grad_bias.mutable_data_ptr();
    sums.grads_are_float = grad_weight.scalar_type() == at::kFloat;
    sums.C = lay.C;
    sums.batches = batches;
    bool finalize = false;  // backward_finalize_kernel after the reduction
    auto prepare = [&](index_t splits) {
      sums.splits = splits;
      sums.direct = !lay.legacy && batches == 1 && splits == 1;
      sums.block_per_channel = !lay.legacy && batches >= kWarpSize;
      if (sums.direct) return;
      const bool merge_in_reduction = !lay.legacy && lay.C <= kWarps;
      const index_t n = 2 * groups * splits;
      partial = at::empty({n + (merge_in_reduction ? 1 : 0)}, mean.options());
      sums.partial = partial.mutable_data_ptr<acc_t>();
      if (merge_in_reduction) {
        sums.blocks_done = reinterpret_cast<unsigned int*>(sums.partial + n);
        C10_CUDA_CHECK(cudaMemsetAsync(sums.blocks_done, 0, sizeof(unsigned int), stream));
      } else {
        finalize = true;
      }
    };
    if (!lay.channels_last) {
      auto kernel = plane_backward_reduce_kernel<scalar_t, VEC>;
      const index_t wave = wave_blocks(kernel, device);
      const PlaneGeometry geo = lay.plane_plan(VEC, wave);
      prepare(geo.splits);
      kernel<<<grid_size(plane_blocks(geo)), kThreads, 0, stream>>>(dyp, sp, reduce_writes, geo,
                                                                     args, sums);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      auto kernel = row_backward_reduce_kernel<scalar_t, VEC>;
      const index_t wave = wave_blocks(kernel, device);
      const RowGeometry geo = lay.row_plan(VEC, kRowUnroll<VEC>, wave);
      prepare(geo.splits);
      kernel<<<grid_size(row_blocks(geo)), kThreads, 0, stream>>>(dyp, sp, reduce_writes, geo,
                                                                   args, sums);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (finalize) {
      const index_t blocks = sums.block_per_channel ? lay.C : ceil_div(lay.C, kWarps);
      backward_finalize_kernel<scalar_t><<<grid_size(blocks), kThreads, 0, stream>>>(sums);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (!use_input_stats) return;
    // ---- grad_input
    const acc_t* tp = totals.const_data_ptr<acc_t>();
    if (!lay.channels_last) {
      auto kernel = plane_backward_kernel<scalar_t, VEC>;
      const index_t wave = wave_blocks(kernel, device);
      const PlaneGeometry geo = lay.plane_plan(VEC, wave);
      kernel<<<grid_size(plane_blocks(geo)), kThreads, 0, stream>>>(dyp, sp, gip, geo, args, tp, count);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      auto kernel = row_backward_kernel<scalar_t, VEC>;
      const index_t wave = wave_blocks(kernel, device);
      const RowGeometry geo = lay.row_plan(VEC, kRowUnroll<VEC>, wave);
      kernel<<<grid_size(row_blocks(geo)), kThreads, 0, stream>>>(dyp, sp, gip, geo, args, tp, count);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

void check_on_device(const at::Tensor& t, const char* name, const at::Tensor& ref,
                     const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on the same CUDA device as ",
                    ref_name, " (", ref.device(), "), got ", t.device());
}

// The update the forward's elementwise kernel performs (see RunningUpdate).
template <typename scalar_t>
RunningUpdate<scalar_t> make_running_update(const c10::optional<at::Tensor>& running_mean,
                                            const c10::optional<at::Tensor>& running_var,
                                            const c10::optional<at::Tensor>& num_batches_tracked,
                                            c10::optional<double> momentum, const at::Tensor& mean,
                                            const at::Tensor& var, const Layout& lay) {
  using acc_t = acc_type<scalar_t>;
  RunningUpdate<scalar_t> r{};
  const at::Tensor* rm = present(running_mean);
  const at::Tensor* rv = present(running_var);
  const at::Tensor* nbt = present(num_batches_tracked);
  r.batch_mean = mean.const_data_ptr<acc_t>();
  r.batch_var = var.const_data_ptr<acc_t>();
  r.mean = rm ? rm->mutable_data_ptr() : nullptr;
  r.var = rv ? rv->mutable_data_ptr() : nullptr;
  r.count = nbt ? nbt->mutable_data_ptr<int64_t>() : nullptr;
  r.mean_stride = rm ? rm->stride(0) : 0;
  r.var_stride = rv ? rv->stride(0) : 0;
  r.mean_is_float = rm && rm->scalar_type() == at::kFloat;
  r.var_is_float = rv && rv->scalar_type() == at::kFloat;
  r.cumulative = !momentum.has_value();
  r.momentum = momentum.value_or(0.0);
  r.unbias = static_cast<double>(lay.count()) / static_cast<double>(lay.count() - 1);
  r.C = lay.C;
  r.batches = lay.per_sample ? lay.N : 1;
  return r;
}

template <typename scalar_t>
RunningRead<scalar_t> make_running_read(const at::Tensor& running_mean,
                                        const at::Tensor& running_var, double eps,
                                        const at::Tensor& mean, const at::Tensor& var,
                                        const at::Tensor& invstd) {
  using acc_t = acc_type<scalar_t>;
  RunningRead<scalar_t> r;
  r.mean = running_mean.const_data_ptr();
  r.var = running_var.const_data_ptr();
  r.mean_stride = running_mean.stride(0);
  r.var_stride = running_var.stride(0);
  r.mean_is_float = running_mean.scalar_type() == at::kFloat;
  r.var_is_float = running_var.scalar_type() == at::kFloat;
  r.eps = static_cast<acc_t>(eps);
  r.out_mean = mean.mutable_data_ptr<acc_t>();
  r.out_var = var.mutable_data_ptr<acc_t>();
  r.out_invstd = invstd.mutable_data_ptr<acc_t>();
  r.C = running_mean.size(0);
  return r;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_act_cuda(
    const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
    const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& num_batches_tracked, bool use_input_stats, bool instance,
    c10::optional<double> momentum, double eps, int64_t activation, double negative_slope) {
  TORCH_CHECK_VALUE(input.is_cuda(), "input must be a CUDA tensor, got one on ", input.device());
  const auto [N, C, HW] = check_norm_act_args(input, weight, bias, running_mean, running_var,
                                              num_batches_tracked, use_input_stats, instance,
                                              momentum, eps, activation);
  // check_norm_act_args already requires every given parameter on input's device.
  c10::cuda::CUDAGuard guard(input.device());

  const at::MemoryFormat fmt = kernel_memory_format(input);
  const at::Tensor x = input.contiguous(fmt);
  at::Tensor out = at::empty(x.sizes(), x.options(), fmt);
  const at::ScalarType sd = stats_dtype(input);
  const at::TensorOptions stats_options = x.options().dtype(sd);

  const bool legacy = plan::cuda_norm_act_legacy();
  // Default paths: eval statistics are read (and the outputs written) in the kernel.
  const bool eval_in_kernel = !use_input_stats && !legacy && x.numel() > 0;
  at::Tensor mean, var, invstd;
  if (use_input_stats || eval_in_kernel) {
    const index_t groups = instance && use_input_stats ? N * C : C;
    mean = at::empty({groups}, stats_options);
    var = at::empty({groups}, stats_options);
    invstd = at::empty({groups}, stats_options);
  } else {
    // Copies (never aliases of the running buffers: outputs of a custom op must
    // not alias its inputs), in the statistics dtype.
    mean = running_mean->to(sd, /*non_blocking=*/false, /*copy=*/true).contiguous();
    var = running_var->to(sd, /*non_blocking=*/false, /*copy=*/true).contiguous();
    invstd = var.add(eps).rsqrt();
  }
  if (x.numel() == 0) {
    if (use_input_stats) {  // statistics of nothing, as torch.var_mean gives them
      mean.fill_(std::numeric_limits<double>::quiet_NaN());
      var.fill_(std::numeric_limits<double>::quiet_NaN());
      invstd.fill_(std::numeric_limits<double>::quiet_NaN());
      // Counted, but nothing to average: torch leaves the running statistics alone.
      if (const at::Tensor* nbt = present(num_batches_tracked)) nbt->add_(1);
    }
    return {out, mean, invstd, var};
  }

  const at::Tensor* w = present(weight);
  const at::Tensor* b = present(bias);
  const at::Tensor wc = w ? w->contiguous() : at::Tensor();
  const at::Tensor bc = b ? b->contiguous() : at::Tensor();
  const bool rows = plan::uses_rows(fmt == at::MemoryFormat::ChannelsLast, HW);
  const Layout lay{N, C, HW, rows, instance && use_input_stats, legacy};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gan_ext::norm_act", [&] {
    ForwardStats<scalar_t> stats{};
    if (use_input_stats) {
      stats.update = make_running_update<scalar_t>(running_mean, running_var, num_batches_tracked,
                                                   momentum, mean, var, lay);
    } else if (eval_in_kernel) {
      stats.running = make_running_read<scalar_t>(*running_mean, *running_var, eps, mean, var,
                                                  invstd);
    }
    forward_impl<scalar_t>(x, out, lay, w ? &wc : nullptr, b ? &bc : nullptr, use_input_stats, mean,
                           var, invstd, eps, activation, negative_slope, stats);
  });
  return {out, mean, invstd, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& saved, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& invstd,
    bool use_input_stats, bool instance, int64_t activation, double negative_slope,
    bool saved_is_output) {
  TORCH_CHECK_VALUE(saved.is_cuda(), "saved must be a CUDA tensor, got one on ", saved.device());
  check_norm_act_backward_args(grad_out, saved, weight, bias, mean, invstd, activation,
                               saved_is_output, negative_slope);
  check_on_device(grad_out, "grad_out", saved, "saved");
  check_on_device(mean, "mean", saved, "saved");
  check_on_device(invstd, "invstd", saved, "saved");
  TORCH_CHECK_TYPE(at::isFloatingType(mean.scalar_type()) && at::isFloatingType(invstd.scalar_type()),
                   "mean and invstd must be floating point tensors, got ", dtype_name(mean), " and ",
                   dtype_name(invstd));
  const index_t N = saved.size(0), C = saved.size(1), HW = saved.size(2) * saved.size(3);
  const bool per_sample = instance && use_input_stats;
  const index_t groups = per_sample ? N * C : C;
  TORCH_CHECK_VALUE(mean.size(0) == groups, "mean and invstd must have ", groups, " elements (",
                    per_sample ? "N*C: instance statistics" : "C: one per channel", "), got ",
                    mean.size(0));
  c10::cuda::CUDAGuard guard(saved.device());

  const at::MemoryFormat fmt = kernel_memory_format(saved);
  const at::Tensor s = saved.contiguous(fmt);
  const at::Tensor dy = grad_out.contiguous(fmt);  // grad_out may arrive in another layout
  at::Tensor grad_in = at::empty(s.sizes(), s.options(), fmt);
  const at::Tensor* w = present(weight);
  const at::Tensor* b = present(bias);
  const at::TensorOptions param_options =
      s.options().dtype(w ? w->scalar_type() : saved.scalar_type());
  if (s.numel() == 0) {
    return {grad_in, at::zeros({C}, param_options), at::zeros({C}, param_options)};
  }
  at::Tensor grad_weight = at::empty({C}, param_options);
  at::Tensor grad_bias = at::empty({C}, param_options);

  const at::ScalarType sd = stats_dtype(saved);
  const at::Tensor mean_c = mean.to(sd).contiguous();
  const at::Tensor invstd_c = invstd.to(sd).contiguous();
  const at::Tensor wc = w ? w->contiguous() : at::Tensor();
  const at::Tensor bc = b ? b->contiguous() : at::Tensor();
  const bool rows = plan::uses_rows(fmt == at::MemoryFormat::ChannelsLast, HW);
  const Layout lay{N, C, HW, rows, per_sample, plan::cuda_norm_act_legacy()};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, s.scalar_type(), "gan_ext::norm_act_backward", [&] {
        backward_impl<scalar_t>(dy, s, grad_in, lay, w ? &wc : nullptr, b ? &bc : nullptr, mean_c,
                                invstd_c, use_input_stats, activation, negative_slope,
                                saved_is_output, grad_weight, grad_bias);
      });
  return {grad_in, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("norm_act", &norm_act_cuda);
  m.impl("norm_act_backward", &norm_act_backward_cuda);
}

}  // namespace gan_ext
