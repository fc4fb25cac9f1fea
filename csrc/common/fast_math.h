// Float32 AVX2 versions of the few transcendental functions the loss and
// noise kernels spend their time in, each specialised to the argument range
// it is called with (so no general range reduction or special-case handling):
//   exp_nonpos(x)        exp(x) for x <= 0 (0 below -87, where exp is denormal)
//   log1p_unit(e)        log(1 + e) for e in [0, 1]
//   log_unit(u)          log(u) for normal u in (0, 1]
//   sincos_turns(u)      (cos 2 pi u, sin 2 pi u) for u in [0, 1]
//   reciprocal(d)        1 / d for d in [1, 3]
// Polynomials are the Cephes single-precision ones (S. Moshier), and
// log1p uses the atanh series 2 atanh(e / (2 + e)); all are within ~2 ulp of
// the correctly rounded result on their range. SLEEF's general u10 versions
// (what at::vec calls) cost 2-4x more here, which is most of a BCE loss pass
// and of a Box-Muller transform.
//
// Only compiled in the AVX2 and AVX-512 variants (GAN_EXT_AVX2_INTRINSICS,
// common/cpu_capability.h); the baseline kernels use at::vec's SLEEF calls.
// The two variants compile these inline functions with different flags, so
// each gets its own copy in ATen's per-variant namespace name CPU_CAPABILITY.
#pragma once

#include "common/cpu_capability.h"

#if defined(GAN_EXT_AVX2_INTRINSICS)
#include <immintrin.h>

