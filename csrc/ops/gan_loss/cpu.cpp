// CPU kernels of the GAN losses: d_loss and g_loss, each with a *_with_grad
// form that also writes the scaled derivative in the same pass. The chunked
// summation they share with the other losses is in common/loss_cpu.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include "common/loss_cpu.h"
#include "common/vec_io.h"
#include "ops/gan_loss/checks.h"
#include "common/cpu_capability.h"

namespace gan_ext {
namespace {

// ------------------------------------------------------------ vector terms
// Vectorized twins of apply_term (gan_loss/checks.h), same formulas.
template <Term TERM, typename O>
inline void vterm(const Vectorized<O>& x, const Vectorized<O>& y, Vectorized<O>& f, Vectorized<O>& df) {
  using V = Vectorized<O>;
  const V zero(O(0)), one(O(1));
  if constexpr (TERM == Term::BCE) {
    vbce(x, y, f, df);
  } else if constexpr (TERM == Term::NegBCE) {
    vbce(x, y, f, df);
    f = zero - f;
    df = zero - df;
  } else if constexpr (TERM == Term::Square) {
    const V d = x - y;
    f = d * d;
    df = d + d;
  } else if constexpr (TERM == Term::HingeReal) {
    const V m = x >= one;  // false for NaN: the loss stays NaN (apply_term, gan_loss/checks.h)
    f = V::blendv(one - x, zero, m);
    df = V::blendv(V(O(-1)), zero, m);
  } else if constexpr (TERM == Term::HingeFake) {
    const V m = x <= V(O(-1));
    f = V::blendv(one + x, zero, m);
    df = V::blendv(one, zero, m);
  } else if constexpr (TERM == Term::Identity) {
    f = x;
    df = one;
  } else {
    f = zero - x;
    df = V(O(-1));
  }
}

// sum(term(x)) over x[b, e); with g, also g = term'(x) * scale there.
template <typename T, Term TERM>
double term_chunk(const T* x, T* g, int64_t b, int64_t e, double label, double scale) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  const V y(static_cast<O>(label)), sc(static_cast<O>(scale));
  V acc(O(0));
  int64_t i = b;
  for (; i + W <= e; i += W) {
    V f, df;
    vterm<TERM, O>(vload<T, O>(x + i), y, f, df);
    acc = acc + f;
    if (g) vstore<T, O>(g + i, df * sc);
  }
  double s = vsum(acc);
  for (; i < e; ++i) {
    O f, df;
    apply_term<O>(TERM, static_cast<O>(x[i]), static_cast<O>(label), f, df);
    s += f;
    if (g) g[i] = static_cast<T>(df * static_cast<O>(scale));
  }
  return s;
}

template <typename T>
using TermChunkFn = double (*)(const T*, T*, int64_t, int64_t, double, double);

template <typename T>
TermChunkFn<T> term_chunk_fn(Term term) {
  switch (term) {
    case Term::BCE: return &term_chunk<T, Term::BCE>;
    case Term::NegBCE: return &term_chunk<T, Term::NegBCE>;
    case Term::Square: return &term_chunk<T, Term::Square>;
    case Term::HingeReal: return &term_chunk<T, Term::HingeReal>;
    case Term::HingeFake: return &term_chunk<T, Term::HingeFake>;
    case Term::Identity: return &term_chunk<T, Term::Identity>;
    case Term::Neg: break;
  }
  return &term_chunk<T, Term::Neg>;
}

// One reduced term of a GAN loss: the tensor (made dense), its label and
// reduction scale, and its gradient when asked for.
struct TermJob {
  at::Tensor x, g;
  Term term;
  double label, scale;
  TermJob(const at::Tensor& x_in, Term t, double lab, int64_t reduction, bool grad)
      : x(as_dense(x_in)), term(t), label(lab), scale(reduction_scale(x.numel(), reduction)) {
    if (grad) g = at::empty_like(x);
  }
};

// reduce(term(x)) of one or two jobs (same dtype) in one parallel region;
// returns the reduced values.
std::pair<double, double> run_terms(TermJob& a, TermJob* b) {
  std::pair<double, double> s{0.0, 0.0};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "gan_ext_loss_terms", [&] {
    auto body = [](TermJob& j) {
      const scalar_t* x = j.x.const_data_ptr<scalar_t>();
      scalar_t* g = j.g.defined() ? j.g.mutable_data_ptr<scalar_t>() : nullptr;
      const TermChunkFn<scalar_t> fn = term_chunk_fn<scalar_t>(j.term);
      const double label = j.label, scale = j.scale;
      return [=](int64_t lo, int64_t hi) { return fn(x, g, lo, hi, label, scale); };
    };
    auto f0 = body(a);
    if (b) {
      s = chunked_sum2(a.x.numel(), f0, b->x.numel(), body(*b));
    } else {
      s.first = chunked_sum(a.x.numel(), f0);
    }
  });
  return {a.x.numel() > 0 ? s.first * a.scale : 0.0, b && b->x.numel() > 0 ? s.second * b->scale : 0.0};
}

// ------------------------------------------------------------------ d/g loss
std::tuple<at::Tensor, at::Tensor, at::Tensor> d_loss_impl(const at::Tensor& real,
                                                           const at::Tensor& fake, int64_t mode,
                                                           double real_label, double fake_label,
                                                           int64_t reduction, bool grad) {
  check_d_loss_args(real, fake, mode, real_label, fake_label, reduction);
  const DTerms t = d_loss_terms(mode, real_label, fake_label);
  TermJob jr(real, t.real, t.real_label, reduction, grad), jf(fake, t.fake, t.fake_label, reduction, grad);
  const auto [lr, lf] = run_terms(jr, &jf);
  return {scalar_out(real, lr + lf), jr.g, jf.g};
}

at::Tensor d_loss_cpu(const at::Tensor& real, const at::Tensor& fake, int64_t mode, double real_label,
                      double fake_label, int64_t reduction) {
  return std::get<0>(d_loss_impl(real, fake, mode, real_label, fake_label, reduction, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> d_loss_with_grad_cpu(
    const at::Tensor& real, const at::Tensor& fake, int64_t mode, double real_label,
    double fake_label, int64_t reduction) {
  return d_loss_impl(real, fake, mode, real_label, fake_label, reduction, true);
}

std::tuple<at::Tensor, at::Tensor> g_loss_impl(const at::Tensor& fake, int64_t mode,
                                               double real_label, double fake_label,
                                               int64_t reduction, bool grad) {
  check_g_loss_args(fake, mode, real_label, fake_label, reduction);
  const auto [term, label] = g_loss_term(mode, real_label, fake_label);
  TermJob j(fake, term, label, reduction, grad);
  return {scalar_out(fake, run_terms(j, nullptr).first), j.g};
}

at::Tensor g_loss_cpu(const at::Tensor& fake, int64_t mode, double real_label, double fake_label,
                      int64_t reduction) {
  return std::get<0>(g_loss_impl(fake, mode, real_label, fake_label, reduction, false));
}

std::tuple<at::Tensor, at::Tensor> g_loss_with_grad_cpu(const at::Tensor& fake, int64_t mode,
                                                        double real_label, double fake_label,
                                                        int64_t reduction) {
  return g_loss_impl(fake, mode, real_label, fake_label, reduction, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("d_loss", &d_loss_cpu);
  m.impl("d_loss_with_grad", &d_loss_with_grad_cpu);
  m.impl("g_loss", &g_loss_cpu);
  m.impl("g_loss_with_grad", &g_loss_with_grad_cpu);
}

}  // namespace gan_ext
