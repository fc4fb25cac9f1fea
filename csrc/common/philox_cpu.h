// Philox-4x32-10 blocks on the CPU (common/philox.h): sixteen blocks per
// vector in the AVX-512 variant, eight with AVX2; otherwise (or where lo(q)
// wraps past 2^32 inside a vector, which carries into hi(q)) one at a time.
// Used by the reparameterization noise and the dropout mask.
#pragma once

#include "common/cpu_capability.h"

#if defined(GAN_EXT_AVX2_INTRINSICS)
#include <immintrin.h>
#endif

#include <cstdint>

#include "common/philox.h"

namespace gan_ext {
namespace {

constexpr int kLanes = 8;

#if defined(GAN_EXT_AVX2_INTRINSICS)
// The integer intrinsics of a Philox round, per vector width (8 AVX2 lanes,
// 16 AVX-512 lanes in that variant).
struct PhiloxW8 {
  using I = __m256i;
  static constexpr int64_t kWidth = 8;
  static I set1(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static I lanes() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static I add(I a, I b) { return _mm256_add_epi32(a, b); }
  static I xor3(I a, I b, I c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
  // 32x32 -> 64-bit products: even lanes via mul_epu32, odd lanes shifted down
  // first; hi/lo words are blended back into lane order.
  static void mulhilo(I m, I c, I& hi, I& lo) {
    const I pe = _mm256_mul_epu32(c, m);
    const I po = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
    lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
  }
  static void store(uint32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<I*>(p), v); }
};

#if defined(CPU_CAPABILITY_AVX512)
struct PhiloxW16 {
  using I = __m512i;
  static constexpr int64_t kWidth = 16;
  static I set1(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static I lanes() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static I add(I a, I b) { return _mm512_add_epi32(a, b); }
  static I xor3(I a, I b, I c) { return _mm512_xor_si512(_mm512_xor_si512(a, b), c); }
  static void mulhilo(I m, I c, I& hi, I& lo) {
    const I pe = _mm512_mul_epu32(c, m);
    const I po = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
    lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
    hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
  }
  static void store(uint32_t* p, I v) { _mm512_storeu_si512(reinterpret_cast<void*>(p), v); }
};
#endif

// Blocks q0 + base, ... a vector of S::kWidth at a time, while a vector fits
// in count; returns the first block left to a narrower path. The counter is
// (offset / 4, q) (common/philox.h): lanes differ in c2 = lo(q); hi(q) (c3)
// only changes past 2^32 blocks, so a vector whose lanes would wrap lo(q) (a
// carry into c3) is left to the scalar path.
template <class S, int64_t N>
inline int64_t philox_blocks_vec(uint64_t q0, int64_t base, int64_t count, uint64_t seed,
                                 uint64_t offset, uint32_t (*w)[N]) {
  using I = typename S::I;
  constexpr int64_t L = S::kWidth;
  const uint64_t step = offset >> 2;
  const I m0 = S::set1(philox::kM0), m1 = S::set1(philox::kM1), lane = S::lanes();
  const I s0 = S::set1(static_cast<uint32_t>(step)), s1 = S::set1(static_cast<uint32_t>(step >> 32));
  for (; base + L <= count; base += L) {
    const uint64_t q = q0 + static_cast<uint64_t>(base);
    if (static_cast<uint32_t>(q) > 0xFFFFFFFFu - (L - 1)) break;
    I c0 = s0, c1 = s1;
    I c2 = S::add(S::set1(static_cast<uint32_t>(q)), lane);
    I c3 = S::set1(static_cast<uint32_t>(q >> 32));
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < philox::kRounds; ++r) {
      if (r > 0) {
        k0 += philox::kW0;
        k1 += philox::kW1;
      }
      I hi0, lo0, hi1, lo1;
      S::mulhilo(m0, c0, hi0, lo0);
      S::mulhilo(m1, c2, hi1, lo1);
      c0 = S::xor3(hi1, c1, S::set1(k0));
      c2 = S::xor3(hi0, c3, S::set1(k1));
      c1 = lo1;
      c3 = lo0;
    }
    S::store(&w[0][base], c0);
    S::store(&w[1][base], c1);
    S::store(&w[2][base], c2);
    S::store(&w[3][base], c3);
  }
  return base;
}
#endif

// Philox blocks q0 .. q0+count-1 into w[word][block].
template <int64_t N>
inline void philox_blocks(uint64_t q0, int64_t count, uint64_t seed, uint64_t offset,
                          uint32_t (*w)[N]) {
  int64_t base = 0;
#if defined(CPU_CAPABILITY_AVX512)
  base = philox_blocks_vec<PhiloxW16>(q0, base, count, seed, offset, w);
#endif
#if defined(GAN_EXT_AVX2_INTRINSICS)
  base = philox_blocks_vec<PhiloxW8>(q0, base, count, seed, offset, w);
#endif
  for (; base < count; ++base) {
    const philox::Block b = philox::block_for(q0 + static_cast<uint64_t>(base), seed, offset);
    for (int k = 0; k < 4; ++k) w[k][base] = b.x[k];
  }
}

}  // namespace
}  // namespace gan_ext
