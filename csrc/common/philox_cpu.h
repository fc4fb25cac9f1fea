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
// Eight 32x32 -> 64-bit products of AVX2 lanes: even lanes via mul_epu32, odd
// lanes shifted down first; hi/lo words are blended back into lane order.
inline void mulhilo8(__m256i m, __m256i c, __m256i& hi, __m256i& lo) {
  const __m256i pe = _mm256_mul_epu32(c, m);
  const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
  lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}
#endif

#if defined(CPU_CAPABILITY_AVX512)
// The same for sixteen AVX-512 lanes.
inline void mulhilo16(__m512i m, __m512i c, __m512i& hi, __m512i& lo) {
  const __m512i pe = _mm512_mul_epu32(c, m);
  const __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
  lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
}

// Philox blocks q0 + base .. while 16 fit in count and lo(q) does not wrap
// inside a vector; returns the first block left to the narrower paths.
template <int64_t N>
inline int64_t philox_blocks16(uint64_t q0, int64_t count, uint64_t seed, uint64_t offset,
                               uint32_t (*w)[N]) {
  constexpr int64_t L = 16;
  const uint64_t step = offset >> 2;
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(philox::kM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(philox::kM1));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i s0 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(step)));
  const __m512i s1 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(step >> 32)));
  int64_t base = 0;
  for (; base + L <= count; base += L) {
    const uint64_t q = q0 + static_cast<uint64_t>(base);
    if (static_cast<uint32_t>(q) > 0xFFFFFFFFu - (L - 1)) break;
    __m512i c0 = s0, c1 = s1;
    __m512i c2 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(q))), lane);
    __m512i c3 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(q >> 32)));
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < philox::kRounds; ++r) {
      if (r > 0) {
        k0 += philox::kW0;
        k1 += philox::kW1;
      }
      __m512i hi0, lo0, hi1, lo1;
      mulhilo16(m0, c0, hi0, lo0);
      mulhilo16(m1, c2, hi1, lo1);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
      c1 = lo1;
      c3 = lo0;
    }
    _mm512_storeu_si512(reinterpret_cast<void*>(&w[0][base]), c0);
    _mm512_storeu_si512(reinterpret_cast<void*>(&w[1][base]), c1);
    _mm512_storeu_si512(reinterpret_cast<void*>(&w[2][base]), c2);
    _mm512_storeu_si512(reinterpret_cast<void*>(&w[3][base]), c3);
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
  base = philox_blocks16(q0, count, seed, offset, w);
#endif
#if defined(GAN_EXT_AVX2_INTRINSICS)
  // The counter is (offset / 4, q) (common/philox.h): lanes differ in c2 = lo(q).
  const uint64_t step = offset >> 2;
  const uint32_t s0 = static_cast<uint32_t>(step), s1 = static_cast<uint32_t>(step >> 32);
  const uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  // hi(q) (c3) only changes past 2^32 blocks; from a group whose lanes would
  // wrap lo(q) (a carry into c3) on, the scalar path below takes over.
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(philox::kM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(philox::kM1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (; base + kLanes <= count; base += kLanes) {
    const uint64_t q = q0 + static_cast<uint64_t>(base);
    if (static_cast<uint32_t>(q) > 0xFFFFFFFFu - (kLanes - 1)) break;
    __m256i c0 = _mm256_set1_epi32(static_cast<int>(s0));
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(s1));
    __m256i c2 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(q))), lane);
    __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(q >> 32)));
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < philox::kRounds; ++r) {
      if (r > 0) {
        k0 += philox::kW0;
        k1 += philox::kW1;
      }
      __m256i hi0, lo0, hi1, lo1;
      mulhilo8(m0, c0, hi0, lo0);
      mulhilo8(m1, c2, hi1, lo1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c1 = lo1;
      c3 = lo0;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&w[0][base]), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&w[1][base]), c1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&w[2][base]), c2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&w[3][base]), c3);
  }
#endif
  for (; base < count; ++base) {
    const philox::Block b = philox::block_for(q0 + static_cast<uint64_t>(base), seed, offset);
    for (int k = 0; k < 4; ++k) w[k][base] = b.x[k];
  }
}

}  // namespace
}  // namespace gan_ext
