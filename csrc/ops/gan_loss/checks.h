// The GAN losses (d_loss, g_loss, their *_with_grad forms): modes, the
// elementwise terms they are made of and their argument checks, shared by the
// CPU and CUDA kernels so both accept the same input and compute the same
// function. Lean includes only: this header compiles under nvcc.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <utility>

#include "common/losses.h"

namespace gan_ext {

// d_loss modes, and g_loss modes (which add the paper's minimax form).
// Wasserstein (WGAN, the critic of WGAN-GP): D mean(fake) - mean(real), G -mean(fake).
enum class GanMode : int64_t { Vanilla = 0, LSGAN = 1, Hinge = 2, Minimax = 3, Wasserstein = 4 };

// The elementwise terms the GAN losses are made of. With y a label:
//   BCE      softplus(x) - x*y                 d/dx = sigmoid(x) - y
//   NEG_BCE  -(softplus(x) - x*y)              d/dx = y - sigmoid(x)   (minimax G)
//   SQUARE   (x - y)^2                         d/dx = 2 (x - y)        (LSGAN)
//   HINGE_REAL relu(1 - x)                     d/dx = -[x < 1]
//   HINGE_FAKE relu(1 + x)                     d/dx = [x > -1]
//   NEG      -x                                d/dx = -1               (hinge G, Wasserstein)
//   IDENTITY x                                 d/dx = 1                (Wasserstein D on fakes)
enum class Term : int {
  BCE = 0, NegBCE = 1, Square = 2, HingeReal = 3, HingeFake = 4, Neg = 5, Identity = 6
};

// The terms (and labels) of d_loss: loss = reduce(real_term(real)) + reduce(fake_term(fake)).
struct DTerms {
  Term real, fake;
  double real_label, fake_label;
};

inline DTerms d_loss_terms(int64_t mode, double real_label, double fake_label) {
  switch (static_cast<GanMode>(mode)) {
    case GanMode::Vanilla: return {Term::BCE, Term::BCE, real_label, fake_label};
    case GanMode::LSGAN: return {Term::Square, Term::Square, real_label, fake_label};
    case GanMode::Wasserstein: return {Term::Neg, Term::Identity, 0.0, 0.0};
    default: return {Term::HingeReal, Term::HingeFake, 0.0, 0.0};  // Hinge (mode is checked)
  }
}

// The term (and label) of g_loss.
inline std::pair<Term, double> g_loss_term(int64_t mode, double real_label, double fake_label) {
  switch (static_cast<GanMode>(mode)) {
    case GanMode::Vanilla: return {Term::BCE, real_label};       // non-saturating -log D(G(z))
    case GanMode::Minimax: return {Term::NegBCE, fake_label};    // log(1 - D(G(z)))
    case GanMode::LSGAN: return {Term::Square, real_label};
    default: return {Term::Neg, 0.0};                            // Hinge, Wasserstein
  }
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
    case Term::Identity: f = x; df = T(1); return;
  }
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
  TORCH_CHECK_VALUE((mode >= 0 && mode <= 2) || mode == static_cast<int64_t>(GanMode::Wasserstein),
                    "mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge') or 4 ('wasserstein') for "
                    "d_loss, got ", mode);
  check_loss_reduction(reduction);
  check_float_dtype(real, "real_logits");
  check_float_dtype(fake, "fake_logits");
  check_same_dtype(real, "real_logits", fake, "fake_logits");
  check_same_device(real, "real_logits", fake, "fake_logits");
  check_label(real_label, "real_label", mode);
  check_label(fake_label, "fake_label", mode);
  check_not_empty_for_mean(real, "real_logits", reduction);
  check_not_empty_for_mean(fake, "fake_logits", reduction);
}

inline void check_g_loss_args(const at::Tensor& fake, int64_t mode, double real_label,
                              double fake_label, int64_t reduction) {
  TORCH_CHECK_VALUE(mode >= 0 && mode <= 4,
                    "mode must be 0 ('vanilla'), 1 ('lsgan'), 2 ('hinge'), 3 ('minimax') or 4 "
                    "('wasserstein') for g_loss, got ", mode);
  check_loss_reduction(reduction);
  check_float_dtype(fake, "fake_logits");
  check_label(real_label, "real_label", mode);
  check_label(fake_label, "fake_label", mode);
  check_not_empty_for_mean(fake, "fake_logits", reduction);
}

}  // namespace gan_ext
