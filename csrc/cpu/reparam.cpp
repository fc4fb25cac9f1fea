// CPU kernels of reparameterize, reparameterize_kl and reparameterize_backward.
//
// The noise is the counter-based stream of csrc/philox.h: element i's eps
// depends only on (seed, offset, i), so tasks make their own noise in any
// order. Philox runs on 8 blocks at a time in plain uint32/uint64 loops that
// the compiler turns into vector multiplies; Box-Muller runs on
// at::vec::Vectorized (SLEEF log/sin/cos). Nothing is written for eps: it is
// made in a small stack buffer and consumed at once.
//
// Work is split into (row, chunk) tasks, a row being one sample's D latent
// values (the whole tensor is one row for reparameterize): each task writes z
// for its range and, for the KL term, one partial sum, and the partials are
// added in order, so results do not depend on the thread count.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "philox.h"
#include "reparam.h"
#include "vec_io.h"

namespace gan_ext {
namespace {

// Values per task chunk (a multiple of every per-block count), and per noise
// buffer (stays in L1).
constexpr int64_t kTaskChunk = 16384;
constexpr int64_t kNoiseChunk = 512;
// Minimum values per parallel task.
constexpr int64_t kGrain = 32768;
constexpr int kLanes = 8;
// Blocks (or pairs) per noise buffer: a chunk that starts mid-block needs one more.
constexpr int64_t kBuf = kNoiseChunk / 2 + 2 * kLanes;

// Philox blocks q0 .. q0+count-1 into words[4][count] (count <= kLanes*k).
inline void philox_blocks(uint64_t q0, int64_t count, uint64_t seed, uint64_t offset,
                          uint32_t (*w)[kBuf]) {
  const uint32_t o0 = static_cast<uint32_t>(offset), o1 = static_cast<uint32_t>(offset >> 32);
  const uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t base = 0; base < count; base += kLanes) {
    uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      const uint64_t q = q0 + static_cast<uint64_t>(base + l);
      c0[l] = static_cast<uint32_t>(q);
      c1[l] = static_cast<uint32_t>(q >> 32);
      c2[l] = o0;
      c3[l] = o1;
    }
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < philox::kRounds; ++r) {
      if (r > 0) {
        k0 += philox::kW0;
        k1 += philox::kW1;
      }
      for (int l = 0; l < kLanes; ++l) {
        const uint64_t p0 = static_cast<uint64_t>(philox::kM0) * c0[l];
        const uint64_t p1 = static_cast<uint64_t>(philox::kM1) * c2[l];
        const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
        const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
        c1[l] = static_cast<uint32_t>(p1);
        c3[l] = static_cast<uint32_t>(p0);
        c0[l] = n0;
        c2[l] = n2;
      }
    }
    const int64_t m = std::min<int64_t>(kLanes, count - base);
    for (int l = 0; l < m; ++l) {
      w[0][base + l] = c0[l];
      w[1][base + l] = c1[l];
      w[2][base + l] = c2[l];
      w[3][base + l] = c3[l];
    }
  }
}

// eps for elements [e0, e0 + n) of the stream, n <= kNoiseChunk, into out[0, n).
// float: 4 normals per block; double: 2. Same values as philox::normals.
inline void noise(int64_t e0, int64_t n, uint64_t seed, uint64_t offset, float* out) {
  using V = Vectorized<float>;
  constexpr int64_t W = V::size();
  alignas(64) uint32_t w[4][kBuf];
  alignas(64) float u1[kBuf], u2[kBuf], zc[kBuf], zs[kBuf];
  const int64_t q0 = e0 / 4, q1 = (e0 + n + 3) / 4, nb = q1 - q0;  // nb <= kNoiseChunk/4 + 1
  philox_blocks(static_cast<uint64_t>(q0), nb, seed, offset, w);
  // Pair k = 2*(q - q0) + j uses words (2j, 2j+1) of block q.
  const int64_t np = 2 * nb;
  for (int64_t b = 0; b < nb; ++b) {
    u1[2 * b] = philox::uniform24(w[0][b]);
    u2[2 * b] = philox::uniform24(w[1][b]);
    u1[2 * b + 1] = philox::uniform24(w[2][b]);
    u2[2 * b + 1] = philox::uniform24(w[3][b]);
  }
  const V m2(-2.0f), tp(philox::kTwoPiF);
  int64_t k = 0;
  for (; k + W <= np; k += W) {
    const V r = (m2 * V::loadu(u1 + k).log()).sqrt();
    const V t = tp * V::loadu(u2 + k);
    (r * t.cos()).store(zc + k);
    (r * t.sin()).store(zs + k);
  }
  for (; k < np; ++k) {
    const float r = std::sqrt(-2.0f * std::log(u1[k])), t = philox::kTwoPiF * u2[k];
    zc[k] = r * std::cos(t);
    zs[k] = r * std::sin(t);
  }
  const int64_t skip = e0 - 4 * q0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + skip;  // index within the generated run
    out[i] = (j & 1) ? zs[j >> 1] : zc[j >> 1];
  }
}

