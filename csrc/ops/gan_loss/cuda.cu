// CUDA kernels of the loss ops: d_loss, g_loss, bce_with_logits, l1_loss,
// cycle_l1_loss (each plain and, where the schema has one, *_with_grad),
// l1_loss_backward and scale_loss_grads.
//
// Semantics: gan_ext/reference.py; the elementwise terms are the shared
// C10_HOST_DEVICE functions of csrc/losses.h, evaluated in opmath.
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
// l1_loss_backward and scale_loss_grads (the backward of the *_with_grad
// losses: two saved gradients times the 0-dim grad_output, read on the device)
// are elementwise kernels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
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
#include <tuple>
#include <type_traits>
#include <utility>

#include "device_common.cuh"
#include "losses.h"

namespace gan_ext {
namespace {

constexpr index_t kItems = 4;        // logical vectors per thread before the grid stops growing
constexpr index_t kMaxBlocks = 2048;  // per segment of a reduction (fixed: no device query)
constexpr index_t kMaxElementwiseBlocks = 8192;

// ------------------------------------------------------------ loss terms
enum class Kind : int {
  Gan = 0,  // apply_term(term, x, label): d_loss / g_loss
  Bce = 1,  // bce_term(x, y): bce_with_logits
  L1 = 2,   // |x - y|: l1_loss / cycle_l1_loss (no gradients in the forward)
};

// One tensor (Gan) or pair (Bce, L1) of a reduction, with the blocks given to it.
template <typename scalar_t>
struct Segment {
  using acc_t = acc_type<scalar_t>;
  const scalar_t* x;
  const scalar_t* y;  // target (Bce, L1), unused for Gan
  scalar_t* gx;       // df/dx * scale, or nullptr
  scalar_t* gy;       // Bce only: -x * scale, or nullptr
  index_t n;          // elements
  index_t blocks;     // blocks of the grid reducing this segment (0 when n == 0)
  Term term;          // Gan only
  acc_t label;        // Gan only
  acc_t gscale;       // reduction_scale(n, reduction) in opmath
};

// f(x, y) of one element; writes the gradients (in opmath) when the kind has them.
template <Kind K, typename scalar_t>
__device__ __forceinline__ acc_type<scalar_t> eval_term(const Segment<scalar_t>& s,
                                                        acc_type<scalar_t> x,
                                                        acc_type<scalar_t> y,
                                                        acc_type<scalar_t>& gx,
                                                        acc_type<scalar_t>& gy) {
  using acc_t = acc_type<scalar_t>;
  if constexpr (K == Kind::Gan) {
    acc_t f, df;
    apply_term<acc_t>(s.term, x, s.label, f, df);
    gx = df * s.gscale;
    gy = acc_t(0);
    return f;
  } else if constexpr (K == Kind::Bce) {
    acc_t f, df;
    bce_term<acc_t>(x, y, f, df);
    gx = df * s.gscale;
    gy = -x * s.gscale;
    return f;
  } else {
    gx = acc_t(0);
    gy = acc_t(0);
    return std::abs(x - y);
  }
}

// This thread's part of the sum of f over segment s, as a thread of the
// segment's block `block` (of s.blocks; 0 for an empty segment, whose sum is
// 0). Gradients, when requested, are written in the same pass (element e of
// gx/gy belongs to element e of x).
template <typename scalar_t, Kind K, bool Aligned>
__device__ __forceinline__ acc_type<scalar_t> thread_sum(const Segment<scalar_t>& s,
                                                         index_t block) {
  using acc_t = acc_type<scalar_t>;
  constexpr int VEC = vec_size<scalar_t>();
  constexpr bool kPair = K != Kind::Gan;
  const index_t nvec = s.n / VEC;
  const index_t stride = s.blocks * kThreads;
  const bool write_gx = K != Kind::L1 && s.gx != nullptr;
  const bool write_gy = K == Kind::Bce && s.gy != nullptr;

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
      sum += eval_term<K>(s, static_cast<acc_t>(xv.val[i]), y, gx, gy);
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
      sum += eval_term<K>(s, static_cast<acc_t>(s.x[e]), y, gx, gy);
      if (write_gx) s.gx[e] = static_cast<scalar_t>(gx);
      if (write_gy) s.gy[e] = static_cast<scalar_t>(gy);
    }
  }
  return sum;
}

