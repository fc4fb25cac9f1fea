// Shared by the CPU and CUDA kernels of norm_act: argument checks, constants and
// the output allocation, so both backends reject and accept the same inputs.
// Lean includes only: this header must compile under nvcc without the CUDA
// math libraries' headers.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <tuple>

#include "common/checks.h"

namespace gan_ext {

// With an invertible leaky_relu the backward recovers the normalized input
// from the output, which divides by the affine weight. Weights are therefore
// used as sign(w) * max(|w|, kMinAbsWeight) in that mode, forward and backward
// alike, so the op stays one consistent function (reference.py does the same).
// Its derivative in w is that of the clamp: 1 where |w| >= kMinAbsWeight, 0
// below (the autograd of norm_act zeroes grad_weight there; the backward op's
// grad_weight is the effective weight's, which the synced layer needs whole).
constexpr double kMinAbsWeight = 1e-5;

inline bool output_is_invertible(int64_t activation, double negative_slope) {
  return activation == static_cast<int64_t>(Activation::LeakyReLU) && negative_slope > 0;
}

inline void check_param(const c10::optional<at::Tensor>& p, const char* name, const at::Tensor& input,
                        int64_t C) {
  if (!p.has_value() || !p->defined()) return;
  const at::Tensor& t = *p;
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == C, name, " must be a 1-D tensor of size ", C,
                    " (the channel count of input), got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == input.device(), name, " must be on ", input.device(), ", got ",
                    t.device());
  const bool same = t.scalar_type() == input.scalar_type();
  const bool mixed = t.scalar_type() == at::kFloat &&
                     (input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16);
  TORCH_CHECK_TYPE(same || mixed, name, " has dtype ", dtype_name(t), " but input has dtype ",
                   dtype_name(input), "; they must match (float32 ", name,
                   " is also accepted for float16/bfloat16 input)");
}

inline bool defined(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// The running-statistics update of the forward (see the schema in norm_act.cpp).
// reference.py's check_running_update_args raises the same messages.
inline void check_running_update_args(const at::Tensor& input,
                                      const c10::optional<at::Tensor>& running_mean,
                                      const c10::optional<at::Tensor>& running_var,
                                      const c10::optional<at::Tensor>& num_batches_tracked,
                                      bool use_input_stats, c10::optional<double> momentum) {
  if (defined(num_batches_tracked)) {
    const at::Tensor& t = *num_batches_tracked;
    TORCH_CHECK_TYPE(t.scalar_type() == at::kLong && t.numel() == 1,
                     "num_batches_tracked must be a one-element int64 tensor, got dtype ",
                     dtype_name(t), " and shape ", t.sizes());
    TORCH_CHECK_VALUE(t.device() == input.device(), "num_batches_tracked must be on ",
                      input.device(), ", got ", t.device());
    TORCH_CHECK_VALUE(use_input_stats,
                      "num_batches_tracked is only counted when use_input_stats is true "
                      "(training); pass None");
  }
  TORCH_CHECK_VALUE(momentum.has_value() || !use_input_stats ||
                        defined(num_batches_tracked) ||
                        !(defined(running_mean) || defined(running_var)),
                    "momentum=None (a cumulative average) requires num_batches_tracked");
}

// Checks the forward arguments. Returns (N, C, HW).
inline std::tuple<int64_t, int64_t, int64_t> check_norm_act_args(
    const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
    const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& num_batches_tracked, bool use_input_stats, bool instance,
    c10::optional<double> momentum, double eps, int64_t activation) {
  TORCH_CHECK_VALUE(input.dim() == 4, "input must be a 4-D (N, C, H, W) tensor, got a ",
                    input.dim(), "-D tensor of shape ", input.sizes());
  check_float_dtype(input, "input");
  check_activation(activation);
  // As torch: eps = 0 is allowed except for batch statistics in training (a
  // channel of zero variance then gives inf/NaN, as there).
  TORCH_CHECK_VALUE(eps >= 0, "eps must be >= 0, got ", eps);
  TORCH_CHECK_VALUE(eps > 0 || instance || !use_input_stats,
                    "eps must be positive for batch norm in training (as in torch), got ", eps);
  const int64_t N = input.size(0), C = input.size(1), HW = input.size(2) * input.size(3);
  check_param(weight, "weight", input, C);
  check_param(bias, "bias", input, C);
  check_param(running_mean, "running_mean", input, C);
  check_param(running_var, "running_var", input, C);
  check_running_update_args(input, running_mean, running_var, num_batches_tracked,
                            use_input_stats, momentum);
  if (use_input_stats) {
    const int64_t per_channel = instance ? HW : N * HW;
    TORCH_CHECK_VALUE(input.numel() == 0 || per_channel > 1,
                      "Expected more than 1 value per channel when using input statistics "
                      "(training), got input of shape ",
                      input.sizes(), (instance ? " (instance norm normalizes over H*W)" : ""));
  } else {
    TORCH_CHECK_VALUE(running_mean.has_value() && running_mean->defined() &&
                          running_var.has_value() && running_var->defined(),
                      "running_mean and running_var are required when use_input_stats is false");
  }
  return {N, C, HW};
}

inline void check_norm_act_backward_args(const at::Tensor& grad_out, const at::Tensor& saved,
                                         const c10::optional<at::Tensor>& weight,
                                         const c10::optional<at::Tensor>& bias,
                                         const at::Tensor& mean, const at::Tensor& invstd,
                                         int64_t activation, bool saved_is_output,
                                         double negative_slope) {
  TORCH_CHECK_VALUE(saved.dim() == 4, "saved must be a 4-D tensor, got shape ", saved.sizes());
  TORCH_CHECK_VALUE(grad_out.sizes() == saved.sizes(), "grad_out has shape ", grad_out.sizes(),
                    " but the saved tensor has shape ", saved.sizes());
  TORCH_CHECK_TYPE(grad_out.scalar_type() == saved.scalar_type(), "grad_out has dtype ",
                   dtype_name(grad_out), " but the saved tensor has dtype ", dtype_name(saved));
  check_activation(activation);
  TORCH_CHECK_VALUE(!saved_is_output || output_is_invertible(activation, negative_slope),
                    "saved_is_output requires activation=2 (leaky_relu) with negative_slope > 0");
  const int64_t C = saved.size(1);
  check_param(weight, "weight", saved, C);
  check_param(bias, "bias", saved, C);
  TORCH_CHECK_VALUE(mean.dim() == 1 && invstd.sizes() == mean.sizes(),
                    "mean and invstd must be 1-D tensors of equal size, got ", mean.sizes(), " and ",
                    invstd.sizes());
}

// The memory layout a kernel works in and returns: channels_last only for input
// that is channels_last and not also plain contiguous; everything else is made
// NCHW-contiguous. gan_ext/ops/norm_act.py mirrors this rule in the fake kernels.
inline bool use_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::MemoryFormat kernel_memory_format(const at::Tensor& t) {
  return use_channels_last(t) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// dtype of the statistics: float for reduced precision inputs, else the input's.
inline at::ScalarType stats_dtype(const at::Tensor& input) {
  auto t = input.scalar_type();
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

}  // namespace gan_ext
