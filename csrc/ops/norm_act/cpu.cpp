// CPU kernels of gan_ext::norm_act and gan_ext::norm_act_backward.
//
// Every normalization here reduces over "groups": a channel c for batch norm,
// a (sample n, channel c) pair for instance norm. Statistics (forward) and the
// sums of the backward are reduced first, then one elementwise pass applies
// per-group coefficients. The reductions read the tensor in one of two ways:
//   * in memory order, in tasks whose size depends on the shape alone, each
//     leaving partials that are merged in a fixed order (so results never
//     depend on the thread count): channels_last (RowChunks: chunks of whole
//     rows, a row being one pixel's C values), NCHW batch statistics with
//     planes of at least kSequentialPlaneElems values (one partial per plane)
//     and with smaller planes (as row chunks of one sample's C*HW values);
//   * by group (NCHW instance statistics): a task reduces a group's planes and
//     runs the elementwise pass on them while they are in L2 (see
//     nchw_by_groups).
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
// channels_last reductions (RowChunks): values per chunk (one parallel task),
// per sub-block (walked twice from L1), and the most partial values all
// chunks together may keep (the chunk count is capped for very wide rows).
constexpr int64_t kChunkElems = 32768;
constexpr int64_t kSubBlockElems = 4096;
constexpr int64_t kMaxPartialElems = 1 << 16;
// Rows per sub-block however wide the rows: a tile's accumulators are loaded
// and stored once per sub-block, so wide rows (the NCHW small-plane scheme:
// C*HW lanes) still amortize them over several rows (whose second read, in
// the forward, then comes from L2).
constexpr int64_t kMinSubRows = 8;
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
  bool per_sample;  // statistics per (n, c): instance norm with input statistics
  int64_t planes() const { return N * C; }
  int64_t plane_grain() const { return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(HW, 1)); }
  // Coefficient sets: one C-vector per sample (per_sample), else one for all;
  // entry n * C + c (or c) is statistics group g, as mean/invstd index them.
  int64_t segments() const { return per_sample ? N : 1; }
  // Rows (pixels) reduced together in channels_last: a sample's, or all.
  int64_t segment_rows() const { return per_sample ? HW : N * HW; }
};

