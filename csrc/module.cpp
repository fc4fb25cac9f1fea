// Entry point of gan_ext._C.
//
// `import gan_ext._C` only has to run the static registrars below; no Python
// functions are bound, so the module init is a plain stub (no pybind11) and the
// extension can be built against the limited API.
#include <Python.h>
#include <ATen/core/enum_tag.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "gan_ext kernels (ops live in torch.ops.gan_ext)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

// Every schema of the library lives here, in one block. Kernels register per
// backend in csrc/cpu/*.cpp and csrc/cuda/*.cu; fake kernels and autograd are
// registered from Python (gan_ext/_ops.py).
TORCH_LIBRARY(gan_ext, m) {
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
  m.def(
      "norm_act_backward(Tensor grad_out, Tensor saved, Tensor? weight, Tensor? bias, "
      "Tensor mean, Tensor invstd, bool use_input_stats, bool instance, int activation, "
      "float negative_slope, bool saved_is_output) -> (Tensor, Tensor, Tensor)");
  // Debug: the CUDA kernels' launch plans (csrc/norm_act_plan.h) for a shape
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

  // ---------------------------------------------------------------- losses
  // Codes: reduction 1 mean, 2 sum (0 'none' only where stated); GAN mode
  // 0 vanilla (BCE with logits), 1 lsgan, 2 hinge, 3 minimax (g_loss only).
  // Every loss returns a 0-dim tensor of the logits' dtype (sums in opmath
  // within blocks, float64 across blocks). mean over an empty tensor is an
  // error; sum over one is 0.
  // The *_with_grad forms also return the loss's gradients (already divided
  // for mean), computed in the same pass: they are what autograd calls, and
  // backward only multiplies them by grad_output. The plain forms compute the
  // loss alone (inference, no_grad).
  //
  // d_loss = reduce(term(real_logits, real_label)) + reduce(term(fake_logits, fake_label)),
  //   vanilla: BCE-with-logits terms; lsgan: (x - label)^2; hinge: relu(1 - real), relu(1 + fake).
  m.def(
      "d_loss(Tensor real_logits, Tensor fake_logits, int mode, float real_label, "
      "float fake_label, int reduction) -> Tensor");
  m.def(
      "d_loss_with_grad(Tensor real_logits, Tensor fake_logits, int mode, float real_label, "
      "float fake_label, int reduction) -> (Tensor, Tensor, Tensor)");
  // g_loss = reduce(term(fake_logits)): vanilla BCE(x, real_label) (non-saturating),
  //   minimax -BCE(x, fake_label) = log(1 - D(G(z))), lsgan (x - real_label)^2, hinge -x.
  m.def(
      "g_loss(Tensor fake_logits, int mode, float real_label, float fake_label, int reduction) "
      "-> Tensor");
  m.def(
      "g_loss_with_grad(Tensor fake_logits, int mode, float real_label, float fake_label, "
      "int reduction) -> (Tensor, Tensor)");
  // BCE between logits and targets (VAE reconstruction): softplus(x) - x*y.
  // The gradient for target (-x) is returned only when grad_target, else an
  // empty tensor.
  m.def("bce_with_logits(Tensor input, Tensor target, int reduction) -> Tensor");
  m.def(
      "bce_with_logits_with_grad(Tensor input, Tensor target, int reduction, bool grad_target) "
      "-> (Tensor, Tensor, Tensor)");
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
  // Backward of the *_with_grad losses: (grad * saved_a, grad * saved_b), an
  // empty tensor for an absent one, with grad the loss's gradient (one value of
  // their dtype). The CUDA kernel reads grad on the device (no host sync, so
  // CUDA-graph safe) and scales both in one launch. Autograd calls it off the
  // CPU only: on the CPU it multiplies directly and skips grad == 1.
  m.def("scale_loss_grads(Tensor grad, Tensor? saved_a, Tensor? saved_b) -> (Tensor, Tensor)");

  // -------------------------------------------------------- reparameterization
  // z = mu + exp(0.5 * logvar) * eps, eps ~ N(0, 1) drawn in-kernel from the
  // generator's state (csrc/philox.h). reparameterize_kl also returns
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

  // ------------------------------------------------ activation + dropout
  // out = act(input) * keep / (1 - p), the keep mask drawn in-kernel from the
  // generator (csrc/dropout.h); activation 0 identity, 1 relu, 2 leaky_relu
  // (negative_slope >= 0). Returns (out, rng): rng is the int64 (seed, offset)
  // pair the backward regenerates the mask from (zeros when p == 0, which
  // draws nothing). out is contiguous.
  m.def(
      "act_dropout(Tensor input, int activation, float negative_slope, float p, *, "
      "Generator? generator=None) -> (Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // grad_input = grad * act'(from out) * keep / (1 - p).
  m.def(
      "act_dropout_backward(Tensor grad, Tensor out, Tensor rng, int activation, "
      "float negative_slope, float p) -> Tensor");
}
