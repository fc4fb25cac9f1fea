// CPU kernels of gan_ext::norm_act and gan_ext::norm_act_backward.
//
// Every normalization here reduces over "groups": a channel c for batch norm,
// a (sample n, channel c) pair for instance norm. Both layouts are handled by
// first producing per-(n, c) partial results and then combining them:
//   * NCHW: each (n, c) plane is a contiguous run of H*W values; one task per
//     plane (several planes per task when planes are small).
//   * channels_last: each pixel is a contiguous row of C values; rows of one
//     sample are cut into blocks of ~kBlockElems values, each block yields a
//     C-vector of partials, and the blocks of a sample are merged in a fixed
//     order, so results do not depend on how threads were scheduled.
// Batch norm then merges the N partials of each channel.
//
// Variance: every block/plane is reduced two-pass while it sits in L1
// (mean first, then the sum of squared deviations), and blocks are combined
// with Chan et al.'s pairwise update. That is one pass over memory and keeps
// the variance accurate for data with a large mean, unlike E[x^2] - E[x]^2.
//
// All accumulation is in at::opmath_type<scalar_t> (float for half/bfloat16).
// The elementwise passes fold everything into per-(n, c) coefficients:
//   forward:  y  = act(x * scale + shift)
//   backward: dx = k * dz + a * u + b, with dz = dy masked by the activation
// where u is the input (saved input) or the activation-inverted output
// (saved output, In-Place Activated BatchNorm).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/norm_act/checks.h"
#include "common/vec_io.h"
#include "common/cpu_capability.h"

namespace gan_ext {
namespace {

using at::vec::Vectorized;

// ~16 KiB of float per block: a block's second pass re-reads it from L1.
constexpr int64_t kBlockElems = 4096;
// Values per channels_last block of rows (see Shape::block_rows).
constexpr int64_t kRowBlockElems = 32768;
// Minimum work per parallel task, in elements.
constexpr int64_t kGrainElems = 32768;

// Software prefetch of a run of len values (one request per 64-byte line).
template <typename T>
inline void prefetch_run(const T* p, int64_t len) {
  const char* b = reinterpret_cast<const char*>(p);
  const int64_t bytes = len * static_cast<int64_t>(sizeof(T));
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(b + o, 0, 3);
}

// The same for a run about to be written.
template <typename T>
inline void prefetch_run_for_write(T* p, int64_t len) {
  const char* b = reinterpret_cast<const char*>(p);
  const int64_t bytes = len * static_cast<int64_t>(sizeof(T));
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(b + o, 1, 3);
}

// ------------------------------------------------------------- activations
template <Activation ACT, typename O>
inline Vectorized<O> activate(const Vectorized<O>& z, const Vectorized<O>& slope) {
  const Vectorized<O> zero(O(0));
  if constexpr (ACT == Activation::ReLU) {
    return at::vec::maximum(z, zero);  // propagates NaN
  } else if constexpr (ACT == Activation::LeakyReLU) {
    return Vectorized<O>::blendv(z * slope, z, z > zero);
  } else {
    return z;
  }
}

// dy masked by the activation's derivative at pre-activation sign `v` (v > 0).
template <Activation ACT, typename O>
inline Vectorized<O> mask_grad(const Vectorized<O>& dy, const Vectorized<O>& v,
                               const Vectorized<O>& slope) {
  const Vectorized<O> zero(O(0));
  if constexpr (ACT == Activation::ReLU) {
    // torch.relu's backward passes the gradient unless the output is <= 0:
    // at a NaN pre-activation it passes (leaky_relu's takes the slope).
    return Vectorized<O>::blendv(dy, zero, v <= zero);
  } else if constexpr (ACT == Activation::LeakyReLU) {
    return Vectorized<O>::blendv(dy * slope, dy, v > zero);
  } else {
    return dy;
  }
}

// Runs f with the activation as a compile-time constant.
template <typename F>
inline void dispatch_activation(int64_t act, F&& f) {
  switch (static_cast<Activation>(act)) {
    case Activation::ReLU: f(std::integral_constant<Activation, Activation::ReLU>{}); break;
    case Activation::LeakyReLU: f(std::integral_constant<Activation, Activation::LeakyReLU>{}); break;
    default: f(std::integral_constant<Activation, Activation::Identity>{}); break;
  }
}

// ------------------------------------------------------------- shape helper
struct Shape {
  int64_t N, C, HW;
  bool channels_last;
  int64_t planes() const { return N * C; }
  // Rows of a channels_last sample per block. Larger than kBlockElems: a
  // block's partials are a C-vector, and small blocks made the per-call
  // partial buffers big enough (hundreds of KiB) to be mmapped, and page
  // faulted, on every call. A block of 32768 values is still re-read from L2.
  int64_t block_rows() const { return std::max<int64_t>(1, kRowBlockElems / std::max<int64_t>(C, 1)); }
  int64_t blocks_per_sample() const { return (HW + block_rows() - 1) / block_rows(); }
  int64_t plane_grain() const { return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(HW, 1)); }
};

// --------------------------------------------------------- statistics pass
// Chan et al.: merge (nb, mean_b, m2_b) into (n, mean, m2).
template <typename O>
inline void chan_merge(O& n, O& mean, O& m2, O nb, O mean_b, O m2_b) {
  if (nb == 0) return;
  const O tot = n + nb;
  const O delta = mean_b - mean;
  mean += delta * (nb / tot);
  m2 += m2_b + delta * delta * (n * nb / tot);
  n = tot;
}

// Merges `rows` (mean, M2) C-vectors, row r holding count[r] values per
// channel, into out_mean/out_m2 (C each), in row order. Vectorized over C: the
// counts are the same for every channel of a row.
template <typename O>
void chan_merge_rows(const O* means, const O* m2s, const int64_t* counts, int64_t rows, int64_t C,
                     O* out_mean, O* out_m2) {
  constexpr int64_t V = Vectorized<O>::size();
  for (int64_t c = 0; c < C; c += V) {
    const int64_t w = std::min(V, C - c);
    Vectorized<O> mu(O(0)), q(O(0));
    O n = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const O nb = static_cast<O>(counts[r]);
      if (nb == 0) continue;
      const O tot = n + nb;
      const auto delta = Vectorized<O>::loadu(means + r * C + c, w) - mu;
      mu = at::vec::fmadd(delta, Vectorized<O>(nb / tot), mu);
      q = q + Vectorized<O>::loadu(m2s + r * C + c, w) + delta * delta * Vectorized<O>(n * nb / tot);
      n = tot;
    }
    mu.store(out_mean + c, w);
    q.store(out_m2 + c, w);
  }
}

