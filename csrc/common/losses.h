// Shared by the CPU and CUDA kernels of the loss ops (gan_loss, bce_with_logits,
// l1_loss, scale_loss_grads; reparameterize reuses the pair checks): the
// reduction code, argument checks, the BCE term and the dense-layout rule, so
// every backend accepts the same input and computes the same function. Lean
// includes only: this header compiles under nvcc.
//
// Every loss here is a sum of elementwise terms f(x) (or f(x, y)), divided by
// the element count for reduction=mean. The *_with_grad kernels also write
// df/dx * scale in the same pass, which the autograd wrapper only multiplies
// by grad_output in backward (csrc/common/loss_autograd.h; scale_loss_grads off
// the CPU).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <utility>

#include "common/checks.h"

namespace gan_ext {

// Same values as at::Reduction::Reduction (and gan_ext.reference.REDUCTIONS).
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };

// Stable softplus(x) - x*y = max(x, 0) - x*y + log1p(exp(-|x|)) and its
// derivative sigmoid(x) - y, from one exp. Finite for any finite x.
template <typename T>
C10_HOST_DEVICE inline void bce_term(T x, T y, T& f, T& df) {
  const T e = std::exp(-std::abs(x));
  const T inv = T(1) / (T(1) + e);
  const T sig = x >= T(0) ? inv : e * inv;
  f = (x > T(0) ? x : T(0)) - x * y + std::log1p(e);
  df = sig - y;
}

inline void check_loss_reduction(int64_t reduction) {
  TORCH_CHECK_VALUE(reduction == static_cast<int64_t>(Reduction::Mean) ||
                        reduction == static_cast<int64_t>(Reduction::Sum),
                    "reduction must be 1 ('mean') or 2 ('sum'), got ", reduction);
}

// mean over an empty tensor is 0/0: refuse it rather than return NaN.
inline void check_not_empty_for_mean(const at::Tensor& t, const char* name, int64_t reduction) {
  TORCH_CHECK_VALUE(t.numel() > 0 || reduction != static_cast<int64_t>(Reduction::Mean), name,
                    " is empty: reduction='mean' of no elements is undefined (use reduction='sum', "
                    "which gives 0 for an empty tensor)");
}

inline void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_VALUE(a.device() == b.device(), an, " is on ", a.device(), " but ", bn, " is on ",
                    b.device(), "; they must be on the same device");
}

inline void check_same_shape(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), an, " has shape ", a.sizes(), " but ", bn, " has shape ",
                    b.sizes(), "; they must match (no broadcasting)");
}

inline void check_same_dtype(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), an, " has dtype ", dtype_name(a), " but ",
                   bn, " has dtype ", dtype_name(b), "; they must match");
}

// Checks for the two-tensor losses (bce_with_logits: a=input, b=target;
// l1_loss: a=input, b=target).
inline void check_pair_args(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn,
                            int64_t reduction) {
  check_loss_reduction(reduction);
  check_float_dtype(a, an);
  check_float_dtype(b, bn);
  check_same_device(a, an, b, bn);
  check_same_shape(a, an, b, bn);
  check_same_dtype(a, an, b, bn);
  check_not_empty_for_mean(a, an, reduction);
}

// 1/numel for mean, 1 for sum.
inline double reduction_scale(int64_t numel, int64_t reduction) {
  return reduction == static_cast<int64_t>(Reduction::Mean) ? 1.0 / static_cast<double>(numel) : 1.0;
}

// The elementwise kernels read tensors as flat arrays: dense tensors (any
// stride order) in their storage order, everything else made contiguous.
// Gradients come back in the same layout as the tensor they belong to.
inline at::Tensor as_dense(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

// For a pair read element by element together: both dense with equal strides
// keep their layout; otherwise both are made contiguous.
inline std::pair<at::Tensor, at::Tensor> as_dense_pair(const at::Tensor& a, const at::Tensor& b) {
  if (a.is_non_overlapping_and_dense() && b.is_non_overlapping_and_dense() && a.strides() == b.strides())
    return {a, b};
  return {a.contiguous(), b.contiguous()};
}

}  // namespace gan_ext
