// CPU kernels of the loss ops: d_loss, g_loss, bce_with_logits (each with a
// *_with_grad form), l1_loss, cycle_l1_loss and l1_loss_backward.
//
// Every loss is a sum of elementwise terms over flat arrays (see as_dense in
// losses.h). The array is cut into fixed chunks of kChunk values; each chunk
// sums in opmath vector lanes and its partial is stored, and the partials are
// added in chunk order in double. The result is therefore independent of the
// thread count, and a chunk is small enough that float lanes stay accurate.
// The *_with_grad kernels write the scaled derivative in the same pass.
//
// On the tiny logits of a DCGAN or PatchGAN discriminator (64 to 15k values)
// the cost is per-call overhead, so a single chunk runs inline and the loss
// is written straight into a 0-dim tensor.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "fast_math.h"
#include "losses.h"
#include "vec_io.h"

namespace gan_ext {
namespace {

// Values per chunk; chunks are split between threads two or more at a time,
// so a PatchGAN's 16x30x30 logits use both cores and a DCGAN's 64 run inline.
constexpr int64_t kChunk = 4096;
constexpr int64_t kMinChunksPerTask = 2;

// ------------------------------------------------------------ vector terms
// Vectorized twins of apply_term (losses.h), same formulas.
template <typename O>
inline void vbce(const Vectorized<O>& x, const Vectorized<O>& y, Vectorized<O>& f, Vectorized<O>& df) {
  using V = Vectorized<O>;
  const V zero(O(0)), one(O(1));
  V e, lp;
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<O, float>) {
    // exp(-|x|) and log1p of it on their known ranges (fast_math.h): the
    // general SLEEF calls were ~90% of a BCE pass.
    e = V(fastmath::exp_nonpos((zero - x.abs())));
    lp = V(fastmath::log1p_unit(e));
  } else
#endif
  {
    e = (zero - x.abs()).exp();
    lp = e.log1p();
  }
  const V inv = one / (one + e);
  const V sig = V::blendv(e * inv, inv, x >= zero);
  f = at::vec::maximum(x, zero) - x * y + lp;
  df = sig - y;
}

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
    const V m = x < one;
    f = V::blendv(zero, one - x, m);
    df = V::blendv(zero, V(O(-1)), m);
  } else if constexpr (TERM == Term::HingeFake) {
    const V m = x > V(O(-1));
    f = V::blendv(zero, one + x, m);
    df = V::blendv(zero, one, m);
  } else {
    f = zero - x;
    df = V(O(-1));
  }
}

// Runs body(chunk_begin, chunk_end) -> double over fixed chunks of [0, n) in
// parallel and returns the sum of the results in chunk order.
template <typename F>
double chunked_sum(int64_t n, const F& body) {
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  if (nchunks <= 1) return n > 0 ? body(0, n) : 0.0;
  std::vector<double> part(nchunks, 0.0);
  at::parallel_for(0, nchunks, kMinChunksPerTask, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) part[c] = body(c * kChunk, std::min(n, (c + 1) * kChunk));
  });
  double s = 0.0;
  for (double p : part) s += p;
  return s;
}

// sum(term(x)) over x[0, n); with g, also g = term'(x) * scale.
template <typename T, Term TERM>
double term_sum(const T* x, T* g, int64_t n, double label, double scale) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  return chunked_sum(n, [&](int64_t b, int64_t e) {
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
  });
}

template <typename T>
double term_sum_dispatch(Term term, const T* x, T* g, int64_t n, double label, double scale) {
  switch (term) {
    case Term::BCE: return term_sum<T, Term::BCE>(x, g, n, label, scale);
    case Term::NegBCE: return term_sum<T, Term::NegBCE>(x, g, n, label, scale);
    case Term::Square: return term_sum<T, Term::Square>(x, g, n, label, scale);
    case Term::HingeReal: return term_sum<T, Term::HingeReal>(x, g, n, label, scale);
    case Term::HingeFake: return term_sum<T, Term::HingeFake>(x, g, n, label, scale);
    case Term::Neg: return term_sum<T, Term::Neg>(x, g, n, label, scale);
  }
  return 0.0;
}

at::Tensor scalar_out(const at::Tensor& like, double value) {
  at::Tensor out = at::empty({}, like.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "gan_ext_scalar_out",
                                  [&] { *out.data_ptr<scalar_t>() = static_cast<scalar_t>(value); });
  return out;
}

