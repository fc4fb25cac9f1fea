// Shared by the CPU and CUDA kernels of minibatch_discrimination and its
// backward: argument checks (gan_ext/ops/minibatch_discrimination.py raises
// the same text). Lean includes only: this header compiles under nvcc.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/checks.h"
#include "common/losses.h"

namespace gan_ext {

inline void check_minibatch_discrimination_args(const at::Tensor& M) {
  check_float_dtype(M, "M");
  TORCH_CHECK_VALUE(M.dim() == 3, "M must be a 3-D tensor (N, B, C): the batch, the kernels and "
                    "each kernel's dimension, got shape ", M.sizes());
}

inline void check_minibatch_discrimination_grad(const at::Tensor& grad, const at::Tensor& M) {
  check_minibatch_discrimination_args(M);
  check_float_dtype(grad, "grad");
  check_same_device(grad, "grad", M, "M");
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == M.size(0) && grad.size(1) == M.size(1),
                    "grad must have the output's shape [N, B] = [", M.size(0), ", ", M.size(1),
                    "], got ", grad.sizes());
}

}  // namespace gan_ext
