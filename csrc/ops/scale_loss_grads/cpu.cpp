// CPU kernel of scale_loss_grads (the backward of the *_with_grad losses).
// Autograd does not call it on the CPU (it multiplies directly and skips
// grad_output == 1, common/loss_autograd.h); it is registered so that the op
// is complete on every backend.
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

#include "common/losses.h"
#include "ops/scale_loss_grads/checks.h"
#include "common/cpu_capability.h"

namespace gan_ext {
namespace {

// What autograd does on the CPU for a grad_output other than 1 (at::mul), with
// the output's strides fixed to those of the dense saved gradient, as in the
// CUDA kernel and the fake kernel.
at::Tensor scaled_or_empty(const at::Tensor& grad, const c10::optional<at::Tensor>& saved) {
  if (!saved.has_value() || !saved->defined()) return at::empty({0}, grad.options());
  const at::Tensor s = as_dense(*saved);
  at::Tensor out = at::empty_like(s);
  return at::mul_out(out, s, grad);
}

std::tuple<at::Tensor, at::Tensor> scale_loss_grads_cpu(const at::Tensor& grad,
                                                        const c10::optional<at::Tensor>& saved_a,
                                                        const c10::optional<at::Tensor>& saved_b) {
  auto ptr = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? &*t : nullptr;
  };
  check_scale_loss_grads_args(grad, ptr(saved_a), ptr(saved_b));
  return {scaled_or_empty(grad, saved_a), scaled_or_empty(grad, saved_b)};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("scale_loss_grads", &scale_loss_grads_cpu);
}

}  // namespace gan_ext
