// gan_ext::norm_act: its schemas (with norm_act_backward and the debug plan
// ops) and its autograd (C++, on the Autograd key: see common/autograd.h).
#include <ATen/ops/where.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/autograd.h"
#include "ops/norm_act/checks.h"

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // Fused (batch|instance) norm + affine + activation.
  //   activation: 0 identity, 1 relu, 2 leaky_relu (negative_slope).
  //   use_input_stats: normalize with the statistics of `input` (training, or an
  //     instance norm without running stats); otherwise with running_mean/var.
  //   Returns (out, mean, invstd, var). mean/invstd/var have shape (C,) for
  //   batch norm and for running statistics, (N*C,) for instance statistics;
  //   var is the biased variance. They are float32 for half/bfloat16 input.
  //   Running statistics are updated in place, as torch's batch_norm and
  //   instance_norm do: with use_input_stats and a non-empty input,
  //   running = (1 - f) * running + f * batch, the batch variance unbiased and,
  //   for instance norm, the per-sample statistics averaged over the batch.
  //   num_batches_tracked, when given, is incremented (use_input_stats only);
  //   f = momentum, or 1 / num_batches_tracked (after the increment) when
  //   momentum is None (nn.BatchNorm2d's cumulative average). Doing this in
  //   the op saves the 4-5 small launches of a Python-side update per step.
  m.def(
      "norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, bool use_input_stats, "
      "bool instance, float? momentum, float eps, int activation, float negative_slope) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Backward of norm_act. `saved` is the forward input, or, when
  // saved_is_output (leaky_relu with negative_slope > 0), the forward output,
  // which is inverted in-kernel (In-Place Activated BatchNorm).
  // Returns (grad_input, grad_weight, grad_bias); the last two have shape (C,).
  // grad_weight is the gradient of the weight the op multiplies by (with an
  // invertible leaky_relu sign(w) * max(|w|, 1e-5): see kMinAbsWeight), sum(dz *
  // xhat); norm_act's autograd zeroes it where |w| is below that floor.
  m.def(
      "norm_act_backward(Tensor grad_out, Tensor saved, Tensor? weight, Tensor? bias, "
      "Tensor mean, Tensor invstd, bool use_input_stats, bool instance, int activation, "
      "float negative_slope, bool saved_is_output) -> (Tensor, Tensor, Tensor)");
  // Debug: the CUDA kernels' launch plans (ops/norm_act/plan.h) for a shape
  // and a wave of `wave` blocks, computed on the host of any build; legacy=None
  // follows GAN_EXT_CUDA_NORM_ACT, as the kernels do.
  //   planes -> [hwv, team, splits, chunk, step_seg, step_off, blocks]
  //   rows   -> [cv, tx, ty, col_blocks, splits, chunk, blocks]
  //   group  -> [] when the one-block-per-group kernels do not take the shape
  //             (elem_size: bytes per element), else their plan as planes gives it
  m.def(
      "_norm_act_plan_planes(int groups, int segs, int hw, int C, int vec, int wave, "
      "bool? legacy=None) -> int[]");
  m.def(
      "_norm_act_plan_rows(int batches, int rows, int C, int vec, int unroll, int wave, "
      "bool? legacy=None) -> int[]");
  m.def(
      "_norm_act_plan_group(int N, int C, int hw, int elem_size, bool channels_last, "
      "bool instance, bool use_input_stats, int vec, bool? legacy=None) -> int[]");
}

namespace {

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
    // The backward op's grad_weight is the effective weight's. In this mode that
    // weight is sign(w) * max(|w|, kMinAbsWeight), flat where |w| is below the
    // floor: there weight gets no gradient, as the twin's autograd gives it
    // (effective_weight_grad in gan_ext/ops/norm_act.py). The comparison is in
    // the weight's dtype, as the twin's clamp_min.
    if (need_w && saved_is_output) gw = at::where(saved[1].abs().ge(kMinAbsWeight), gw, 0);
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

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) {
  m.impl("norm_act", &norm_act_autograd);
}

}  // namespace gan_ext