// Two-pass mean/M2 of `runs` contiguous runs of `len` values, `stride` apart
// (a block small enough that the second pass reads it from L1).
template <typename T, typename O>
inline void block_mean_m2(const T* x, int64_t runs, int64_t len, int64_t stride, O& mean, O& m2) {
  constexpr int64_t V = Vectorized<O>::size();
  // The first pass sums around the block's first value, so that a large mean
  // does not eat the digits of the (much smaller) deviations.
  const O shift = static_cast<O>(x[0]);
  const Vectorized<O> sv(shift);
  Vectorized<O> acc0(O(0)), acc1(O(0));
  O s = 0;
  for (int64_t r = 0; r < runs; ++r) {
    const T* xr = x + r * stride;
    if (r + 1 < runs) prefetch_run(xr + stride, len);  // strided runs: see backward_nchw_groups
    int64_t i = 0;
    for (; i + 2 * V <= len; i += 2 * V) {
      acc0 += vload<T, O>(xr + i) - sv;
      acc1 += vload<T, O>(xr + i + V) - sv;
    }
    for (; i + V <= len; i += V) acc0 += vload<T, O>(xr + i) - sv;
    for (; i < len; ++i) s += static_cast<O>(xr[i]) - shift;
  }
  s += vsum(acc0 + acc1);
  mean = shift + s / static_cast<O>(runs * len);
  const Vectorized<O> mv(mean);
  acc0 = Vectorized<O>(O(0));
  acc1 = Vectorized<O>(O(0));
  O q = 0;
  for (int64_t r = 0; r < runs; ++r) {
    const T* xr = x + r * stride;
    int64_t i = 0;
    for (; i + 2 * V <= len; i += 2 * V) {
      const auto d0 = vload<T, O>(xr + i) - mv;
      const auto d1 = vload<T, O>(xr + i + V) - mv;
      acc0 = at::vec::fmadd(d0, d0, acc0);
      acc1 = at::vec::fmadd(d1, d1, acc1);
    }
    for (; i + V <= len; i += V) {
      const auto d = vload<T, O>(xr + i) - mv;
      acc0 = at::vec::fmadd(d, d, acc0);
    }
    for (; i < len; ++i) {
      const O d = static_cast<O>(xr[i]) - mean;
      q += d * d;
    }
  }
  m2 = q + vsum(acc0 + acc1);
}

// Mean/M2 over `runs` planes of HW values, `stride` apart, cut into blocks of
// about kBlockElems values (whole planes when planes are small).
template <typename T, typename O>
inline void planes_mean_m2(const T* x, int64_t runs, int64_t HW, int64_t stride, O& mean, O& m2) {
  O n = 0, mu = 0, q = 0;
  if (HW >= kBlockElems) {
    for (int64_t r = 0; r < runs; ++r) {
      for (int64_t b = 0; b < HW; b += kBlockElems) {
        const int64_t len = std::min(kBlockElems, HW - b);
        O mb, qb;
        block_mean_m2<T, O>(x + r * stride + b, 1, len, 0, mb, qb);
        chan_merge<O>(n, mu, q, static_cast<O>(len), mb, qb);
      }
    }
  } else {
    const int64_t per_block = kBlockElems / HW;
    for (int64_t r = 0; r < runs; r += per_block) {
      const int64_t k = std::min(per_block, runs - r);
      O mb, qb;
      block_mean_m2<T, O>(x + r * stride, k, HW, stride, mb, qb);
      chan_merge<O>(n, mu, q, static_cast<O>(k * HW), mb, qb);
    }
  }
  mean = mu;
  m2 = q;
}

