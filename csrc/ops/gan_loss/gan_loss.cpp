// gan_ext::d_loss and gan_ext::g_loss (with their *_with_grad forms): schemas
// and autograd.
//
// The conventions every loss op shares (bce_with_logits, l1_loss too):
// reduction 1 mean, 2 sum (0 'none' only where stated); GAN mode
// 0 vanilla (BCE with logits), 1 lsgan, 2 hinge, 3 minimax (g_loss only),
// 4 wasserstein (the labels unused).
// Every loss returns a 0-dim tensor of the logits' dtype (sums in opmath
// within blocks, float64 across blocks). mean over an empty tensor is an
// error; sum over one is 0.
// The *_with_grad forms also return the loss's gradients (already divided
// for mean), computed in the same pass: they are what autograd calls, and
// backward only multiplies them by grad_output. The plain forms compute the
// loss alone (inference, no_grad).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "common/autograd.h"
#include "common/loss_autograd.h"

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // d_loss = reduce(term(real_logits, real_label)) + reduce(term(fake_logits, fake_label)),
  //   vanilla: BCE-with-logits terms; lsgan: (x - label)^2; hinge: relu(1 - real), relu(1 + fake);
  //   wasserstein: -real, fake (mean(fake) - mean(real)).
  m.def(
      "d_loss(Tensor real_logits, Tensor fake_logits, int mode, float real_label, "
      "float fake_label, int reduction) -> Tensor");
  m.def(
      "d_loss_with_grad(Tensor real_logits, Tensor fake_logits, int mode, float real_label, "
      "float fake_label, int reduction) -> (Tensor, Tensor, Tensor)");
  // g_loss = reduce(term(fake_logits)): vanilla BCE(x, real_label) (non-saturating),
  //   minimax -BCE(x, fake_label) = log(1 - D(G(z))), lsgan (x - real_label)^2, hinge and
  //   wasserstein -x.
  m.def(
      "g_loss(Tensor fake_logits, int mode, float real_label, float fake_label, int reduction) "
      "-> Tensor");
  m.def(
      "g_loss_with_grad(Tensor fake_logits, int mode, float real_label, float fake_label, "
      "int reduction) -> (Tensor, Tensor)");
}

namespace {

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

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, Autograd, m) {
  m.impl("d_loss", &d_loss_autograd);
  m.impl("g_loss", &g_loss_autograd);
}

}  // namespace gan_ext