namespace gan_ext {
namespace fastmath {
inline namespace CPU_CAPABILITY {

inline __m256 fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
inline __m256 set1(float v) { return _mm256_set1_ps(v); }

// 1/d for d in [1, 3]: the hardware estimate (12 bits) plus one Newton step,
// within 2 ulp; a third of a division's latency and throughput cost.
inline __m256 reciprocal(__m256 d) {
  const __m256 r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, set1(2.0f)));
}

inline __m256 exp_nonpos(__m256 x_in) {
  const __m256 x = _mm256_max_ps(x_in, set1(-87.0f));
  // x = n ln2 + r, |r| <= ln2 / 2; ln2 split in two for an exact n*C1.
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, set1(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = fmadd(n, set1(-0.693359375f), x);
  r = fmadd(n, set1(2.12194440e-4f), r);
  __m256 p = set1(1.9875691500e-4f);
  p = fmadd(p, r, set1(1.3981999507e-3f));
  p = fmadd(p, r, set1(8.3334519073e-3f));
  p = fmadd(p, r, set1(4.1665795894e-2f));
  p = fmadd(p, r, set1(1.6666665459e-1f));
  p = fmadd(p, r, set1(5.0000001201e-1f));
  p = fmadd(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, set1(1.0f)));
  // 2^n from the exponent bits (n >= -126 after the clamp).
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  // Below the clamp the result would be denormal or 0: return 0.
  const __m256 tiny = _mm256_cmp_ps(x_in, set1(-87.0f), _CMP_LT_OQ);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

inline __m256 log1p_unit(__m256 e) {
  // log(1 + e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3]: odd series in s,
  // truncated after s^15 (relative error < 2e-9). Exact for tiny e (-> e).
  const __m256 s = _mm256_mul_ps(e, reciprocal(_mm256_add_ps(e, set1(2.0f))));
  const __m256 s2 = _mm256_mul_ps(s, s);
  __m256 p = set1(1.0f / 15.0f);
  p = fmadd(p, s2, set1(1.0f / 13.0f));
  p = fmadd(p, s2, set1(1.0f / 11.0f));
  p = fmadd(p, s2, set1(1.0f / 9.0f));
  p = fmadd(p, s2, set1(1.0f / 7.0f));
  p = fmadd(p, s2, set1(1.0f / 5.0f));
  p = fmadd(p, s2, set1(1.0f / 3.0f));
  p = _mm256_mul_ps(p, s2);
  const __m256 t = _mm256_add_ps(s, s);
  return fmadd(t, p, t);
}

inline __m256 log_unit(__m256 x) {
  const __m256i xi = _mm256_castps_si256(x);
  __m256i ex = _mm256_sub_epi32(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(127));
  __m256 m = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(xi, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
  // m in [sqrt(1/2), sqrt(2)): halve the large ones.
  const __m256 big = _mm256_cmp_ps(m, set1(1.41421356237f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, set1(0.5f)), big);
  ex = _mm256_sub_epi32(ex, _mm256_castps_si256(big));  // big lanes are -1: ex + 1
  const __m256 fe = _mm256_cvtepi32_ps(ex);
  const __m256 f = _mm256_sub_ps(m, set1(1.0f));
  const __m256 z = _mm256_mul_ps(f, f);
  __m256 p = set1(7.0376836292e-2f);
  p = fmadd(p, f, set1(-1.1514610310e-1f));
  p = fmadd(p, f, set1(1.1676998740e-1f));
  p = fmadd(p, f, set1(-1.2420140846e-1f));
  p = fmadd(p, f, set1(1.4249322787e-1f));
  p = fmadd(p, f, set1(-1.6668057665e-1f));
  p = fmadd(p, f, set1(2.0000714765e-1f));
  p = fmadd(p, f, set1(-2.4999993993e-1f));
  p = fmadd(p, f, set1(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(f, z), p);
  y = fmadd(fe, set1(-2.12194440e-4f), y);
  y = fmadd(z, set1(-0.5f), y);
  return fmadd(fe, set1(0.693359375f), _mm256_add_ps(f, y));
}

// cos and sin of 2 pi u: u is reduced exactly (in turns) to an octant,
// a = (4u - q) pi/2 in [-pi/4, pi/4], then rotated by the quadrant q.
inline void sincos_turns(__m256 u, __m256& c, __m256& s) {
  const __m256 w = _mm256_mul_ps(u, set1(4.0f));
  const __m256 qf = _mm256_round_ps(w, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 a = _mm256_mul_ps(_mm256_sub_ps(w, qf), set1(1.57079632679489662f));
  const __m256 z = _mm256_mul_ps(a, a);
  __m256 ps = set1(-1.9515295891e-4f);
  ps = fmadd(ps, z, set1(8.3321608736e-3f));
  ps = fmadd(ps, z, set1(-1.6666654611e-1f));
  const __m256 sa = fmadd(_mm256_mul_ps(ps, z), a, a);
  __m256 pc = set1(2.443315711809948e-5f);
  pc = fmadd(pc, z, set1(-1.388731625493765e-3f));
  pc = fmadd(pc, z, set1(4.166664568298827e-2f));
  const __m256 ca = fmadd(_mm256_mul_ps(pc, z), z, fmadd(z, set1(-0.5f), set1(1.0f)));
  // Quadrant q mod 4: 0 (c, s), 1 (-s, c), 2 (-c, -s), 3 (s, -c).
  const __m256i q = _mm256_cvtps_epi32(qf);
  const __m256 swap = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_and_si256(q, _mm256_set1_epi32(1)), 31));  // sign bit if odd
  const __m256 odd = _mm256_castsi256_ps(_mm256_srai_epi32(_mm256_castps_si256(swap), 31));
  const __m256 cc = _mm256_blendv_ps(ca, sa, odd);
  const __m256 ss = _mm256_blendv_ps(sa, ca, odd);
  // cos is negated for q = 1, 2; sin for q = 2, 3.
  const __m256i q1 = _mm256_and_si256(_mm256_add_epi32(q, _mm256_set1_epi32(1)), _mm256_set1_epi32(2));
  const __m256i q2 = _mm256_and_si256(q, _mm256_set1_epi32(2));
  const __m256 neg_c = _mm256_castsi256_ps(_mm256_slli_epi32(q1, 30));
  const __m256 neg_s = _mm256_castsi256_ps(_mm256_slli_epi32(q2, 30));
  c = _mm256_xor_ps(cc, neg_c);
  s = _mm256_xor_ps(ss, neg_s);
}

}  // namespace CPU_CAPABILITY
}  // namespace fastmath
}  // namespace gan_ext
#endif
