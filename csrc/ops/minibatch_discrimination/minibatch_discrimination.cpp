// gan_ext::minibatch_discrimination and minibatch_discrimination_backward:
// schemas and autograd.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/autograd.h"

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // Minibatch discrimination (Salimans et al. 2016, section 3.2): M (N, B, C),
  // the features times the learned tensor T, reshaped; returns (N, B) with
  //   o[i, b] = sum over j != i of exp(-sum_c |M[i, b, c] - M[j, b, c]|),
  // accumulated in float32 for bfloat16/float16 (float64 for float64).
  m.def("minibatch_discrimination(Tensor M) -> Tensor");
  // grad_M[i, b, c] = -sum over j != i of (grad[i, b] + grad[j, b]) * c_b(i, j)
  //                   * sign(M[i, b, c] - M[j, b, c]),  c_b(i, j) = exp(-|M_ib - M_jb|_1),
  // with c recomputed from M (nothing but M is saved).
  m.def("minibatch_discrimination_backward(Tensor grad, Tensor M) -> Tensor");
}

namespace {

using UnaryOp = at::Tensor(const at::Tensor&);

// Saved: M alone. Keeping c (N^2 B values: 26 MB at N=256, B=100 in float32,
// N / C = 51 times M itself) would spare backward only the distance and exp
// half of its work: the sign terms need every |M_ibc - M_jbc| again anyway.
class MinibatchDiscriminationFunction
    : public torch::autograd::Function<MinibatchDiscriminationFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& M) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<UnaryOp>("gan_ext::minibatch_discrimination");
    ctx->save_for_backward({M});
    return op.call(M);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    variable_list out(1);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return out;
    if (create_graph()) {
      static auto twin = find_op<UnaryOp>("gan_ext::minibatch_discrimination_twin");
      return twin_grads({twin.call(saved[0])}, {grads[0]}, {saved[0]}, {true}, 1);
    }
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>(
        "gan_ext::minibatch_discrimination_backward");
    out[0] = op.call(grads[0], saved[0]);
    return out;
  }
};

at::Tensor minibatch_discrimination_autograd(const at::Tensor& M) {
  if (!wants_grad(M)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<UnaryOp>("gan_ext::minibatch_discrimination");
    return op.call(M);
  }
  return MinibatchDiscriminationFunction::apply(M);
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) {
  m.impl("minibatch_discrimination", &minibatch_discrimination_autograd);
}

}  // namespace gan_ext
