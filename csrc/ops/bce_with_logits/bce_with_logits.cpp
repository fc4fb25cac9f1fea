// gan_ext::bce_with_logits (and its *_with_grad form): schemas and autograd.
// Codes and conventions: ops/gan_loss/gan_loss.cpp.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/autograd.h"
#include "common/loss_autograd.h"

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // BCE between logits and targets (VAE reconstruction): softplus(x) - x*y.
  // The gradient for target (-x) is returned only when grad_target, else an
  // empty tensor.
  m.def("bce_with_logits(Tensor input, Tensor target, int reduction) -> Tensor");
  m.def(
      "bce_with_logits_with_grad(Tensor input, Tensor target, int reduction, bool grad_target) "
      "-> (Tensor, Tensor, Tensor)");
}

namespace {

class BCEFunction : public torch::autograd::Function<BCEFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction, bool grad_target) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<LossWithGrad3(const at::Tensor&, const at::Tensor&, int64_t, bool)>(
        "gan_ext::bce_with_logits_with_grad");
    auto [loss, gi, gt] = op.call(input, target, reduction, grad_target);
    ctx->save_for_backward({gi, gt, input, target});
    ctx->saved_data["reduction"] = reduction;
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    variable_list out(4);
    if (!grads[0].defined()) return out;
    if (create_graph()) {
      static auto twin = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
          "gan_ext::bce_with_logits_twin");
      at::Tensor loss = twin.call(saved[2], saved[3], ctx->saved_data["reduction"].toInt());
      return twin_grads({loss}, {grads[0]}, {saved[2], saved[3]},
                        {ctx->needs_input_grad(0), ctx->needs_input_grad(1)}, 4);
    }
    std::tie(out[0], out[1]) = scale_saved(grads[0], needed(ctx, saved, 0), needed(ctx, saved, 1));
    return out;
  }
};

at::Tensor bce_with_logits_autograd(const at::Tensor& input, const at::Tensor& target,
                                    int64_t reduction) {
  if (!wants_grad(input) && !wants_grad(target)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
        "gan_ext::bce_with_logits");
    return op.call(input, target, reduction);
  }
  return BCEFunction::apply(input, target, reduction, wants_grad(target));
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) {
  m.impl("bce_with_logits", &bce_with_logits_autograd);
}

}  // namespace gan_ext