// Partial sums of f over up to two segments (see the header comment). Writes
// partial[blockIdx.x] as double.
template <typename scalar_t, Kind K, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    loss_reduce_kernel(const Segment<scalar_t> s0, const Segment<scalar_t> s1,
                       double* __restrict__ partial) {
  const bool first = static_cast<index_t>(blockIdx.x) < s0.blocks;
  const index_t block = first ? static_cast<index_t>(blockIdx.x)
                              : static_cast<index_t>(blockIdx.x) - s0.blocks;
  // A copy: a reference to one of two kernel parameters would be a stack frame.
  const Segment<scalar_t> s = first ? s0 : s1;
  const auto sum = block_sum(thread_sum<scalar_t, K, Aligned>(s, block));
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
template <typename scalar_t, Kind K, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    loss_one_block_kernel(const Segment<scalar_t> s0, const Segment<scalar_t> s1,
                          const Combine c0, const Combine c1, bool two,
                          scalar_t* __restrict__ out) {
  const double a = static_cast<double>(block_sum(thread_sum<scalar_t, K, Aligned>(s0, 0)));
  const double b = static_cast<double>(block_sum(thread_sum<scalar_t, K, Aligned>(s1, 0)));
  if (threadIdx.x == 0) write_loss(a, b, c0, c1, two, out);
}

// ---------------------------------------------------------- l1 backward
// sign(d) * c with sign(0) = 0; as the CPU kernel, a NaN difference gives 0.
template <typename acc_t>
__device__ __forceinline__ acc_t signed_coef(acc_t d, acc_t c) {
  return d > acc_t(0) ? c : (d < acc_t(0) ? -c : acc_t(0));
}

// g = weight * grad * scale * sign(x - y); gi = g, gt = -g (each optional).
template <typename scalar_t, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    l1_backward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                       scalar_t* __restrict__ gi, scalar_t* __restrict__ gt, index_t n,
                       const void* __restrict__ grad, ScalarKind grad_kind, double weight,
                       double scale) {
  using acc_t = acc_type<scalar_t>;
  constexpr int VEC = vec_size<scalar_t>();
  const acc_t c = static_cast<acc_t>(weight * load_scalar(grad, grad_kind, 0) * scale);
  const index_t nvec = n / VEC;
  const index_t tid = static_cast<index_t>(blockIdx.x) * kThreads + threadIdx.x;
  const index_t stride = static_cast<index_t>(gridDim.x) * kThreads;
  for (index_t v = tid; v < nvec; v += stride) {
    const index_t e = v * VEC;
    const Pack<scalar_t, VEC> xv = load_pack<Aligned, VEC>(x + e);
    const Pack<scalar_t, VEC> yv = load_pack<Aligned, VEC>(y + e);
    Pack<scalar_t, VEC> giv, gtv;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const acc_t g = signed_coef(static_cast<acc_t>(xv.val[i]) - static_cast<acc_t>(yv.val[i]), c);
      giv.val[i] = static_cast<scalar_t>(g);
      gtv.val[i] = static_cast<scalar_t>(-g);
    }
    if (gi != nullptr) store_pack<Aligned, VEC>(gi + e, giv);
    if (gt != nullptr) store_pack<Aligned, VEC>(gt + e, gtv);
  }
  const index_t e = nvec * VEC + tid;  // the last n % VEC elements
  if (e < n) {
    const acc_t g = signed_coef(static_cast<acc_t>(x[e]) - static_cast<acc_t>(y[e]), c);
    if (gi != nullptr) gi[e] = static_cast<scalar_t>(g);
    if (gt != nullptr) gt[e] = static_cast<scalar_t>(-g);
  }
}

// ------------------------------------------------- scale_loss_grads
// One saved gradient of a scale_loss_grads launch, with the blocks given to it.
template <typename scalar_t>
struct ScaleSegment {
  const scalar_t* in;
  scalar_t* out;
  index_t n;
  index_t blocks;  // 0 when absent or empty
};

