// CUDA kernels of the GAN losses: d_loss and g_loss, each plain and
// *_with_grad. Semantics: gan_ext/reference.py; the elementwise terms are the
// C10_HOST_DEVICE functions of ops/gan_loss/checks.h, evaluated in opmath on
// the reduction of common/loss_reduce.cuh (d_loss: both tensors in one grid).
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
#include "ops/gan_loss/checks.h"

namespace gan_ext {
namespace {

// apply_term(term, x, label) (ops/gan_loss/checks.h), the gradient in the same pass.
struct GanTerm {
  static constexpr bool kPair = false, kGradX = true, kGradY = false;
  template <typename scalar_t>
  static __device__ __forceinline__ acc_type<scalar_t> eval(const Segment<scalar_t>& s,
                                                            acc_type<scalar_t> x,
                                                            acc_type<scalar_t> /*y*/,
                                                            acc_type<scalar_t>& gx,
                                                            acc_type<scalar_t>& gy) {
    using acc_t = acc_type<scalar_t>;
    acc_t f, df;
    apply_term<acc_t>(static_cast<Term>(s.term), x, s.label, f, df);
    gx = df * s.gscale;
    gy = acc_t(0);
    return f;
  }
};

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
  s.term = static_cast<int>(term);
  s.label = static_cast<acc_t>(label);
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
    run_loss<scalar_t, GanTerm>(s0, s1, combine(real.numel(), reduction),
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
    run_loss<scalar_t, GanTerm>(s0, none, combine(fake.numel(), reduction), Combine{0.0, 1.0},
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

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("d_loss", &d_loss_cuda);
  m.impl("d_loss_with_grad", &d_loss_with_grad_cuda);
  m.impl("g_loss", &g_loss_cuda);
  m.impl("g_loss_with_grad", &g_loss_with_grad_cuda);
}

}  // namespace gan_ext
