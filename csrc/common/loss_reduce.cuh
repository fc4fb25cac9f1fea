// The reduction shared by the CUDA kernels of the loss ops (gan_loss,
// bce_with_logits, l1_loss): each op supplies its elementwise term as a policy
// struct `Op` with
//   static constexpr bool kPair, kGradX, kGradY;  // reads y; writes gx; writes gy
//   template <typename scalar_t> static __device__ acc_type<scalar_t>
//       eval(const Segment<scalar_t>&, acc x, acc y, acc& gx, acc& gy);  // f(x, y)
// evaluated in opmath, and calls run_loss.
//
// Every loss is one reduction launch and one finalize launch, or, when each
// segment fits one block (the discriminator logits of a GAN step), one launch:
//   loss_reduce_kernel: up to two segments (two tensors, or two pairs) in one
//     grid; blocks [0, s0.blocks) reduce segment 0, the rest segment 1. Each
//     thread walks 16-byte "logical vectors" of its segment grid-stride,
//     accumulating in opmath (and, in the *_with_grad forms, writing the
//     gradients in the same pass); the block sums its threads in a fixed tree
//     and writes one double partial.
//   loss_finalize_kernel: one block adds each segment's partials in double in a
//     fixed order and writes w0 * (S0 * c0) + w1 * (S1 * c1), c =
//     reduction_scale(numel, reduction) (as the CPU kernels), as the 0-dim loss.
//   loss_one_block_kernel: both segments in one block, each summed as its
//     single loss_reduce_kernel block would, combined as the finalize does.
// Deterministic: no atomics, and the partition depends only on the element
// count and the dtype (not on the device, nor on the data's alignment: an
// unaligned tensor is read with scalar loads in the same order), so a result
// is bitwise reproducible across runs and GPUs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/device_common.cuh"
#include "common/losses.h"