inline void noise(int64_t e0, int64_t n, uint64_t seed, uint64_t offset, double* out) {
  using V = Vectorized<double>;
  constexpr int64_t W = V::size();
  alignas(64) uint32_t w[4][kBuf];
  alignas(64) double u1[kBuf], u2[kBuf], zc[kBuf], zs[kBuf];
  const int64_t q0 = e0 / 2, q1 = (e0 + n + 1) / 2, nb = q1 - q0;  // nb <= kNoiseChunk/2 + 1
  philox_blocks(static_cast<uint64_t>(q0), nb, seed, offset, w);
  for (int64_t b = 0; b < nb; ++b) {
    u1[b] = philox::uniform53(w[0][b], w[1][b]);
    u2[b] = philox::uniform53(w[2][b], w[3][b]);
  }
  const V m2(-2.0), tp(philox::kTwoPi);
  int64_t k = 0;
  for (; k + W <= nb; k += W) {
    const V r = (m2 * V::loadu(u1 + k).log()).sqrt();
    const V t = tp * V::loadu(u2 + k);
    (r * t.cos()).store(zc + k);
    (r * t.sin()).store(zs + k);
  }
  for (; k < nb; ++k) {
    const double r = std::sqrt(-2.0 * std::log(u1[k])), t = philox::kTwoPi * u2[k];
    zc[k] = r * std::cos(t);
    zs[k] = r * std::sin(t);
  }
  const int64_t skip = e0 - 2 * q0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + skip;
    out[i] = (j & 1) ? zs[j >> 1] : zc[j >> 1];
  }
}

// z for elements [e0, e1); returns sum(1 + lv - mu^2 - exp(lv)) over them when KL.
template <typename T, bool KL>
double reparam_range(const T* mu, const T* lv, T* z, int64_t e0, int64_t e1, uint64_t seed,
                     uint64_t offset) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  alignas(64) O eps[kNoiseChunk];
  V acc(O(0));
  double s = 0.0;
  const V half(O(0.5)), one(O(1));
  for (int64_t c = e0; c < e1; c += kNoiseChunk) {
    const int64_t n = std::min(kNoiseChunk, e1 - c);
    noise(c, n, seed, offset, eps);
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      const V m = vload<T, O>(mu + c + i), l = vload<T, O>(lv + c + i);
      if constexpr (KL) {
        // exp(0.5*lv) as sqrt(exp(lv)): one exp serves z and the KL term.
        const V el = l.exp();
        vstore<T, O>(z + c + i, m + el.sqrt() * V::loadu(eps + i));
        acc = acc + (one + l - m * m - el);
      } else {
        vstore<T, O>(z + c + i, m + (half * l).exp() * V::loadu(eps + i));
      }
    }
    for (; i < n; ++i) {
      const O m = static_cast<O>(mu[c + i]), l = static_cast<O>(lv[c + i]);
      if constexpr (KL) {
        const O el = std::exp(l);
        z[c + i] = static_cast<T>(m + std::sqrt(el) * eps[i]);
        s += static_cast<double>(O(1) + l - m * m - el);
      } else {
        z[c + i] = static_cast<T>(m + std::exp(O(0.5) * l) * eps[i]);
      }
    }
  }
  return KL ? s + vsum(acc) : 0.0;
}

// Runs body(row, begin, end, task) over (row, chunk) tasks of B rows of D values.
template <typename F>
void for_row_chunks(int64_t B, int64_t D, const F& body) {
  const int64_t cpr = std::max<int64_t>(1, (D + kTaskChunk - 1) / kTaskChunk);
  const int64_t tasks = B * cpr;
  const int64_t per_task = std::max<int64_t>(1, std::min(D, kTaskChunk));
  const int64_t grain = std::max<int64_t>(1, kGrain / per_task);
  at::parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t / cpr, c = t % cpr;
      const int64_t b = r * D + c * kTaskChunk, e = r * D + std::min(D, (c + 1) * kTaskChunk);
      body(r, b, e, t);
    }
  });
}

