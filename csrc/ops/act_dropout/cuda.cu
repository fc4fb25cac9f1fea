// CUDA kernels of act_dropout and act_dropout_backward (ops/act_dropout/dropout.h).
//
// One thread makes one Philox block q at a time (grid-stride) and handles its
// four elements 32 (q / 8) + 8 k + q % 8, k = 0..3: a warp covers four whole
// 32-element groups, so each word k is a coalesced 8-element run. The
// generator's (seed, offset) is unpacked in-kernel (CUDA-graph safe), and the
// forward writes it to the rng tensor for the backward, which reads it from
// device memory: nothing crosses to the host.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxCudaState.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <tuple>

#include "common/device_common.cuh"
#include "ops/act_dropout/dropout.h"
#include "common/philox.h"

namespace gan_ext {
namespace {

constexpr index_t kMaxBlocks = 8192;

// Written so that NaN falls through to x (relu) or x * slope (leaky): NaN in,
// NaN out, as torch.relu and the CPU kernel's vec::maximum.
template <typename acc_t>
__device__ __forceinline__ acc_t activate(acc_t x, int act, acc_t slope) {
  switch (static_cast<Activation>(act)) {
    case Activation::ReLU: return x <= acc_t(0) ? acc_t(0) : x;
    case Activation::LeakyReLU: return x > acc_t(0) ? x : x * slope;
    default: return x;
  }
}

// At out = NaN this is 0 (relu) or slope (leaky), as the CPU kernel's blendv;
// a NaN grad stays NaN through the products (the mask multiplies, it does
// not select).
template <typename acc_t>
__device__ __forceinline__ acc_t act_grad(acc_t out, int act, acc_t slope) {
  switch (static_cast<Activation>(act)) {
    case Activation::ReLU: return out > acc_t(0) ? acc_t(1) : acc_t(0);
    case Activation::LeakyReLU: return out > acc_t(0) ? acc_t(1) : slope;
    default: return acc_t(1);
  }
}

// Calls f(i, mult) for every element i of this thread's Philox blocks
// (grid-stride), mult = keep(i) ? s : 0 with draw, else 1.
template <typename acc_t, typename F>
__device__ __forceinline__ void for_each_element(index_t n, bool draw, uint32_t thr, acc_t s,
                                                 uint64_t seed, uint64_t offset, const F& f) {
  const index_t nq = (n + dropout::kGroup - 1) / dropout::kGroup * 8;
  const index_t stride = static_cast<index_t>(gridDim.x) * kThreads;
  for (index_t q = static_cast<index_t>(blockIdx.x) * kThreads + threadIdx.x; q < nq; q += stride) {
    philox::Block b{{0u, 0u, 0u, 0u}};
    if (draw) b = philox::block_for(static_cast<uint64_t>(q), seed, offset);
    const index_t base = (q / 8) * dropout::kGroup + q % 8;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const index_t i = base + 8 * k;
      if (i < n) f(i, draw ? (dropout::keep(b.x[k], thr) ? s : acc_t(0)) : acc_t(1));
    }
  }
}

// Forward: out = act(x) * mult. Block 0's first thread publishes (seed, offset).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    act_dropout_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, index_t n, int act,
                       double slope_d, bool draw, uint32_t thr, double s_d, at::PhiloxCudaState st,
                       int64_t* __restrict__ rng) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t slope = static_cast<acc_t>(slope_d);
  uint64_t seed = 0, offset = 0;
  if (draw) {
    const auto so = at::cuda::philox::unpack(st);
    seed = std::get<0>(so);
    offset = std::get<1>(so);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      rng[0] = static_cast<int64_t>(seed);
      rng[1] = static_cast<int64_t>(offset);
    }
  }
  for_each_element<acc_t>(n, draw, thr, static_cast<acc_t>(s_d), seed, offset, [&](index_t i, acc_t m) {
    y[i] = static_cast<scalar_t>(activate(static_cast<acc_t>(x[i]), act, slope) * m);
  });
}