namespace gan_ext {
namespace {

constexpr index_t kItems = 4;        // logical vectors per thread before the grid stops growing
constexpr index_t kMaxBlocks = 2048;  // per segment of a reduction (fixed: no device query)
constexpr index_t kMaxElementwiseBlocks = 8192;

// One tensor (gan_loss) or pair (bce_with_logits, l1_loss) of a reduction, with
// the blocks given to it.
template <typename scalar_t>
struct Segment {
  using acc_t = acc_type<scalar_t>;
  const scalar_t* x;
  const scalar_t* y;  // target of a pair, unused for one tensor
  scalar_t* gx;       // df/dx * scale, or nullptr
  scalar_t* gy;       // d f / d y * scale (bce_with_logits), or nullptr
  index_t n;          // elements
  index_t blocks;     // blocks of the grid reducing this segment (0 when n == 0)
  int term;           // the op's term code (gan_loss's Term), unused by pairs
  acc_t label;        // gan_loss only
  acc_t gscale;       // reduction_scale(n, reduction) in opmath
};

// This thread's part of the sum of f over segment s, as a thread of the
// segment's block `block` (of s.blocks; 0 for an empty segment, whose sum is
// 0). Gradients, when requested, are written in the same pass (element e of
// gx/gy belongs to element e of x).
template <typename scalar_t, typename Op, bool Aligned>
__device__ __forceinline__ acc_type<scalar_t> thread_sum(const Segment<scalar_t>& s,
                                                         index_t block) {
  using acc_t = acc_type<scalar_t>;
  constexpr int VEC = vec_size<scalar_t>();
  constexpr bool kPair = Op::kPair;
  const index_t nvec = s.n / VEC;
  const index_t stride = s.blocks * kThreads;
  const bool write_gx = Op::kGradX && s.gx != nullptr;
  const bool write_gy = Op::kGradY && s.gy != nullptr;

  acc_t sum = acc_t(0);
  for (index_t v = block * kThreads + threadIdx.x; v < nvec; v += stride) {
    const index_t e = v * VEC;
    const Pack<scalar_t, VEC> xv = load_pack<Aligned, VEC>(s.x + e);
    Pack<scalar_t, VEC> yv;
    if constexpr (kPair) yv = load_pack<Aligned, VEC>(s.y + e);
    Pack<scalar_t, VEC> gxv, gyv;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      acc_t gx, gy;
      const acc_t y = kPair ? static_cast<acc_t>(yv.val[i]) : acc_t(0);
      sum += Op::eval(s, static_cast<acc_t>(xv.val[i]), y, gx, gy);
      gxv.val[i] = static_cast<scalar_t>(gx);
      gyv.val[i] = static_cast<scalar_t>(gy);
    }
    if (write_gx) store_pack<Aligned, VEC>(s.gx + e, gxv);
    if (write_gy) store_pack<Aligned, VEC>(s.gy + e, gyv);
  }
  // The last n % VEC elements: the segment's first block, one per thread.
  if (block == 0) {
    const index_t e = nvec * VEC + threadIdx.x;
    if (e < s.n) {
      acc_t gx, gy;
      const acc_t y = kPair ? static_cast<acc_t>(s.y[e]) : acc_t(0);
      sum += Op::eval(s, static_cast<acc_t>(s.x[e]), y, gx, gy);
      if (write_gx) s.gx[e] = static_cast<scalar_t>(gx);
      if (write_gy) s.gy[e] = static_cast<scalar_t>(gy);
    }
  }
  return sum;
}

// Partial sums of f over up to two segments (see the header comment). Writes
// partial[blockIdx.x] as double.
template <typename scalar_t, typename Op, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    loss_reduce_kernel(const Segment<scalar_t> s0, const Segment<scalar_t> s1,
                       double* __restrict__ partial) {
  const bool first = static_cast<index_t>(blockIdx.x) < s0.blocks;
  const index_t block = first ? static_cast<index_t>(blockIdx.x)
                              : static_cast<index_t>(blockIdx.x) - s0.blocks;
  // A copy: a reference to one of two kernel parameters would be a stack frame.
  const Segment<scalar_t> s = first ? s0 : s1;
  const auto sum = block_sum(thread_sum<scalar_t, Op, Aligned>(s, block));
  if (threadIdx.x == 0) partial[blockIdx.x] = static_cast<double>(sum);
}

// One term of the final sum: weight * (sum * scale).
struct Combine {
  double weight;
  double scale;  // reduction_scale(numel, reduction): 1/numel for mean, 1 for sum
};

// out = w0 * (a * c0) [+ w1 * (b * c1)]: the one rounding both forms share.
template <typename scalar_t>
__device__ __forceinline__ void write_loss(double a, double b, const Combine& c0,
                                           const Combine& c1, bool two, scalar_t* out) {
  double r = c0.weight * (a * c0.scale);
  if (two) r += c1.weight * (b * c1.scale);
  out[0] = from_double<scalar_t>(r);
}

// out from the partials: each segment's partials summed in double in a fixed
// order. One block.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    loss_finalize_kernel(const double* __restrict__ partial, index_t n0, index_t n1,
                         const Combine c0, const Combine c1, bool two,
                         scalar_t* __restrict__ out) {
  double a = 0.0, b = 0.0;
  for (index_t i = threadIdx.x; i < n0; i += kThreads) a += partial[i];
  for (index_t i = threadIdx.x; i < n1; i += kThreads) b += partial[n0 + i];
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) write_loss(a, b, c0, c1, two, out);
}

