// CPU kernels of reparameterize, reparameterize_kl and reparameterize_backward.
//
// The noise is the counter-based stream of common/philox.h: element i's eps
// depends only on (seed, offset, i), so tasks make their own noise in any
// order. With AVX2, Philox runs on 8 blocks per vector and the float
// Box-Muller uses the range-specialised log/sincos of fast_math.h (SLEEF's
// general ones cost 3x more); other builds use scalar Philox and at::vec.
// Nothing is written for eps: it is made in a small stack buffer and consumed
// at once.
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

#include "common/cpu_capability.h"
#if defined(GAN_EXT_AVX2_INTRINSICS)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/fast_math.h"
#include "common/philox.h"
#include "common/philox_cpu.h"
#include "ops/reparameterize/checks.h"
#include "common/vec_io.h"

namespace gan_ext {
namespace {

// Values per task chunk (a multiple of every per-block count), and per noise
// buffer (stays in L1).
constexpr int64_t kTaskChunk = 16384;
constexpr int64_t kNoiseChunk = 512;
// Minimum values per parallel task.
constexpr int64_t kGrain = 32768;
constexpr int64_t kGrainNoise = 2048;
// Blocks (or pairs) per noise buffer: a chunk that starts mid-block needs one more.
constexpr int64_t kBuf = kNoiseChunk / 2 + 2 * kLanes;

// eps for elements [e0, e0 + n) of the stream, n <= kNoiseChunk, into out[0, n).
// float: 4 normals per block; double: 2. Same values as philox::normals.
inline void noise(int64_t e0, int64_t n, uint64_t seed, uint64_t offset, float* out) {
  alignas(64) uint32_t w[4][kBuf];
  const int64_t q0 = e0 / 4, q1 = (e0 + n + 3) / 4, nb = q1 - q0;  // nb <= kNoiseChunk/4 + 1
  const int64_t skip = e0 - 4 * q0;
  philox_blocks(static_cast<uint64_t>(q0), nb, seed, offset, w);
#if defined(GAN_EXT_AVX2_INTRINSICS)
  // Eight blocks per step: pair A = words (0, 1), pair B = words (2, 3); the
  // 4x8 results are transposed into element order 4q + (cA, sA, cB, sB).
  // Padding blocks (zeroed words) give valid uniforms and are never copied out.
  alignas(64) float full[4 * kBuf];
  const int64_t nb8 = (nb + kLanes - 1) / kLanes * kLanes;
  for (int k = 0; k < 4; ++k)
    for (int64_t b = nb; b < nb8; ++b) w[k][b] = 0;
  // Box-Muller on the blocks at b, one vector of S's width: pair A = words
  // (0, 1), pair B = words (2, 3); c[j], sn[j] = r cos, r sin of pair j.
  auto transform = [&](auto width, int64_t b, auto* c, auto* sn) {
    using S = decltype(width);
    auto uniform = [&](const uint32_t* p) {  // philox::uniform23 on a vector of words
      return S::mul(S::add(S::to_float(S::shr(S::load_bits(p), 9)), S::set1(0.5f)),
                    S::set1(1.1920928955078125e-07f));
    };
    for (int j = 0; j < 2; ++j) {
      const auto r = S::sqrt(S::mul(S::set1(-2.0f), fastmath::log_unit(uniform(&w[2 * j][b]))));
      fastmath::sincos_turns(uniform(&w[2 * j + 1][b]), c[j], sn[j]);
      c[j] = S::mul(r, c[j]);
      sn[j] = S::mul(r, sn[j]);
    }
  };
  // The 4x8 results of blocks b .. b+7 transposed into element order
  // 4q + (cA, sA, cB, sB).
  auto store8 = [&](int64_t b, const __m256* c, const __m256* sn) {
    const __m256 x0 = _mm256_unpacklo_ps(c[0], sn[0]), x1 = _mm256_unpackhi_ps(c[0], sn[0]);
    const __m256 y0 = _mm256_unpacklo_ps(c[1], sn[1]), y1 = _mm256_unpackhi_ps(c[1], sn[1]);
    const __m256 z0 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(x0), _mm256_castps_pd(y0)));
    const __m256 z1 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(x0), _mm256_castps_pd(y0)));
    const __m256 z2 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(x1), _mm256_castps_pd(y1)));
    const __m256 z3 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(x1), _mm256_castps_pd(y1)));
    float* o = full + 4 * b;
    _mm256_store_ps(o, _mm256_permute2f128_ps(z0, z1, 0x20));
    _mm256_store_ps(o + 8, _mm256_permute2f128_ps(z2, z3, 0x20));
    _mm256_store_ps(o + 16, _mm256_permute2f128_ps(z0, z1, 0x31));
    _mm256_store_ps(o + 24, _mm256_permute2f128_ps(z2, z3, 0x31));
  };
  int64_t b = 0;
