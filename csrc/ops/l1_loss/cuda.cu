// CUDA kernels of l1_loss and cycle_l1_loss (both pairs in one grid), on the
// reduction of common/loss_reduce.cuh, and the elementwise l1_loss_backward.
// Semantics: gan_ext/reference.py.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>

#include "common/device_common.cuh"
#include "common/loss_reduce.cuh"
#include "common/losses.h"

namespace gan_ext {
namespace {

// |x - y|; no gradients in the forward (l1_loss_backward recomputes the sign).
struct L1Term {
  static constexpr bool kPair = true, kGradX = false, kGradY = false;
  template <typename scalar_t>
  static __device__ __forceinline__ acc_type<scalar_t> eval(const Segment<scalar_t>& /*s*/,
                                                            acc_type<scalar_t> x,
                                                            acc_type<scalar_t> y,
                                                            acc_type<scalar_t>& gx,
                                                            acc_type<scalar_t>& gy) {
    using acc_t = acc_type<scalar_t>;
    gx = acc_t(0);
    gy = acc_t(0);
    return std::abs(x - y);
  }
};

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

// ------------------------------------------------------------ host side
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
    run_loss<scalar_t, L1Term>(s0, none, combine(x.numel(), reduction), Combine{0.0, 1.0},
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
    run_loss<scalar_t, L1Term>(s0, s1, combine(x1.numel(), reduction, weight1),
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

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("l1_loss", &l1_loss_cuda);
  m.impl("cycle_l1_loss", &cycle_l1_loss_cuda);
  m.impl("l1_loss_backward", &l1_loss_backward_cuda);
}

}  // namespace gan_ext
