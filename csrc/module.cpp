// Entry point of gan_ext._C.
//
// `import gan_ext._C` only has to run the static registrars below; no Python
// functions are bound, so the module init is a plain stub (no pybind11) and the
// extension can be built against the limited API.
#include <Python.h>
#include <torch/library.h>

#include "common/cpu_capability.h"

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "gan_ext kernels (ops live in torch.ops.gan_ext)", -1, nullptr};
  // A bad GAN_EXT_CPU_CAPABILITY left every CPU kernel unregistered: the
  // import fails with the reason rather than running something else.
  const char* error = gan_ext::cpu::load_error();
  if (*error != '\0') {
    PyErr_SetString(PyExc_ValueError, error);
    return nullptr;
  }
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  const char* warning = gan_ext::cpu::load_warning();
  if (*warning != '\0' && PyErr_WarnEx(PyExc_RuntimeWarning, warning, 1) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  // Which CPU variant registered (gan_ext._backend.cpu_capability, `gan-ext info`).
  if (PyModule_AddStringConstant(
          m, "cpu_capability", gan_ext::cpu::capability_name(gan_ext::cpu::selected_capability())) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
}

// The library's namespace. Each op declares its schemas in its own
// TORCH_LIBRARY_FRAGMENT (csrc/ops/<op>/<op>.cpp) and registers its kernels
// per backend (cpu.cpp, cuda.cu) and its autograd in C++ (<op>.cpp); fake
// kernels are registered from Python. This block defines nothing: it claims
// the namespace once, so that another library defining gan_ext fails loudly.
TORCH_LIBRARY(gan_ext, m) {}
