// Autograd for gan_ext::norm_act, registered in C++ on the Autograd key.
//
// The house style registers autograd from Python (torch.library.register_autograd).
// We measured that path at ~40-60 us of Python per call on CPU, more than the
// whole eager BatchNorm2d+ReLU on the small tensors GAN discriminators and MLP
// heads use, so the forward/backward wiring lives here instead. The backward
// is still its own op (gan_ext::norm_act_backward), so torch.compile/AOTAutograd
// trace both as opaque ops through the fake kernels in gan_ext/_ops.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Dispatch.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/mul.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "norm_act.h"

namespace gan_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;

using NormActOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

NormActOut call_norm_act(const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
                         const OptTensor& running_mean, const OptTensor& running_var,
                         const OptTensor& num_batches_tracked, bool use_input_stats, bool instance,
                         c10::optional<double> momentum, double eps, int64_t activation,
                         double negative_slope) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gan_ext::norm_act", "")
                       .typed<NormActOut(const at::Tensor&, const OptTensor&, const OptTensor&,
                                         const OptTensor&, const OptTensor&, const OptTensor&, bool,
                                         bool, c10::optional<double>, double, int64_t, double)>();
  return op.call(input, weight, bias, running_mean, running_var, num_batches_tracked,
                 use_input_stats, instance, momentum, eps, activation, negative_slope);
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
                               const OptTensor& running_var, const OptTensor& num_batches_tracked,
                               bool use_input_stats, bool instance, c10::optional<double> momentum,
                               double eps, int64_t activation, double negative_slope) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mean, invstd, var] =
        call_norm_act(input, weight, bias, running_mean, running_var, num_batches_tracked,
                      use_input_stats, instance, momentum, eps, activation, negative_slope);
    // The running statistics and the counter are updated in place and are not
    // needed by backward: nothing of them is saved. Their version counters are
    // bumped here, as ADInplaceOrView would for a native in-place op, since this
    // kernel dispatches below that key (the conv blocks' fold cache keys on them).
    if (use_input_stats) {
      for (const OptTensor* t : {&running_mean, &running_var, &num_batches_tracked}) {
        if (t->has_value() && (*t)->defined()) torch::autograd::impl::bump_version(**t);
      }
    }
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
    variable_list result(12);  // one per forward argument
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

NormActOut norm_act_autograd(const at::Tensor& input, const OptTensor& weight,
                             const OptTensor& bias, const OptTensor& running_mean,
                             const OptTensor& running_var, const OptTensor& num_batches_tracked,
                             bool use_input_stats, bool instance, c10::optional<double> momentum,
                             double eps, int64_t activation, double negative_slope) {
  auto r = NormActFunction::apply(input, weight, bias, running_mean, running_var,
                                  num_batches_tracked, use_input_stats, instance, momentum, eps,
                                  activation, negative_slope);
  return {r[0], r[1], r[2], r[3]};
}


// ----------------------------------------------------------------- losses
// The loss ops compute their gradients in the forward pass (the *_with_grad
// ops); backward only scales them by grad_output. Without grad mode, or when no
// input needs a gradient, the plain loss op runs and nothing is saved.

template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The saved gradients are constants to autograd: a second derivative through
// them would be silently zero, so refuse create_graph=True instead.
void check_not_double_backward(const char* op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "gan_ext.", op,
              " does not support double backward (backward with create_graph=True); use "
              "gan_ext.use_backend('reference') for that computation");
}

inline bool wants_grad(const at::Tensor& t) { return at::GradMode::is_enabled() && t.requires_grad(); }

// saved * grad_output. loss.backward() seeds grad_output = 1: on CPU that is
// checked without a dispatch and the saved gradient is handed on as is (the
// engine releases ctx before passing it on, so nothing else holds it; with
// retain_graph, AccumulateGrad copies it instead of taking it).
at::Tensor scale_saved(const at::Tensor& saved, const at::Tensor& go) {
  // Only for real CPU tensors: under torch.compile/AOTAutograd tracing go is a
  // fake (or functional) tensor without data.
  if (go.is_cpu() && go.numel() == 1 && go.scalar_type() == saved.scalar_type() &&
      !at::isTensorSubclassLike(go)) {
    bool one = false;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "gan_ext_is_one",
                                    [&] { one = static_cast<double>(*go.const_data_ptr<scalar_t>()) == 1.0; });
    if (one) return saved;
  }
  return at::mul(saved, go);
}

using LossWithGrad3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

class DLossFunction : public torch::autograd::Function<DLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake,
                            int64_t mode, double real_label, double fake_label, int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<LossWithGrad3(const at::Tensor&, const at::Tensor&, int64_t, double,
                                           double, int64_t)>("gan_ext::d_loss_with_grad");
    auto [loss, gr, gf] = op.call(real, fake, mode, real_label, fake_label, reduction);
    ctx->save_for_backward({gr, gf});
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_not_double_backward("d_loss");
    const auto saved = ctx->get_saved_variables();
    variable_list out(6);
    if (!grads[0].defined()) return out;
    if (ctx->needs_input_grad(0)) out[0] = scale_saved(saved[0], grads[0]);
    if (ctx->needs_input_grad(1)) out[1] = scale_saved(saved[1], grads[0]);
    return out;
  }
};