// Both segments (s.blocks <= 1 each) in one launch: the same per-segment sums
// as loss_reduce_kernel's single block for each, combined as
// loss_finalize_kernel does, so the loss has the value of the two-launch form
// (the finalize's + 0.0 aside, which turns a -0 sum into +0).
template <typename scalar_t, typename Op, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    loss_one_block_kernel(const Segment<scalar_t> s0, const Segment<scalar_t> s1,
                          const Combine c0, const Combine c1, bool two,
                          scalar_t* __restrict__ out) {
  const double a = static_cast<double>(block_sum(thread_sum<scalar_t, Op, Aligned>(s0, 0)));
  const double b = static_cast<double>(block_sum(thread_sum<scalar_t, Op, Aligned>(s1, 0)));
  if (threadIdx.x == 0) write_loss(a, b, c0, c1, two, out);
}

// ------------------------------------------------------------ host side
// Blocks reducing n elements: a function of (n, dtype) only, so the
// summation order does not depend on the device.
template <typename scalar_t>
index_t reduce_blocks(index_t n) {
  if (n == 0) return 0;
  const index_t nvec = n / vec_size<scalar_t>();
  return std::clamp<index_t>(ceil_div(nvec, kThreads * kItems), 1, kMaxBlocks);
}

Combine combine(index_t n, int64_t reduction, double weight = 1.0) {
  return {weight, reduction_scale(n, reduction)};
}

// Runs the reduction over one or two segments (s1.n == 0 and !two for one) and
// writes the combined 0-dim loss into `out`.
template <typename scalar_t, typename Op>
void run_loss(Segment<scalar_t> s0, Segment<scalar_t> s1, Combine c0, Combine c1, bool two,
              at::Tensor& out) {
  s0.blocks = reduce_blocks<scalar_t>(s0.n);
  s1.blocks = two ? reduce_blocks<scalar_t>(s1.n) : 0;
  const index_t blocks = s0.blocks + s1.blocks;
  if (blocks == 0) {  // only empty tensors (reduction='sum'): the loss is 0
    out.zero_();
    return;
  }
  const bool al = aligned(s0.x) && aligned(s0.y) && aligned(s0.gx) && aligned(s0.gy) &&
                  aligned(s1.x) && aligned(s1.y) && aligned(s1.gx) && aligned(s1.gy);
  auto stream = at::cuda::getCurrentCUDAStream();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  if (s0.blocks <= 1 && s1.blocks <= 1) {
    // Small losses are launch-bound: the finalize launch would cost more than
    // one block reducing both segments in turn.
    if (al) {
      loss_one_block_kernel<scalar_t, Op, true><<<1, kThreads, 0, stream>>>(s0, s1, c0, c1, two, op);
    } else {
      loss_one_block_kernel<scalar_t, Op, false><<<1, kThreads, 0, stream>>>(s0, s1, c0, c1, two, op);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  at::Tensor partial = at::empty({blocks}, out.options().dtype(at::kDouble));
  double* pp = partial.mutable_data_ptr<double>();
  if (al) {
    loss_reduce_kernel<scalar_t, Op, true>
        <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, pp);
  } else {
    loss_reduce_kernel<scalar_t, Op, false>
        <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, pp);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  loss_finalize_kernel<scalar_t><<<1, kThreads, 0, stream>>>(pp, s0.blocks, s1.blocks, c0, c1,
                                                             two, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
Segment<scalar_t> pair_segment(const at::Tensor& x, const at::Tensor& y, at::Tensor* gx,
                               at::Tensor* gy, int64_t reduction) {
  using acc_t = acc_type<scalar_t>;
  Segment<scalar_t> s{};
  s.x = x.const_data_ptr<scalar_t>();
  s.y = y.const_data_ptr<scalar_t>();
  s.gx = gx != nullptr ? gx->mutable_data_ptr<scalar_t>() : nullptr;
  s.gy = gy != nullptr ? gy->mutable_data_ptr<scalar_t>() : nullptr;
  s.n = x.numel();
  s.blocks = 0;
  s.term = 0;         // unused
  s.label = acc_t(0);  // unused
  s.gscale = static_cast<acc_t>(reduction_scale(x.numel(), reduction));
  return s;
}

}  // namespace
}  // namespace gan_ext