std::pair<uint64_t, uint64_t> cpu_seed_offset(const c10::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator,
                                                                 at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  // What Tensor.random_() draws for int64 (random64 with the top bit cleared),
  // so the reference twin can reproduce the seed from Python.
  return {gen->random64() & 0x7FFFFFFFFFFFFFFFull, 0};
}

std::tuple<at::Tensor, at::Tensor> reparam_impl(const at::Tensor& mu_in, const at::Tensor& lv_in,
                                                bool kl, int64_t reduction,
                                                const c10::optional<at::Generator>& generator) {
  check_reparameterize_args(mu_in, lv_in, kl, reduction);
  const at::Tensor mu = mu_in.contiguous(), lv = lv_in.contiguous();
  at::Tensor z = at::empty(mu.sizes(), mu.options());
  const auto [seed, offset] = cpu_seed_offset(generator);
  const int64_t n = mu.numel();
  auto [B, D] = kl ? kl_rows(mu) : std::pair<int64_t, int64_t>{1, n};
  const int64_t cpr = std::max<int64_t>(1, (D + kTaskChunk - 1) / kTaskChunk);
  std::vector<double> part(kl ? B * cpr : 0, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gan_ext_reparam", [&] {
    const scalar_t* mp = mu.const_data_ptr<scalar_t>();
    const scalar_t* lp = lv.const_data_ptr<scalar_t>();
    scalar_t* zp = z.mutable_data_ptr<scalar_t>();
    if (n == 0) return;
    for_row_chunks(B, D, [&](int64_t, int64_t b, int64_t e, int64_t t) {
      if (kl) {
        part[t] = reparam_range<scalar_t, true>(mp, lp, zp, b, e, seed, offset);
      } else {
        reparam_range<scalar_t, false>(mp, lp, zp, b, e, seed, offset);
      }
    });
  });
  if (!kl) return {z, at::Tensor()};
  // kl_b = -0.5 * sum over the row, then the batch reduction, in double.
  std::vector<double> row(B, 0.0);
  double total = 0.0;
  for (int64_t r = 0; r < B; ++r) {
    double s = 0.0;
    for (int64_t c = 0; c < cpr; ++c) s += part[r * cpr + c];
    row[r] = -0.5 * s;
    total += row[r];
  }
  at::Tensor out;
  if (reduction == static_cast<int64_t>(Reduction::None)) {
    out = at::empty({B}, mu.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gan_ext_kl_rows", [&] {
      scalar_t* o = out.mutable_data_ptr<scalar_t>();
      for (int64_t r = 0; r < B; ++r) o[r] = static_cast<scalar_t>(row[r]);
    });
  } else {
    const double v = reduction == static_cast<int64_t>(Reduction::Mean) ? total / B : total;
    out = at::empty({}, mu.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gan_ext_kl_out",
                                    [&] { *out.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(v); });
  }
  return {z, out};
}

at::Tensor reparameterize_cpu(const at::Tensor& mu, const at::Tensor& logvar,
                              const c10::optional<at::Generator>& generator) {
  return std::get<0>(reparam_impl(mu, logvar, false, 1, generator));
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_cpu(const at::Tensor& mu, const at::Tensor& logvar,
                                                         int64_t reduction,
                                                         const c10::optional<at::Generator>& generator) {
  return reparam_impl(mu, logvar, true, reduction, generator);
}

// ------------------------------------------------------------------ backward
// grad_mu = gz + k*mu, grad_lv = 0.5*gz*(z - mu) + k*0.5*(exp(lv) - 1), k = the
// row's KL gradient.
template <typename T, bool GZ, bool GK>
void reparam_backward_range(const T* gz, const T* z, const T* mu, const T* lv, T* gmu, T* glv,
                            int64_t b, int64_t e, double k) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  const V half(O(0.5)), kv(static_cast<O>(k)), hk(static_cast<O>(0.5 * k)), one(O(1)), zero(O(0));
  int64_t i = b;
  for (; i + W <= e; i += W) {
    const V m = vload<T, O>(mu + i);
    V gm = zero, gl = zero;
    if constexpr (GZ) {
      const V g = vload<T, O>(gz + i);
      gm = g;
      gl = half * g * (vload<T, O>(z + i) - m);
    }
    if constexpr (GK) {
      gm = gm + kv * m;
      gl = gl + hk * (vload<T, O>(lv + i).exp() - one);
    }
    vstore<T, O>(gmu + i, gm);
    vstore<T, O>(glv + i, gl);
  }
  for (; i < e; ++i) {
    const O m = static_cast<O>(mu[i]);
    O gm = 0, gl = 0;
    if constexpr (GZ) {
      const O g = static_cast<O>(gz[i]);
      gm = g;
      gl = O(0.5) * g * (static_cast<O>(z[i]) - m);
    }
    if constexpr (GK) {
      gm += static_cast<O>(k) * m;
      gl += static_cast<O>(0.5 * k) * (std::exp(static_cast<O>(lv[i])) - O(1));
    }
    gmu[i] = static_cast<T>(gm);
    glv[i] = static_cast<T>(gl);
  }
}