#if defined(CPU_CAPABILITY_AVX512)
  // Sixteen blocks per step: the transform in 512-bit lanes, the transpose on
  // each 256-bit half.
  for (; b + 2 * kLanes <= nb8; b += 2 * kLanes) {
    __m512 c[2], sn[2];
    transform(fastmath::W16{}, b, c, sn);
    const __m256 lo_c[2] = {_mm512_castps512_ps256(c[0]), _mm512_castps512_ps256(c[1])};
    const __m256 lo_s[2] = {_mm512_castps512_ps256(sn[0]), _mm512_castps512_ps256(sn[1])};
    const __m256 hi_c[2] = {_mm512_extractf32x8_ps(c[0], 1), _mm512_extractf32x8_ps(c[1], 1)};
    const __m256 hi_s[2] = {_mm512_extractf32x8_ps(sn[0], 1), _mm512_extractf32x8_ps(sn[1], 1)};
    store8(b, lo_c, lo_s);
    store8(b + kLanes, hi_c, hi_s);
  }
#endif
  for (; b < nb8; b += kLanes) {
    __m256 c[2], sn[2];
    transform(fastmath::W8{}, b, c, sn);
    store8(b, c, sn);
  }
  std::memcpy(out, full + skip, static_cast<size_t>(n) * sizeof(float));
#else
  using V = Vectorized<float>;
  constexpr int64_t W = V::size();
  alignas(64) float u1[kBuf], u2[kBuf], zc[kBuf], zs[kBuf];
  // Pair k = 2*(q - q0) + j uses words (2j, 2j+1) of block q. Pairs are
  // padded to whole vectors (u = 0.5).
  const int64_t np = 2 * nb, npad = (np + W - 1) / W * W;
  for (int64_t b = 0; b < nb; ++b) {
    u1[2 * b] = philox::uniform23(w[0][b]);
    u2[2 * b] = philox::uniform23(w[1][b]);
    u1[2 * b + 1] = philox::uniform23(w[2][b]);
    u2[2 * b + 1] = philox::uniform23(w[3][b]);
  }
  for (int64_t k = np; k < npad; ++k) u1[k] = u2[k] = 0.5f;
  // cos and sin of 2 pi u2 with u2 reduced exactly, in turns, to a quadrant q
  // and an angle a in [-pi/4, pi/4] (as fast_math's sincos_turns): the angle
  // 2 pi u2 itself, rounded to float, would be off by up to 4.8e-7 near
  // u2 = 1, i.e. 2.6e-6 in z at r = 5.5.
  const V m2(-2.0f), four(4.0f), quarter_turn(1.57079632679489662f);
  alignas(64) float rv[W], qv[W], cv[W], sv[W];
  for (int64_t k = 0; k < npad; k += W) {
    const V r = (m2 * V::loadu(u1 + k).log()).sqrt();
    const V w4 = four * V::loadu(u2 + k);
    const V q = w4.round();
    const V a = (w4 - q) * quarter_turn;  // w4 - q is exact
    r.store(rv);
    q.store(qv);
    a.cos().store(cv);
    a.sin().store(sv);
    for (int64_t l = 0; l < W; ++l) {
      // Quadrant q mod 4: 0 (c, s), 1 (-s, c), 2 (-c, -s), 3 (s, -c).
      const int quadrant = static_cast<int>(qv[l]) & 3;
      const float c = quadrant == 0 ? cv[l] : quadrant == 1 ? -sv[l] : quadrant == 2 ? -cv[l] : sv[l];
      const float sn = quadrant == 0 ? sv[l] : quadrant == 1 ? cv[l] : quadrant == 2 ? -sv[l] : -cv[l];
      zc[k + l] = rv[l] * c;
      zs[k + l] = rv[l] * sn;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + skip;  // index within the generated run
    out[i] = (j & 1) ? zs[j >> 1] : zc[j >> 1];
  }
#endif
}

