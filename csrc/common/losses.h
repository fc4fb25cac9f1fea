// Shared by the CPU and CUDA kernels of the loss ops (d_loss, g_loss,
// bce_with_logits, l1_loss, cycle_l1_loss): codes, argument checks and the
// per-element terms, so both backends accept the same input and compute the
// same function. Lean includes only: this header compiles under nvcc.
//
// Every loss here is a sum of elementwise terms f(x) (or f(x, y)), divided by
// the element count for reduction=mean. The *_with_grad kernels also write
// df/dx * scale in the same pass, which the autograd wrapper only multiplies
// by grad_output in backward (csrc/autograd.cpp; scale_loss_grads off the CPU).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <utility>

namespace gan_ext {

// Same values as at::Reduction::Reduction (and gan_ext.reference.REDUCTIONS).
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };

// d_loss modes, and g_loss modes (which add the paper's minimax form).
enum class GanMode : int64_t { Vanilla = 0, LSGAN = 1, Hinge = 2, Minimax = 3 };

// The elementwise terms the GAN losses are made of. With y a label:
//   BCE      softplus(x) - x*y                 d/dx = sigmoid(x) - y
//   NEG_BCE  -(softplus(x) - x*y)              d/dx = y - sigmoid(x)   (minimax G)
//   SQUARE   (x - y)^2                         d/dx = 2 (x - y)        (LSGAN)
//   HINGE_REAL relu(1 - x)                     d/dx = -[x < 1]
//   HINGE_FAKE relu(1 + x)                     d/dx = [x > -1]
//   NEG      -x                                d/dx = -1               (hinge G)
enum class Term : int { BCE = 0, NegBCE = 1, Square = 2, HingeReal = 3, HingeFake = 4, Neg = 5 };

// The terms (and labels) of d_loss: loss = reduce(real_term(real)) + reduce(fake_term(fake)).
struct DTerms {
  Term real, fake;
  double real_label, fake_label;
};

inline DTerms d_loss_terms(int64_t mode, double real_label, double fake_label) {
  switch (static_cast<GanMode>(mode)) {
    case GanMode::Vanilla: return {Term::BCE, Term::BCE, real_label, fake_label};
    case GanMode::LSGAN: return {Term::Square, Term::Square, real_label, fake_label};
    default: return {Term::HingeReal, Term::HingeFake, 0.0, 0.0};  // Hinge (mode is checked)
  }
}

// The term (and label) of g_loss.
inline std::pair<Term, double> g_loss_term(int64_t mode, double real_label, double fake_label) {
  switch (static_cast<GanMode>(mode)) {
    case GanMode::Vanilla: return {Term::BCE, real_label};       // non-saturating -log D(G(z))
    case GanMode::Minimax: return {Term::NegBCE, fake_label};    // log(1 - D(G(z)))
    case GanMode::LSGAN: return {Term::Square, real_label};
    default: return {Term::Neg, 0.0};                            // Hinge
  }
}

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

template <typename T>
C10_HOST_DEVICE inline void apply_term(Term term, T x, T y, T& f, T& df) {
  switch (term) {
    case Term::BCE: bce_term(x, y, f, df); return;
    case Term::NegBCE: bce_term(x, y, f, df); f = -f; df = -df; return;
    case Term::Square: { const T d = x - y; f = d * d; df = T(2) * d; return; }
    // relu(1 -+ x), written so that a NaN logit gives a NaN loss (the
    // comparison is false for NaN) and the gradient torch.relu's backward gives.
    case Term::HingeReal: f = x >= T(1) ? T(0) : T(1) - x; df = x >= T(1) ? T(0) : T(-1); return;
    case Term::HingeFake: f = x <= T(-1) ? T(0) : T(1) + x; df = x <= T(-1) ? T(0) : T(1); return;
    case Term::Neg: f = -x; df = T(-1); return;
  }
}