// channels_last reductions walk segments of rows (a row = one pixel, C
// contiguous values): all N*HW rows for batch statistics, a sample's HW rows
// for per-(n, c) statistics. A segment is cut into chunks of whole rows sized
// by the shape alone, so the order of every sum is fixed whatever the thread
// count; one parallel task per chunk. A chunk is walked in L1-sized
// sub-blocks, in which a strip of channels keeps its accumulators in
// registers while it runs down the sub-block's rows; each chunk leaves one
// C-vector of partials, merged per segment in chunk order.
struct RowChunks {
  int64_t C, seg_rows, rows, per_seg, sub;
  explicit RowChunks(const Shape& s)
      : C(std::max<int64_t>(s.C, 1)), seg_rows(s.segment_rows()) {
    rows = std::max<int64_t>(1, kChunkElems / C);
    per_seg = std::max<int64_t>(1, (seg_rows + rows - 1) / rows);
    const int64_t cap = std::max<int64_t>(1, kMaxPartialElems / (s.segments() * C));
    if (per_seg > cap) {
      rows = (seg_rows + cap - 1) / cap;
      per_seg = (seg_rows + rows - 1) / rows;
    }
    sub = std::max<int64_t>(kMinSubRows, kSubBlockElems / C);
  }
  int64_t segment(int64_t t) const { return t / per_seg; }
  int64_t begin(int64_t t) const { return segment(t) * seg_rows + (t % per_seg) * rows; }
  int64_t end(int64_t t) const { return std::min((segment(t) + 1) * seg_rows, begin(t) + rows); }
  int64_t rows_of(int64_t j) const { return std::min(rows, seg_rows - j * rows); }  // j-th of a segment
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

// The reductions' partials live in per-thread scratch reused across calls: a
// buffer allocated per call was, past glibc's mmap threshold (128 KiB), mapped,
// zeroed and page-faulted on every call (+2 ms per forward+backward at
// 64x256x8x8 on the issue 15 VM with gan_ext.retain_freed_memory off). Only
// the thread that called the op takes them, before its parallel regions;
// slots A and B are the two partials of one reduction.
enum ScratchSlot : int { kPartialA = 0, kPartialB = 1, kScratchSlots = 2 };
template <typename O>
O* scratch(ScratchSlot slot, int64_t n) {
  thread_local std::vector<O> buf[kScratchSlots];
  std::vector<O>& b = buf[slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(static_cast<size_t>(n));
  return b.data();
}

// channels_last reductions run down a sub-block's rows one tile of up to
// kTileStrips vectors of channels at a time, the tile's accumulators in
// registers: with C <= kTileStrips * V (64 floats at AVX-512) a tile is the
// whole row and the sub-block is read in memory order; wider rows read
// kTileStrips adjacent cache lines per row. f(NT, c, w_last) gets the tile's
// strip count as a compile-time constant, its first channel and the width of
// its last strip (V but at the end of an odd C).
constexpr int kTileStrips = 4;
template <typename O, typename F>
inline void for_each_tile(int64_t C, F&& f) {
  constexpr int64_t V = Vectorized<O>::size();
  int64_t c = 0;
  for (; c + kTileStrips * V <= C; c += kTileStrips * V) f(std::integral_constant<int, kTileStrips>{}, c, V);
  const int64_t rest = C - c;
  if (rest == 0) return;
  const int64_t w_last = rest - ((rest - 1) / V) * V;
  static_assert(kTileStrips == 4, "the tail cases below");
  switch ((rest + V - 1) / V) {  // 1 .. kTileStrips strips, the last w_last wide
    case 1: f(std::integral_constant<int, 1>{}, c, w_last); break;
    case 2: f(std::integral_constant<int, 2>{}, c, w_last); break;
    case 3: f(std::integral_constant<int, 3>{}, c, w_last); break;
    default: f(std::integral_constant<int, 4>{}, c, w_last); break;
  }
}

// channels_last: mean and M2 per channel of a chunk's `rows` rows (C-vectors
// mean, m2). Each sub-block is reduced two-pass while it sits in L1 (mean,
// then squared deviations) and merged into the chunk's with Chan's update.
template <typename T, typename O>
void chunk_mean_m2(const T* x, int64_t rows, int64_t C, int64_t sub, O* mean, O* m2) {
  constexpr int64_t V = Vectorized<O>::size();
  int64_t n = 0;
  for (int64_t b0 = 0; b0 < rows; b0 += sub) {
    const int64_t nb = std::min(sub, rows - b0);
    const T* xb = x + b0 * C;
    const O tot = static_cast<O>(n + nb);
    const Vectorized<O> inv(O(1) / static_cast<O>(nb));
    const Vectorized<O> f(static_cast<O>(nb) / tot), g(static_cast<O>(n) * static_cast<O>(nb) / tot);
    for_each_tile<O>(C, [&](auto nt, int64_t c, int64_t w_last) {
      constexpr int NT = decltype(nt)::value;
      auto width = [&](int j) { return j == NT - 1 ? w_last : V; };
      // Sums around the sub-block's first row: a channel's rows are summed in
      // one lane, and around a large mean that sum would lose the low digits.
      Vectorized<O> shift[NT], acc[NT], mb[NT];
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) {
        shift[j] = vload<T, O>(xb + c + j * V, width(j));
        acc[j] = Vectorized<O>(O(0));
      }
      for (int64_t r = 1; r < nb; ++r) {
#pragma GCC unroll 4
        for (int j = 0; j < NT; ++j) acc[j] += vload<T, O>(xb + r * C + c + j * V, width(j)) - shift[j];
      }
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) {
        mb[j] = at::vec::fmadd(acc[j], inv, shift[j]);
        acc[j] = Vectorized<O>(O(0));
      }
      for (int64_t r = 0; r < nb; ++r) {
#pragma GCC unroll 4
        for (int j = 0; j < NT; ++j) {
          const auto d = vload<T, O>(xb + r * C + c + j * V, width(j)) - mb[j];
          acc[j] = at::vec::fmadd(d, d, acc[j]);
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) {
        O* pm = mean + c + j * V;
        O* pq = m2 + c + j * V;
        const int64_t w = width(j);
        if (n == 0) {
          mb[j].store(pm, w);
          acc[j].store(pq, w);
        } else {
          const auto mu = Vectorized<O>::loadu(pm, w);
          const auto delta = mb[j] - mu;
          at::vec::fmadd(delta, f, mu).store(pm, w);
          (Vectorized<O>::loadu(pq, w) + acc[j] + delta * delta * g).store(pq, w);
        }
      }
    });
    n += nb;
  }
}

// channels_last: mean and M2 per statistics group (s.segments() * C entries).
template <typename T, typename O>
void channels_last_stats(const T* x, const Shape& s, O* mean, O* m2) {
  const RowChunks ch(s);
  const int64_t C = s.C, tasks = s.segments() * ch.per_seg;
  O* const pmean = scratch<O>(kPartialA, tasks * C);
  O* const pm2 = scratch<O>(kPartialB, tasks * C);
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      chunk_mean_m2<T, O>(x + ch.begin(t) * C, ch.end(t) - ch.begin(t), C, ch.sub,
                          pmean + t * C, pm2 + t * C);
  });
  std::vector<int64_t> counts(ch.per_seg);
  for (int64_t j = 0; j < ch.per_seg; ++j) counts[j] = ch.rows_of(j);
  for (int64_t seg = 0; seg < s.segments(); ++seg) {
    const int64_t base = seg * ch.per_seg * C;
    chan_merge_rows<O>(pmean + base, pm2 + base, counts.data(), ch.per_seg, C,
                       mean + seg * C, m2 + seg * C);
  }
}

