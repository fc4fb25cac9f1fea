// gan_ext::act_dropout: activation + inverted dropout in one pass, with the
// keep mask drawn in-kernel from the counter-based Philox stream of
// common/philox.h. Shared by the CPU kernel, the CUDA kernel and (as a formula)
// the pure-PyTorch twin (gan_ext/reference.py, `dropout_keep`).
//
// The mask is never stored: backward regenerates it from (seed, offset), which
// the forward returns as a 2-element int64 tensor.
//
// Element i (row-major) of the stream:
//   group g = i / 32, r = i % 32: Philox block q = 8 g + (r % 8), word k = r / 8,
//   so one AVX2 vector of 8 blocks covers 32 consecutive elements, word k
//   giving elements 8k..8k+7 of the group (no transpose on the CPU).
//   keep(i) = (word >> 9) >= threshold(p), threshold = ceil(p * 2^23 - 1/2):
//   the 23-bit uniform u = ((word >> 9) + 1/2) 2^-23 of philox.h is >= p.
//   P(keep) = 1 - p to within 2^-23; p = 0 keeps all, p = 1 none.
//   out = act(x) * (keep ? 1 / (1 - p) : 0)   (0 for p = 1).
// p = 0 draws nothing from the generator (rng is returned as zeros).
//
// Backward reads the forward output: for kept elements sign(out) = sign(act(x)),
// which is all relu and leaky_relu (negative_slope >= 0) need:
//   relu: out > 0;  leaky_relu: out > 0 ? 1 : slope;  identity: 1.
//
// Layout: out (and the gradient) take the input's memory layout, by
// at::empty_like's rule: its own strides when it is dense, else contiguous in
// its suggested memory format. The kernels run in memory order, so a
// channels_last activation costs no copy. The mask is indexed by the
// row-major element, so p > 0 on a non-contiguous layout is computed on a
// contiguous copy and copied back (Layout below).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "common/checks.h"
#include "common/philox.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

namespace gan_ext {
namespace dropout {

constexpr int64_t kGroup = 32;  // elements per group of 8 Philox blocks

// 2^23: the resolution of the 23-bit uniform a Philox word gives (word >> 9).
constexpr uint32_t kUniformSteps = 1u << 23;

inline uint32_t threshold(double p) {
  const double steps = static_cast<double>(kUniformSteps);
  const double t = std::ceil(p * steps - 0.5);
  return t <= 0.0 ? 0u : (t >= steps ? kUniformSteps : static_cast<uint32_t>(t));
}

inline double scale(double p) { return p >= 1.0 ? 0.0 : 1.0 / (1.0 - p); }

// The stream position of element i.
C10_HOST_DEVICE inline void position(uint64_t i, uint64_t& block, int& word) {
  const uint64_t g = i / kGroup;
  const int r = static_cast<int>(i % kGroup);
  block = 8 * g + static_cast<uint64_t>(r % 8);
  word = r / 8;
}

C10_HOST_DEVICE inline bool keep(uint32_t word, uint32_t thr) { return (word >> 9) >= thr; }

inline void check_act_dropout_args(const at::Tensor& input, int64_t activation,
                                   double negative_slope, double p) {
  check_float_dtype(input, "input");
  check_activation(activation);
  TORCH_CHECK_VALUE(activation != static_cast<int64_t>(Activation::LeakyReLU) || (std::isfinite(negative_slope) && negative_slope >= 0.0),
                    "negative_slope must be a finite number >= 0 for leaky_relu (the backward "
                    "reads the sign of the output), got ", negative_slope);
  TORCH_CHECK_VALUE(std::isfinite(p) && p >= 0.0 && p <= 1.0,
                    "dropout probability p must be in [0, 1], got ", p);
}

inline void check_act_dropout_backward_args(const at::Tensor& grad, const at::Tensor& out,
                                            const at::Tensor& rng) {
  TORCH_CHECK_VALUE(grad.sizes() == out.sizes(), "grad has shape ", grad.sizes(),
                    " but the forward output has shape ", out.sizes());
  TORCH_CHECK_VALUE(grad.device() == out.device() && rng.device() == out.device(),
                    "grad, out and rng must be on one device");
  TORCH_CHECK_VALUE(rng.scalar_type() == at::kLong && rng.numel() == 2,
                    "rng must be the 2-element int64 tensor returned by act_dropout");
}

// The tensors a kernel runs on, in memory order: `src` (the input, or the
// forward output for backward) and a fresh result laid out as src. `logical`:
// the layout is not row-major but the mask needs row-major order, so src is a
// contiguous copy and finish() copies the result into the caller's layout.
struct Layout {
  at::Tensor dense;   // the argument, made dense if it was not
  at::Tensor src;     // what the kernel reads
  at::Tensor result;  // what the kernel writes (strides of src)
  bool logical = false;

  Layout(const at::Tensor& t, double p) {
    dense = t.is_non_overlapping_and_dense() ? t : t.contiguous(t.suggest_memory_format());
    logical = p > 0.0 && !dense.is_contiguous();
    src = logical ? dense.contiguous() : dense;
    result = at::empty_like(src);
  }
  // `t` with the strides and dtype of src (grad for backward).
  at::Tensor like_src(const at::Tensor& t) const {
    if (t.strides() == src.strides() && t.scalar_type() == src.scalar_type()) return t;
    return at::empty_like(src).copy_(t);
  }
  at::Tensor finish() const { return logical ? at::empty_like(dense).copy_(result) : result; }
};

}  // namespace dropout
}  // namespace gan_ext