inline void noise(int64_t e0, int64_t n, uint64_t seed, uint64_t offset, double* out) {
  using V = Vectorized<double>;
  constexpr int64_t W = V::size();
  alignas(64) uint32_t w[4][kBuf];
  alignas(64) double u1[kBuf], u2[kBuf], zc[kBuf], zs[kBuf];
  const int64_t q0 = e0 / 2, q1 = (e0 + n + 1) / 2, nb = q1 - q0;  // nb <= kNoiseChunk/2 + 1
  philox_blocks(static_cast<uint64_t>(q0), nb, seed, offset, w);
  const int64_t npad = (nb + W - 1) / W * W;
  for (int64_t b = 0; b < nb; ++b) {
    u1[b] = philox::uniform53(w[0][b], w[1][b]);
    u2[b] = philox::uniform53(w[2][b], w[3][b]);
  }
  for (int64_t k = nb; k < npad; ++k) u1[k] = u2[k] = 0.5;
  const V m2(-2.0), tp(philox::kTwoPi);
  for (int64_t k = 0; k < npad; k += W) {
    const V r = (m2 * V::loadu(u1 + k).log()).sqrt();
    const V t = tp * V::loadu(u2 + k);
    (r * t.cos()).store(zc + k);
    (r * t.sin()).store(zs + k);
  }
  const int64_t skip = e0 - 2 * q0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + skip;
    out[i] = (j & 1) ? zs[j >> 1] : zc[j >> 1];
  }
}

// Where the KL partial sums of a range go: element i adds to slot
// (i / D) * cpr + (i % D) / kTaskChunk, i.e. one slot per row, or per
// kTaskChunk piece of a long row.
struct KLSlots {
  int64_t D, cpr;
  double* part;
  int64_t slot(int64_t i) const { return (i / D) * cpr + (i % D) / kTaskChunk; }
};

// Sum of v[0, n) in opmath lanes, returned in double.
template <typename O>
inline double segment_sum(const O* v, int64_t n) {
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  V acc(O(0));
  int64_t i = 0;
  for (; i + W <= n; i += W) acc = acc + V::loadu(v + i);
  double s = vsum(acc);
  for (; i < n; ++i) s += v[i];
  return s;
}