// NCHW, batch statistics, read in memory order: per-plane mean and M2 (one
// task per run of planes), merged per channel in sample order.
template <typename T, typename O>
void nchw_batch_stats(const T* x, const Shape& s, O* mean, O* m2) {
  O* const pm = scratch<O>(kPartialA, s.planes());
  O* const pq = scratch<O>(kPartialB, s.planes());
  at::parallel_for(0, s.planes(), s.plane_grain(), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) planes_mean_m2<T, O>(x + p * s.HW, 1, s.HW, s.HW, pm[p], pq[p]);
  });
  const std::vector<int64_t> counts(s.N, s.HW);  // row n of pm/pq: sample n's C planes
  chan_merge_rows<O>(pm, pq, counts.data(), s.N, s.C, mean, m2);
}

// ------------------------------------------------------- elementwise passes
// Calls body(off, len, cb, per_lane) over the whole tensor, in parallel: per
// NCHW plane (len = HW values sharing coefficient cb; per_lane false) or per
// channels_last row (C values, coefficients cb..cb+C-1; per_lane true).
// per_lane is a std::bool_constant, so each layout's loop is compiled apart.
template <typename F>
void for_each_run(const Shape& s, F&& body) {
  // The coefficient index advances with the loop (no division per plane or
  // row: at 4x4 planes a 64-bit division cost as much as the plane's values).
  if (!s.channels_last) {
    at::parallel_for(0, s.planes(), s.plane_grain(), [&](int64_t p0, int64_t p1) {
      int64_t c = p0 % s.C;
      for (int64_t p = p0; p < p1; ++p) {
        body(p * s.HW, s.HW, s.per_sample ? p : c, std::false_type{});
        if (++c == s.C) c = 0;
      }
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(s.C, 1));
    at::parallel_for(0, s.N * s.HW, grain, [&](int64_t r0, int64_t r1) {
      int64_t n = r0 / s.HW, i = r0 % s.HW;
      for (int64_t r = r0; r < r1; ++r) {
        body(r * s.C, s.C, s.per_sample ? n * s.C : 0, std::true_type{});
        if (++i == s.HW) {
          i = 0;
          ++n;
        }
      }
    });
  }
}

// Coefficient vector for lane offset i: per channel in a channels_last row,
// broadcast over an NCHW plane.
template <bool PER_LANE, typename O>
inline Vectorized<O> coef(const O* base, int64_t i, int64_t w) {
  if constexpr (PER_LANE) {
    return Vectorized<O>::loadu(base + i, w);
  } else {
    return Vectorized<O>(base[0]);
  }
}

template <typename T, typename O, Activation ACT>
void affine_act(const T* x, T* y, const Shape& s, const O* scale, const O* shift, O slope_) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_);
  for_each_run(s, [&](int64_t off, int64_t len, int64_t cb, auto per_lane) {
    constexpr bool L = decltype(per_lane)::value;
    const T* xp = x + off;
    T* yp = y + off;
    for (int64_t i = 0; i < len; i += V) {
      const int64_t w = std::min(V, len - i);
      const auto z = at::vec::fmadd(vload<T, O>(xp + i, w), coef<L>(scale + cb, i, w),
                                    coef<L>(shift + cb, i, w));
      vstore<T, O>(yp + i, activate<ACT>(z, slope), w);
    }
  });
}