// channels_last: per-(n, c) mean and M2 over H*W. Outputs have N*C entries.
template <typename T, typename O>
void plane_stats(const T* x, const Shape& s, O* mean, O* m2) {
  // NCHW input takes forward_nchw_groups instead.
  TORCH_INTERNAL_ASSERT(s.channels_last);
  // channels_last: per-block C-vectors of (mean, m2), then merge per sample.
  constexpr int64_t V = Vectorized<O>::size();
  const int64_t C = s.C, R = s.block_rows(), B = s.blocks_per_sample();
  std::vector<O> bmean(s.N * B * C), bm2(s.N * B * C);
  at::parallel_for(0, s.N * B, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / B, r0 = (t % B) * R, r1 = std::min(s.HW, r0 + R);
      const T* xs = x + (n * s.HW) * C;
      O* mu = bmean.data() + t * C;
      O* q = bm2.data() + t * C;
      const O inv_rows = O(1) / static_cast<O>(r1 - r0);
      for (int64_t c = 0; c < C; c += V) {
        const int64_t w = std::min(V, C - c);
        // Sum around the block's first row: a channel's rows are summed in one
        // lane, and around a large mean that sum would lose the low digits.
        const Vectorized<O> shift = vload<T, O>(xs + r0 * C + c, w);
        Vectorized<O> acc(O(0));
        for (int64_t r = r0; r < r1; ++r) acc += vload<T, O>(xs + r * C + c, w) - shift;
        const Vectorized<O> m = at::vec::fmadd(acc, Vectorized<O>(inv_rows), shift);
        Vectorized<O> acc2(O(0));
        for (int64_t r = r0; r < r1; ++r) {
          const auto d = vload<T, O>(xs + r * C + c, w) - m;
          acc2 = at::vec::fmadd(d, d, acc2);
        }
        m.store(mu + c, w);
        acc2.store(q + c, w);
      }
    }
  });
  std::vector<int64_t> counts(B);
  for (int64_t b = 0; b < B; ++b) counts[b] = std::min(R, s.HW - b * R);
  at::parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      chan_merge_rows<O>(bmean.data() + n * B * C, bm2.data() + n * B * C, counts.data(), B, C,
                         mean + n * C, m2 + n * C);
  });
}

// ------------------------------------------------------- elementwise passes
// Calls body(p, xp_offset, len) per NCHW plane, or body(n, row_offset, C) per
// channels_last row, in parallel, with per-(n, c) coefficients indexed by the
// callee. Keeps the two layout loops in one place for forward and backward.
template <typename F>
void for_each_run(const Shape& s, F&& body) {
  if (!s.channels_last) {
    at::parallel_for(0, s.planes(), s.plane_grain(), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) body(p, /*coef_base=*/p, p * s.HW, s.HW, /*per_lane=*/false);
    });
  } else {
    const int64_t rows = s.N * s.HW;
    const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(s.C, 1));
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) body(r, (r / s.HW) * s.C, r * s.C, s.C, /*per_lane=*/true);
    });
  }
}

// Coefficient vector for lane offset i: broadcast for NCHW planes, loaded per
// channel for channels_last rows.
template <typename O>
inline Vectorized<O> coef(const O* base, int64_t i, int64_t w, bool per_lane) {
  return per_lane ? Vectorized<O>::loadu(base + i, w) : Vectorized<O>(base[0]);
}

template <typename T, typename O, Activation ACT>
void affine_act(const T* x, T* y, const Shape& s, const O* scale, const O* shift, O slope_) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_);
  for_each_run(s, [&](int64_t, int64_t cb, int64_t off, int64_t len, bool per_lane) {
    const T* xp = x + off;
    T* yp = y + off;
    for (int64_t i = 0; i < len; i += V) {
      const int64_t w = std::min(V, len - i);
      const auto z = at::vec::fmadd(vload<T, O>(xp + i, w), coef(scale + cb, i, w, per_lane),
                                    coef(shift + cb, i, w, per_lane));
      vstore<T, O>(yp + i, activate<ACT>(z, slope), w);
    }
  });
}

// --------------------------------------------------------- backward helpers
// Per-(n, c) coefficients of the backward elementwise pass.
template <typename O>
struct BackwardCoefs {
  std::vector<O> k, a, b;        // dx = k*dz + a*u + b
  std::vector<O> mscale, mshift;  // pre-activation sign: x*mscale + mshift (saved input)
  std::vector<O> center;          // reduction centre: mean (saved input) or beta (saved output)
};

// u = the value whose centred product with dz is reduced: x itself, or the
// output with the leaky_relu inverted. v = the value whose sign gives the mask.
template <Activation ACT, bool SAVED_OUT, typename O>
inline void u_and_v(const Vectorized<O>& s, const Vectorized<O>& ms, const Vectorized<O>& mb,
                    const Vectorized<O>& inv_slope, Vectorized<O>& u, Vectorized<O>& v) {
  if constexpr (SAVED_OUT) {
    const Vectorized<O> zero(O(0));
    u = Vectorized<O>::blendv(s * inv_slope, s, s >= zero);
    v = s;
  } else {
    u = s;
    v = at::vec::fmadd(s, ms, mb);
  }
}

