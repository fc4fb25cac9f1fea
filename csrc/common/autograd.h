// Shared by the autograd of every op (ops/<op>/<op>.cpp registers its
// Functions in C++ on the Autograd key).
//
// The house style registers autograd from Python (torch.library.register_autograd).
// We measured that path at ~40-60 us of Python per call on CPU, more than the
// whole eager BatchNorm2d+ReLU on the small tensors GAN discriminators and MLP
// heads use, so the forward/backward wiring lives in C++ instead. Each
// backward is still its own op (e.g. gan_ext::norm_act_backward), so
// torch.compile/AOTAutograd trace both as opaque ops through the fake kernels
// registered from Python.
//
// Second derivatives. A backward run with create_graph=True (gradient
// penalties) has grad mode on inside backward: then every Function here takes
// its first derivative from a differentiable twin op instead of the fused
// kernels (each gan_ext/ops/<op>.py registers its pure-PyTorch twin as a
// CompositeImplicitAutograd op, ops/_common.py:register_twin), so autograd records it and can
// differentiate it again. The first-order path is unchanged.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

namespace gan_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;

inline OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); }

template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// Inside a backward, grad mode is on exactly when it runs with create_graph=True:
// then every Function here differentiates a twin instead of its fused kernel.
inline bool create_graph() { return at::GradMode::is_enabled(); }

// create_graph=True: the gradients of `outputs` (a twin op's results, built
// from the saved inputs) with respect to those of `inputs` that need one,
// recorded so that they can be differentiated again. `slots`: the Function's
// input count; result[i] is the gradient of inputs[i].
inline variable_list twin_grads(const variable_list& outputs,
                                const variable_list& grad_outputs,
                                const variable_list& inputs, const std::vector<bool>& need, size_t slots) {
  variable_list result(slots), outs, gos, want;
  std::vector<size_t> where;
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (grad_outputs[i].defined() && outputs[i].requires_grad()) {
      outs.push_back(outputs[i]);
      gos.push_back(grad_outputs[i]);
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (need[i] && inputs[i].defined() && inputs[i].requires_grad()) {
      want.push_back(inputs[i]);
      where.push_back(i);
    }
  }
  if (outs.empty() || want.empty()) return result;
  auto g = torch::autograd::grad(outs, want, gos, /*retain_graph=*/true, /*create_graph=*/true,
                                 /*allow_unused=*/true);
  for (size_t k = 0; k < where.size(); ++k) result[where[k]] = g[k];
  return result;
}

inline bool wants_grad(const at::Tensor& t) { return at::GradMode::is_enabled() && t.requires_grad(); }

}  // namespace
}  // namespace gan_ext