// --------------------------------------------------------- backward helpers
// Per-group coefficients of the channels_last backward and of the eval
// elementwise pass (s.segments() * C each):
//   dx = k * dz + a * u + b,  pre-activation sign v = u * k + kshift (saved input)
// where k = gamma * invstd; center is what u is centred on in the reduction:
// the mean (saved input) or beta (saved output).
template <typename O>
struct BackwardCoefs {
  std::vector<O> k, a, b, kshift, center;
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

// NCHW, batch statistics: per-plane sums of dz and dz * (u - center), read in
// memory order (one task per run of planes), then summed per channel in
// sample order.
template <typename T, typename O, Activation ACT, bool SAVED_OUT>
void backward_reduce_planes(const T* dy, const T* sv, const Shape& s, const BackwardCoefs<O>& cf,
                            O slope_, O* sum_dz, O* sum_dzu) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_), inv_slope(SAVED_OUT ? O(1) / slope_ : O(1));
  TORCH_INTERNAL_ASSERT(!s.per_sample);  // per-sample NCHW takes backward_nchw_groups
  const int64_t C = s.C, HW = s.HW;
  O* const pd = scratch<O>(kPartialA, s.planes());
  O* const pu = scratch<O>(kPartialB, s.planes());
  at::parallel_for(0, s.planes(), s.plane_grain(), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % C;
      const Vectorized<O> k(cf.k[c]), ks(cf.kshift[c]), ctr(cf.center[c]);
      const T* svp = sv + p * HW;
      const T* dyp = dy + p * HW;
      Vectorized<O> d0(O(0)), d1(O(0)), u0(O(0)), u1(O(0));
      auto step = [&](int64_t i, int64_t w, Vectorized<O>& ad, Vectorized<O>& au) {
        Vectorized<O> u, v;
        u_and_v<ACT, SAVED_OUT>(vload<T, O>(svp + i, w), k, ks, inv_slope, u, v);
        const auto dz = mask_grad<ACT>(vload<T, O>(dyp + i, w), v, slope);
        ad += dz;
        au = at::vec::fmadd(dz, u - ctr, au);
      };
      int64_t i = 0;
      for (; i + 2 * V <= HW; i += 2 * V) {
        step(i, V, d0, u0);
        step(i + V, V, d1, u1);
      }
      for (; i < HW; i += V) step(i, std::min(V, HW - i), d0, u0);
      pd[p] = vsum(d0 + d1);
      pu[p] = vsum(u0 + u1);
    }
  });
  std::fill(sum_dz, sum_dz + C, O(0));
  std::fill(sum_dzu, sum_dzu + C, O(0));
  for (int64_t p = 0; p < s.planes(); ++p) {
    sum_dz[p % C] += pd[p];
    sum_dzu[p % C] += pu[p];
  }
}