// reduce(term(x)); with grad, also returns the scaled derivative (else undefined).
std::pair<double, at::Tensor> reduce_term(const at::Tensor& x_in, Term term, double label,
                                          int64_t reduction, bool grad) {
  const at::Tensor x = as_dense(x_in);
  const int64_t n = x.numel();
  const double scale = reduction_scale(n, reduction);
  at::Tensor g = grad ? at::empty_like(x) : at::Tensor();
  double s = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gan_ext_loss_term", [&] {
    s = term_sum_dispatch<scalar_t>(term, x.const_data_ptr<scalar_t>(),
                                    grad ? g.mutable_data_ptr<scalar_t>() : nullptr, n, label, scale);
  });
  return {n > 0 ? s * scale : 0.0, g};
}

// ------------------------------------------------------------------ d/g loss
std::tuple<at::Tensor, at::Tensor, at::Tensor> d_loss_impl(const at::Tensor& real,
                                                           const at::Tensor& fake, int64_t mode,
                                                           double real_label, double fake_label,
                                                           int64_t reduction, bool grad) {
  check_d_loss_args(real, fake, mode, real_label, fake_label, reduction);
  const DTerms t = d_loss_terms(mode, real_label, fake_label);
  auto [lr, gr] = reduce_term(real, t.real, t.real_label, reduction, grad);
  auto [lf, gf] = reduce_term(fake, t.fake, t.fake_label, reduction, grad);
  return {scalar_out(real, lr + lf), gr, gf};
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
  auto [l, g] = reduce_term(fake, term, label, reduction, grad);
  return {scalar_out(fake, l), g};
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

// ---------------------------------------------------------- bce_with_logits
template <typename T, bool GI, bool GT>
double bce_sum(const T* x, const T* y, T* gi, T* gt, int64_t n, double scale) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  return chunked_sum(n, [&](int64_t b, int64_t e) {
    const V sc(static_cast<O>(scale));
    V acc(O(0));
    int64_t i = b;
    for (; i + W <= e; i += W) {
      const V xv = vload<T, O>(x + i);
      V f, df;
      vbce(xv, vload<T, O>(y + i), f, df);
      acc = acc + f;
      if constexpr (GI) vstore<T, O>(gi + i, df * sc);
      if constexpr (GT) vstore<T, O>(gt + i, V(O(0)) - xv * sc);
    }
    double s = vsum(acc);
    for (; i < e; ++i) {
      const O xv = static_cast<O>(x[i]);
      O f, df;
      bce_term<O>(xv, static_cast<O>(y[i]), f, df);
      s += f;
      if constexpr (GI) gi[i] = static_cast<T>(df * static_cast<O>(scale));
      if constexpr (GT) gt[i] = static_cast<T>(-xv * static_cast<O>(scale));
    }
    return s;
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_impl(const at::Tensor& input_in,
                                                        const at::Tensor& target_in,
                                                        int64_t reduction, bool grad_input,
                                                        bool grad_target) {
  check_pair_args(input_in, "input", target_in, "target", reduction);
  auto [x, y] = as_dense_pair(input_in, target_in);
  const int64_t n = x.numel();
  const double scale = reduction_scale(n, reduction);
  at::Tensor gi = grad_input ? at::empty_like(x) : at::Tensor();
  at::Tensor gt = grad_target ? at::empty_like(y) : at::empty({0}, x.options());
  double s = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gan_ext_bce", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* gip = grad_input ? gi.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gtp = grad_target ? gt.mutable_data_ptr<scalar_t>() : nullptr;
    if (grad_input && grad_target) {
      s = bce_sum<scalar_t, true, true>(xp, yp, gip, gtp, n, scale);
    } else if (grad_input) {
      s = bce_sum<scalar_t, true, false>(xp, yp, gip, gtp, n, scale);
    } else {
      s = bce_sum<scalar_t, false, false>(xp, yp, gip, gtp, n, scale);
    }
  });
  return {scalar_out(x, n > 0 ? s * scale : 0.0), gi, gt};
}

at::Tensor bce_with_logits_cpu(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  return std::get<0>(bce_impl(input, target, reduction, false, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_with_logits_with_grad_cpu(
    const at::Tensor& input, const at::Tensor& target, int64_t reduction, bool grad_target) {
  return bce_impl(input, target, reduction, true, grad_target);
}

// --------------------------------------------------------------------- L1
template <typename T>
double abs_diff_sum(const T* a, const T* b, int64_t n) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  return chunked_sum(n, [&](int64_t s0, int64_t e) {
    // Two accumulators: the add latency, not the loads, bounds one chain.
    V acc0(O(0)), acc1(O(0));
    int64_t i = s0;
    for (; i + 2 * W <= e; i += 2 * W) {
      acc0 = acc0 + (vload<T, O>(a + i) - vload<T, O>(b + i)).abs();
      acc1 = acc1 + (vload<T, O>(a + i + W) - vload<T, O>(b + i + W)).abs();
    }
    double s = vsum(acc0 + acc1);
    for (; i < e; ++i) s += std::abs(static_cast<O>(a[i]) - static_cast<O>(b[i]));
    return s;
  });
}

double l1_sum(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  auto [a, b] = as_dense_pair(input, target);
  const int64_t n = a.numel();
  double s = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gan_ext_l1", [&] {
    s = abs_diff_sum<scalar_t>(a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), n);
  });
  return n > 0 ? s * reduction_scale(n, reduction) : 0.0;
}

