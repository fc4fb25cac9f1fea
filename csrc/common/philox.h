// The normal noise of gan_ext::reparameterize*, defined once for the CPU
// kernel, the CUDA kernel and the pure-PyTorch twin (gan_ext/reference.py,
// `normal_noise`), which all produce the same eps for the same (seed, offset).
//
// Counter-based: element i's noise is a pure function of (seed, offset, i), so
// any thread can make any element's noise, in any order, and the result does
// not depend on the number of threads or the launch shape.
//
//   Philox-4x32-10 (Salmon et al., SC'11), key = (seed lo, seed hi),
//   counter = (c0, c1, c2, c3) = (lo(offset/4), hi(offset/4), lo(q), hi(q))
//   for block q (offset is a multiple of 4; see below).
//   float32/float16/bfloat16 (computed in float): block q gives elements
//     4q..4q+3 as two Box-Muller pairs from words (x0, x1) and (x2, x3),
//     u(x) = ((x >> 9) + 0.5) * 2^-23, which is exact in float and in (0, 1).
//   float64: block q gives elements 2q, 2q+1 from one pair of 53-bit uniforms
//     u = (((x0 << 21) ^ (x1 >> 11)) + 0.5) * 2^-53 and likewise from (x2, x3).
//   Box-Muller: r = sqrt(-2 log u1), z = (r cos 2 pi u2, r sin 2 pi u2); each
//   backend evaluates these to within a few ulp (see normals() below).
//
// Where (seed, offset) come from:
//   CPU:  seed = the default (or given) CPU generator's random64() with the top
//         bit cleared (what Tensor.random_() draws for int64), offset = 0. Each
//         call advances the generator, so consecutive calls get fresh noise and
//         torch.manual_seed reproduces a run.
//   CUDA: (seed, offset) = CUDAGeneratorImpl::philox_cuda_state(4), unpacked in
//         the kernel (CUDA-graph safe); each call advances the offset by 4.
//
// Why this counter layout: it is curand's. PyTorch's own CUDA RNG kernels call
// curand_init(seed, subsequence = thread index, offset), which sets key =
// (seed lo, seed hi), puts the subsequence in the counter's high 64 bits
// (skipahead_sequence: c2, c3) and offset / 4 in its low 64 bits (skipahead:
// c0, c1); each curand4() then steps the low 64 bits by one. So a PyTorch call
// that reserved offsets [O, O + n) through philox_cuda_state(n) reads only
// counters whose low 64 bits lie in [O/4, O/4 + n/4), in every subsequence. Our
// block q is curand's block at subsequence q, offset/4: one counter step, the
// 4 offset values philox_cuda_state(4) reserved for this call. However many
// blocks a call uses, it stays inside its own reservation, and no PyTorch
// kernel before or after it (which reserve other offsets) meets its counters.
// (With the halves swapped, block q would be PyTorch's thread `offset` at
// step q: a later torch.randn would read the same random bits.)
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace gan_ext {
namespace philox {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
constexpr int kRounds = 10;
// Normal values per Philox block.
template <typename opmath_t>
constexpr int64_t per_block() { return sizeof(opmath_t) == 8 ? 2 : 4; }

struct Block {
  uint32_t x[4];
};

C10_HOST_DEVICE inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

C10_HOST_DEVICE inline Block philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                           uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c0, hi0, lo0);
    mulhilo(kM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Block{{c0, c1, c2, c3}};
}

C10_HOST_DEVICE inline Block block_for(uint64_t q, uint64_t seed, uint64_t offset) {
  const uint64_t step = offset >> 2;
  return philox4x32_10(static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                       static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// (k + 1/2) / 2^23 for the top 23 bits k: 24 significant bits, so exact in
// float, and in (0, 1) (24 bits of k would round for u >= 1/2, which makes
// log(u) near u = 1 wrong by ~50%).
C10_HOST_DEVICE inline float uniform23(uint32_t x) {
  return (static_cast<float>(x >> 9) + 0.5f) * 1.1920928955078125e-07f;  // 2^-23
}

C10_HOST_DEVICE inline double uniform53(uint32_t hi, uint32_t lo) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 21) ^ static_cast<uint64_t>(lo >> 11);
  return (static_cast<double>(v) + 0.5) * 1.1102230246251565e-16;  // 2^-53
}

constexpr float kTwoPiF = 6.283185307179586f;
constexpr double kTwoPi = 6.283185307179586;

// The normals of block q, in element order: 4 for float, 2 for double.
// Float values are r cos(2 pi u2), r sin(2 pi u2) evaluated to within a few
// ulp: the CPU kernel reduces u2 exactly in turns (fast_math.h), CUDA uses
// sincospif, the reference twin evaluates in float64 and rounds.
C10_HOST_DEVICE inline void normals(const Block& b, float out[4]) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const float u1 = uniform23(b.x[2 * j]), u2 = uniform23(b.x[2 * j + 1]);
#if defined(__CUDA_ARCH__)
    const float r = ::sqrtf(-2.0f * ::logf(u1));
    float sn, cs;
    ::sincospif(2.0f * u2, &sn, &cs);
    out[2 * j] = r * cs;
    out[2 * j + 1] = r * sn;
#else
    const double r = ::sqrt(-2.0 * ::log(static_cast<double>(u1)));
    const double t = kTwoPi * static_cast<double>(u2);
    out[2 * j] = static_cast<float>(r * ::cos(t));
    out[2 * j + 1] = static_cast<float>(r * ::sin(t));
#endif
  }
}

C10_HOST_DEVICE inline void normals(const Block& b, double out[2]) {
  const double u1 = uniform53(b.x[0], b.x[1]), u2 = uniform53(b.x[2], b.x[3]);
  const double r = ::sqrt(-2.0 * ::log(u1));
#if defined(__CUDA_ARCH__)
  double sn, cs;
  ::sincospi(2.0 * u2, &sn, &cs);
  out[0] = r * cs;
  out[1] = r * sn;
#else
  const double t = kTwoPi * u2;
  out[0] = r * ::cos(t);
  out[1] = r * ::sin(t);
#endif
}

}  // namespace philox
}  // namespace gan_ext
