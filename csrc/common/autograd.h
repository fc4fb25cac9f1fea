// Autograd for gan_ext::norm_act, registered in C++ on the Autograd key.
//
// The house style registers autograd from Python (torch.library.register_autograd).
// We measured that path at ~40-60 us of Python per call on CPU, more than the
// whole eager BatchNorm2d+ReLU on the small tensors GAN discriminators and MLP
// heads use, so the forward/backward wiring lives here instead. The backward
// is still its own op (gan_ext::norm_act_backward), so torch.compile/AOTAutograd
// trace both as opaque ops through the fake kernels in gan_ext/_ops.py.
//
// Second derivatives. A backward run with create_graph=True (gradient
// penalties) has grad mode on inside backward: then every Function here takes
// its first derivative from a differentiable twin op instead of the fused
// kernels (gan_ext/_twin_ops.py: the pure-PyTorch twins as
// CompositeImplicitAutograd kernels), so autograd records it and can
// differentiate it again. The first-order path is unchanged.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Dispatch.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sub.h>
#include <torch/csrc/autograd/autograd.h>
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
variable_list twin_grads(const variable_list& outputs, const variable_list& grad_outputs,
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

using NormActBackwardTwin = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const OptTensor&, const OptTensor&, const OptTensor&, const at::Tensor&, const OptTensor&,
    const OptTensor&, const at::Tensor&, const at::Tensor&, bool, bool, int64_t, double, bool);

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
    // mean and invstd stay differentiable: a double backward differentiates
    // the first derivative, which depends on them (and, with input statistics,
    // they depend on the input). var is only for the running statistics.
    ctx->mark_non_differentiable({var});
    // No gradient reaches mean/invstd in a first-order backward: keep those
    // undefined rather than zero-filled, so the fast path can tell.
    ctx->set_materialize_grads(false);
    return {out, mean, invstd, var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad_out = grads[0];
    const bool use_input_stats = ctx->saved_data["use_input_stats"].toBool();
    // Gradients reach mean/invstd only in a double backward (from the twin's
    // first derivative); with running statistics they depend on no input.
    const bool stat_grads = use_input_stats && (grads[1].defined() || grads[2].defined());
    variable_list result(12);  // one per forward argument
    if (!grad_out.defined() && !stat_grads) return result;
    // needs_input_grad counts only the tensors that were passed: an absent
    // weight shifts bias down to edge 1.
    const bool has_w = saved[1].defined(), has_b = saved[2].defined();
    const bool need_in = ctx->needs_input_grad(0);
    const bool need_w = has_w && ctx->needs_input_grad(1);
    const bool need_b = has_b && ctx->needs_input_grad(has_w ? 2 : 1);
    if (!(need_in || need_w || need_b)) return result;
    const bool instance = ctx->saved_data["instance"].toBool();
    const int64_t activation = ctx->saved_data["activation"].toInt();
    const double slope = ctx->saved_data["negative_slope"].toDouble();
    const bool saved_is_output = ctx->saved_data["saved_is_output"].toBool();
    at::Tensor gi, gw, gb;
    if (create_graph() || stat_grads) {
      // create_graph (or the second pass of a double backward): the twin.
      static auto twin = find_op<NormActBackwardTwin>("gan_ext::norm_act_backward_twin");
      std::tie(gi, gw, gb) = twin.call(
          opt(grad_out), stat_grads ? opt(grads[1]) : OptTensor(),
          stat_grads ? opt(grads[2]) : OptTensor(), saved[0], opt(saved[1]), opt(saved[2]),
          saved[3], saved[4], use_input_stats, instance, activation, slope, saved_is_output);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(gi, gw, gb) = call_norm_act_backward(grad_out, saved[0], opt(saved[1]),
                                                    opt(saved[2]), saved[3], saved[4],
                                                    use_input_stats, instance, activation, slope,
                                                    saved_is_output);
    }
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


inline bool wants_grad(const at::Tensor& t) { return at::GradMode::is_enabled() && t.requires_grad(); }

// saved * grad_output on the CPU. loss.backward() seeds grad_output = 1: that is
// checked without a dispatch and the saved gradient is handed on as is (the
// engine releases ctx before passing it on, so nothing else holds it; with
// retain_graph, AccumulateGrad copies it instead of taking it).
at::Tensor scale_saved_cpu(const at::Tensor& saved, const at::Tensor& go) {
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
std::pair<at::Tensor, at::Tensor> scale_saved(const at::Tensor& go, const at::Tensor& a,
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
at::Tensor needed(AutogradContext* ctx, const variable_list& saved, size_t i) {
  return ctx->needs_input_grad(i) ? saved[i] : at::Tensor();
}

using LossWithGrad3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The GAN losses' settings, kept for a double backward in one saved_data entry
// (one hash-map insertion per call: these losses are a few microseconds).
struct GanLossSettings {
  int64_t mode;
  double real_label, fake_label;
  int64_t reduction;
};

void save_gan_loss_settings(AutogradContext* ctx, int64_t mode, double real_label,
                            double fake_label, int64_t reduction) {
  ctx->saved_data["settings"] = c10::List<double>(
      {static_cast<double>(mode), real_label, fake_label, static_cast<double>(reduction)});
}

GanLossSettings gan_loss_settings(AutogradContext* ctx) {
  const auto v = ctx->saved_data["settings"].toDoubleList();
  return {static_cast<int64_t>(v[0]), v[1], v[2], static_cast<int64_t>(v[3])};
}

class DLossFunction : public torch::autograd::Function<DLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake,
                            int64_t mode, double real_label, double fake_label, int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<LossWithGrad3(const at::Tensor&, const at::Tensor&, int64_t, double,
                                           double, int64_t)>("gan_ext::d_loss_with_grad");
    auto [loss, gr, gf] = op.call(real, fake, mode, real_label, fake_label, reduction);
    // The inputs too (references, no copy): a double backward differentiates the twin.
    ctx->save_for_backward({gr, gf, real, fake});
    save_gan_loss_settings(ctx, mode, real_label, fake_label, reduction);
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    variable_list out(6);
    if (!grads[0].defined()) return out;
    if (create_graph()) {
      static auto twin = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double,
                                            double, int64_t)>("gan_ext::d_loss_twin");
      const GanLossSettings a = gan_loss_settings(ctx);
      at::Tensor loss = twin.call(saved[2], saved[3], a.mode, a.real_label, a.fake_label,
                                  a.reduction);
      return twin_grads({loss}, {grads[0]}, {saved[2], saved[3]},
                        {ctx->needs_input_grad(0), ctx->needs_input_grad(1)}, 6);
    }
    std::tie(out[0], out[1]) = scale_saved(grads[0], needed(ctx, saved, 0), needed(ctx, saved, 1));
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
    ctx->save_for_backward({gf, fake});
    save_gan_loss_settings(ctx, mode, real_label, fake_label, reduction);
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(5);
    if (!grads[0].defined()) return out;
    const auto saved = ctx->get_saved_variables();
    if (create_graph()) {
      static auto twin = find_op<at::Tensor(const at::Tensor&, int64_t, double, double, int64_t)>(
          "gan_ext::g_loss_twin");
      const GanLossSettings a = gan_loss_settings(ctx);
      at::Tensor loss = twin.call(saved[1], a.mode, a.real_label, a.fake_label, a.reduction);
      return twin_grads({loss}, {grads[0]}, {saved[1]}, {ctx->needs_input_grad(0)}, 5);
    }
    out[0] = scale_saved(grads[0], saved[0], {}).first;
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
