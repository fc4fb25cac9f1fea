// CPU kernels of act_dropout and act_dropout_backward (ops/act_dropout/dropout.h).
//
// Work goes in chunks of kChunk elements (whole 32-element groups): a chunk
// makes its keep multipliers (0 or 1/(1-p)) from Philox into an L1 buffer,
// then one vector pass reads x (or grad and out) and writes the result. The
// mask depends only on (seed, offset, i), so results do not depend on the
// thread count.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>

#include "ops/act_dropout/dropout.h"
#include "common/philox_cpu.h"
#include "common/vec_io.h"
#include "common/cpu_capability.h"

namespace gan_ext {
namespace {

using at::vec::Vectorized;

constexpr int64_t kChunk = 1024;                 // elements per buffer (32 groups)
constexpr int64_t kBlocks = kChunk / 4;          // Philox blocks per chunk
// ~32k elements per thread at least (at::internal::GRAIN_SIZE): splitting less
// work costs more in thread wake-up than it saves, badly so on a busy machine.
constexpr int64_t kGrainChunks = 32;

// mult[j] = keep(e0 + j) ? s : 0 for j < n; e0 is a multiple of kChunk.
template <typename O>
void keep_mult(int64_t e0, int64_t n, uint64_t seed, uint64_t offset, uint32_t thr, O s, O* mult) {
  alignas(64) uint32_t w[4][kBlocks];
  const int64_t groups = (n + dropout::kGroup - 1) / dropout::kGroup;
  philox_blocks(static_cast<uint64_t>(e0 / 4), 8 * groups, seed, offset, w);
  // Element 32 g + 8 k + lane is word k of block 8 g + lane.
  for (int64_t g = 0; g < groups; ++g) {
    for (int k = 0; k < 4; ++k) {
      const uint32_t* src = &w[k][8 * g];
      O* dst = mult + 32 * g + 8 * k;
      for (int lane = 0; lane < 8; ++lane) dst[lane] = dropout::keep(src[lane], thr) ? s : O(0);
    }
  }
}

template <typename O>
inline Vectorized<O> activate(const Vectorized<O>& x, int64_t act, const Vectorized<O>& slope) {
  const Vectorized<O> zero(O(0));
  switch (static_cast<Activation>(act)) {
    case Activation::ReLU: return at::vec::maximum(x, zero);
    case Activation::LeakyReLU: return Vectorized<O>::blendv(x * slope, x, x > zero);
    default: return x;
  }
}

// d act / d x, read from the output (ops/act_dropout/dropout.h).
template <typename O>
inline Vectorized<O> act_grad(const Vectorized<O>& out, int64_t act, const Vectorized<O>& slope) {
  const Vectorized<O> zero(O(0)), one(O(1));
  switch (static_cast<Activation>(act)) {
    case Activation::ReLU: return Vectorized<O>::blendv(zero, one, out > zero);
    case Activation::LeakyReLU: return Vectorized<O>::blendv(slope, one, out > zero);
    default: return one;
  }
}

struct Rng {
  uint64_t seed = 0, offset = 0;
};

Rng draw_seed(const c10::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  // As ops/reparameterize/cpu.cpp: what Tensor.random_() draws for int64.
  return {gen->random64() & 0x7FFFFFFFFFFFFFFFull, 0};
}

// The shared loop: for each chunk, fill the multipliers (unless p == 0) and
// run body(chunk_begin, n, mult).
template <typename O, typename F>
void for_chunks(int64_t numel, bool draw, const Rng& rng, double p, const F& body) {
  const uint32_t thr = dropout::threshold(p);
  const O s = static_cast<O>(dropout::scale(p));
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, kGrainChunks, [&](int64_t c0, int64_t c1) {
    alignas(64) O mult[kChunk];
    if (!draw) std::fill(mult, mult + kChunk, O(1));
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk, n = std::min(kChunk, numel - b);
      if (draw) keep_mult<O>(b, n, rng.seed, rng.offset, thr, s, mult);
      body(b, n, mult);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> act_dropout_cpu(const at::Tensor& input_in, int64_t activation,
                                                   double negative_slope, double p,
                                                   const c10::optional<at::Generator>& generator) {
  dropout::check_act_dropout_args(input_in, activation, negative_slope, p);
  const dropout::Layout lay(input_in, p);
  const at::Tensor& input = lay.src;
  at::Tensor out = lay.result;
  const bool draw = p > 0.0;
  const auto long_opts = input.options().dtype(at::kLong);
  at::Tensor rng_t = draw ? at::empty({2}, long_opts) : at::zeros({2}, long_opts);
  Rng rng;
  if (draw) {
    rng = draw_seed(generator);
    rng_t.mutable_data_ptr<int64_t>()[0] = static_cast<int64_t>(rng.seed);
    rng_t.mutable_data_ptr<int64_t>()[1] = static_cast<int64_t>(rng.offset);
  }
  const int64_t numel = input.numel();
  if (numel == 0) return {lay.finish(), rng_t};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "gan_ext_act_dropout", [&] {
    using O = at::opmath_type<scalar_t>;
    using V = Vectorized<O>;
    constexpr int64_t W = V::size();
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    const V slope(static_cast<O>(negative_slope));
    for_chunks<O>(numel, draw, rng, p, [&](int64_t b, int64_t n, const O* mult) {
      for (int64_t i = 0; i < n; i += W) {
        const int64_t cnt = std::min<int64_t>(W, n - i);
        const V m = cnt == W ? V::loadu(mult + i) : V::loadu(mult + i, cnt);
        vstore<scalar_t, O>(y + b + i, activate(vload<scalar_t, O>(x + b + i, cnt), activation, slope) * m, cnt);
      }
    });
  });
  return {lay.finish(), rng_t};
}

at::Tensor act_dropout_backward_cpu(const at::Tensor& grad_in, const at::Tensor& out_in,
                                    const at::Tensor& rng_t, int64_t activation,
                                    double negative_slope, double p) {
  dropout::check_act_dropout_args(out_in, activation, negative_slope, p);
  dropout::check_act_dropout_backward_args(grad_in, out_in, rng_t);
  const dropout::Layout lay(out_in, p);
  const at::Tensor& out = lay.src;
  const at::Tensor grad = lay.like_src(grad_in);
  at::Tensor gin = lay.result;
  const at::Tensor r = rng_t.cpu();
  const Rng rng{static_cast<uint64_t>(r.const_data_ptr<int64_t>()[0]),
                static_cast<uint64_t>(r.const_data_ptr<int64_t>()[1])};
  const int64_t numel = out.numel();
  if (numel == 0) return lay.finish();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "gan_ext_act_dropout_bwd", [&] {
    using O = at::opmath_type<scalar_t>;
    using V = Vectorized<O>;
    constexpr int64_t W = V::size();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* y = out.const_data_ptr<scalar_t>();
    scalar_t* gi = gin.mutable_data_ptr<scalar_t>();
    const V slope(static_cast<O>(negative_slope));
    for_chunks<O>(numel, p > 0.0, rng, p, [&](int64_t b, int64_t n, const O* mult) {
      for (int64_t i = 0; i < n; i += W) {
        const int64_t cnt = std::min<int64_t>(W, n - i);
        const V m = cnt == W ? V::loadu(mult + i) : V::loadu(mult + i, cnt);
        const V d = act_grad(vload<scalar_t, O>(y + b + i, cnt), activation, slope);
        vstore<scalar_t, O>(gi + b + i, vload<scalar_t, O>(g + b + i, cnt) * d * m, cnt);
      }
    });
  });
  return lay.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CPU, m) {
  GAN_EXT_REGISTER_IF_SELECTED();
  m.impl("act_dropout", &act_dropout_cpu);
  m.impl("act_dropout_backward", &act_dropout_backward_cpu);
}

}  // namespace gan_ext