// channels_last: per-(n, c) sums of dz and dz * (u - center).
template <typename T, typename O, Activation ACT, bool SAVED_OUT>
void backward_reduce(const T* dy, const T* sv, const Shape& s, const BackwardCoefs<O>& cf, O slope_,
                     O* sum_dz, O* sum_dzu) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_), inv_slope(SAVED_OUT ? O(1) / slope_ : O(1));
  // Partial sums over `rows` x `width` values at `off`, with per-channel
  // coefficients at `cb` (NCHW: one plane segment, rows = 1, broadcast coefs;
  // channels_last: a block of rows of C, one lane per channel).
  auto accumulate = [&](int64_t cb, int64_t off, int64_t i, int64_t w, bool per_lane,
                        Vectorized<O>& a0, Vectorized<O>& a1) {
    Vectorized<O> u, v;
    u_and_v<ACT, SAVED_OUT>(vload<T, O>(sv + off + i, w), coef(cf.mscale.data() + cb, i, w, per_lane),
                            coef(cf.mshift.data() + cb, i, w, per_lane), inv_slope, u, v);
    const auto dz = mask_grad<ACT>(vload<T, O>(dy + off + i, w), v, slope);
    a0 += dz;
    a1 = at::vec::fmadd(dz, u - coef(cf.center.data() + cb, i, w, per_lane), a1);
  };
  // NCHW input takes backward_nchw_groups instead.
  TORCH_INTERNAL_ASSERT(s.channels_last);
  const int64_t C = s.C, R = s.block_rows(), B = s.blocks_per_sample();
  std::vector<O> bd(s.N * B * C), bdu(s.N * B * C);
  at::parallel_for(0, s.N * B, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / B, r0 = (t % B) * R, r1 = std::min(s.HW, r0 + R);
      for (int64_t i = 0; i < C; i += V) {
        const int64_t w = std::min(V, C - i);
        Vectorized<O> a0(O(0)), a1(O(0));
        for (int64_t r = r0; r < r1; ++r) accumulate(n * C, (n * s.HW + r) * C, i, w, true, a0, a1);
        a0.store(bd.data() + t * C + i, w);
        a1.store(bdu.data() + t * C + i, w);
      }
    }
  });
  at::parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t c = 0; c < C; ++c) {
        O d = 0, du = 0;
        for (int64_t b = 0; b < B; ++b) {
          d += bd[(n * B + b) * C + c];
          du += bdu[(n * B + b) * C + c];
        }
        sum_dz[n * C + c] = d;
        sum_dzu[n * C + c] = du;
      }
    }
  });
}

template <typename T, typename O, Activation ACT, bool SAVED_OUT>
void backward_elementwise(const T* dy, const T* sv, T* dx, const Shape& s, const BackwardCoefs<O>& cf,
                          O slope_, bool use_input_stats) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_), inv_slope(SAVED_OUT ? O(1) / slope_ : O(1));
  for_each_run(s, [&](int64_t, int64_t cb, int64_t off, int64_t len, bool per_lane) {
    for (int64_t i = 0; i < len; i += V) {
      const int64_t w = std::min(V, len - i);
      Vectorized<O> u, v;
      u_and_v<ACT, SAVED_OUT>(vload<T, O>(sv + off + i, w), coef(cf.mscale.data() + cb, i, w, per_lane),
                              coef(cf.mshift.data() + cb, i, w, per_lane), inv_slope, u, v);
      const auto dz = mask_grad<ACT>(vload<T, O>(dy + off + i, w), v, slope);
      const auto k = coef(cf.k.data() + cb, i, w, per_lane);
      // Running statistics: a = b = 0, and 0 * u is NaN at an infinite input.
      const auto g = use_input_stats
                         ? at::vec::fmadd(k, dz, at::vec::fmadd(coef(cf.a.data() + cb, i, w, per_lane),
                                                                u, coef(cf.b.data() + cb, i, w, per_lane)))
                         : k * dz;
      vstore<T, O>(dx + off + i, g, w);
    }
  });
}

// ----------------------------------------------- NCHW, one group at a time
// With NCHW input a group's values (a channel's N planes, or one plane for
// instance norm) are few enough to stay in L2, so each task reduces a group
// and immediately runs the elementwise pass over it: the second read of the
// group then hits the cache instead of memory. Batch norm: group g = channel,
// N runs of HW values, C*HW apart. Instance norm: group g = plane n*C + c.
struct Groups {
  int64_t N, C, HW;
  bool per_sample;
  int64_t count() const { return per_sample ? N * C : C; }
  int64_t runs() const { return per_sample ? 1 : N; }
  int64_t stride() const { return C * HW; }
  int64_t first(int64_t g) const { return g * HW; }  // offset of run 0 (both cases)
  int64_t channel(int64_t g) const { return per_sample ? g % C : g; }
  int64_t grain() const {
    return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(runs() * HW, 1));
  }
};

template <typename T, typename O, Activation ACT>
inline void affine_act_run(const T* x, T* y, int64_t len, O scale_, O shift_, const Vectorized<O>& slope) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> scale(scale_), shift(shift_);
  for (int64_t i = 0; i < len; i += V) {
    const int64_t w = std::min(V, len - i);
    vstore<T, O>(y + i, activate<ACT>(at::vec::fmadd(vload<T, O>(x + i, w), scale, shift), slope), w);
  }
}