std::tuple<at::Tensor, at::Tensor> reparameterize_backward_cpu(
    const c10::optional<at::Tensor>& grad_z_opt, const c10::optional<at::Tensor>& grad_kl_opt,
    const at::Tensor& z_in, const at::Tensor& mu_in, const at::Tensor& lv_in, int64_t reduction) {
  check_reparameterize_args(mu_in, lv_in, false, reduction);
  check_same_shape(z_in, "z", mu_in, "mu");
  check_same_dtype(z_in, "z", mu_in, "mu");
  const bool has_gz = grad_z_opt.has_value() && grad_z_opt->defined();
  const bool has_gk = grad_kl_opt.has_value() && grad_kl_opt->defined();
  const at::Tensor mu = mu_in.contiguous(), lv = lv_in.contiguous(), z = z_in.contiguous();
  at::Tensor gz;
  if (has_gz) {
    check_same_shape(*grad_z_opt, "grad_z", mu_in, "mu");
    gz = grad_z_opt->to(mu.scalar_type()).contiguous();
  }
  const bool per_row = reduction == static_cast<int64_t>(Reduction::None);
  const int64_t n = mu.numel();
  int64_t B = 1, D = n;
  if (has_gk) {
    TORCH_CHECK_VALUE(mu.dim() >= 2, "mu must be (B, D, ...) when grad_kl is given, got ", mu.sizes());
    std::tie(B, D) = kl_rows(mu);
    TORCH_CHECK_VALUE(per_row ? grad_kl_opt->numel() == B : grad_kl_opt->numel() == 1,
                      "grad_kl has ", grad_kl_opt->numel(), " values; expected ", per_row ? B : 1,
                      " for reduction ", reduction);
  }
  std::vector<double> k(B, 0.0);
  if (has_gk) {
    const at::Tensor gk = grad_kl_opt->to(at::kDouble).contiguous();
    const double* g = gk.const_data_ptr<double>();
    for (int64_t r = 0; r < B; ++r) {
      k[r] = per_row ? g[r] : (reduction == static_cast<int64_t>(Reduction::Mean) ? g[0] / B : g[0]);
    }
  }
  at::Tensor gmu = at::empty(mu.sizes(), mu.options()), glv = at::empty(mu.sizes(), mu.options());
  if (n == 0) return {gmu, glv};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gan_ext_reparam_bwd", [&] {
    const scalar_t* gzp = has_gz ? gz.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const scalar_t* mp = mu.const_data_ptr<scalar_t>();
    const scalar_t* lp = lv.const_data_ptr<scalar_t>();
    scalar_t* gmp = gmu.mutable_data_ptr<scalar_t>();
    scalar_t* glp = glv.mutable_data_ptr<scalar_t>();
    for_row_chunks(B, D, [&](int64_t r, int64_t b, int64_t e, int64_t) {
      if (has_gz && has_gk) {
        reparam_backward_range<scalar_t, true, true>(gzp, zp, mp, lp, gmp, glp, b, e, k[r]);
      } else if (has_gz) {
        reparam_backward_range<scalar_t, true, false>(gzp, zp, mp, lp, gmp, glp, b, e, 0.0);
      } else if (has_gk) {
        reparam_backward_range<scalar_t, false, true>(gzp, zp, mp, lp, gmp, glp, b, e, k[r]);
      } else {
        reparam_backward_range<scalar_t, false, false>(gzp, zp, mp, lp, gmp, glp, b, e, 0.0);
      }
    });
  });
  return {gmu, glv};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  m.impl("reparameterize", &reparameterize_cpu);
  m.impl("reparameterize_kl", &reparameterize_kl_cpu);
  m.impl("reparameterize_backward", &reparameterize_backward_cpu);
}

}  // namespace gan_ext
