// CPU kernels of minibatch_discrimination and its backward.
//
// M (N, B, C) is first copied into a (B, C, N) buffer in the compute type
// (float for bfloat16/half): for a kernel b the N values of one coordinate
// are then contiguous, and the pair loops run over j in vector lanes with
// M[i, b, c] broadcast. C (5 in Salimans et al.) would fill a vector poorly;
// N is the long dimension. The copy costs N*B*C, the pair loops N^2*B*C.
//
// Each pair term exp(-||M[i, b] - M[j, b]||_1) is symmetric, so it is
// computed once, for j > i: row i's loop adds it to row i's total (a vector
// accumulator) and to j's column total (a buffer, load-add-store per vector).
// The backward does the same with the antisymmetric sign term, and folds the
// distance, exp and sign passes into one sweep of the pair triangle. For few
// kernels the triangle of a kernel is cut into K blocks of rows holding
// about equal numbers of pairs, each with its own column buffer; the
// outputs are then the row total plus the K column totals in block order.
// K and the blocks follow from the shape alone, so results do not depend on
// the thread count.
//
// NaN: a NaN in M[j, b, :] makes every distance to it NaN, hence o[i, b] for
// every i != j. The float exp of the AVX2/AVX-512 variants clamps its argument
// with max(), which drops a NaN, so the NaN is put back afterwards.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/cpu_capability.h"
#include "common/fast_math.h"
#include "common/vec_io.h"
#include "ops/minibatch_discrimination/checks.h"

