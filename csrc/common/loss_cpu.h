// Shared by the CPU kernels of the loss ops (gan_loss, bce_with_logits,
// l1_loss): the fixed-chunk summation, the vectorized BCE term and the 0-dim
// result.
//
// Every loss is a sum of elementwise terms over flat arrays (see as_dense in
// common/losses.h). The array is cut into fixed chunks of kChunk values; each
// chunk sums in opmath vector lanes and its partial is stored, and the partials
// are added in chunk order in double. The result is therefore independent of
// the thread count, and a chunk is small enough that float lanes stay accurate.
//
// On the tiny logits of a DCGAN or PatchGAN discriminator (64 to 15k values)
// the cost is per-call overhead, so a single chunk runs inline and the loss
// is written straight into a 0-dim tensor.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/fast_math.h"
#include "common/losses.h"
#include "common/vec_io.h"

namespace gan_ext {
namespace {

// Values per chunk; chunks are split between threads two or more at a time,
// so a PatchGAN's 16x30x30 logits use both cores and a DCGAN's 64 run inline.
constexpr int64_t kChunk = 4096;
constexpr int64_t kMinChunksPerTask = 2;

// ------------------------------------------------------------ vector terms
// Vectorized twin of bce_term (common/losses.h), same formula.
template <typename O>
inline void vbce(const Vectorized<O>& x, const Vectorized<O>& y, Vectorized<O>& f, Vectorized<O>& df) {
  using V = Vectorized<O>;
  const V zero(O(0)), one(O(1));
  V e, lp;
  // fast_math.h has __m256 and __m512 overloads: a Vectorized<float> is
  // either, in the AVX2 and AVX-512 variants.
#if defined(GAN_EXT_AVX2_INTRINSICS)
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
#if defined(GAN_EXT_AVX2_INTRINSICS)
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

inline at::Tensor scalar_out(const at::Tensor& like, double value) {
  at::Tensor out = at::empty({}, like.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "gan_ext_scalar_out",
                                  [&] { *out.data_ptr<scalar_t>() = static_cast<scalar_t>(value); });
  return out;
}

}  // namespace
}  // namespace gan_ext
