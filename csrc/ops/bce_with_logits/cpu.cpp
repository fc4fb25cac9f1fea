// CPU kernels of bce_with_logits and its *_with_grad form (the gradients
// written in the same pass), on the chunked summation of common/loss_cpu.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include "common/loss_cpu.h"
#include "common/losses.h"
#include "common/vec_io.h"
#include "common/cpu_capability.h"

namespace gan_ext {
namespace {

template <typename T, bool GI, bool GT>
double bce_sum(const T* x, const T* y, T* gi, T* gt, int64_t n, double scale) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  return chunked_sum(n, [&](int64_t b, int64_t e) {
    const V sc(static_cast<O>(scale));
    V acc(O(0));
    int64_t i = b;
    for (; i + W <= e; i += W) {
      const V xv = vload<T, O>(x + i);
      V f, df;
      vbce(xv, vload<T, O>(y + i), f, df);
      acc = acc + f;
      if constexpr (GI) vstore<T, O>(gi + i, df * sc);
      if constexpr (GT) vstore<T, O>(gt + i, V(O(0)) - xv * sc);
    }
    double s = vsum(acc);
    for (; i < e; ++i) {
      const O xv = static_cast<O>(x[i]);
      O f, df;
      bce_term<O>(xv, static_cast<O>(y[i]), f, df);
      s += f;
      if constexpr (GI) gi[i] = static_cast<T>(df * static_cast<O>(scale));
      if constexpr (GT) gt[i] = static_cast<T>(-xv * static_cast<O>(scale));
    }
    return s;
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_impl(const at::Tensor& input_in,
                                                        const at::Tensor& target_in,
                                                        int64_t reduction, bool grad_input,
                                                        bool grad_target) {
  check_pair_args(input_in, "input", target_in, "target", reduction);
  auto [x, y] = as_dense_pair(input_in, target_in);
  const int64_t n = x.numel();
  const double scale = reduction_scale(n, reduction);
  at::Tensor gi = grad_input ? at::empty_like(x) : at::Tensor();
  at::Tensor gt = grad_target ? at::empty_like(y) : at::empty({0}, x.options());
  double s = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gan_ext_bce", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* gip = grad_input ? gi.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gtp = grad_target ? gt.mutable_data_ptr<scalar_t>() : nullptr;
    if (grad_input && grad_target) {
      s = bce_sum<scalar_t, true, true>(xp, yp, gip, gtp, n, scale);
    } else if (grad_input) {
      s = bce_sum<scalar_t, true, false>(xp, yp, gip, gtp, n, scale);
    } else {
      s = bce_sum<scalar_t, false, false>(xp, yp, gip, gtp, n, scale);
    }
  });
  return {scalar_out(x, n > 0 ? s * scale : 0.0), gi, gt};
}

at::Tensor bce_with_logits_cpu(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  return std::get<0>(bce_impl(input, target, reduction, false, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_with_logits_with_grad_cpu(
    const at::Tensor& input, const at::Tensor& target, int64_t reduction, bool grad_target) {
  return bce_impl(input, target, reduction, true, grad_target);
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("bce_with_logits", &bce_with_logits_cpu);
  m.impl("bce_with_logits_with_grad", &bce_with_logits_with_grad_cpu);
}

}  // namespace gan_ext