// Forward with input statistics: stats, then normalize, per group.
template <typename T, typename O, Activation ACT>
void forward_nchw_groups(const T* x, T* y, const Groups& gs, const O* gamma, const O* beta, O eps,
                         O slope_, O* mean, O* var, O* invstd) {
  const Vectorized<O> slope(slope_);
  at::parallel_for(0, gs.count(), gs.grain(), [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t c = gs.channel(g), R = gs.runs(), L = gs.HW;
      O mu, m2;
      planes_mean_m2<T, O>(x + gs.first(g), R, L, gs.stride(), mu, m2);
      const O v = m2 / static_cast<O>(R * L);
      const O rs = O(1) / std::sqrt(v + eps);
      mean[g] = mu;
      var[g] = v;
      invstd[g] = rs;
      const O scale = gamma[c] * rs, shift = beta[c] - mu * scale;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t off = gs.first(g) + r * gs.stride();
        if (r + 1 < R) prefetch_run_for_write(y + off + gs.stride(), L);
        affine_act_run<T, O, ACT>(x + off, y + off, L, scale, shift, slope);
      }
    }
  });
}

// Backward: per group, sums of dz and dz*(u - centre), then dx. Writes the
// group's sum(dz) and sum(dz * xhat) for grad_bias / grad_weight.
template <typename T, typename O, Activation ACT, bool SAVED_OUT>
void backward_nchw_groups(const T* dy, const T* sv, T* dx, const Groups& gs, bool use_input_stats,
                          const O* gamma, const O* beta, const O* mean, const O* invstd, O slope_,
                          O* group_dz, O* group_dzx) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_), inv_slope(SAVED_OUT ? O(1) / slope_ : O(1));
  at::parallel_for(0, gs.count(), gs.grain(), [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t c = gs.channel(g), R = gs.runs(), L = gs.HW;
      const O k = gamma[c] * invstd[g];
      const Vectorized<O> ms(k), mb(beta[c] - mean[g] * k);
      const Vectorized<O> ctr(SAVED_OUT ? beta[c] : mean[g]);
      O sdz = 0, sdzu = 0;
      Vectorized<O> a0(O(0)), a1(O(0));
      int64_t pending = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t off = gs.first(g) + r * gs.stride();
        if (r + 1 < R) {
          // The runs of a channel are C*HW apart: too short and too far apart
          // for the hardware prefetcher, so ask for the next one now.
          prefetch_run(sv + off + gs.stride(), L);
          prefetch_run(dy + off + gs.stride(), L);
        }
        for (int64_t i = 0; i < L; i += V) {
          const int64_t w = std::min(V, L - i);
          Vectorized<O> u, v;
          u_and_v<ACT, SAVED_OUT>(vload<T, O>(sv + off + i, w), ms, mb, inv_slope, u, v);
          const auto dz = mask_grad<ACT>(vload<T, O>(dy + off + i, w), v, slope);
          a0 += dz;
          a1 = at::vec::fmadd(dz, u - ctr, a1);
        }
        // Flush the vector partials now and then: short float sums.
        pending += L;
        if (pending >= kBlockElems || r + 1 == R) {
          sdz += vsum(a0);
          sdzu += vsum(a1);
          a0 = Vectorized<O>(O(0));
          a1 = Vectorized<O>(O(0));
          pending = 0;
        }
      }
      const O sdzx = SAVED_OUT ? sdzu / gamma[c] : sdzu * invstd[g];
      group_dz[g] = sdz;
      group_dzx[g] = sdzx;
      O a = 0, b = 0;
      if (use_input_stats) {
        const O M = static_cast<O>(R * L);
        a = SAVED_OUT ? -k * sdzx / (M * gamma[c]) : -k * invstd[g] * sdzx / M;
        b = -k * sdz / M - a * (SAVED_OUT ? beta[c] : mean[g]);
      }
      const Vectorized<O> kv(k), av(a), bv(b);
      for (int64_t r = 0; r < R; ++r) {
        const int64_t off = gs.first(g) + r * gs.stride();
        if (r + 1 < R) prefetch_run_for_write(dx + off + gs.stride(), L);
        for (int64_t i = 0; i < L; i += V) {
          const int64_t w = std::min(V, L - i);
          Vectorized<O> u, v;
          u_and_v<ACT, SAVED_OUT>(vload<T, O>(sv + off + i, w), ms, mb, inv_slope, u, v);
          const auto dz = mask_grad<ACT>(vload<T, O>(dy + off + i, w), v, slope);
          // Running statistics: dx = k * dz alone; 0 * u would turn an
          // infinite input into a NaN gradient where the twin gives a number.
          vstore<T, O>(dx + off + i,
                       use_input_stats ? at::vec::fmadd(kv, dz, at::vec::fmadd(av, u, bv)) : kv * dz,
                       w);
        }
      }
    }
  });
}

// ------------------------------------------------------------ param access
template <typename O>
std::vector<O> param_or(const c10::optional<at::Tensor>& p, int64_t C, O fill) {
  std::vector<O> out(C, fill);
  if (p.has_value() && p->defined()) {
    const at::Tensor t = p->to(c10::CppTypeToScalarType<O>::value).contiguous();
    std::copy(t.data_ptr<O>(), t.data_ptr<O>() + C, out.begin());
  }
  return out;
}

// The affine weight the op multiplies by: 1 when absent, and clamped away from
// zero (sign kept) when the output will be inverted (see kMinAbsWeight).
template <typename O>
std::vector<O> effective_gamma(const c10::optional<at::Tensor>& weight, int64_t C, int64_t act,
                               double slope) {
  auto gamma = param_or<O>(weight, C, O(1));
  if (defined(weight) && output_is_invertible(act, slope)) {
    for (auto& g : gamma) {
      const O m = std::max(std::abs(g), static_cast<O>(kMinAbsWeight));
      g = g < 0 ? -m : m;
    }
  }
  return gamma;
}