// z for elements [e0, e1) (which never cross a kTaskChunk boundary of a row
// in the middle of a kNoiseChunk piece); with KL, the terms
// 1 + lv - mu^2 - exp(lv) are added to their slots.
template <typename T, bool KL>
void reparam_range(const T* mu, const T* lv, T* z, int64_t e0, int64_t e1, uint64_t seed,
                   uint64_t offset, const KLSlots& slots) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  alignas(64) O eps[kNoiseChunk];
  alignas(64) O term[KL ? kNoiseChunk : 1];
  const V half(O(0.5)), one(O(1));
  for (int64_t c = e0; c < e1; c += kNoiseChunk) {
    const int64_t n = std::min(kNoiseChunk, e1 - c);
    noise(c, n, seed, offset, eps);
    for (int64_t i = 0; i < n; i += W) {
      const int64_t cnt = std::min<int64_t>(W, n - i);
      const V m = vload<T, O>(mu + c + i, cnt), l = vload<T, O>(lv + c + i, cnt);
      const V ep = cnt == W ? V::loadu(eps + i) : V::loadu(eps + i, cnt);
      if constexpr (KL) {
        // exp(0.5*lv) as sqrt(exp(lv)): one exp serves z and the KL term.
        const V el = l.exp();
        vstore<T, O>(z + c + i, m + el.sqrt() * ep, cnt);
        (one + l - m * m - el).store(term + i, cnt);
      } else {
        vstore<T, O>(z + c + i, m + (half * l).exp() * ep, cnt);
      }
    }
    if constexpr (KL) {
      // Split the piece at row ends; each segment goes to its slot.
      for (int64_t j = 0; j < n;) {
        const int64_t row_end = ((c + j) / slots.D + 1) * slots.D - c;
        const int64_t end = std::min(n, row_end);
        slots.part[slots.slot(c + j)] += segment_sum(term + j, end - j);
        j = end;
      }
    }
  }
}

