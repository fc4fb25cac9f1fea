// CUDA kernels of bce_with_logits and its *_with_grad form, on the reduction
// of common/loss_reduce.cuh. Semantics: gan_ext/reference.py.
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

// bce_term(x, y) (common/losses.h), both gradients in the same pass.
struct BceTerm {
  static constexpr bool kPair = true, kGradX = true, kGradY = true;
  template <typename scalar_t>
  static __device__ __forceinline__ acc_type<scalar_t> eval(const Segment<scalar_t>& s,
                                                            acc_type<scalar_t> x,
                                                            acc_type<scalar_t> y,
                                                            acc_type<scalar_t>& gx,
                                                            acc_type<scalar_t>& gy) {
    using acc_t = acc_type<scalar_t>;
    acc_t f, df;
    bce_term<acc_t>(x, y, f, df);
    gx = df * s.gscale;
    gy = -x * s.gscale;
    return f;
  }
};

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
    run_loss<scalar_t, BceTerm>(s0, none, combine(x.numel(), reduction), Combine{0.0, 1.0},
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

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("bce_with_logits", &bce_with_logits_cuda);
  m.impl("bce_with_logits_with_grad", &bce_with_logits_with_grad_cuda);
}

}  // namespace gan_ext