// ------------------------------------------------------ running statistics
// running = (1 - f) * running + f * batch per channel, in double (as torch's
// CPU batch_norm, whose float accumulator type is double), with the unbiased
// variance. Instance statistics (N*C groups) are averaged over the batch first,
// summed in sample order; the CUDA kernel sums in the same order and precision.
// No NaN check: a NaN in the batch reaches the running statistics, as in torch.
void update_running_stat(const at::Tensor& running, const at::Tensor& stat, int64_t C,
                         int64_t batches, double factor, double scale) {
  AT_DISPATCH_FLOATING_TYPES(stat.scalar_type(), "norm_act_running_stat", [&] {
    const scalar_t* st = stat.const_data_ptr<scalar_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, running.scalar_type(),
                                    "norm_act_running_buffer", [&] {
      using buf_t = scalar_t;
      buf_t* r = running.mutable_data_ptr<buf_t>();
      const int64_t stride = running.stride(0);
      for (int64_t c = 0; c < C; ++c) {
        double b = 0;
        for (int64_t n = 0; n < batches; ++n) b += static_cast<double>(st[n * C + c]);
        b /= static_cast<double>(batches);
        const double old = static_cast<double>(r[c * stride]);
        r[c * stride] = static_cast<buf_t>((1.0 - factor) * old + factor * (b * scale));
      }
    });
  });
}

void update_running_stats(const c10::optional<at::Tensor>& running_mean,
                          const c10::optional<at::Tensor>& running_var,
                          const c10::optional<at::Tensor>& num_batches_tracked,
                          c10::optional<double> momentum, const at::Tensor& mean,
                          const at::Tensor& var, int64_t N, int64_t C, bool per_sample,
                          int64_t count, bool empty) {
  int64_t seen = 0;
  if (defined(num_batches_tracked)) {
    // numel() == 1, any strides: data_ptr already points at the element.
    int64_t* p = num_batches_tracked->mutable_data_ptr<int64_t>();
    seen = ++*p;
  }
  if (empty) return;  // torch leaves the running statistics alone for an empty batch
  const double factor = momentum.has_value() ? *momentum : 1.0 / static_cast<double>(seen);
  const int64_t batches = per_sample ? N : 1;
  if (defined(running_mean)) update_running_stat(*running_mean, mean, C, batches, factor, 1.0);
  if (defined(running_var)) {
    const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
    update_running_stat(*running_var, var, C, batches, factor, unbias);
  }
}

// ---------------------------------------------------------------- forward op
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_act_cpu(
    const at::Tensor& input_, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
    const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& num_batches_tracked, bool use_input_stats, bool instance,
    c10::optional<double> momentum, double eps, int64_t activation, double negative_slope) {
  auto [N, C, HW] = check_norm_act_args(input_, weight, bias, running_mean, running_var,
                                        num_batches_tracked, use_input_stats, instance, momentum,
                                        eps, activation);
  const at::MemoryFormat fmt = kernel_memory_format(input_);
  const at::Tensor input = input_.contiguous(fmt);
  at::Tensor out = at::empty(input.sizes(), input.options().memory_format(fmt));
  const bool per_sample = instance && use_input_stats;
  const int64_t G = per_sample ? N * C : C;
  const auto sopts = input.options().dtype(stats_dtype(input));
  at::Tensor mean_t = at::empty({G}, sopts), invstd_t = at::empty({G}, sopts), var_t = at::empty({G}, sopts);
  const Shape s{N, C, HW, fmt == at::MemoryFormat::ChannelsLast};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "norm_act_cpu", [&] {
    using O = at::opmath_type<scalar_t>;
    O* mean = mean_t.data_ptr<O>();
    O* invstd = invstd_t.data_ptr<O>();
    O* var = var_t.data_ptr<O>();
    const auto gamma = effective_gamma<O>(weight, C, activation, negative_slope);
    const auto beta = param_or<O>(bias, C, O(0));
    if (!use_input_stats) {
      const auto rm = param_or<O>(running_mean, C, O(0));
      const auto rv = param_or<O>(running_var, C, O(1));
      for (int64_t c = 0; c < C; ++c) {
        mean[c] = rm[c];
        var[c] = rv[c];
      }
    } else if (input.numel() == 0) {
      // Statistics of no values are undefined: NaN, as the CUDA kernel and the
      // twin (var_mean of an empty set) give, and invstd NaN with them.
      std::fill(mean, mean + G, std::numeric_limits<O>::quiet_NaN());
      std::fill(var, var + G, std::numeric_limits<O>::quiet_NaN());
    } else if (!s.channels_last) {
      dispatch_activation(activation, [&](auto act) {
        forward_nchw_groups<scalar_t, O, decltype(act)::value>(
            input.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
            Groups{N, C, HW, per_sample}, gamma.data(), beta.data(), static_cast<O>(eps),
            static_cast<O>(negative_slope), mean, var, invstd);
      });
      return;
    } else {
      std::vector<O> pm(N * C), pq(N * C);
      plane_stats<scalar_t, O>(input.const_data_ptr<scalar_t>(), s, pm.data(), pq.data());
      if (per_sample) {
        for (int64_t g = 0; g < G; ++g) {
          mean[g] = pm[g];
          var[g] = pq[g] / static_cast<O>(HW);
        }
      } else {
        const std::vector<int64_t> counts(N, HW);
        chan_merge_rows<O>(pm.data(), pq.data(), counts.data(), N, C, mean, var);
        for (int64_t c = 0; c < C; ++c) var[c] /= static_cast<O>(N * HW);
      }
    }
    for (int64_t g = 0; g < G; ++g) invstd[g] = O(1) / std::sqrt(var[g] + static_cast<O>(eps));
    if (input.numel() == 0) return;

    std::vector<O> scale(N * C), shift(N * C);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t g = per_sample ? n * C + c : c;
        scale[n * C + c] = gamma[c] * invstd[g];
        shift[n * C + c] = beta[c] - mean[g] * gamma[c] * invstd[g];
      }
    }
    dispatch_activation(activation, [&](auto act) {
      affine_act<scalar_t, O, decltype(act)::value>(input.const_data_ptr<scalar_t>(),
                                                    out.mutable_data_ptr<scalar_t>(), s, scale.data(),
                                                    shift.data(), static_cast<O>(negative_slope));
    });
  });
  if (use_input_stats) {
    update_running_stats(running_mean, running_var, num_batches_tracked, momentum, mean_t, var_t,
                         N, C, per_sample, instance ? HW : N * HW, input.numel() == 0);
  }
  return {out, mean_t, invstd_t, var_t};
}

