// CPU kernels of l1_loss, cycle_l1_loss (two weighted l1 terms in one call)
// and l1_loss_backward, on the chunked summation of common/loss_cpu.h.
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

template <typename T>
double abs_diff_sum(const T* a, const T* b, int64_t n) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  return chunked_sum(n, [&](int64_t s0, int64_t e) {
    // Two accumulators: the add latency, not the loads, bounds one chain.
    V acc0(O(0)), acc1(O(0));
    int64_t i = s0;
    for (; i + 2 * W <= e; i += 2 * W) {
      acc0 = acc0 + (vload<T, O>(a + i) - vload<T, O>(b + i)).abs();
      acc1 = acc1 + (vload<T, O>(a + i + W) - vload<T, O>(b + i + W)).abs();
    }
    double s = vsum(acc0 + acc1);
    for (; i < e; ++i) s += std::abs(static_cast<O>(a[i]) - static_cast<O>(b[i]));
    return s;
  });
}

double l1_sum(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  auto [a, b] = as_dense_pair(input, target);
  const int64_t n = a.numel();
  double s = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gan_ext_l1", [&] {
    s = abs_diff_sum<scalar_t>(a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), n);
  });
  return n > 0 ? s * reduction_scale(n, reduction) : 0.0;
}

at::Tensor l1_loss_cpu(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_pair_args(input, "input", target, "target", reduction);
  return scalar_out(input, l1_sum(input, target, reduction));
}

at::Tensor cycle_l1_loss_cpu(const at::Tensor& input1, const at::Tensor& target1,
                             const at::Tensor& input2, const at::Tensor& target2, double weight1,
                             double weight2, int64_t reduction) {
  check_pair_args(input1, "input1", target1, "target1", reduction);
  check_pair_args(input2, "input2", target2, "target2", reduction);
  check_same_device(input1, "input1", input2, "input2");
  check_same_dtype(input1, "input1", input2, "input2");
  const double l = weight1 * l1_sum(input1, target1, reduction) +
                   weight2 * l1_sum(input2, target2, reduction);
  return scalar_out(input1, l);
}

// ga = c * sign(a - b), gb = -ga, c = weight * grad * scale.
template <typename T, bool GA, bool GB>
void l1_grad(const T* a, const T* b, T* ga, T* gb, int64_t n, double c) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  at::parallel_for(0, n, kChunk, [&](int64_t s0, int64_t e) {
    const V cv(static_cast<O>(c)), zero(O(0));
    int64_t i = s0;
    for (; i + W <= e; i += W) {
      const V d = vload<T, O>(a + i) - vload<T, O>(b + i);
      const V g = (V::blendv(zero, cv, d > zero)) - (V::blendv(zero, cv, d < zero));
      if constexpr (GA) vstore<T, O>(ga + i, g);
      if constexpr (GB) vstore<T, O>(gb + i, zero - g);
    }
    for (; i < e; ++i) {
      const O d = static_cast<O>(a[i]) - static_cast<O>(b[i]);
      const O g = d > O(0) ? static_cast<O>(c) : (d < O(0) ? -static_cast<O>(c) : O(0));
      if constexpr (GA) ga[i] = static_cast<T>(g);
      if constexpr (GB) gb[i] = static_cast<T>(-g);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> l1_loss_backward_cpu(const at::Tensor& grad,
                                                        const at::Tensor& input,
                                                        const at::Tensor& target, double weight,
                                                        int64_t reduction, bool grad_input,
                                                        bool grad_target) {
  check_pair_args(input, "input", target, "target", reduction);
  TORCH_CHECK_VALUE(grad.numel() == 1, "grad must hold the loss's gradient (one value), got shape ",
                    grad.sizes());
  auto [a, b] = as_dense_pair(input, target);
  const int64_t n = a.numel();
  const double c = weight * grad.item<double>() * reduction_scale(n, reduction);
  at::Tensor ga = grad_input ? at::empty_like(a) : at::empty({0}, a.options());
  at::Tensor gb = grad_target ? at::empty_like(b) : at::empty({0}, a.options());
  if (n == 0 || !(grad_input || grad_target)) return {ga, gb};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gan_ext_l1_backward", [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    const scalar_t* bp = b.const_data_ptr<scalar_t>();
    scalar_t* gap = grad_input ? ga.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gbp = grad_target ? gb.mutable_data_ptr<scalar_t>() : nullptr;
    if (grad_input && grad_target) {
      l1_grad<scalar_t, true, true>(ap, bp, gap, gbp, n, c);
    } else if (grad_input) {
      l1_grad<scalar_t, true, false>(ap, bp, gap, gbp, n, c);
    } else {
      l1_grad<scalar_t, false, true>(ap, bp, gap, gbp, n, c);
    }
  });
  return {ga, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("l1_loss", &l1_loss_cpu);
  m.impl("cycle_l1_loss", &cycle_l1_loss_cpu);
  m.impl("l1_loss_backward", &l1_loss_backward_cpu);
}

}  // namespace gan_ext
