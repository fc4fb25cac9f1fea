// CUDA kernel of scale_loss_grads, the backward of the *_with_grad losses:
// two saved gradients times the 0-dim grad_output, read on the device (no
// host sync, so CUDA-graph safe), in one elementwise launch.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>

#include "common/device_common.cuh"
#include "common/loss_reduce.cuh"
#include "ops/scale_loss_grads/checks.h"

namespace gan_ext {
namespace {

// ------------------------------------------------- scale_loss_grads
// One saved gradient of a scale_loss_grads launch, with the blocks given to it.
template <typename scalar_t>
struct ScaleSegment {
  const scalar_t* in;
  scalar_t* out;
  index_t n;
  index_t blocks;  // 0 when absent or empty
};

// out = in * grad over up to two segments (blocks [0, s0.blocks) scale segment
// 0), each product in opmath as at::mul computes it.
template <typename scalar_t, bool Aligned>
__global__ void __launch_bounds__(kThreads)
    scale_grads_kernel(const ScaleSegment<scalar_t> s0, const ScaleSegment<scalar_t> s1,
                       const scalar_t* __restrict__ grad) {
  using acc_t = acc_type<scalar_t>;
  constexpr int VEC = vec_size<scalar_t>();
  const bool first = static_cast<index_t>(blockIdx.x) < s0.blocks;
  const ScaleSegment<scalar_t> s = first ? s0 : s1;
  const index_t block = first ? static_cast<index_t>(blockIdx.x)
                              : static_cast<index_t>(blockIdx.x) - s0.blocks;
  const acc_t g = static_cast<acc_t>(grad[0]);
  const index_t nvec = s.n / VEC;
  const index_t tid = block * kThreads + threadIdx.x;
  const index_t stride = s.blocks * kThreads;
  for (index_t v = tid; v < nvec; v += stride) {
    const index_t e = v * VEC;
    Pack<scalar_t, VEC> p = load_pack<Aligned, VEC>(s.in + e);
#pragma unroll
    for (int i = 0; i < VEC; ++i) p.val[i] = static_cast<scalar_t>(static_cast<acc_t>(p.val[i]) * g);
    store_pack<Aligned, VEC>(s.out + e, p);
  }
  const index_t e = nvec * VEC + tid;  // the last n % VEC elements
  if (e < s.n) s.out[e] = static_cast<scalar_t>(static_cast<acc_t>(s.in[e]) * g);
}

// ------------------------------------------------------ scale_loss_grads
std::tuple<at::Tensor, at::Tensor> scale_loss_grads_cuda(const at::Tensor& grad,
                                                         const c10::optional<at::Tensor>& saved_a,
                                                         const c10::optional<at::Tensor>& saved_b) {
  auto ptr = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? &*t : nullptr;
  };
  const at::Tensor* a = ptr(saved_a);
  const at::Tensor* b = ptr(saved_b);
  check_scale_loss_grads_args(grad, a, b);
  check_cuda(grad, "grad");
  c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor da = a != nullptr ? as_dense(*a) : at::Tensor();
  const at::Tensor db = b != nullptr ? as_dense(*b) : at::Tensor();
  at::Tensor oa = a != nullptr ? at::empty_like(da) : at::empty({0}, grad.options());
  at::Tensor ob = b != nullptr ? at::empty_like(db) : at::empty({0}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gan_ext::scale_loss_grads", [&] {
    constexpr int VEC = vec_size<scalar_t>();
    auto segment = [&](const at::Tensor& in, at::Tensor& out) {
      ScaleSegment<scalar_t> s{nullptr, nullptr, 0, 0};
      if (!in.defined() || in.numel() == 0) return s;
      s.in = in.const_data_ptr<scalar_t>();
      s.out = out.mutable_data_ptr<scalar_t>();
      s.n = in.numel();
      s.blocks = std::clamp<index_t>(ceil_div(s.n / VEC, kThreads), 1, kMaxElementwiseBlocks);
      return s;
    };
    const ScaleSegment<scalar_t> s0 = segment(da, oa), s1 = segment(db, ob);
    const index_t blocks = s0.blocks + s1.blocks;
    if (blocks == 0) return;
    auto stream = at::cuda::getCurrentCUDAStream();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    if (aligned(s0.in) && aligned(s0.out) && aligned(s1.in) && aligned(s1.out)) {
      scale_grads_kernel<scalar_t, true>
          <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, gp);
    } else {
      scale_grads_kernel<scalar_t, false>
          <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(s0, s1, gp);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {oa, ob};
}

}  // namespace

TORCH_LIBRARY_IMPL(gan_ext, CUDA, m) {
  m.impl("scale_loss_grads", &scale_loss_grads_cuda);
}

}  // namespace gan_ext
