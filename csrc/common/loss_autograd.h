// Shared by the autograd of the loss ops (gan_loss, bce_with_logits): they
// compute their gradients in the forward pass (the *_with_grad ops); backward
// only scales them by grad_output. Without grad mode, or when no input needs a
// gradient, the plain loss op runs and nothing is saved.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/ops/mul.h>

#include <tuple>
#include <utility>

#include "common/autograd.h"

namespace gan_ext {
namespace {

// saved * grad_output on the CPU. loss.backward() seeds grad_output = 1: that is
// checked without a dispatch and the saved gradient is handed on as is (the
// engine releases ctx before passing it on, so nothing else holds it; with
// retain_graph, AccumulateGrad copies it instead of taking it).
inline at::Tensor scale_saved_cpu(const at::Tensor& saved, const at::Tensor& go) {
  // Only for real CPU tensors: under torch.compile/AOTAutograd tracing go is a
  // fake (or functional) tensor without data.
  if (go.numel() == 1 && go.scalar_type() == saved.scalar_type() && !at::isTensorSubclassLike(go)) {
    bool one = false;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "gan_ext_is_one",
                                    [&] { one = static_cast<double>(*go.const_data_ptr<scalar_t>()) == 1.0; });
    if (one) return saved;
  }
  return at::mul(saved, go);
}

// (a * grad_output, b * grad_output) for the saved gradients backward needs (an
// undefined one stays undefined). Off the CPU, reading grad_output on the host
// would be a sync (and would break CUDA-graph capture), so gan_ext::scale_loss_grads
// reads it in the kernel and scales both in one launch, where at::mul took one each.
inline std::pair<at::Tensor, at::Tensor> scale_saved(const at::Tensor& go, const at::Tensor& a,
                                                     const at::Tensor& b) {
  auto fits = [&](const at::Tensor& s) {
    return !s.defined() || (s.device() == go.device() && s.scalar_type() == go.scalar_type());
  };
  if (go.is_cpu() || go.numel() != 1 || !fits(a) || !fits(b)) {
    auto one = [&](const at::Tensor& s) {
      if (!s.defined()) return at::Tensor();
      return go.is_cpu() ? scale_saved_cpu(s, go) : at::mul(s, go);
    };
    return {one(a), one(b)};
  }
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const OptTensor&,
                                                              const OptTensor&)>(
      "gan_ext::scale_loss_grads");
  auto [sa, sb] = op.call(go, opt(a), opt(b));
  return {a.defined() ? sa : at::Tensor(), b.defined() ? sb : at::Tensor()};
}

// Saved gradient i if input i needs a gradient, else undefined.
inline at::Tensor needed(AutogradContext* ctx, const variable_list& saved, size_t i) {
  return ctx->needs_input_grad(i) ? saved[i] : at::Tensor();
}

using LossWithGrad3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

}  // namespace
}  // namespace gan_ext
