// gan_ext::reparameterize, reparameterize_kl and reparameterize_backward
// (one kernel family): schemas and autograd.
#include <ATen/core/enum_tag.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sub.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/autograd.h"

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // z = mu + exp(0.5 * logvar) * eps, eps ~ N(0, 1) drawn in-kernel from the
  // generator's state (common/philox.h). reparameterize_kl also returns
  // kl = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) over every dim but the
  // first (the batch), reduced over the batch: 0 none -> (B,), 1 mean, 2 sum -> ().
  m.def("reparameterize(Tensor mu, Tensor logvar, *, Generator? generator=None) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  m.def(
      "reparameterize_kl(Tensor mu, Tensor logvar, int reduction, *, Generator? generator=None) "
      "-> (Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // Backward of both: eps is not stored; d z / d logvar = 0.5 * (z - mu).
  // grad_kl is absent for reparameterize. Returns (grad_mu, grad_logvar).
  m.def(
      "reparameterize_backward(Tensor? grad_z, Tensor? grad_kl, Tensor z, Tensor mu, "
      "Tensor logvar, int reduction) -> (Tensor, Tensor)");
}

namespace {

// ------------------------------------------------------- reparameterization
// Saved: z (an output), mu and logvar (inputs): no eps. d z / d logvar is
// 0.5 * (z - mu); logvar is read only for the KL term.
using ReparamBackwardOp = std::tuple<at::Tensor, at::Tensor>(const OptTensor&, const OptTensor&,
                                                             const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, int64_t);

variable_list reparameterize_backward_common(AutogradContext* ctx, const at::Tensor& gz,
                                             const at::Tensor& gkl, size_t n_inputs) {
  const auto s = ctx->get_saved_variables();
  variable_list out(n_inputs);
  if (!gz.defined() && !gkl.defined()) return out;
  if (create_graph()) {
    // The noise the forward drew, recovered from z (eps = (z - mu) / std) as
    // a constant; the twin rebuilds z and the KL from it differentiably.
    at::Tensor eps;
    {
      at::NoGradGuard no_grad;
      const auto sd = s[1].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      eps = at::mul(at::sub(s[0].to(sd), s[1].to(sd)), at::exp(at::mul(s[2].to(sd), -0.5)));
    }
    static auto twin = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, int64_t)>(
        "gan_ext::reparameterize_kl_twin");
    auto [z, kl] = twin.call(s[1], s[2], eps, gkl.defined(), ctx->saved_data["reduction"].toInt());
    return twin_grads({z, kl}, {gz, gkl}, {s[1], s[2]},
                      {ctx->needs_input_grad(0), ctx->needs_input_grad(1)}, n_inputs);
  }
  static auto op = find_op<ReparamBackwardOp>("gan_ext::reparameterize_backward");
  auto [gmu, glv] = op.call(opt(gz), opt(gkl), s[0], s[1], s[2],
                            ctx->saved_data["reduction"].toInt());
  if (ctx->needs_input_grad(0)) out[0] = gmu;
  if (ctx->needs_input_grad(1)) out[1] = glv;
  return out;
}

class ReparamFunction : public torch::autograd::Function<ReparamFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                            const c10::optional<at::Generator>& gen) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&,
                                        const c10::optional<at::Generator>&)>(
        "gan_ext::reparameterize");
    at::Tensor z = op.call(mu, logvar, gen);
    ctx->save_for_backward({z, mu, logvar});
    ctx->saved_data["reduction"] = int64_t(1);
    return z;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return reparameterize_backward_common(ctx, grads[0], at::Tensor(), 3);
  }
};

at::Tensor reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                   const c10::optional<at::Generator>& gen) {
  return ReparamFunction::apply(mu, logvar, gen);
}

class ReparamKLFunction : public torch::autograd::Function<ReparamKLFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                               int64_t reduction, const c10::optional<at::Generator>& gen) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, int64_t, const c10::optional<at::Generator>&)>(
        "gan_ext::reparameterize_kl");
    auto [z, kl] = op.call(mu, logvar, reduction, gen);
    ctx->save_for_backward({z, mu, logvar});
    ctx->saved_data["reduction"] = reduction;
    return {z, kl};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return reparameterize_backward_common(ctx, grads[0], grads[1], 4);
  }
};

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_autograd(
    const at::Tensor& mu, const at::Tensor& logvar, int64_t reduction,
    const c10::optional<at::Generator>& gen) {
  auto r = ReparamKLFunction::apply(mu, logvar, reduction, gen);
  return {r[0], r[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) {
  m.impl("reparameterize", &reparameterize_autograd);
  m.impl("reparameterize_kl", &reparameterize_kl_autograd);
}

}  // namespace gan_ext
