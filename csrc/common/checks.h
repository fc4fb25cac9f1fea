// Argument checks and codes shared by every op, so that the kernels of all ops
// (and their pure-PyTorch twins, which raise the same text) word a bad input
// the same way. Lean includes only: this header compiles under nvcc.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace gan_ext {

// The activation codes of norm_act and act_dropout (gan_ext.reference uses
// the same numbers).
enum class Activation : int64_t { Identity = 0, ReLU = 1, LeakyReLU = 2 };

inline const char* dtype_name(const at::Tensor& t) { return c10::toString(t.scalar_type()); }

// `name` must hold floating point values: every kernel dispatches over
// float32, float64, bfloat16 and float16 only.
inline void check_float_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   " must be a floating point tensor (float32, float64, bfloat16 or float16), got ",
                   dtype_name(t));
}

inline void check_activation(int64_t activation) {
  TORCH_CHECK_VALUE(activation >= static_cast<int64_t>(Activation::Identity) &&
                        activation <= static_cast<int64_t>(Activation::LeakyReLU),
                    "activation must be 0 (identity), 1 (relu) or 2 (leaky_relu), got ", activation);
}

}  // namespace gan_ext