// channels_last: per-group sums of dz and dz * (u - center) (segments * C).
template <typename T, typename O, Activation ACT, bool SAVED_OUT>
void backward_reduce(const T* dy, const T* sv, const Shape& s, const BackwardCoefs<O>& cf, O slope_,
                     O* sum_dz, O* sum_dzu) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_), inv_slope(SAVED_OUT ? O(1) / slope_ : O(1));
  if (!s.channels_last) {
    backward_reduce_planes<T, O, ACT, SAVED_OUT>(dy, sv, s, cf, slope_, sum_dz, sum_dzu);
    return;
  }
  const RowChunks ch(s);
  const int64_t C = s.C, tasks = s.segments() * ch.per_seg;
  O* const pd = scratch<O>(kPartialA, tasks * C);
  O* const pu = scratch<O>(kPartialB, tasks * C);
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t cb = ch.segment(t) * C, r0 = ch.begin(t), r1 = ch.end(t);
      O* od = pd + t * C;
      O* ou = pu + t * C;
      const O* k = cf.k.data() + cb;
      const O* ks = cf.kshift.data() + cb;
      const O* ctr = cf.center.data() + cb;
      for (int64_t b0 = r0; b0 < r1; b0 += ch.sub) {
        const int64_t b1 = std::min(r1, b0 + ch.sub);
        for_each_tile<O>(C, [&](auto nt, int64_t c, int64_t w_last) {
          constexpr int NT = decltype(nt)::value;
          auto width = [&](int j) { return j == NT - 1 ? w_last : V; };
          Vectorized<O> kv[NT], ksv[NT], cv[NT], ad[NT], au[NT];
#pragma GCC unroll 4
          for (int j = 0; j < NT; ++j) {
            const int64_t o = c + j * V, w = width(j);
            kv[j] = Vectorized<O>::loadu(k + o, w);
            ksv[j] = Vectorized<O>::loadu(ks + o, w);
            cv[j] = Vectorized<O>::loadu(ctr + o, w);
            ad[j] = b0 == r0 ? Vectorized<O>(O(0)) : Vectorized<O>::loadu(od + o, w);
            au[j] = b0 == r0 ? Vectorized<O>(O(0)) : Vectorized<O>::loadu(ou + o, w);
          }
          for (int64_t r = b0; r < b1; ++r) {
#pragma GCC unroll 4
            for (int j = 0; j < NT; ++j) {
              const int64_t o = r * C + c + j * V, w = width(j);
              Vectorized<O> u, v;
              u_and_v<ACT, SAVED_OUT>(vload<T, O>(sv + o, w), kv[j], ksv[j], inv_slope, u, v);
              const auto dz = mask_grad<ACT>(vload<T, O>(dy + o, w), v, slope);
              ad[j] += dz;
              au[j] = at::vec::fmadd(dz, u - cv[j], au[j]);
            }
          }
#pragma GCC unroll 4
          for (int j = 0; j < NT; ++j) {
            ad[j].store(od + c + j * V, width(j));
            au[j].store(ou + c + j * V, width(j));
          }
        });
      }
    }
  });
  // Chunks merged per segment, in chunk order.
  std::fill(sum_dz, sum_dz + s.segments() * C, O(0));
  std::fill(sum_dzu, sum_dzu + s.segments() * C, O(0));
  for (int64_t t = 0; t < tasks; ++t) {
    O* d = sum_dz + ch.segment(t) * C;
    O* u = sum_dzu + ch.segment(t) * C;
    for (int64_t c = 0; c < C; ++c) {
      d[c] += pd[t * C + c];
      u[c] += pu[t * C + c];
    }
  }
}

