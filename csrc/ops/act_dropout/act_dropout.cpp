// gan_ext::act_dropout and act_dropout_backward: schemas and autograd.
#include <ATen/core/enum_tag.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/autograd.h"

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // out = act(input) * keep / (1 - p), the keep mask drawn in-kernel from the
  // generator (ops/act_dropout/dropout.h); activation 0 identity, 1 relu, 2 leaky_relu
  // (negative_slope >= 0). Returns (out, rng): rng is the int64 (seed, offset)
  // pair the backward regenerates the mask from (zeros when p == 0, which
  // draws nothing). out takes the input's layout (dense strides kept,
  // channels_last included; see ops/act_dropout/dropout.h).
  m.def(
      "act_dropout(Tensor input, int activation, float negative_slope, float p, *, "
      "Generator? generator=None) -> (Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // grad_input = grad * act'(from out) * keep / (1 - p).
  m.def(
      "act_dropout_backward(Tensor grad, Tensor out, Tensor rng, int activation, "
      "float negative_slope, float p) -> Tensor");
}

namespace {

// ---------------------------------------------------- activation + dropout
// Saved: the output (usually also saved by the next layer, so it costs
// nothing extra) and the 2-value rng tensor; the mask is regenerated.
using ActDropoutSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, double, double,
                                                         const c10::optional<at::Generator>&);

at::Tensor call_act_dropout_backward(const at::Tensor& grad, const at::Tensor& out,
                                     const at::Tensor& rng, int64_t act, double slope, double p) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      int64_t, double, double)>("gan_ext::act_dropout_backward");
  return op.call(grad, out, rng, act, slope, p);
}

// grad * d out / d input from what ctx saved (out, rng, the settings), in
// slot 0 of `slots`; a recorded ActDropoutBackwardFunction under create_graph.
variable_list act_dropout_grad(AutogradContext* ctx, const at::Tensor& grad, size_t slots);

// The backward as a differentiable function (create_graph=True). It is
// linear in grad with the same mask and act'(out), so its own backward is the
// same op applied to the incoming gradient; act' is piecewise constant, so
// nothing flows to out.
class ActDropoutBackwardFunction : public torch::autograd::Function<ActDropoutBackwardFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& out,
                            const at::Tensor& rng, int64_t act, double slope, double p) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({out, rng});
    ctx->saved_data["activation"] = act;
    ctx->saved_data["negative_slope"] = slope;
    ctx->saved_data["p"] = p;
    return call_act_dropout_backward(grad, out, rng, act, slope, p);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return act_dropout_grad(ctx, grads[0], 6);
  }
};

variable_list act_dropout_grad(AutogradContext* ctx, const at::Tensor& grad, size_t slots) {
  variable_list result(slots);
  if (!grad.defined()) return result;
  const auto s = ctx->get_saved_variables();
  const int64_t act = ctx->saved_data["activation"].toInt();
  const double slope = ctx->saved_data["negative_slope"].toDouble(), p = ctx->saved_data["p"].toDouble();
  if (create_graph()) {
    result[0] = ActDropoutBackwardFunction::apply(grad, s[0], s[1], act, slope, p);
  } else {
    at::AutoDispatchBelowADInplaceOrView guard;
    result[0] = call_act_dropout_backward(grad, s[0], s[1], act, slope, p);
  }
  return result;
}

class ActDropoutFunction : public torch::autograd::Function<ActDropoutFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, int64_t activation,
                               double negative_slope, double p,
                               const c10::optional<at::Generator>& gen) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<ActDropoutSig>("gan_ext::act_dropout");
    auto [out, rng] = op.call(input, activation, negative_slope, p, gen);
    ctx->mark_non_differentiable({rng});
    ctx->save_for_backward({out, rng});
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["negative_slope"] = negative_slope;
    ctx->saved_data["p"] = p;
    return {out, rng};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return act_dropout_grad(ctx, grads[0], 5);
  }
};

std::tuple<at::Tensor, at::Tensor> act_dropout_autograd(const at::Tensor& input, int64_t activation,
                                                        double negative_slope, double p,
                                                        const c10::optional<at::Generator>& gen) {
  if (!wants_grad(input)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<ActDropoutSig>("gan_ext::act_dropout");
    return op.call(input, activation, negative_slope, p, gen);
  }
  auto r = ActDropoutFunction::apply(input, activation, negative_slope, p, gen);
  return {r[0], r[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) {
  m.impl("act_dropout", &act_dropout_autograd);
}

}  // namespace gan_ext
