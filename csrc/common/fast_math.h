// Float32 AVX2 and AVX-512 versions of the few transcendental functions the loss and
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
// Each function is written once over a width (W8: __m256, W16: __m512, the
// latter in the AVX-512 variant only) and overloaded on the vector type.
// Only compiled in the AVX2 and AVX-512 variants (GAN_EXT_AVX2_INTRINSICS,
// common/cpu_capability.h); the baseline kernels use at::vec's SLEEF calls.
// The two variants compile these inline functions with different flags, so
// each gets its own copy in ATen's per-variant namespace name CPU_CAPABILITY.
#pragma once

#include "common/cpu_capability.h"

#if defined(GAN_EXT_AVX2_INTRINSICS)
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics pass an undefined vector as the unused merge
// source, and -Wuninitialized reports it once inlined (GCC PR 105593, fixed
// in GCC 13): not a defect of this code, so that warning is off in this file.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace gan_ext {
namespace fastmath {
inline namespace CPU_CAPABILITY {

// The intrinsics the functions below use, per vector width. M is a lane mask:
// a vector of all-ones lanes with AVX2, a mask register with AVX-512.
struct W8 {
  using F = __m256;
  using I = __m256i;
  using M = __m256;
  static F set1(float v) { return _mm256_set1_ps(v); }
  static I set1i(int v) { return _mm256_set1_epi32(v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F rcp(F a) { return _mm256_rcp_ps(a); }
  static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  static I load_bits(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const I*>(p)); }
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(F a) { return _mm256_cvtps_epi32(a); }
  static F to_float(I a) { return _mm256_cvtepi32_ps(a); }
  static I bits(F a) { return _mm256_castps_si256(a); }
  static F from_bits(I a) { return _mm256_castsi256_ps(a); }
  static I addi(I a, I b) { return _mm256_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I andi(I a, I b) { return _mm256_and_si256(a, b); }
  static I ori(I a, I b) { return _mm256_or_si256(a, b); }
  static I shl(I a, int n) { return _mm256_slli_epi32(a, n); }
  static I shr(I a, int n) { return _mm256_srli_epi32(a, n); }
  static F xorf(F a, F b) { return _mm256_xor_ps(a, b); }
  static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M low_bit(I a) {  // lanes whose integer is odd
    return _mm256_castsi256_ps(_mm256_srai_epi32(_mm256_slli_epi32(a, 31), 31));
  }
  static F select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }  // m ? a : b
  static F zero_where(M m, F a) { return _mm256_andnot_ps(m, a); }
  static I inc_where(M m, I a) { return _mm256_sub_epi32(a, _mm256_castps_si256(m)); }
};

#if defined(CPU_CAPABILITY_AVX512)
struct W16 {
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;
  static F set1(float v) { return _mm512_set1_ps(v); }
  static I set1i(int v) { return _mm512_set1_epi32(v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  // rcp14: a 14-bit estimate where AVX2's has 12; the Newton step below
  // brings either within 2 ulp.
  static F rcp(F a) { return _mm512_rcp14_ps(a); }
  static F sqrt(F a) { return _mm512_sqrt_ps(a); }
  static I load_bits(const void* p) { return _mm512_loadu_si512(p); }
  static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(F a) { return _mm512_cvtps_epi32(a); }
  static F to_float(I a) { return _mm512_cvtepi32_ps(a); }
  static I bits(F a) { return _mm512_castps_si512(a); }
  static F from_bits(I a) { return _mm512_castsi512_ps(a); }
  static I addi(I a, I b) { return _mm512_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I andi(I a, I b) { return _mm512_and_si512(a, b); }
  static I ori(I a, I b) { return _mm512_or_si512(a, b); }
  static I shl(I a, int n) { return _mm512_slli_epi32(a, static_cast<unsigned>(n)); }
  static I shr(I a, int n) { return _mm512_srli_epi32(a, static_cast<unsigned>(n)); }
  static F xorf(F a, F b) { return from_bits(_mm512_xor_si512(bits(a), bits(b))); }
  static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M low_bit(I a) { return _mm512_test_epi32_mask(a, _mm512_set1_epi32(1)); }
  static F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }  // m ? a : b
  static F zero_where(M m, F a) { return _mm512_maskz_mov_ps(static_cast<__mmask16>(~m), a); }
  static I inc_where(M m, I a) { return _mm512_mask_add_epi32(a, m, a, _mm512_set1_epi32(1)); }
};
#endif

// 1/d for d in [1, 3]: the hardware estimate plus one Newton step, within
// 2 ulp; a third of a division's latency and throughput cost.
template <class S>
inline typename S::F reciprocal_t(typename S::F d) {
  const typename S::F r = S::rcp(d);
  return S::mul(r, S::fnmadd(d, r, S::set1(2.0f)));
}

template <class S>
inline typename S::F exp_nonpos_t(typename S::F x_in) {
  using F = typename S::F;
  const F x = S::max(x_in, S::set1(-87.0f));
  // x = n ln2 + r, |r| <= ln2 / 2; ln2 split in two for an exact n*C1.
  const F n = S::round(S::mul(x, S::set1(1.44269504088896341f)));
  F r = S::fmadd(n, S::set1(-0.693359375f), x);
  r = S::fmadd(n, S::set1(2.12194440e-4f), r);
  F p = S::set1(1.9875691500e-4f);
  p = S::fmadd(p, r, S::set1(1.3981999507e-3f));
  p = S::fmadd(p, r, S::set1(8.3334519073e-3f));
  p = S::fmadd(p, r, S::set1(4.1665795894e-2f));
  p = S::fmadd(p, r, S::set1(1.6666665459e-1f));
  p = S::fmadd(p, r, S::set1(5.0000001201e-1f));
  p = S::fmadd(p, S::mul(r, r), S::add(r, S::set1(1.0f)));
  // 2^n from the exponent bits (n >= -126 after the clamp).
  const F e = S::from_bits(S::shl(S::addi(S::to_int(n), S::set1i(127)), 23));
  // Below the clamp the result would be denormal or 0: return 0.
  return S::zero_where(S::lt(x_in, S::set1(-87.0f)), S::mul(p, e));
}

template <class S>
inline typename S::F log1p_unit_t(typename S::F e) {
  using F = typename S::F;
  // log(1 + e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3]: odd series in s,
  // truncated after s^15 (relative error < 2e-9). Exact for tiny e (-> e).
  const F s = S::mul(e, reciprocal_t<S>(S::add(e, S::set1(2.0f))));
  const F s2 = S::mul(s, s);
  F p = S::set1(1.0f / 15.0f);
  p = S::fmadd(p, s2, S::set1(1.0f / 13.0f));
  p = S::fmadd(p, s2, S::set1(1.0f / 11.0f));
  p = S::fmadd(p, s2, S::set1(1.0f / 9.0f));
  p = S::fmadd(p, s2, S::set1(1.0f / 7.0f));
  p = S::fmadd(p, s2, S::set1(1.0f / 5.0f));
  p = S::fmadd(p, s2, S::set1(1.0f / 3.0f));
  p = S::mul(p, s2);
  const F t = S::add(s, s);
  return S::fmadd(t, p, t);
}

template <class S>
inline typename S::F log_unit_t(typename S::F x) {
  using F = typename S::F;
  using I = typename S::I;
  const I xi = S::bits(x);
  I ex = S::subi(S::shr(xi, 23), S::set1i(127));
  F m = S::from_bits(S::ori(S::andi(xi, S::set1i(0x007FFFFF)), S::set1i(0x3F800000)));
  // m in [sqrt(1/2), sqrt(2)): halve the large ones (and count them in ex).
  const auto big = S::gt(m, S::set1(1.41421356237f));
  m = S::select(big, S::mul(m, S::set1(0.5f)), m);
  ex = S::inc_where(big, ex);
  const F fe = S::to_float(ex);
  const F f = S::sub(m, S::set1(1.0f));
  const F z = S::mul(f, f);
  F p = S::set1(7.0376836292e-2f);
  p = S::fmadd(p, f, S::set1(-1.1514610310e-1f));
  p = S::fmadd(p, f, S::set1(1.1676998740e-1f));
  p = S::fmadd(p, f, S::set1(-1.2420140846e-1f));
  p = S::fmadd(p, f, S::set1(1.4249322787e-1f));
  p = S::fmadd(p, f, S::set1(-1.6668057665e-1f));
  p = S::fmadd(p, f, S::set1(2.0000714765e-1f));
  p = S::fmadd(p, f, S::set1(-2.4999993993e-1f));
  p = S::fmadd(p, f, S::set1(3.3333331174e-1f));
  F y = S::mul(S::mul(f, z), p);
  y = S::fmadd(fe, S::set1(-2.12194440e-4f), y);
  y = S::fmadd(z, S::set1(-0.5f), y);
  return S::fmadd(fe, S::set1(0.693359375f), S::add(f, y));
}

// cos and sin of 2 pi u: u is reduced exactly (in turns) to an octant,
// a = (4u - q) pi/2 in [-pi/4, pi/4], then rotated by the quadrant q.
template <class S>
inline void sincos_turns_t(typename S::F u, typename S::F& c, typename S::F& s) {
  using F = typename S::F;
  using I = typename S::I;
  const F w = S::mul(u, S::set1(4.0f));
  const F qf = S::round(w);
  const F a = S::mul(S::sub(w, qf), S::set1(1.57079632679489662f));
  const F z = S::mul(a, a);
  F ps = S::set1(-1.9515295891e-4f);
  ps = S::fmadd(ps, z, S::set1(8.3321608736e-3f));
  ps = S::fmadd(ps, z, S::set1(-1.6666654611e-1f));
  const F sa = S::fmadd(S::mul(ps, z), a, a);
  F pc = S::set1(2.443315711809948e-5f);
  pc = S::fmadd(pc, z, S::set1(-1.388731625493765e-3f));
  pc = S::fmadd(pc, z, S::set1(4.166664568298827e-2f));
  const F ca = S::fmadd(S::mul(pc, z), z, S::fmadd(z, S::set1(-0.5f), S::set1(1.0f)));
  // Quadrant q mod 4: 0 (c, s), 1 (-s, c), 2 (-c, -s), 3 (s, -c).
  const I q = S::to_int(qf);
  const auto odd = S::low_bit(q);
  const F cc = S::select(odd, sa, ca);
  const F ss = S::select(odd, ca, sa);
  // cos is negated for q = 1, 2; sin for q = 2, 3.
  const I q1 = S::andi(S::addi(q, S::set1i(1)), S::set1i(2));
  const I q2 = S::andi(q, S::set1i(2));
  c = S::xorf(cc, S::from_bits(S::shl(q1, 30)));
  s = S::xorf(ss, S::from_bits(S::shl(q2, 30)));
}

// The functions the kernels call, overloaded on the vector type.
inline __m256 reciprocal(__m256 d) { return reciprocal_t<W8>(d); }
inline __m256 exp_nonpos(__m256 x) { return exp_nonpos_t<W8>(x); }
inline __m256 log1p_unit(__m256 e) { return log1p_unit_t<W8>(e); }
inline __m256 log_unit(__m256 x) { return log_unit_t<W8>(x); }
inline void sincos_turns(__m256 u, __m256& c, __m256& s) { sincos_turns_t<W8>(u, c, s); }
#if defined(CPU_CAPABILITY_AVX512)
inline __m512 reciprocal(__m512 d) { return reciprocal_t<W16>(d); }
inline __m512 exp_nonpos(__m512 x) { return exp_nonpos_t<W16>(x); }
inline __m512 log1p_unit(__m512 e) { return log1p_unit_t<W16>(e); }
inline __m512 log_unit(__m512 x) { return log_unit_t<W16>(x); }
inline void sincos_turns(__m512 u, __m512& c, __m512& s) { sincos_turns_t<W16>(u, c, s); }
#endif

}  // namespace CPU_CAPABILITY
}  // namespace fastmath
}  // namespace gan_ext

#pragma GCC diagnostic pop
#endif