// out = in * grad over up to two segments (blocks [0, s0.blocks) scale segment
// 0), each product in opmath as at::mul computes it.
template <typename scalar_t, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    scale_grads_kernel(const ScaleSegment<scalar_t> s0, const ScaleSegment<scalar_t> s1,
                       const scalar_t* __restrict__ grad) {
  using acc_t = acc_type<scalar_t>;
  constexpr int VEC = vec_size<scalar_t>();
  const bool first = static_cast<index_t>(blockIdx.x) < s0.blocks;
  const ScaleSegment<scalar_t> s = first ? s0 : s1;
  const index_t block = first ? static_cast<index_t>(blockIdx.x)
                              : static_cast<index_t>(blockIdx.x) - s0.blocks;
  const acc_t g = static_cast<acc_t>(grad[0]);
  const index_t nvec = s.n / VEC;
  const index_t tid = block * kThreads + threadIdx.x;
  const index_t stride = s.blocks * kThreads;
  for (index_t v = tid; v < nvec; v += stride) {
    const index_t e = v * VEC;
    Pack<scalar_t, VEC> p = load_pack<Aligned, VEC>(s.in + e);
#pragma unroll
    for (int i = 0; i < VEC; ++i) p.val[i] = static_cast<scalar_t>(static_cast<acc_t>(p.val[i]) * g);
    store_pack<Aligned, VEC>(s.out + e, p);
  }
  const index_t e = nvec * VEC + tid;  // the last n % VEC elements
  if (e < s.n) s.out[e] = static_cast<scalar_t>(static_cast<acc_t>(s.in[e]) * g);
}