// Runs body(begin, end) over tasks of whole rows (D < kTaskChunk: ~kRowTask
// values of whole rows per task) or of kTaskChunk pieces of one row, B rows
// of D values; a thread gets at least grain_elems values.
constexpr int64_t kRowTask = 1024;
template <typename F>
void for_tasks(int64_t B, int64_t D, int64_t grain_elems, const F& body) {
  if (B == 0 || D == 0) return;
  if (D < kTaskChunk) {
    const int64_t rows = std::max<int64_t>(1, kRowTask / D);
    const int64_t tasks = (B + rows - 1) / rows;
    const int64_t grain = std::max<int64_t>(1, grain_elems / (rows * D));
    at::parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) body(t * rows * D, std::min(B, (t + 1) * rows) * D);
    });
  } else {
    const int64_t cpr = (D + kTaskChunk - 1) / kTaskChunk;
    const int64_t grain = std::max<int64_t>(1, grain_elems / kTaskChunk);
    at::parallel_for(0, B * cpr, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r = t / cpr, c = t % cpr;
        body(r * D + c * kTaskChunk, r * D + std::min(D, (c + 1) * kTaskChunk));
      }
    });
  }
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
  const KLSlots slots{std::max<int64_t>(D, 1), cpr, part.data()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gan_ext_reparam", [&] {
    const scalar_t* mp = mu.const_data_ptr<scalar_t>();
    const scalar_t* lp = lv.const_data_ptr<scalar_t>();
    scalar_t* zp = z.mutable_data_ptr<scalar_t>();
    if (n == 0) return;
    // Noise costs ~5 ns a value: two threads pay off from a few thousand.
    for_tasks(B, D, kGrainNoise, [&](int64_t b, int64_t e) {
      if (kl) {
        reparam_range<scalar_t, true>(mp, lp, zp, b, e, seed, offset, slots);
      } else {
        reparam_range<scalar_t, false>(mp, lp, zp, b, e, seed, offset, slots);
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
  // Rows can be short (a VAE latent of 20): the tail is a partial vector, not
  // a scalar loop (a scalar exp per element costs more than the whole row).
  for (int64_t i = b; i < e; i += W) {
    const int64_t c = std::min<int64_t>(W, e - i);
    const V m = vload<T, O>(mu + i, c);
    V gm = zero, gl = zero;
    if constexpr (GZ) {
      const V g = vload<T, O>(gz + i, c);
      gm = g;
      gl = half * g * (vload<T, O>(z + i, c) - m);
    }
    if constexpr (GK) {
      gm = gm + kv * m;
      gl = gl + hk * (vload<T, O>(lv + i, c).exp() - one);
    }
    vstore<T, O>(gmu + i, gm, c);
    vstore<T, O>(glv + i, gl, c);
  }
}

// Rows shorter than this take the buffered path below.
constexpr int64_t kShortRow = 256;

// reparam_backward_range with the KL term for many short rows: the row
// gradients k are expanded into a per-element buffer (one fill per row), so
// the arithmetic runs on whole vectors across row ends.
template <typename T, bool GZ>
void reparam_backward_short(const T* gz, const T* z, const T* mu, const T* lv, T* gmu, T* glv,
                            int64_t b, int64_t e, int64_t D, const double* k) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  alignas(64) O kb[kNoiseChunk];
  const V half(O(0.5)), one(O(1));
  for (int64_t c = b; c < e; c += kNoiseChunk) {
    const int64_t n = std::min(kNoiseChunk, e - c);
    for (int64_t j = 0; j < n;) {
      const int64_t r = (c + j) / D, end = std::min(n, (r + 1) * D - c);
      std::fill(kb + j, kb + end, static_cast<O>(k[r]));
      j = end;
    }
    for (int64_t i = 0; i < n; i += W) {
      const int64_t cnt = std::min<int64_t>(W, n - i);
      const int64_t p = c + i;
      const V m = vload<T, O>(mu + p, cnt);
      const V kv = V::loadu(kb + i, cnt);
      V gm = kv * m, gl = half * kv * (vload<T, O>(lv + p, cnt).exp() - one);
      if constexpr (GZ) {
        const V g = vload<T, O>(gz + p, cnt);
        gm = gm + g;
        gl = gl + half * g * (vload<T, O>(z + p, cnt) - m);
      }
      vstore<T, O>(gmu + p, gm, cnt);
      vstore<T, O>(glv + p, gl, cnt);
    }
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
    const at::Tensor gk = grad_kl_opt->contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gk.scalar_type(), "gan_ext_grad_kl", [&] {
      const scalar_t* g = gk.const_data_ptr<scalar_t>();
      const double g0 = static_cast<double>(g[0]);
      for (int64_t r = 0; r < B; ++r) {
        k[r] = per_row ? static_cast<double>(g[r])
                       : (reduction == static_cast<int64_t>(Reduction::Mean) ? g0 / B : g0);
      }
    });
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
    auto backward_rows = [&](int64_t r, int64_t b, int64_t e) {
      if (has_gz && has_gk) {
        reparam_backward_range<scalar_t, true, true>(gzp, zp, mp, lp, gmp, glp, b, e, k[r]);
      } else if (has_gz) {
        reparam_backward_range<scalar_t, true, false>(gzp, zp, mp, lp, gmp, glp, b, e, 0.0);
      } else if (has_gk) {
        reparam_backward_range<scalar_t, false, true>(gzp, zp, mp, lp, gmp, glp, b, e, k[r]);
      } else {
        reparam_backward_range<scalar_t, false, false>(gzp, zp, mp, lp, gmp, glp, b, e, 0.0);
      }
    };
    for_tasks(B, D, kGrain, [&](int64_t b, int64_t e) {
      if (has_gk && D < kShortRow) {
        // Short rows: per-element KL gradients from a buffer, whole vectors.
        if (has_gz) {
          reparam_backward_short<scalar_t, true>(gzp, zp, mp, lp, gmp, glp, b, e, D, k.data());
        } else {
          reparam_backward_short<scalar_t, false>(gzp, zp, mp, lp, gmp, glp, b, e, D, k.data());
        }
        return;
      }
      // A task is whole rows or a piece of one: the KL gradient varies per row.
      for (int64_t r0 = b; r0 < e;) {
        const int64_t r = r0 / D, re = std::min(e, (r + 1) * D);
        backward_rows(r, r0, re);
        r0 = re;
      }
    });
  });
  return {gmu, glv};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("reparameterize", &reparameterize_cpu);
  m.impl("reparameterize_kl", &reparameterize_kl_cpu);
  m.impl("reparameterize_backward", &reparameterize_backward_cpu);
}

}  // namespace gan_ext
