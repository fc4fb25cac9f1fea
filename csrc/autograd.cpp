// Autograd for gan_ext::norm_act, registered in C++ on the Autograd key.
//
// The house style registers autograd from Python (torch.library.register_autograd).
// We measured that path at ~40-60 us of Python per call on CPU, more than the
// whole eager BatchNorm2d+ReLU on the small tensors GAN discriminators and MLP
// heads use, so the forward/backward wiring lives here instead. The backward
// is still its own op (gan_ext::norm_act_backward), so torch.compile/AOTAutograd
// trace both as opaque ops through the fake kernels in gan_ext/_ops.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "norm_act.h"

namespace gan_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_norm_act(
    const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& running_mean, const OptTensor& running_var, bool use_input_stats,
    bool instance, double eps, int64_t activation, double negative_slope) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gan_ext::norm_act", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                           const OptTensor&, bool, bool, double, int64_t, double)>();
  return op.call(input, weight, bias, running_mean, running_var, use_input_stats, instance, eps,
                 activation, negative_slope);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& saved, const OptTensor& weight,
    const OptTensor& bias, const at::Tensor& mean, const at::Tensor& invstd, bool use_input_stats,
    bool instance, int64_t activation, double negative_slope, bool saved_is_output) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gan_ext::norm_act_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const OptTensor&,
                           const OptTensor&, const at::Tensor&, const at::Tensor&, bool, bool,
                           int64_t, double, bool)>();
  return op.call(grad_out, saved, weight, bias, mean, invstd, use_input_stats, instance,
                 activation, negative_slope, saved_is_output);
}

OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); }

class NormActFunction : public torch::autograd::Function<NormActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const OptTensor& weight,
                               const OptTensor& bias, const OptTensor& running_mean,
                               const OptTensor& running_var, bool use_input_stats, bool instance,
                               double eps, int64_t activation, double negative_slope) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mean, invstd, var] = call_norm_act(input, weight, bias, running_mean, running_var,
                                                  use_input_stats, instance, eps, activation,
                                                  negative_slope);
    // In-Place Activated BatchNorm: with an invertible activation the output
    // alone lets backward recover the normalized input, so the input is not kept.
    const bool saved_is_output = output_is_invertible(activation, negative_slope);
    ctx->save_for_backward({saved_is_output ? out : input, weight.value_or(at::Tensor()),
                            bias.value_or(at::Tensor()), mean, invstd});
    ctx->saved_data["use_input_stats"] = use_input_stats;
    ctx->saved_data["instance"] = instance;
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["negative_slope"] = negative_slope;
    ctx->saved_data["saved_is_output"] = saved_is_output;
    ctx->mark_non_differentiable({mean, invstd, var});
    return {out, mean, invstd, var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad_out = grads[0];
    variable_list result(10);
    if (!grad_out.defined()) return result;
    // needs_input_grad counts only the tensors that were passed: an absent
    // weight shifts bias down to edge 1.
    const bool has_w = saved[1].defined(), has_b = saved[2].defined();
    const bool need_in = ctx->needs_input_grad(0);
    const bool need_w = has_w && ctx->needs_input_grad(1);
    const bool need_b = has_b && ctx->needs_input_grad(has_w ? 2 : 1);
    if (!(need_in || need_w || need_b)) return result;
    auto [gi, gw, gb] = call_norm_act_backward(
        grad_out, saved[0], opt(saved[1]), opt(saved[2]), saved[3], saved[4],
        ctx->saved_data["use_input_stats"].toBool(), ctx->saved_data["instance"].toBool(),
        ctx->saved_data["activation"].toInt(), ctx->saved_data["negative_slope"].toDouble(),
        ctx->saved_data["saved_is_output"].toBool());
    if (need_in) result[0] = gi;
    if (need_w) result[1] = gw;
    if (need_b) result[2] = gb;
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_act_autograd(
    const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& running_mean, const OptTensor& running_var, bool use_input_stats,
    bool instance, double eps, int64_t activation, double negative_slope) {
  auto r = NormActFunction::apply(input, weight, bias, running_mean, running_var, use_input_stats,
                                  instance, eps, activation, negative_slope);
  return {r[0], r[1], r[2], r[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) { m.impl("norm_act", &norm_act_autograd); }

}  // namespace gan_ext