// --------------------------------------------------------------- backward op
// Runs f(act, saved_out) with both as compile-time constants. Only an
// invertible leaky_relu saves its output (check_norm_act_backward_args), so
// the other activations are not instantiated with saved_out.
template <typename F>
inline void dispatch_backward(int64_t activation, bool saved_is_output, F&& f) {
  dispatch_activation(activation, [&](auto act) {
    if (saved_is_output) {
      if constexpr (decltype(act)::value == Activation::LeakyReLU) f(act, std::true_type{});
    } else {
      f(act, std::false_type{});
    }
  });
}

// What both layouts of the backward read and write, the parameters in opmath.
template <typename scalar_t, typename O>
struct BackwardArgs {
  const scalar_t* dy;
  const scalar_t* sv;  // the saved input, or output (saved_is_output)
  scalar_t* dx;
  const O* mean;
  const O* invstd;
  const O* gamma;  // effective_gamma
  const O* beta;
  O slope;
  int64_t activation;
  bool saved_is_output, use_input_stats, instance, per_sample;
};

// NCHW: one pass per group of planes, which accumulates grad_weight/grad_bias.
template <typename scalar_t, typename O>
void backward_nchw(const BackwardArgs<scalar_t, O>& a, const Shape& s, O* gw, O* gb) {
  const Groups gs{s.N, s.C, s.HW, a.per_sample};
  std::vector<O> gdz(gs.count()), gdzx(gs.count());
  dispatch_backward(a.activation, a.saved_is_output, [&](auto act, auto saved_out) {
    backward_nchw_groups<scalar_t, O, decltype(act)::value, decltype(saved_out)::value>(
        a.dy, a.sv, a.dx, gs, a.use_input_stats, a.gamma, a.beta, a.mean, a.invstd, a.slope,
        gdz.data(), gdzx.data());
  });
  for (int64_t g = 0; g < gs.count(); ++g) {
    gw[gs.channel(g)] += gdzx[g];
    gb[gs.channel(g)] += gdz[g];
  }
}

// The per-(n, c) coefficients the channels_last reduction pass reads.
template <typename scalar_t, typename O>
BackwardCoefs<O> channels_last_coefs(const BackwardArgs<scalar_t, O>& a, int64_t N, int64_t C) {
  BackwardCoefs<O> cf;
  for (auto* v : {&cf.k, &cf.a, &cf.b, &cf.mscale, &cf.mshift, &cf.center}) v->assign(N * C, O(0));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = n * C + c, g = a.per_sample ? i : c;
      cf.mscale[i] = a.gamma[c] * a.invstd[g];
      cf.mshift[i] = a.beta[c] - a.mean[g] * a.gamma[c] * a.invstd[g];
      cf.center[i] = a.saved_is_output ? a.beta[c] : a.mean[g];
      cf.k[i] = a.gamma[c] * a.invstd[g];
    }
  }
  return cf;
}

// Training: the gradient through the batch statistics, as dx's a and b
// coefficients, from the reduced sums of dz and dz * xhat.
template <typename scalar_t, typename O>
void add_stat_grad_coefs(const BackwardArgs<scalar_t, O>& a, const Shape& s,
                         const std::vector<O>& sdz, const std::vector<O>& sdzx, const O* gw,
                         const O* gb, BackwardCoefs<O>& cf) {
  const int64_t N = s.N, C = s.C;
  const O M = static_cast<O>(a.instance ? s.HW : N * s.HW);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = n * C + c, g = a.per_sample ? i : c;
      const O group_dz = a.per_sample ? sdz[i] : gb[c];
      const O group_dzx = a.per_sample ? sdzx[i] : gw[c];
      const O k = cf.k[i];
      if (a.saved_is_output) {
        cf.a[i] = -k * group_dzx / (M * a.gamma[c]);
        cf.b[i] = -k * group_dz / M - cf.a[i] * a.beta[c];
      } else {
        cf.a[i] = -k * a.invstd[g] * group_dzx / M;
        cf.b[i] = -k * group_dz / M - cf.a[i] * a.mean[g];
      }
    }
  }
}