at::Tensor l1_loss_cpu(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_pair_args(input, "input", target, "target", reduction);
  return scalar_out(input, l1_sum(input, target, reduction));
}

at::Tensor cycle_l1_loss_cpu(const at::Tensor& input1, const at::Tensor& target1,
                             const at::Tensor& input2, const at::Tensor& target2, double weight1,
                             double weight2, int64_t reduction) {
  check_pair_args(input1, "input1", target1, "target1", reduction);
  check_pair_args(input2, "input2", target2, "target2", reduction);
  check_same_device(input1, "input1", input2, "input2");
  check_same_dtype(input1, "input1", input2, "input2");
  const double l = weight1 * l1_sum(input1, target1, reduction) +
                   weight2 * l1_sum(input2, target2, reduction);
  return scalar_out(input1, l);
}

// ga = c * sign(a - b), gb = -ga, c = weight * grad * scale.
template <typename T, bool GA, bool GB>
void l1_grad(const T* a, const T* b, T* ga, T* gb, int64_t n, double c) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  at::parallel_for(0, n, kChunk, [&](int64_t s0, int64_t e) {
    const V cv(static_cast<O>(c)), zero(O(0));
    int64_t i = s0;
    for (; i + W <= e; i += W) {
      const V d = vload<T, O>(a + i) - vload<T, O>(b + i);
      const V g = (V::blendv(zero, cv, d > zero)) - (V::blendv(zero, cv, d < zero));
      if constexpr (GA) vstore<T, O>(ga + i, g);
      if constexpr (GB) vstore<T, O>(gb + i, zero - g);
    }
    for (; i < e; ++i) {
      const O d = static_cast<O>(a[i]) - static_cast<O>(b[i]);
      const O g = d > O(0) ? static_cast<O>(c) : (d < O(0) ? -static_cast<O>(c) : O(0));
      if constexpr (GA) ga[i] = static_cast<T>(g);
      if constexpr (GB) gb[i] = static_cast<T>(-g);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> l1_loss_backward_cpu(const at::Tensor& grad,
                                                        const at::Tensor& input,
                                                        const at::Tensor& target, double weight,
                                                        int64_t reduction, bool grad_input,
                                                        bool grad_target) {
  check_pair_args(input, "input", target, "target", reduction);
  TORCH_CHECK_VALUE(grad.numel() == 1, "grad must hold the loss's gradient (one value), got shape ",
                    grad.sizes());
  auto [a, b] = as_dense_pair(input, target);
  const int64_t n = a.numel();
  const double c = weight * grad.item<double>() * reduction_scale(n, reduction);
  at::Tensor ga = grad_input ? at::empty_like(a) : at::empty({0}, a.options());
  at::Tensor gb = grad_target ? at::empty_like(b) : at::empty({0}, a.options());
  if (n == 0 || !(grad_input || grad_target)) return {ga, gb};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gan_ext_l1_backward", [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    const scalar_t* bp = b.const_data_ptr<scalar_t>();
    scalar_t* gap = grad_input ? ga.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gbp = grad_target ? gb.mutable_data_ptr<scalar_t>() : nullptr;
    if (grad_input && grad_target) {
      l1_grad<scalar_t, true, true>(ap, bp, gap, gbp, n, c);
    } else if (grad_input) {
      l1_grad<scalar_t, true, false>(ap, bp, gap, gbp, n, c);
    } else {
      l1_grad<scalar_t, false, true>(ap, bp, gap, gbp, n, c);
    }
  });
  return {ga, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  m.impl("d_loss", &d_loss_cpu);
  m.impl("d_loss_with_grad", &d_loss_with_grad_cpu);
  m.impl("g_loss", &g_loss_cpu);
  m.impl("g_loss_with_grad", &g_loss_with_grad_cpu);
  m.impl("bce_with_logits", &bce_with_logits_cpu);
  m.impl("bce_with_logits_with_grad", &bce_with_logits_with_grad_cpu);
  m.impl("l1_loss", &l1_loss_cpu);
  m.impl("cycle_l1_loss", &cycle_l1_loss_cpu);
  m.impl("l1_loss_backward", &l1_loss_backward_cpu);
}

}  // namespace gan_ext