// Backward: grad_in = grad * act'(out) * mult, (seed, offset) read from rng.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    act_dropout_backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                                scalar_t* __restrict__ gi, index_t n, int act, double slope_d,
                                bool draw, uint32_t thr, double s_d, const int64_t* __restrict__ rng) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t slope = static_cast<acc_t>(slope_d);
  const uint64_t seed = draw ? static_cast<uint64_t>(rng[0]) : 0;
  const uint64_t offset = draw ? static_cast<uint64_t>(rng[1]) : 0;
  for_each_element<acc_t>(n, draw, thr, static_cast<acc_t>(s_d), seed, offset, [&](index_t i, acc_t m) {
    gi[i] = static_cast<scalar_t>(static_cast<acc_t>(g[i]) * act_grad(static_cast<acc_t>(y[i]), act, slope) * m);
  });
}

int grid_for(index_t n) {
  const index_t nq = (n + dropout::kGroup - 1) / dropout::kGroup * 8;
  return static_cast<int>(std::max<index_t>(1, std::min<index_t>(kMaxBlocks, (nq + kThreads - 1) / kThreads)));
}

std::tuple<at::Tensor, at::Tensor> act_dropout_cuda(const at::Tensor& input_in, int64_t activation,
                                                    double negative_slope, double p,
                                                    const std::optional<at::Generator>& generator) {
  dropout::check_act_dropout_args(input_in, activation, negative_slope, p);
  const c10::cuda::CUDAGuard guard(input_in.device());
  const dropout::Layout lay(input_in, p);
  const at::Tensor& input = lay.src;
  at::Tensor out = lay.result;
  const bool draw = p > 0.0;
  // With draw the kernel writes both values (also for an empty input).
  const auto long_opts = input.options().dtype(at::kLong);
  at::Tensor rng = draw ? at::empty({2}, long_opts) : at::zeros({2}, long_opts);
  at::PhiloxCudaState st;
  if (draw) {
    auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
        generator, at::cuda::detail::getDefaultCUDAGenerator(input.device().index()));
    std::lock_guard<std::mutex> lock(gen->mutex_);
    st = gen->philox_cuda_state(4);  // as reparam.cu and reference.generator_seed_offset
  }
  const index_t n = input.numel();
  // An empty input with p > 0 still launches one block: the generator has
  // advanced, and only the kernel can unpack (seed, offset) into rng (under
  // graph capture the offset lives on the device), as the CPU and twin return.
  if (n == 0 && !draw) return {lay.finish(), rng};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "gan_ext_act_dropout_cuda", [&] {
    act_dropout_kernel<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(
        input.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n,
        static_cast<int>(activation), negative_slope, draw,
        dropout::threshold(p), dropout::scale(p), st, rng.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {lay.finish(), rng};
}

at::Tensor act_dropout_backward_cuda(const at::Tensor& grad_in, const at::Tensor& out_in,
                                     const at::Tensor& rng, int64_t activation, double negative_slope,
                                     double p) {
  dropout::check_act_dropout_args(out_in, activation, negative_slope, p);
  dropout::check_act_dropout_backward_args(grad_in, out_in, rng);
  const c10::cuda::CUDAGuard guard(out_in.device());
  const dropout::Layout lay(out_in, p);
  const at::Tensor& out = lay.src;
  const at::Tensor grad = lay.like_src(grad_in);
  const at::Tensor r = rng.contiguous();
  at::Tensor gin = lay.result;
  const index_t n = out.numel();
  if (n == 0) return lay.finish();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "gan_ext_act_dropout_bwd_cuda", [&] {
    act_dropout_backward_kernel<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
        gin.mutable_data_ptr<scalar_t>(), n, static_cast<int>(activation),
        negative_slope, p > 0.0, dropout::threshold(p), dropout::scale(p),
        r.const_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return lay.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("act_dropout", &act_dropout_cuda);
  m.impl("act_dropout_backward", &act_dropout_backward_cuda);
}

}  // namespace gan_ext
