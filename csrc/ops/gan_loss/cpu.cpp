// CPU kernels of the loss ops: d_loss, g_loss, bce_with_logits (each with a
// *_with_grad form), l1_loss, cycle_l1_loss, l1_loss_backward and
// scale_loss_grads.
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
#include <ATen/ops/mul.h>
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
  V inv;
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<O, float>) {
    inv = V(fastmath::reciprocal(one + e));
  } else
#endif
  {
    inv = one / (one + e);
  }
  const V sig = V::blendv(e * inv, inv, x >= zero);
  f = at::vec::maximum(x, zero) - x * y + lp;  // maximum propagates NaN
  // The fast exp/log1p/reciprocal are finite at NaN, so sig would be too:
  // a NaN logit gets a NaN gradient, as in the scalar tail and the twin.
  df = V::blendv(sig - y, x, x.isnan());
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
    const V m = x >= one;  // false for NaN: the loss stays NaN (apply_term, losses.h)
    f = V::blendv(one - x, zero, m);
    df = V::blendv(V(O(-1)), zero, m);
  } else if constexpr (TERM == Term::HingeFake) {
    const V m = x <= V(O(-1));
    f = V::blendv(one + x, zero, m);
    df = V::blendv(one, zero, m);
  } else {
    f = zero - x;
    df = V(O(-1));
  }
}

// Runs body0 over fixed chunks of [0, n0) and body1 over those of [0, n1),
// all chunks in one parallel region (a D loss is two small tensors: one
// fork/join, not two), and returns each body's chunk results summed in order.
template <typename F0, typename F1>
std::pair<double, double> chunked_sum2(int64_t n0, const F0& body0, int64_t n1, const F1& body1) {
  const int64_t k0 = (n0 + kChunk - 1) / kChunk, k1 = (n1 + kChunk - 1) / kChunk;
  auto run = [&](int64_t c) {
    return c < k0 ? body0(c * kChunk, std::min(n0, (c + 1) * kChunk))
                  : body1((c - k0) * kChunk, std::min(n1, (c - k0 + 1) * kChunk));
  };
  if (k0 + k1 == 1) return k0 ? std::pair<double, double>{run(0), 0.0} : std::pair<double, double>{0.0, run(0)};
  std::vector<double> part(k0 + k1, 0.0);
  at::parallel_for(0, k0 + k1, kMinChunksPerTask, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) part[c] = run(c);
  });
  double s0 = 0.0, s1 = 0.0;
  for (int64_t c = 0; c < k0; ++c) s0 += part[c];
  for (int64_t c = k0; c < k0 + k1; ++c) s1 += part[c];
  return {s0, s1};
}

template <typename F>
double chunked_sum(int64_t n, const F& body) {
  return chunked_sum2(n, body, 0, body).first;
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

at::Tensor scalar_out(const at::Tensor& like, double value) {
  at::Tensor out = at::empty({}, like.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "gan_ext_scalar_out",
                                  [&] { *out.data_ptr<scalar_t>() = static_cast<scalar_t>(value); });
  return out;
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

// What autograd does on the CPU for a grad_output other than 1 (at::mul), with
// the output's strides fixed to those of the dense saved gradient, as in the
// CUDA kernel and the fake kernel.
at::Tensor scaled_or_empty(const at::Tensor& grad, const c10::optional<at::Tensor>& saved) {
  if (!saved.has_value() || !saved->defined()) return at::empty({0}, grad.options());
  const at::Tensor s = as_dense(*saved);
  at::Tensor out = at::empty_like(s);
  return at::mul_out(out, s, grad);
}

std::tuple<at::Tensor, at::Tensor> scale_loss_grads_cpu(const at::Tensor& grad,
                                                        const c10::optional<at::Tensor>& saved_a,
                                                        const c10::optional<at::Tensor>& saved_b) {
  auto ptr = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? &*t : nullptr;
  };
  check_scale_loss_grads_args(grad, ptr(saved_a), ptr(saved_b));
  return {scaled_or_empty(grad, saved_a), scaled_or_empty(grad, saved_b)};
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
  m.impl("scale_loss_grads", &scale_loss_grads_cpu);
}

}  // namespace gan_ext