at::Tensor d_loss_autograd(const at::Tensor& real, const at::Tensor& fake, int64_t mode,
                           double real_label, double fake_label, int64_t reduction) {
  if (!wants_grad(real) && !wants_grad(fake)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double, double,
                                        int64_t)>("gan_ext::d_loss");
    return op.call(real, fake, mode, real_label, fake_label, reduction);
  }
  return DLossFunction::apply(real, fake, mode, real_label, fake_label, reduction);
}

class GLossFunction : public torch::autograd::Function<GLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& fake, int64_t mode,
                            double real_label, double fake_label, int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, double,
                                                                double, int64_t)>(
        "gan_ext::g_loss_with_grad");
    auto [loss, gf] = op.call(fake, mode, real_label, fake_label, reduction);
    ctx->save_for_backward({gf});
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_not_double_backward("g_loss");
    variable_list out(5);
    if (grads[0].defined()) out[0] = scale_saved(ctx->get_saved_variables()[0], grads[0]);
    return out;
  }
};

at::Tensor g_loss_autograd(const at::Tensor& fake, int64_t mode, double real_label,
                           double fake_label, int64_t reduction) {
  if (!wants_grad(fake)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<at::Tensor(const at::Tensor&, int64_t, double, double, int64_t)>(
        "gan_ext::g_loss");
    return op.call(fake, mode, real_label, fake_label, reduction);
  }
  return GLossFunction::apply(fake, mode, real_label, fake_label, reduction);
}

class BCEFunction : public torch::autograd::Function<BCEFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction, bool grad_target) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<LossWithGrad3(const at::Tensor&, const at::Tensor&, int64_t, bool)>(
        "gan_ext::bce_with_logits_with_grad");
    auto [loss, gi, gt] = op.call(input, target, reduction, grad_target);
    ctx->save_for_backward({gi, gt});
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_not_double_backward("bce_with_logits");
    const auto saved = ctx->get_saved_variables();
    variable_list out(4);
    if (!grads[0].defined()) return out;
    if (ctx->needs_input_grad(0)) out[0] = scale_saved(saved[0], grads[0]);
    if (ctx->needs_input_grad(1)) out[1] = scale_saved(saved[1], grads[0]);
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
    check_not_double_backward("l1_loss");
    const auto saved = ctx->get_saved_variables();
    variable_list out(3);
    const bool gi = ctx->needs_input_grad(0), gt = ctx->needs_input_grad(1);
    if (!grads[0].defined() || !(gi || gt)) return out;
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
    check_not_double_backward("cycle_l1_loss");
    const auto s = ctx->get_saved_variables();
    variable_list out(7);
    if (!grads[0].defined()) return out;
    const int64_t red = ctx->saved_data["reduction"].toInt();
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

// ------------------------------------------------------- reparameterization
// Saved: z (an output), mu and logvar (inputs): no eps. d z / d logvar is
// 0.5 * (z - mu); logvar is read only for the KL term.
using ReparamBackwardOp = std::tuple<at::Tensor, at::Tensor>(const OptTensor&, const OptTensor&,
                                                             const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, int64_t);

variable_list reparameterize_backward_common(AutogradContext* ctx, const at::Tensor& gz,
                                             const at::Tensor& gkl, size_t n_inputs) {
  check_not_double_backward("reparameterize");
  const auto s = ctx->get_saved_variables();
  variable_list out(n_inputs);
  if (!gz.defined() && !gkl.defined()) return out;
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

// ---------------------------------------------------- activation + dropout
// Saved: the output (usually also saved by the next layer, so it costs
// nothing extra) and the 2-value rng tensor; the mask is regenerated.
using ActDropoutSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, double, double,
                                                         const c10::optional<at::Generator>&);

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
    check_not_double_backward("act_dropout");
    const auto s = ctx->get_saved_variables();
    variable_list out(5);
    if (!grads[0].defined()) return out;
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        int64_t, double, double)>("gan_ext::act_dropout_backward");
    out[0] = op.call(grads[0], s[0], s[1], ctx->saved_data["activation"].toInt(),
                     ctx->saved_data["negative_slope"].toDouble(), ctx->saved_data["p"].toDouble());
    return out;
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
  m.impl("norm_act", &norm_act_autograd);
  m.impl("d_loss", &d_loss_autograd);
  m.impl("g_loss", &g_loss_autograd);
  m.impl("bce_with_logits", &bce_with_logits_autograd);
  m.impl("l1_loss", &l1_loss_autograd);
  m.impl("cycle_l1_loss", &cycle_l1_loss_autograd);
  m.impl("reparameterize", &reparameterize_autograd);
  m.impl("reparameterize_kl", &reparameterize_kl_autograd);
  m.impl("act_dropout", &act_dropout_autograd);
}

}  // namespace gan_ext