template <typename T, typename O, Activation ACT, bool SAVED_OUT>
void backward_elementwise(const T* dy, const T* sv, T* dx, const Shape& s, const BackwardCoefs<O>& cf,
                          O slope_, bool use_input_stats) {
  constexpr int64_t V = Vectorized<O>::size();
  const Vectorized<O> slope(slope_), inv_slope(SAVED_OUT ? O(1) / slope_ : O(1));
  const O* const k_ = cf.k.data();
  const O* const ks_ = cf.kshift.data();
  const O* const a_ = cf.a.data();
  const O* const b_ = cf.b.data();
  auto run = [&](auto input_stats) {
    constexpr bool STATS = decltype(input_stats)::value;
    for_each_run(s, [&](int64_t off, int64_t len, int64_t cb, auto per_lane) {
      constexpr bool L = decltype(per_lane)::value;
      const T* svp = sv + off;
      const T* dyp = dy + off;
      T* dxp = dx + off;
      const O *kp = k_ + cb, *ksp = ks_ + cb, *ap = a_ + cb, *bp = b_ + cb;
      for (int64_t i = 0; i < len; i += V) {
        const int64_t w = std::min(V, len - i);
        const auto k = coef<L>(kp, i, w);
        Vectorized<O> u, v;
        u_and_v<ACT, SAVED_OUT>(vload<T, O>(svp + i, w), k, coef<L>(ksp, i, w), inv_slope, u, v);
        const auto dz = mask_grad<ACT>(vload<T, O>(dyp + i, w), v, slope);
        // Running statistics: a = b = 0, and 0 * u is NaN at an infinite input.
        if constexpr (STATS) {
          vstore<T, O>(dxp + i, at::vec::fmadd(k, dz, at::vec::fmadd(coef<L>(ap, i, w), u, coef<L>(bp, i, w))), w);
        } else {
          vstore<T, O>(dxp + i, k * dz, w);
        }
      }
    });
  };
  if (use_input_stats) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
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

// NCHW input: which scheme reduces it.
//   * batch statistics, planes of at least kSequentialPlaneElems values: two
//     passes in memory order (nchw_batch_stats / backward_reduce_planes, then
//     the elementwise pass), one partial per plane.
//   * batch statistics, smaller planes (4x4, 8x8): the tensor as channels_last
//     rows, one row per sample of C*HW values with a lane per (c, hw)
//     (wide_shape): the row-chunk reductions with coefficients repeated HW
//     times, lane results folded per channel (a reduction per plane would pay
//     a horizontal sum every few values); the elementwise pass per plane. Up to kMaxWideLanes lanes, so that the chunks'
//     partials stay small and there are chunks for every core.
//   * instance statistics, and small planes with too many lanes: by group
//     (forward_nchw_groups / backward_nchw_groups): a task reduces a group's
//     planes and runs the elementwise pass while they are still in L2.
// Measured on a 2-core Zen 5 VM (issue 15): a group's strided runs read
// memory at ~16-19 GB/s where passes in memory order reach the copy
// bandwidth; at (64, 64, 32, 32) the backward took 5.0 ms by groups and 3.6 ms
// in memory order, with cold caches.
constexpr int64_t kSequentialPlaneElems = 256;
constexpr int64_t kMaxWideLanes = kMaxPartialElems / 4;
inline bool nchw_wide_rows(const Shape& s) {
  return !s.channels_last && !s.per_sample && s.HW < kSequentialPlaneElems && s.C * s.HW <= kMaxWideLanes;
}
inline bool nchw_by_groups(const Shape& s) {
  return !s.channels_last && (s.per_sample || (s.HW < kSequentialPlaneElems && !nchw_wide_rows(s)));
}
// The NCHW tensor as N channels_last rows of C*HW lanes.
inline Shape wide_shape(const Shape& s) { return Shape{1, s.C * s.HW, s.N, true, false}; }

// Per-lane values of a wide shape from per-channel ones: each repeated HW times.
template <typename O>
std::vector<O> repeat_lanes(const O* v, int64_t C, int64_t HW) {
  std::vector<O> out(C * HW);
  for (int64_t c = 0; c < C; ++c) std::fill(out.begin() + c * HW, out.begin() + (c + 1) * HW, v[c]);
  return out;
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
  const Shape s{N, C, HW, fmt == at::MemoryFormat::ChannelsLast, per_sample};

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
    } else if (!s.channels_last && nchw_by_groups(s)) {
      dispatch_activation(activation, [&](auto act) {
        forward_nchw_groups<scalar_t, O, decltype(act)::value>(
            input.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
            Groups{N, C, HW, per_sample}, gamma.data(), beta.data(), static_cast<O>(eps),
            static_cast<O>(negative_slope), mean, var, invstd);
      });
      return;
    } else if (nchw_wide_rows(s)) {
      // Per-lane (c, hw) mean and M2 over the N samples, merged per channel.
      const Shape ws = wide_shape(s);
      std::vector<O> lm(ws.C), lq(ws.C);
      channels_last_stats<scalar_t, O>(input.const_data_ptr<scalar_t>(), ws, lm.data(), lq.data());
      for (int64_t c = 0; c < C; ++c) {
        O n = 0, mu = 0, q = 0;
        for (int64_t i = 0; i < HW; ++i) chan_merge<O>(n, mu, q, static_cast<O>(N), lm[c * HW + i], lq[c * HW + i]);
        mean[c] = mu;
        var[c] = q / static_cast<O>(N * HW);
      }
    } else if (!s.channels_last) {
      nchw_batch_stats<scalar_t, O>(input.const_data_ptr<scalar_t>(), s, mean, var);
      for (int64_t c = 0; c < C; ++c) var[c] /= static_cast<O>(s.segment_rows());
    } else {
      channels_last_stats<scalar_t, O>(input.const_data_ptr<scalar_t>(), s, mean, var);
      for (int64_t g = 0; g < G; ++g) var[g] /= static_cast<O>(s.segment_rows());
    }
    for (int64_t g = 0; g < G; ++g) invstd[g] = O(1) / std::sqrt(var[g] + static_cast<O>(eps));
    if (input.numel() == 0) return;

    // y = act(x * scale + shift) per group (G = s.segments() * C entries).
    std::vector<O> scale(G), shift(G);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t c = g % C;
      scale[g] = gamma[c] * invstd[g];
      shift[g] = beta[c] - mean[g] * scale[g];
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

// Memory order (channels_last, NCHW batch statistics): a reduction pass, then
// one elementwise pass, with per-group coefficients (s.segments() * C).
template <typename scalar_t, typename O>
void backward_two_pass(const BackwardArgs<scalar_t, O>& a, const Shape& s, O* gw, O* gb) {
  const int64_t C = s.C, G = s.segments() * C;
  BackwardCoefs<O> cf;
  for (auto* v : {&cf.k, &cf.a, &cf.b, &cf.kshift, &cf.center}) v->resize(G);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t c = g % C;
    cf.k[g] = a.gamma[c] * a.invstd[g];
    cf.kshift[g] = a.beta[c] - a.mean[g] * cf.k[g];
    cf.center[g] = a.saved_is_output ? a.beta[c] : a.mean[g];
  }
  // Small NCHW planes are reduced as wide rows (nchw_wide_rows): the reduction
  // sees E lanes per group, with the group's coefficients repeated.
  const bool wide = nchw_wide_rows(s);
  const Shape ks = wide ? wide_shape(s) : s;
  const int64_t E = wide ? s.HW : 1;
  BackwardCoefs<O> wcf;
  const BackwardCoefs<O>* kcf = &cf;
  if (wide) {
    wcf.k = repeat_lanes(cf.k.data(), G, E);
    wcf.kshift = repeat_lanes(cf.kshift.data(), G, E);
    wcf.center = repeat_lanes(cf.center.data(), G, E);
    kcf = &wcf;
  }
  std::vector<O> ldz(G * E), ldzu(G * E);
  dispatch_backward(a.activation, a.saved_is_output, [&](auto act, auto saved_out) {
    backward_reduce<scalar_t, O, decltype(act)::value, decltype(saved_out)::value>(
        a.dy, a.sv, ks, *kcf, a.slope, ldz.data(), ldzu.data());
  });
  // Per group: sum(dz * xhat), xhat = (x - mean) * invstd or (z - beta) / gamma;
  // then grad_weight/grad_bias, and with batch statistics the gradient through
  // them as dx's a and b coefficients.
  const O M = static_cast<O>(s.segment_rows());
  for (int64_t g = 0; g < G; ++g) {
    const int64_t c = g % C;
    O sdz = 0, sdzu = 0;
    for (int64_t e = 0; e < E; ++e) {
      sdz += ldz[g * E + e];
      sdzu += ldzu[g * E + e];
    }
    const O sdzx = a.saved_is_output ? sdzu / a.gamma[c] : sdzu * a.invstd[g];
    gw[c] += sdzx;
    gb[c] += sdz;
    if (!a.use_input_stats) continue;
    const O k = cf.k[g];
    cf.a[g] = a.saved_is_output ? -k * sdzx / (M * a.gamma[c]) : -k * a.invstd[g] * sdzx / M;
    cf.b[g] = -k * sdz / M - cf.a[g] * (a.saved_is_output ? a.beta[c] : a.mean[g]);
  }
  // The elementwise pass in the tensor's own layout: per NCHW plane, the
  // coefficients are one broadcast value, not a row of repeated lanes.
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
  const Shape s{N, C, HW, fmt == at::MemoryFormat::ChannelsLast, per_sample};
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
    if (s.channels_last || !nchw_by_groups(s)) {
      backward_two_pass(args, s, gw, gb);
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
