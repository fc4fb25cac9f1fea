// CUDA kernels of minibatch_discrimination and its backward.
// Semantics: gan_ext/ops/minibatch_discrimination.py (the twin).
//
// One thread per row (i, b): blockIdx.y walks the kernels b, the block's
// threads consecutive samples i. A thread loops over every j != i in order
// (deterministic sums in the compute type); the threads of a warp read the
// same M[j, b, :] at the same time (one broadcast transaction), and keep
// their own M[i, b, c0:c0+8] in registers. For C > 8 the distance is read
// from memory and the backward makes one pass over j per chunk of 8
// coordinates (its accumulators live in registers), recomputing c(i, j):
// minibatch discrimination uses C of 3 to 5 (Salimans et al.: 5).
// Nothing is saved between the passes: c(i, j) is recomputed from M.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/device_common.cuh"
#include "ops/minibatch_discrimination/checks.h"

namespace gan_ext {
namespace {

constexpr int kRowThreads = 128;  // rows i per block: small batches (64) waste less
constexpr int kRegC = 8;          // coordinates held in registers per pass
constexpr index_t kMaxGridY = 65535;

template <typename A>
__device__ __forceinline__ A times_sign(A w, A diff) {
  // torch's abs backward: a tie gives w * 0 (NaN for a NaN w).
  return w * (diff == A(0) ? A(0) : copysign(A(1), diff));
}

// |M[i, b, :] - M[j, b, :]|_1; xi holds M[i, b, 0:kRegC] when C <= kRegC.
template <typename T, typename A>
__device__ __forceinline__ A distance(const A* xi, const T* __restrict__ mi,
                                      const T* __restrict__ mj, index_t C) {
  A d = A(0);
  if (C <= kRegC) {
#pragma unroll
    for (int c = 0; c < kRegC; ++c) {
      if (c < C) d += fabs(xi[c] - static_cast<A>(mj[c]));
    }
  } else {
    for (index_t c = 0; c < C; ++c) d += fabs(static_cast<A>(mi[c]) - static_cast<A>(mj[c]));
  }
  return d;
}

template <typename T, typename A>
__device__ __forceinline__ void load_chunk(A* xi, const T* __restrict__ mi, index_t c0, index_t C) {
#pragma unroll
  for (int k = 0; k < kRegC; ++k) xi[k] = c0 + k < C ? static_cast<A>(mi[c0 + k]) : A(0);
}

template <typename T>
__global__ void mbd_forward_kernel(const T* __restrict__ m, T* __restrict__ out, index_t N,
                                   index_t B, index_t C) {
  using A = acc_type<T>;
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  for (index_t b = blockIdx.y; b < B; b += gridDim.y) {
    const T* mi = m + (i * B + b) * C;
    A xi[kRegC];
    load_chunk(xi, mi, 0, C);
    A s = A(0);
    for (index_t j = 0; j < N; ++j) {
      if (j == i) continue;
      s += exp(-distance(xi, mi, m + (j * B + b) * C, C));
    }
    out[i * B + b] = static_cast<T>(s);
  }
}

template <typename T>
__global__ void mbd_backward_kernel(const T* __restrict__ m, const T* __restrict__ g,
                                    T* __restrict__ grad_m, index_t N, index_t B, index_t C) {
  using A = acc_type<T>;
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  for (index_t b = blockIdx.y; b < B; b += gridDim.y) {
    const T* mi = m + (i * B + b) * C;
    const A gi = static_cast<A>(g[i * B + b]);
    A x0[kRegC];  // the first chunk, for the distance when C <= kRegC
    load_chunk(x0, mi, 0, C);
    for (index_t c0 = 0; c0 < C; c0 += kRegC) {
      A xc[kRegC], acc[kRegC];
      load_chunk(xc, mi, c0, C);
#pragma unroll
      for (int k = 0; k < kRegC; ++k) acc[k] = A(0);
      for (index_t j = 0; j < N; ++j) {
        if (j == i) continue;
        const T* mj = m + (j * B + b) * C;
        const A w = (gi + static_cast<A>(g[j * B + b])) * exp(-distance(x0, mi, mj, C));
#pragma unroll
        for (int k = 0; k < kRegC; ++k) {
          if (c0 + k < C) acc[k] += times_sign(w, xc[k] - static_cast<A>(mj[c0 + k]));
        }
      }
#pragma unroll
      for (int k = 0; k < kRegC; ++k) {
        if (c0 + k < C) grad_m[(i * B + b) * C + c0 + k] = static_cast<T>(-acc[k]);
      }
    }
  }
}

dim3 row_grid(index_t N, index_t B) {
  return dim3(static_cast<unsigned>(ceil_div(N, kRowThreads)),
              static_cast<unsigned>(std::min(B, kMaxGridY)));
}

at::Tensor minibatch_discrimination_cuda(const at::Tensor& M) {
  check_minibatch_discrimination_args(M);
  check_cuda(M, "M");
  c10::cuda::CUDAGuard guard(M.device());
  const at::Tensor m = M.contiguous();
  const index_t N = m.size(0), B = m.size(1), C = m.size(2);
  at::Tensor out = at::empty({N, B}, m.options());
  if (N == 0 || B == 0) return out;
  TORCH_CHECK_VALUE(ceil_div(N, kRowThreads) <= std::numeric_limits<int>::max(),
                    "M has too many samples for the CUDA kernel: N = ", N);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(),
                                  "gan_ext::minibatch_discrimination", [&] {
    mbd_forward_kernel<scalar_t><<<row_grid(N, B), kRowThreads, 0,
                                   at::cuda::getCurrentCUDAStream()>>>(
        m.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), N, B, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor minibatch_discrimination_backward_cuda(const at::Tensor& grad, const at::Tensor& M) {
  check_minibatch_discrimination_grad(grad, M);
  check_cuda(M, "M");
  c10::cuda::CUDAGuard guard(M.device());
  const at::Tensor m = M.contiguous();
  const index_t N = m.size(0), B = m.size(1), C = m.size(2);
  at::Tensor grad_m = at::empty(m.sizes(), m.options());
  if (m.numel() == 0) return grad_m;
  TORCH_CHECK_VALUE(ceil_div(N, kRowThreads) <= std::numeric_limits<int>::max(),
                    "M has too many samples for the CUDA kernel: N = ", N);
  const at::Tensor g = grad.to(m.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(),
                                  "gan_ext::minibatch_discrimination_backward", [&] {
    mbd_backward_kernel<scalar_t><<<row_grid(N, B), kRowThreads, 0,
                                    at::cuda::getCurrentCUDAStream()>>>(
        m.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        grad_m.mutable_data_ptr<scalar_t>(), N, B, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_m;
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("minibatch_discrimination", &minibatch_discrimination_cuda);
  m.impl("minibatch_discrimination_backward", &minibatch_discrimination_backward_cuda);
}

}  // namespace gan_ext
