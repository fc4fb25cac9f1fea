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

// The library's namespace. Each op declares its schemas in its own
// TORCH_LIBRARY_FRAGMENT (csrc/ops/<op>/<op>.cpp) and registers its kernels
// per backend (cpu.cpp, cuda.cu) and its autograd in C++ (<op>.cpp); fake
// kernels are registered from Python. This block defines nothing: it claims
// the namespace once, so that another library defining gan_ext fails loudly.
TORCH_LIBRARY(gan_ext, m) {}