namespace gan_ext {
namespace {

// exp(-d) for d >= 0 (or NaN).
template <typename O>
inline Vectorized<O> exp_neg(const Vectorized<O>& d) {
  const Vectorized<O> x = Vectorized<O>(O(0)) - d;
#if defined(GAN_EXT_AVX2_INTRINSICS)
  if constexpr (std::is_same_v<O, float>) {
#if defined(CPU_CAPABILITY_AVX512)
    const Vectorized<float> e(fastmath::exp_nonpos(static_cast<__m512>(x)));
#else
    const Vectorized<float> e(fastmath::exp_nonpos(static_cast<__m256>(x)));
#endif
    return Vectorized<float>::blendv(e, x, x.isnan());
  }
#endif
  return x.exp();
}

// w * sign(diff) as torch's abs backward has it: a tie gives w * 0 (NaN for
// a NaN w), a NaN diff gives NaN (w is NaN then too: the diff is in its distance).
template <typename O>
inline Vectorized<O> times_sign(const Vectorized<O>& w, const Vectorized<O>& diff) {
  using V = Vectorized<O>;
  const V zero(O(0));
  const V sign = V::blendv(V(O(1)) | (diff & V(O(-0.0))), zero, diff == zero);
  return w * sign;
}

template <typename O>
inline O times_sign(O w, O diff) {
  return w * (diff == O(0) ? O(0) : std::copysign(O(1), diff));
}

template <typename O>
inline O distance(const O* x, int64_t N, int64_t C, int64_t i, int64_t j) {
  O d(0);
  for (int64_t c = 0; c < C; ++c) d += std::abs(x[c * N + i] - x[c * N + j]);
  return d;
}

// C vectors: a std::array for a compile-time C (CC > 0), which the compiler
// keeps in registers; a std::vector for any other C (CC = 0).
template <typename O, int64_t CC>
struct Lanes {
  std::array<Vectorized<O>, CC> v;
  explicit Lanes(int64_t) {}
  Vectorized<O>& operator[](int64_t c) { return v[c]; }
};

template <typename O>
struct Lanes<O, 0> {
  std::vector<Vectorized<O>> v;
  explicit Lanes(int64_t C) : v(C) {}
  Vectorized<O>& operator[](int64_t c) { return v[c]; }
};

// The triangle of a kernel's pairs (i, j > i) in K blocks of rows with
// about equal numbers of pairs: rows [start[k], start[k + 1]) form block k.
// K = ceil(64 / B) (at least 64 tasks in all), at most N / 32.
struct Blocks {
  int64_t K;
  std::vector<int64_t> start;
  explicit Blocks(int64_t N, int64_t B) {
    K = std::clamp<int64_t>((64 + B - 1) / std::max<int64_t>(B, 1), 1,
                            std::max<int64_t>(1, N / 32));
    start.assign(K + 1, N);
    start[0] = 0;
    const int64_t total = N * (N - 1) / 2;
    int64_t k = 1, pairs = 0;
    for (int64_t i = 0; i < N && k < K; ++i) {
      pairs += N - 1 - i;
      while (k < K && pairs * K >= k * total) start[k++] = i + 1;
    }
  }
};

// (B, C, N) in the compute type.
at::Tensor kernel_major(const at::Tensor& M) {
  return M.to(at::toOpMathType(M.scalar_type())).permute({1, 2, 0}).contiguous();
}

// The forward's pair sums of x (B, C, N): row[b, i] over row i's pairs
// (j > i), col[b, k, j] over j's pairs with the rows of block k.
template <typename O, int64_t CC>
void forward_pairs(const at::Tensor& xt, const Blocks& blocks, O* row, O* cols) {
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  const int64_t B = xt.size(0), C = CC > 0 ? CC : xt.size(1), N = xt.size(2), K = blocks.K;
  const O* x = xt.const_data_ptr<O>();
  at::parallel_for(0, B * K, 1, [&](int64_t t0, int64_t t1) {
    Lanes<O, CC> xi(C);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / K, k = t % K;
      const O* xb = x + b * C * N;
      O* col = cols + t * N;
      for (int64_t i = blocks.start[k]; i < blocks.start[k + 1]; ++i) {
        for (int64_t c = 0; c < C; ++c) xi[c] = V(xb[c * N + i]);
        V acc(O(0));
        int64_t j = i + 1;
        for (; j + W <= N; j += W) {
          V d(O(0));
          for (int64_t c = 0; c < C; ++c) d = d + (xi[c] - V::loadu(xb + c * N + j)).abs();
          const V e = exp_neg(d);
          acc = acc + e;
          (V::loadu(col + j) + e).store(col + j);
        }
        O s = vsum(acc);
        for (; j < N; ++j) {
          const O e = std::exp(-distance(xb, N, C, i, j));
          s += e;
          col[j] += e;
        }
        row[b * N + i] = s;
      }
    }
  });
}

// The backward's pair sums: dM[i, b, c] = -sum over j != i of
// (g_i + g_j) exp(-d_ij) sign(M[i, b, c] - M[j, b, c]); a pair adds
// w * sign to row i's sum (row[b, c, i]) and subtracts it from j's
// (col[b, k, c, j]), so distance, exp and sign take one sweep.
template <typename O, int64_t CC>
void backward_pairs(const at::Tensor& xt, const O* g, const Blocks& blocks, O* row, O* cols) {
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  const int64_t B = xt.size(0), C = CC > 0 ? CC : xt.size(1), N = xt.size(2), K = blocks.K;
  const O* x = xt.const_data_ptr<O>();
  at::parallel_for(0, B * K, 1, [&](int64_t t0, int64_t t1) {
    Lanes<O, CC> xi(C), diff(C), acc(C);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / K, k = t % K;
      const O* xb = x + b * C * N;
      const O* gb = g + b * N;
      O* col = cols + t * C * N;
      for (int64_t i = blocks.start[k]; i < blocks.start[k + 1]; ++i) {
        for (int64_t c = 0; c < C; ++c) {
          xi[c] = V(xb[c * N + i]);
          acc[c] = V(O(0));
        }
        const V gi(gb[i]);
        int64_t j = i + 1;
        for (; j + W <= N; j += W) {
          V d(O(0));
          for (int64_t c = 0; c < C; ++c) {
            diff[c] = xi[c] - V::loadu(xb + c * N + j);
            d = d + diff[c].abs();
          }
          const V w = (gi + V::loadu(gb + j)) * exp_neg(d);
          for (int64_t c = 0; c < C; ++c) {
            const V s = times_sign(w, diff[c]);
            acc[c] = acc[c] + s;
            (V::loadu(col + c * N + j) - s).store(col + c * N + j);
          }
        }
        for (int64_t c = 0; c < C; ++c) row[(b * C + c) * N + i] = vsum(acc[c]);
        for (; j < N; ++j) {
          const O w = (gb[i] + gb[j]) * std::exp(-distance(xb, N, C, i, j));
          for (int64_t c = 0; c < C; ++c) {
            const O s = times_sign(w, xb[c * N + i] - xb[c * N + j]);
            row[(b * C + c) * N + i] += s;
            col[c * N + j] -= s;
          }
        }
      }
    }
  });
}

