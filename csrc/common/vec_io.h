// Vector loads/stores shared by the CPU kernels: any storage type T read into
// (or written from) an at::vec::Vectorized of the compute type O, with a
// partial count for tails.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

namespace gan_ext {
namespace {

using at::vec::Vectorized;

// Loads `n` values of T as a vector of O (missing lanes are zero).
template <typename T, typename O>
inline Vectorized<O> vload(const T* p, int64_t n = Vectorized<O>::size()) {
  constexpr int64_t V = Vectorized<O>::size();
  if constexpr (std::is_same_v<T, O>) {
    return n == V ? Vectorized<O>::loadu(p) : Vectorized<O>::loadu(p, n);
  } else if constexpr (std::is_same_v<O, float> && at::vec::is_reduced_floating_point_v<T>) {
    // bfloat16 / half: ATen's widening load (vector instructions in the AVX2
    // and AVX-512 variants) for a full vector, the element loop for a tail.
    if (n == V) {
      Vectorized<float> out;
      at::vec::load_to_float<T>(p, out);
      return out;
    }
    alignas(64) O buf[V];
    for (int64_t i = 0; i < V; ++i) buf[i] = i < n ? static_cast<O>(p[i]) : O(0);
    return Vectorized<O>::loadu(buf);
  } else {
    alignas(64) O buf[V];
    for (int64_t i = 0; i < V; ++i) buf[i] = i < n ? static_cast<O>(p[i]) : O(0);
    return Vectorized<O>::loadu(buf);
  }
}

template <typename T, typename O>
inline void vstore(T* p, const Vectorized<O>& v, int64_t n = Vectorized<O>::size()) {
  constexpr int64_t V = Vectorized<O>::size();
  if constexpr (std::is_same_v<T, O>) {
    if (n == V) {
      v.store(p);
    } else {
      v.store(p, n);
    }
  } else if constexpr (std::is_same_v<O, float> && at::vec::is_reduced_floating_point_v<T>) {
    // Rounded to nearest even (NaN stays NaN), as the element loop's cast.
    at::vec::convert_from_float<T>(v, v).store(p, static_cast<int>(n));
  } else {
    alignas(64) O buf[V];
    v.store(buf);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(buf[i]);
  }
}

template <typename O>
inline O vsum(const Vectorized<O>& v) {
  constexpr int64_t V = Vectorized<O>::size();
  alignas(64) O buf[V];
  v.store(buf);
  O s = 0;
  for (int64_t i = 0; i < V; ++i) s += buf[i];
  return s;
}

}  // namespace
}  // namespace gan_ext