inline const char* loss_dtype_name(const at::Tensor& t) { return c10::toString(t.scalar_type()); }

inline void check_loss_reduction(int64_t reduction) {
  TORCH_CHECK_VALUE(reduction == static_cast<int64_t>(Reduction::Mean) ||
                        reduction == static_cast<int64_t>(Reduction::Sum),
                    "reduction must be 1 ('mean') or 2 ('sum'), got ", reduction);
}

inline void check_logits(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   " must be a floating point tensor (float32, float64, bfloat16 or float16), got ",
                   loss_dtype_name(t));
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
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), an, " has dtype ", loss_dtype_name(a), " but ",
                   bn, " has dtype ", loss_dtype_name(b), "; they must match");
}

inline void check_label(double v, const char* name, int64_t mode) {
  if (mode == static_cast<int64_t>(GanMode::Vanilla) || mode == static_cast<int64_t>(GanMode::Minimax)) {
    TORCH_CHECK_VALUE(v >= 0.0 && v <= 1.0, name, " must lie in [0, 1] for the BCE ('vanilla') loss, got ",
                      v);
  } else {
    TORCH_CHECK_VALUE(std::isfinite(v), name, " must be finite, got ", v);
  }
}

inline void check_d_loss_args(const at::Tensor& real, const at::Tensor& fake, int64_t mode,
                              double real_label, double fake_label, int64_t reduction) {
  TORCH_CHECK_VALUE(mode >= 0 && mode <= 2,
                    "mode must be 0 ('vanilla'), 1 ('lsgan') or 2 ('hinge') for d_loss, got ", mode);
  check_loss_reduction(reduction);
  check_logits(real, "real_logits");
  check_logits(fake, "fake_logits");
  check_same_dtype(real, "real_logits", fake, "fake_logits");
  check_same_device(real, "real_logits", fake, "fake_logits");
  check_label(real_label, "real_label", mode);
  check_label(fake_label, "fake_label", mode);
  check_not_empty_for_mean(real, "real_logits", reduction);
  check_not_empty_for_mean(fake, "fake_logits", reduction);
}

inline void check_g_loss_args(const at::Tensor& fake, int64_t mode, double real_label,
                              double fake_label, int64_t reduction) {
  TORCH_CHECK_VALUE(mode >= 0 && mode <= 3,
                    "mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge') or 3 ('minimax') for g_loss, "
                    "got ", mode);
  check_loss_reduction(reduction);
  check_logits(fake, "fake_logits");
  check_label(real_label, "real_label", mode);
  check_label(fake_label, "fake_label", mode);
  check_not_empty_for_mean(fake, "fake_logits", reduction);
}

// Checks for the two-tensor losses (bce_with_logits: a=input, b=target;
// l1_loss: a=input, b=target).
inline void check_pair_args(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn,
                            int64_t reduction) {
  check_loss_reduction(reduction);
  check_logits(a, an);
  check_logits(b, bn);
  check_same_device(a, an, b, bn);
  check_same_shape(a, an, b, bn);
  check_same_dtype(a, an, b, bn);
  check_not_empty_for_mean(a, an, reduction);
}

// scale_loss_grads: grad is the loss's gradient (one value); each saved
// gradient present must match its dtype and device.
inline void check_scale_loss_grads_args(const at::Tensor& grad, const at::Tensor* saved_a,
                                        const at::Tensor* saved_b) {
  check_logits(grad, "grad");
  TORCH_CHECK_VALUE(grad.numel() == 1, "grad must hold the loss's gradient (one value), got shape ",
                    grad.sizes());
  if (saved_a != nullptr) {
    check_same_device(*saved_a, "saved_a", grad, "grad");
    check_same_dtype(*saved_a, "saved_a", grad, "grad");
  }
  if (saved_b != nullptr) {
    check_same_device(*saved_b, "saved_b", grad, "grad");
    check_same_dtype(*saved_b, "saved_b", grad, "grad");
  }
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