// channels_last: a reduction pass over blocks of rows, then one elementwise
// pass, with per-(n, c) coefficients.
template <typename scalar_t, typename O>
void backward_channels_last(const BackwardArgs<scalar_t, O>& a, const Shape& s, O* gw, O* gb) {
  const int64_t N = s.N, C = s.C;
  BackwardCoefs<O> cf = channels_last_coefs(a, N, C);
  std::vector<O> sdz(N * C, O(0)), sdzu(N * C, O(0));
  dispatch_backward(a.activation, a.saved_is_output, [&](auto act, auto saved_out) {
    backward_reduce<scalar_t, O, decltype(act)::value, decltype(saved_out)::value>(
        a.dy, a.sv, s, cf, a.slope, sdz.data(), sdzu.data());
  });
  // sum(dz * xhat) per (n, c): xhat = (x - mean) * invstd or (z - beta) / gamma.
  std::vector<O> sdzx(N * C);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = n * C + c, g = a.per_sample ? i : c;
      sdzx[i] = a.saved_is_output ? sdzu[i] / a.gamma[c] : sdzu[i] * a.invstd[g];
    }
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      gw[c] += sdzx[n * C + c];
      gb[c] += sdz[n * C + c];
    }
  }
  if (a.use_input_stats) add_stat_grad_coefs(a, s, sdz, sdzx, gw, gb, cf);
  dispatch_backward(a.activation, a.saved_is_output, [&](auto act, auto saved_out) {
    backward_elementwise<scalar_t, O, decltype(act)::value, decltype(saved_out)::value>(
        a.dy, a.sv, a.dx, s, cf, a.slope, a.use_input_stats);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward_cpu(
    const at::Tensor& grad_out_, const at::Tensor& saved_, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& mean_, const at::Tensor& invstd_,
    bool use_input_stats, bool instance, int64_t activation, double negative_slope,
    bool saved_is_output) {
  check_norm_act_backward_args(grad_out_, saved_, weight, bias, mean_, invstd_, activation,
                               saved_is_output, negative_slope);
  const int64_t N = saved_.size(0), C = saved_.size(1), HW = saved_.size(2) * saved_.size(3);
  const bool per_sample = instance && use_input_stats;
  const int64_t G = per_sample ? N * C : C;
  TORCH_CHECK_VALUE(mean_.size(0) == G, "mean and invstd must have ", G,
                    " entries for this input and mode, got ", mean_.size(0));
  const at::MemoryFormat fmt = kernel_memory_format(saved_);
  const at::Tensor saved = saved_.contiguous(fmt);
  const at::Tensor grad_out = grad_out_.contiguous(fmt);
  at::Tensor grad_input = at::empty(saved.sizes(), saved.options().memory_format(fmt));
  const auto pdtype = defined(weight) ? weight->scalar_type() : saved.scalar_type();
  const Shape s{N, C, HW, fmt == at::MemoryFormat::ChannelsLast};
  if (saved.numel() == 0) {  // sums of nothing; never read the (NaN) statistics of no values
    const auto popts = saved.options().dtype(pdtype);
    return {grad_input, at::zeros({C}, popts), at::zeros({C}, popts)};
  }
  at::Tensor grad_weight, grad_bias;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, saved.scalar_type(), "norm_act_backward_cpu", [&] {
    using O = at::opmath_type<scalar_t>;
    const at::Tensor mean_o = mean_.to(c10::CppTypeToScalarType<O>::value).contiguous();
    const at::Tensor invstd_o = invstd_.to(c10::CppTypeToScalarType<O>::value).contiguous();
    const auto gamma = effective_gamma<O>(weight, C, activation, negative_slope);
    const auto beta = param_or<O>(bias, C, O(0));
    const BackwardArgs<scalar_t, O> args{grad_out.const_data_ptr<scalar_t>(),
                                         saved.const_data_ptr<scalar_t>(),
                                         grad_input.mutable_data_ptr<scalar_t>(),
                                         mean_o.const_data_ptr<O>(),
                                         invstd_o.const_data_ptr<O>(),
                                         gamma.data(),
                                         beta.data(),
                                         static_cast<O>(negative_slope),
                                         activation,
                                         saved_is_output,
                                         use_input_stats,
                                         instance,
                                         per_sample};
    const auto popts = saved.options().dtype(c10::CppTypeToScalarType<O>::value);
    grad_weight = at::zeros({C}, popts);
    grad_bias = at::zeros({C}, popts);
    O* gw = grad_weight.mutable_data_ptr<O>();
    O* gb = grad_bias.mutable_data_ptr<O>();
    if (s.channels_last) {
      backward_channels_last(args, s, gw, gb);
    } else {
      backward_nchw(args, s, gw, gb);
    }
  });
  if (grad_weight.scalar_type() != pdtype) {
    grad_weight = grad_weight.to(pdtype);
    grad_bias = grad_bias.to(pdtype);
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("norm_act", &norm_act_cpu);
  m.impl("norm_act_backward", &norm_act_backward_cpu);
}

}  // namespace gan_ext