// row + cols[:, 0] + ... + cols[:, K - 1], in block order: the same sums
// whichever thread computed which block. row (B, ...), cols (B, K, ...).
at::Tensor merge_blocks(const at::Tensor& row, const at::Tensor& cols) {
  at::Tensor total = row.add(cols.select(1, 0));
  for (int64_t k = 1; k < cols.size(1); ++k) total.add_(cols.select(1, k));
  return total;
}

// f.template operator()<CC>() with CC = C for the usual kernel dimensions
// (1-8; improved-gan's is 5), else CC = 0 (runtime C).
template <typename F>
void with_kernel_dim(int64_t C, const F& f) {
  switch (C) {
    case 1: return f(std::integral_constant<int64_t, 1>{});
    case 2: return f(std::integral_constant<int64_t, 2>{});
    case 3: return f(std::integral_constant<int64_t, 3>{});
    case 4: return f(std::integral_constant<int64_t, 4>{});
    case 5: return f(std::integral_constant<int64_t, 5>{});
    case 6: return f(std::integral_constant<int64_t, 6>{});
    case 8: return f(std::integral_constant<int64_t, 8>{});
    default: return f(std::integral_constant<int64_t, 0>{});
  }
}

at::Tensor minibatch_discrimination_cpu(const at::Tensor& M) {
  check_minibatch_discrimination_args(M);
  const int64_t N = M.size(0), B = M.size(1), C = M.size(2);
  at::Tensor out = at::empty({N, B}, M.options());
  if (N == 0 || B == 0) return out;
  const at::Tensor xt = kernel_major(M);
  const Blocks blocks(N, B);
  const int64_t K = blocks.K;
  at::Tensor row_t = at::empty({B, N}, xt.options());
  at::Tensor col_t = at::zeros({B, K, N}, xt.options());
  AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "gan_ext_minibatch_discrimination_pairs", [&] {
    with_kernel_dim(C, [&](auto cc) {
      forward_pairs<scalar_t, decltype(cc)::value>(xt, blocks, row_t.mutable_data_ptr<scalar_t>(),
                                                   col_t.mutable_data_ptr<scalar_t>());
    });
  });
  // o[i, b] = row[b, i] + col[b, 0, i] + ... + col[b, K - 1, i].
  out.copy_(merge_blocks(row_t, col_t).t());
  return out;
}

at::Tensor minibatch_discrimination_backward_cpu(const at::Tensor& grad, const at::Tensor& M) {
  check_minibatch_discrimination_grad(grad, M);
  const int64_t N = M.size(0), B = M.size(1), C = M.size(2);
  at::Tensor grad_m = at::empty(M.sizes(), M.options());
  if (M.numel() == 0) return grad_m;
  const at::Tensor xt = kernel_major(M);
  const at::Tensor gt = grad.to(xt.scalar_type()).t().contiguous();  // (B, N)
  const Blocks blocks(N, B);
  const int64_t K = blocks.K;
  at::Tensor row_t = at::empty({B, C, N}, xt.options());
  at::Tensor col_t = at::zeros({B, K, C, N}, xt.options());
  AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "gan_ext_minibatch_discrimination_backward_pairs", [&] {
    with_kernel_dim(C, [&](auto cc) {
      backward_pairs<scalar_t, decltype(cc)::value>(xt, gt.const_data_ptr<scalar_t>(), blocks,
                                                    row_t.mutable_data_ptr<scalar_t>(),
                                                    col_t.mutable_data_ptr<scalar_t>());
    });
  });
  // dM[i, b, c] = -(row[b, c, i] + col[b, 0, c, i] + ... + col[b, K - 1, c, i]).
  grad_m.copy_(merge_blocks(row_t, col_t).neg_().permute({2, 0, 1}));
  return grad_m;
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("minibatch_discrimination", &minibatch_discrimination_cpu);
  m.impl("minibatch_discrimination_backward", &minibatch_discrimination_backward_cpu);
}

}  // namespace gan_ext
