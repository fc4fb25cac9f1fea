// Device-side building blocks shared by every gan_ext CUDA kernel file: the
// block shape, 16-byte vector packs, double -> dtype conversion and the fixed
// tree reductions. Internal linkage (anonymous namespace), like the kernels.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace gan_ext {
namespace {

using index_t = int64_t;

constexpr int kThreads = 256;  // block size of every kernel
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kVectorBytes = 16;  // one 128-bit load/store

template <typename T>
using acc_type = at::opmath_type<T>;  // float for half/bfloat16/float, double for double

// Elements per 16-byte vector: 4 float, 2 double, 8 half/bfloat16.
template <typename T>
constexpr int vec_size() {
  return kVectorBytes / static_cast<int>(sizeof(T));
}

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// Whether p may be accessed `bytes` at a time (a null pointer, for an absent
// optional tensor, counts as aligned). Host side.
inline bool aligned(const void* p, size_t bytes = kVectorBytes) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
}

// A float32/float64/float16/bfloat16 tensor element (e.g. a 0-dim grad_output),
// read on the device in double without a conversion op on the host.
enum class ScalarKind : int { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

inline ScalarKind scalar_kind(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return ScalarKind::Float;
    case at::kDouble: return ScalarKind::Double;
    case at::kHalf: return ScalarKind::Half;
    case at::kBFloat16: return ScalarKind::BFloat16;
    default:
      TORCH_CHECK_TYPE(false, name, " must be a float32, float64, bfloat16 or float16 tensor, got ",
                       c10::toString(t.scalar_type()));
  }
  return ScalarKind::Float;  // unreachable
}

__device__ __forceinline__ double load_scalar(const void* p, ScalarKind kind, index_t i) {
  switch (kind) {
    case ScalarKind::Float: return static_cast<double>(static_cast<const float*>(p)[i]);
    case ScalarKind::Double: return static_cast<const double*>(p)[i];
    case ScalarKind::Half:
      return static_cast<double>(static_cast<float>(static_cast<const c10::Half*>(p)[i]));
    case ScalarKind::BFloat16:
      return static_cast<double>(static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]));
  }
  return 0.0;
}

// ----------------------------------------------------------------- vectors
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T val[VEC];
};

// Aligned: one 16-byte access; otherwise VEC scalar accesses of the same
// elements (identical values, so identical results).
template <bool Aligned, int VEC, typename T>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  if constexpr (Aligned) {
    return *reinterpret_cast<const Pack<T, VEC>*>(p);
  } else {
    Pack<T, VEC> v;
#pragma unroll
    for (int i = 0; i < VEC; ++i) v.val[i] = p[i];
    return v;
  }
}

template <bool Aligned, int VEC, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& v) {
  if constexpr (Aligned) {
    *reinterpret_cast<Pack<T, VEC>*>(p) = v;
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) p[i] = v.val[i];
  }
}

// double -> dtype the way Tensor.to() does it (through float for the 16-bit types).
template <typename scalar_t>
__device__ __forceinline__ scalar_t from_double(double v) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return v;
  } else {
    return static_cast<scalar_t>(static_cast<float>(v));
  }
}

// ------------------------------------------------------------- reductions
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the kThreads threads of the block in a fixed tree; valid in thread
// 0. Every thread must call it; it can be called again right away.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T sh[kWarps];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  v = warp_sum(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? sh[lane] : T(0);
    v = warp_sum(v);
  }
  __syncthreads();  // sh may be reused by the next call
  return v;
}

}  // namespace
}  // namespace gan_ext
