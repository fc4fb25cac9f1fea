// Entry point of gan_ext._C.
//
// `import gan_ext._C` only has to run the static registrars below; no Python
// functions are bound, so the module init is a plain stub (no pybind11) and the
// extension can be built against the limited API.
#include <Python.h>
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
  //   Running statistics are never written here: the op stays functional and the
  //   caller updates them from (mean, var).
  m.def(
      "norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor? running_mean, "
      "Tensor? running_var, bool use_input_stats, bool instance, float eps, int activation, "
      "float negative_slope) -> (Tensor, Tensor, Tensor, Tensor)");
  // Backward of norm_act. `saved` is the forward input, or, when
  // saved_is_output (leaky_relu with negative_slope > 0), the forward output,
  // which is inverted in-kernel (In-Place Activated BatchNorm).
  // Returns (grad_input, grad_weight, grad_bias); the last two have shape (C,).
  m.def(
      "norm_act_backward(Tensor grad_out, Tensor saved, Tensor? weight, Tensor? bias, "
      "Tensor mean, Tensor invstd, bool use_input_stats, bool instance, int activation, "
      "float negative_slope, bool saved_is_output) -> (Tensor, Tensor, Tensor)");
}