// ============================================================ host side

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
template <typename scalar_t, Kind K>
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
      loss_one_block_kernel<scalar_t, K, true><<<1, kThreads, 0, stream>>>(s0, s1, c0, c1, two, op);
    } else {
      loss_one_block_kernel<scalar_t, K, false><<<1, kThreads, 0, stream>>>(s0, s1, c0, c1, two, op);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  at::Tensor partial = at::empty({blocks}, out.options().dtype(at::kDouble));
  double* pp = partial.mutable_data_ptr<double>();
  if (al) {
    loss_reduce_kernel<scalar_t, K, true>
        <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, pp);
  } else {
    loss_reduce_kernel<scalar_t, K, false>
        <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, pp);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  loss_finalize_kernel<scalar_t><<<1, kThreads, 0, stream>>>(pp, s0.blocks, s1.blocks, c0, c1,
                                                             two, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
Segment<scalar_t> gan_segment(const at::Tensor& x, at::Tensor* grad, Term term, double label,
                              int64_t reduction) {
  using acc_t = acc_type<scalar_t>;
  Segment<scalar_t> s{};
  s.x = x.const_data_ptr<scalar_t>();
  s.y = nullptr;
  s.gx = grad != nullptr ? grad->mutable_data_ptr<scalar_t>() : nullptr;
  s.gy = nullptr;
  s.n = x.numel();
  s.blocks = 0;
  s.term = term;
  s.label = static_cast<acc_t>(label);
  s.gscale = static_cast<acc_t>(reduction_scale(x.numel(), reduction));
  return s;
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
  s.term = Term::BCE;  // unused
  s.label = acc_t(0);  // unused
  s.gscale = static_cast<acc_t>(reduction_scale(x.numel(), reduction));
  return s;
}

// ------------------------------------------------------------------ d_loss
std::tuple<at::Tensor, at::Tensor, at::Tensor> d_loss_impl(const at::Tensor& real_logits,
                                                           const at::Tensor& fake_logits,
                                                           int64_t mode, double real_label,
                                                           double fake_label, int64_t reduction,
                                                           bool with_grad) {
  check_d_loss_args(real_logits, fake_logits, mode, real_label, fake_label, reduction);
  check_cuda(real_logits, "real_logits");
  c10::cuda::CUDAGuard guard(real_logits.device());
  const DTerms terms = d_loss_terms(mode, real_label, fake_label);
  const at::Tensor real = as_dense(real_logits);
  const at::Tensor fake = as_dense(fake_logits);
  at::Tensor loss = at::empty({}, real_logits.options());
  at::Tensor grad_real, grad_fake;
  if (with_grad) {
    grad_real = at::empty_like(real);
    grad_fake = at::empty_like(fake);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "gan_ext::d_loss", [&] {
    const auto s0 = gan_segment<scalar_t>(real, with_grad ? &grad_real : nullptr, terms.real,
                                          terms.real_label, reduction);
    const auto s1 = gan_segment<scalar_t>(fake, with_grad ? &grad_fake : nullptr, terms.fake,
                                          terms.fake_label, reduction);
    run_loss<scalar_t, Kind::Gan>(s0, s1, combine(real.numel(), reduction),
                                  combine(fake.numel(), reduction), /*two=*/true, loss);
  });
  return {loss, grad_real, grad_fake};
}

at::Tensor d_loss_cuda(const at::Tensor& real_logits, const at::Tensor& fake_logits, int64_t mode,
                       double real_label, double fake_label, int64_t reduction) {
  return std::get<0>(
      d_loss_impl(real_logits, fake_logits, mode, real_label, fake_label, reduction, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> d_loss_with_grad_cuda(
    const at::Tensor& real_logits, const at::Tensor& fake_logits, int64_t mode, double real_label,
    double fake_label, int64_t reduction) {
  return d_loss_impl(real_logits, fake_logits, mode, real_label, fake_label, reduction, true);
}

// ------------------------------------------------------------------ g_loss
std::tuple<at::Tensor, at::Tensor> g_loss_impl(const at::Tensor& fake_logits, int64_t mode,
                                               double real_label, double fake_label,
                                               int64_t reduction, bool with_grad) {
  check_g_loss_args(fake_logits, mode, real_label, fake_label, reduction);
  check_cuda(fake_logits, "fake_logits");
  c10::cuda::CUDAGuard guard(fake_logits.device());
  const std::pair<Term, double> tl = g_loss_term(mode, real_label, fake_label);
  const Term term = tl.first;
  const double label = tl.second;
  const at::Tensor fake = as_dense(fake_logits);
  at::Tensor loss = at::empty({}, fake_logits.options());
  at::Tensor grad;
  if (with_grad) grad = at::empty_like(fake);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fake.scalar_type(), "gan_ext::g_loss", [&] {
    const auto s0 =
        gan_segment<scalar_t>(fake, with_grad ? &grad : nullptr, term, label, reduction);
    Segment<scalar_t> none{};
    run_loss<scalar_t, Kind::Gan>(s0, none, combine(fake.numel(), reduction), Combine{0.0, 1.0},
                                  /*two=*/false, loss);
  });
  return {loss, grad};
}

at::Tensor g_loss_cuda(const at::Tensor& fake_logits, int64_t mode, double real_label,
                       double fake_label, int64_t reduction) {
  return std::get<0>(g_loss_impl(fake_logits, mode, real_label, fake_label, reduction, false));
}

std::tuple<at::Tensor, at::Tensor> g_loss_with_grad_cuda(const at::Tensor& fake_logits,
                                                         int64_t mode, double real_label,
                                                         double fake_label, int64_t reduction) {
  return g_loss_impl(fake_logits, mode, real_label, fake_label, reduction, true);
}

// --------------------------------------------------------- bce_with_logits
std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_impl(const at::Tensor& input,
                                                        const at::Tensor& target,
                                                        int64_t reduction, bool with_grad,
                                                        bool grad_target) {
  check_pair_args(input, "input", target, "target", reduction);
  check_cuda(input, "input");
  c10::cuda::CUDAGuard guard(input.device());
  const std::pair<at::Tensor, at::Tensor> dense_x = as_dense_pair(input, target);
  const at::Tensor& x = dense_x.first;
  const at::Tensor& y = dense_x.second;
  at::Tensor loss = at::empty({}, input.options());
  at::Tensor gx, gy;
  if (with_grad) {
    gx = at::empty_like(x);
    gy = grad_target ? at::empty_like(y) : at::empty({0}, input.options());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gan_ext::bce_with_logits", [&] {
    const auto s0 = pair_segment<scalar_t>(x, y, with_grad ? &gx : nullptr,
                                           with_grad && grad_target ? &gy : nullptr, reduction);
    Segment<scalar_t> none{};
    run_loss<scalar_t, Kind::Bce>(s0, none, combine(x.numel(), reduction), Combine{0.0, 1.0},
                                  /*two=*/false, loss);
  });
  return {loss, gx, gy};
}

at::Tensor bce_with_logits_cuda(const at::Tensor& input, const at::Tensor& target,
                                int64_t reduction) {
  return std::get<0>(bce_impl(input, target, reduction, false, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_with_logits_with_grad_cuda(
    const at::Tensor& input, const at::Tensor& target, int64_t reduction, bool grad_target) {
  return bce_impl(input, target, reduction, true, grad_target);
}

// ------------------------------------------------------------------ l1
at::Tensor l1_loss_cuda(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_pair_args(input, "input", target, "target", reduction);
  check_cuda(input, "input");
  c10::cuda::CUDAGuard guard(input.device());
  const std::pair<at::Tensor, at::Tensor> dense_x = as_dense_pair(input, target);
  const at::Tensor& x = dense_x.first;
  const at::Tensor& y = dense_x.second;
  at::Tensor loss = at::empty({}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gan_ext::l1_loss", [&] {
    const auto s0 = pair_segment<scalar_t>(x, y, nullptr, nullptr, reduction);
    Segment<scalar_t> none{};
    run_loss<scalar_t, Kind::L1>(s0, none, combine(x.numel(), reduction), Combine{0.0, 1.0},
                                 /*two=*/false, loss);
  });
  return loss;
}

at::Tensor cycle_l1_loss_cuda(const at::Tensor& input1, const at::Tensor& target1,
                              const at::Tensor& input2, const at::Tensor& target2, double weight1,
                              double weight2, int64_t reduction) {
  check_pair_args(input1, "input1", target1, "target1", reduction);
  check_pair_args(input2, "input2", target2, "target2", reduction);
  check_same_device(input1, "input1", input2, "input2");
  check_same_dtype(input1, "input1", input2, "input2");
  check_cuda(input1, "input1");
  c10::cuda::CUDAGuard guard(input1.device());
  const std::pair<at::Tensor, at::Tensor> dense_x1 = as_dense_pair(input1, target1);
  const at::Tensor& x1 = dense_x1.first;
  const at::Tensor& y1 = dense_x1.second;
  const std::pair<at::Tensor, at::Tensor> dense_x2 = as_dense_pair(input2, target2);
  const at::Tensor& x2 = dense_x2.first;
  const at::Tensor& y2 = dense_x2.second;
  at::Tensor loss = at::empty({}, input1.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "gan_ext::cycle_l1_loss", [&] {
    const auto s0 = pair_segment<scalar_t>(x1, y1, nullptr, nullptr, reduction);
    const auto s1 = pair_segment<scalar_t>(x2, y2, nullptr, nullptr, reduction);
    run_loss<scalar_t, Kind::L1>(s0, s1, combine(x1.numel(), reduction, weight1),
                                 combine(x2.numel(), reduction, weight2), /*two=*/true, loss);
  });
  return loss;
}

std::tuple<at::Tensor, at::Tensor> l1_loss_backward_cuda(const at::Tensor& grad,
                                                         const at::Tensor& input,
                                                         const at::Tensor& target, double weight,
                                                         int64_t reduction, bool grad_input,
                                                         bool grad_target) {
  check_pair_args(input, "input", target, "target", reduction);
  check_cuda(input, "input");
  TORCH_CHECK_VALUE(grad.numel() == 1, "grad must be a 0-dim tensor (the gradient of the loss), got shape ",
                    grad.sizes());
  check_same_device(grad, "grad", input, "input");
  const ScalarKind grad_kind = scalar_kind(grad, "grad");
  c10::cuda::CUDAGuard guard(input.device());
  const std::pair<at::Tensor, at::Tensor> dense_x = as_dense_pair(input, target);
  const at::Tensor& x = dense_x.first;
  const at::Tensor& y = dense_x.second;
  at::Tensor gi = grad_input ? at::empty_like(x) : at::empty({0}, input.options());
  at::Tensor gt = grad_target ? at::empty_like(y) : at::empty({0}, input.options());
  const index_t n = x.numel();
  if (n == 0 || (!grad_input && !grad_target)) return {gi, gt};
  const double scale = reduction_scale(n, reduction);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gan_ext::l1_loss_backward", [&] {
    constexpr int VEC = vec_size<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* gip = grad_input ? gi.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gtp = grad_target ? gt.mutable_data_ptr<scalar_t>() : nullptr;
    const index_t blocks = std::clamp<index_t>(ceil_div(n / VEC, kThreads), 1, kMaxElementwiseBlocks);
    auto stream = at::cuda::getCurrentCUDAStream();
    const void* gp = grad.const_data_ptr();
    if (aligned(xp) && aligned(yp) && aligned(gip) && aligned(gtp)) {
      l1_backward_kernel<scalar_t, true><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
          xp, yp, gip, gtp, n, gp, grad_kind, weight, scale);
    } else {
      l1_backward_kernel<scalar_t, false><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
          xp, yp, gip, gtp, n, gp, grad_kind, weight, scale);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gi, gt};
}

// ------------------------------------------------------ scale_loss_grads
std::tuple<at::Tensor, at::Tensor> scale_loss_grads_cuda(const at::Tensor& grad,
                                                         const c10::optional<at::Tensor>& saved_a,
                                                         const c10::optional<at::Tensor>& saved_b) {
  auto ptr = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? &*t : nullptr;
  };
  const at::Tensor* a = ptr(saved_a);
  const at::Tensor* b = ptr(saved_b);
  check_scale_loss_grads_args(grad, a, b);
  check_cuda(grad, "grad");
  c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor da = a != nullptr ? as_dense(*a) : at::Tensor();
  const at::Tensor db = b != nullptr ? as_dense(*b) : at::Tensor();
  at::Tensor oa = a != nullptr ? at::empty_like(da) : at::empty({0}, grad.options());
  at::Tensor ob = b != nullptr ? at::empty_like(db) : at::empty({0}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gan_ext::scale_loss_grads", [&] {
    constexpr int VEC = vec_size<scalar_t>();
    auto segment = [&](const at::Tensor& in, at::Tensor& out) {
      ScaleSegment<scalar_t> s{nullptr, nullptr, 0, 0};
      if (!in.defined() || in.numel() == 0) return s;
      s.in = in.const_data_ptr<scalar_t>();
      s.out = out.mutable_data_ptr<scalar_t>();
      s.n = in.numel();
      s.blocks = std::clamp<index_t>(ceil_div(s.n / VEC, kThreads), 1, kMaxElementwiseBlocks);
      return s;
    };
    const ScaleSegment<scalar_t> s0 = segment(da, oa), s1 = segment(db, ob);
    const index_t blocks = s0.blocks + s1.blocks;
    if (blocks == 0) return;
    auto stream = at::cuda::getCurrentCUDAStream();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    if (aligned(s0.in) && aligned(s0.out) && aligned(s1.in) && aligned(s1.out)) {
      scale_grads_kernel<scalar_t, true>
          <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, gp);
    } else {
      scale_grads_kernel<scalar_t, false>
          <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, gp);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {oa, ob};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("d_loss", &d_loss_cuda);
  m.impl("d_loss_with_grad", &d_loss_with_grad_cuda);
  m.impl("g_loss", &g_loss_cuda);
  m.impl("g_loss_with_grad", &g_loss_with_grad_cuda);
  m.impl("bce_with_logits", &bce_with_logits_cuda);
  m.impl("bce_with_logits_with_grad", &bce_with_logits_with_grad_cuda);
  m.impl("l1_loss", &l1_loss_cuda);
  m.impl("cycle_l1_loss", &cycle_l1_loss_cuda);
  m.impl("l1_loss_backward", &l1_loss_backward_cuda);
  m.impl("scale_loss_grads", &scale_loss_grads_cuda);
}

}  // namespace gan_ext
