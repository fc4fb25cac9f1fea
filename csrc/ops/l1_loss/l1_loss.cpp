// gan_ext::l1_loss, cycle_l1_loss and l1_loss_backward: schemas and autograd.
// Codes and conventions: ops/gan_loss/gan_loss.cpp.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/autograd.h"

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // reduce(|input - target|), and weight1 * l1(input1, target1) + weight2 * l1(input2, target2)
  // in one call (CycleGAN's two cycle terms). The backward recomputes sign(input - target)
  // from the inputs (nothing extra is saved); it returns weight * grad * d/d(input, target)
  // for the requested ones, an empty tensor for the others.
  m.def("l1_loss(Tensor input, Tensor target, int reduction) -> Tensor");
  m.def(
      "cycle_l1_loss(Tensor input1, Tensor target1, Tensor input2, Tensor target2, float weight1, "
      "float weight2, int reduction) -> Tensor");
  m.def(
      "l1_loss_backward(Tensor grad, Tensor input, Tensor target, float weight, int reduction, "
      "bool grad_input, bool grad_target) -> (Tensor, Tensor)");
}

namespace {

// L1: nothing extra is saved; backward recomputes sign(input - target) from the
// inputs, which autograd keeps anyway (version counters guard in-place edits).
using L1BackwardOp = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                        const at::Tensor&, double, int64_t, bool, bool);

std::tuple<at::Tensor, at::Tensor> call_l1_backward(const at::Tensor& grad, const at::Tensor& input,
                                                    const at::Tensor& target, double weight,
                                                    int64_t reduction, bool gi, bool gt) {
  static auto op = find_op<L1BackwardOp>("gan_ext::l1_loss_backward");
  return op.call(grad, input, target, weight, reduction, gi, gt);
}

class L1Function : public torch::autograd::Function<L1Function> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
        "gan_ext::l1_loss");
    ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = reduction;
    return op.call(input, target, reduction);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    variable_list out(3);
    const bool gi = ctx->needs_input_grad(0), gt = ctx->needs_input_grad(1);
    if (!grads[0].defined() || !(gi || gt)) return out;
    if (create_graph()) {
      static auto twin = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
          "gan_ext::l1_loss_twin");
      at::Tensor loss = twin.call(saved[0], saved[1], ctx->saved_data["reduction"].toInt());
      return twin_grads({loss}, {grads[0]}, {saved[0], saved[1]}, {gi, gt}, 3);
    }
    auto [a, b] = call_l1_backward(grads[0], saved[0], saved[1], 1.0,
                                   ctx->saved_data["reduction"].toInt(), gi, gt);
    if (gi) out[0] = a;
    if (gt) out[1] = b;
    return out;
  }
};

at::Tensor l1_loss_autograd(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  if (!wants_grad(input) && !wants_grad(target)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
        "gan_ext::l1_loss");
    return op.call(input, target, reduction);
  }
  return L1Function::apply(input, target, reduction);
}

using CycleOp = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           double, double, int64_t);

class CycleL1Function : public torch::autograd::Function<CycleL1Function> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& i1, const at::Tensor& t1,
                            const at::Tensor& i2, const at::Tensor& t2, double w1, double w2,
                            int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<CycleOp>("gan_ext::cycle_l1_loss");
    ctx->save_for_backward({i1, t1, i2, t2});
    ctx->saved_data["w1"] = w1;
    ctx->saved_data["w2"] = w2;
    ctx->saved_data["reduction"] = reduction;
    return op.call(i1, t1, i2, t2, w1, w2, reduction);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    variable_list out(7);
    if (!grads[0].defined()) return out;
    const int64_t red = ctx->saved_data["reduction"].toInt();
    if (create_graph()) {
      static auto twin = find_op<CycleOp>("gan_ext::cycle_l1_loss_twin");
      at::Tensor loss = twin.call(s[0], s[1], s[2], s[3], ctx->saved_data["w1"].toDouble(),
                                  ctx->saved_data["w2"].toDouble(), red);
      return twin_grads({loss}, {grads[0]}, {s[0], s[1], s[2], s[3]},
                        {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                         ctx->needs_input_grad(2), ctx->needs_input_grad(3)}, 7);
    }
    for (int p = 0; p < 2; ++p) {
      const bool gi = ctx->needs_input_grad(2 * p), gt = ctx->needs_input_grad(2 * p + 1);
      if (!(gi || gt)) continue;
      auto [a, b] = call_l1_backward(grads[0], s[2 * p], s[2 * p + 1],
                                     ctx->saved_data[p == 0 ? "w1" : "w2"].toDouble(), red, gi, gt);
      if (gi) out[2 * p] = a;
      if (gt) out[2 * p + 1] = b;
    }
    return out;
  }
};

at::Tensor cycle_l1_loss_autograd(const at::Tensor& i1, const at::Tensor& t1, const at::Tensor& i2,
                                  const at::Tensor& t2, double w1, double w2, int64_t reduction) {
  if (!wants_grad(i1) && !wants_grad(t1) && !wants_grad(i2) && !wants_grad(t2)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<CycleOp>("gan_ext::cycle_l1_loss");
    return op.call(i1, t1, i2, t2, w1, w2, reduction);
  }
  return CycleL1Function::apply(i1, t1, i2, t2, w1, w2, reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) {
  m.impl("l1_loss", &l1_loss_autograd);
  m.impl("cycle_l1_loss", &cycle_l1_loss_autograd);
}

}  // namespace gan_ext
