// CPU kernels of minibatch_discrimination and its backward.
//
// M (N, B, C) is first copied into a (B, C, N) buffer in the compute type
// (float for bfloat16/half): for a kernel b the N values of one coordinate
// are then contiguous, and the pair loops run over j in vector lanes with
// M[i, b, c] broadcast. C (5 in Salimans et al.) would fill a vector poorly;
// N is the long dimension. The copy costs N*B*C, the pair loops N^2*B*C.
//
// Work is split into rows (b, i), b-major so that a task's rows share one
// C x N block in cache; each row is written by one task and summed in a
// fixed order, so results do not depend on the thread count. The pair term
// is symmetric, but each row computes all of its N - 1 pairs: halving the
// work would make rows share sums across tasks.
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
#include <torch/library.h>

#include <algorithm>
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

// Distance of row i to rows j..j+W-1 of one kernel (x: its C x N block).
template <typename O>
inline Vectorized<O> distances(const O* x, int64_t N, int64_t C, int64_t i, int64_t j) {
  Vectorized<O> d(O(0));
  for (int64_t c = 0; c < C; ++c) {
    d = d + (Vectorized<O>(x[c * N + i]) - Vectorized<O>::loadu(x + c * N + j)).abs();
  }
  return d;
}

template <typename O>
inline O distance(const O* x, int64_t N, int64_t C, int64_t i, int64_t j) {
  O d(0);
  for (int64_t c = 0; c < C; ++c) d += std::abs(x[c * N + i] - x[c * N + j]);
  return d;
}

template <typename O>
inline Vectorized<O> without_lane(const Vectorized<O>& v, int64_t lane) {
  alignas(64) O buf[Vectorized<O>::size()];
  v.store(buf);
  buf[lane] = O(0);
  return Vectorized<O>::loadu(buf);
}

// Rows per task: about 64K pair-coordinate terms each.
inline int64_t row_grain(int64_t N, int64_t C) { return std::max<int64_t>(1, 65536 / (N * (C + 1))); }

// (B, C, N) in the compute type.
at::Tensor kernel_major(const at::Tensor& M) {
  return M.to(at::toOpMathType(M.scalar_type())).permute({1, 2, 0}).contiguous();
}

template <typename T>
void forward_rows(const at::Tensor& xt, at::Tensor& out) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  const int64_t B = xt.size(0), C = xt.size(1), N = xt.size(2);
  const O* x = xt.const_data_ptr<O>();
  T* o = out.mutable_data_ptr<T>();
  at::parallel_for(0, B * N, row_grain(N, C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / N, i = r % N;
      const O* xb = x + b * C * N;
      V acc(O(0));
      int64_t j = 0;
      for (; j + W <= N; j += W) {
        V e = exp_neg(distances(xb, N, C, i, j));
        if (i >= j && i < j + W) e = without_lane(e, i - j);
        acc = acc + e;
      }
      O s = vsum(acc);
      for (; j < N; ++j) {
        if (j != i) s += std::exp(-distance(xb, N, C, i, j));
      }
      o[i * B + b] = static_cast<T>(s);
    }
  });
}

template <typename T>
void backward_rows(const at::Tensor& xt, const at::Tensor& gt, at::Tensor& grad_m) {
  using O = at::opmath_type<T>;
  using V = Vectorized<O>;
  constexpr int64_t W = V::size();
  const int64_t B = xt.size(0), C = xt.size(1), N = xt.size(2);
  const O* x = xt.const_data_ptr<O>();
  const O* g = gt.const_data_ptr<O>();
  T* out = grad_m.mutable_data_ptr<T>();
  at::parallel_for(0, B * N, row_grain(N, C), [&](int64_t r0, int64_t r1) {
    std::vector<O> w(N);  // (g_i + g_j) * c(i, j) of the row, 0 at j = i
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / N, i = r % N;
      const O* xb = x + b * C * N;
      const O* gb = g + b * N;
      const V gi(gb[i]);
      int64_t j = 0;
      for (; j + W <= N; j += W) {
        ((gi + V::loadu(gb + j)) * exp_neg(distances(xb, N, C, i, j))).store(w.data() + j);
      }
      for (; j < N; ++j) w[j] = (gb[i] + gb[j]) * std::exp(-distance(xb, N, C, i, j));
      w[i] = O(0);
      for (int64_t c = 0; c < C; ++c) {
        const O* xc = xb + c * N;
        const V xi(xc[i]);
        V acc(O(0));
        for (j = 0; j + W <= N; j += W) {
          acc = acc + times_sign(V::loadu(w.data() + j), xi - V::loadu(xc + j));
        }
        O s = vsum(acc);
        for (; j < N; ++j) s += times_sign(w[j], xc[i] - xc[j]);
        out[(i * B + b) * C + c] = static_cast<T>(-s);
      }
    }
  });
}

at::Tensor minibatch_discrimination_cpu(const at::Tensor& M) {
  check_minibatch_discrimination_args(M);
  const int64_t N = M.size(0), B = M.size(1);
  at::Tensor out = at::empty({N, B}, M.options());
  if (N == 0 || B == 0) return out;
  const at::Tensor xt = kernel_major(M);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, M.scalar_type(),
                                  "gan_ext_minibatch_discrimination", [&] {
    forward_rows<scalar_t>(xt, out);
  });
  return out;
}

at::Tensor minibatch_discrimination_backward_cpu(const at::Tensor& grad, const at::Tensor& M) {
  check_minibatch_discrimination_grad(grad, M);
  at::Tensor grad_m = at::empty(M.sizes(), M.options());
  if (M.numel() == 0) return grad_m;
  const at::Tensor xt = kernel_major(M);
  const at::Tensor gt = grad.to(xt.scalar_type()).t().contiguous();  // (B, N)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, M.scalar_type(),
                                  "gan_ext_minibatch_discrimination_backward", [&] {
    backward_rows<scalar_t>(xt, gt, grad_m);
  });
  return grad_m;
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("minibatch_discrimination", &minibatch_discrimination_cpu);
  m.impl("minibatch_discrimination_backward", &minibatch_discrimination_backward_cpu);
}

}  // namespace gan_ext
