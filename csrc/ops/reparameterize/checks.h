// Shared by the CPU and CUDA kernels of reparameterize / reparameterize_kl /
// reparameterize_backward: argument checks and shapes. Lean includes only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "common/losses.h"

namespace gan_ext {

inline void check_reparameterize_args(const at::Tensor& mu, const at::Tensor& logvar, bool kl,
                                      int64_t reduction) {
  check_float_dtype(mu, "mu");
  check_same_dtype(logvar, "logvar", mu, "mu");
  check_same_device(logvar, "logvar", mu, "mu");
  check_same_shape(logvar, "logvar", mu, "mu");
  if (kl) {
    TORCH_CHECK_VALUE(mu.dim() >= 2, "mu must have a batch dimension and a latent dimension "
                      "(B, D, ...) for the KL term, got shape ", mu.sizes());
    TORCH_CHECK_VALUE(reduction >= 0 && reduction <= 2,
                      "reduction must be 0 ('none'), 1 ('mean') or 2 ('sum'), got ", reduction);
    TORCH_CHECK_VALUE(mu.size(0) > 0 || reduction != static_cast<int64_t>(Reduction::Mean),
                      "mu has batch size 0: the mean KL over no samples is undefined (use "
                      "reduction='sum' or 'none')");
  }
}

// (B, D): the batch and the number of latent values per sample.
inline std::pair<int64_t, int64_t> kl_rows(const at::Tensor& mu) {
  const int64_t B = mu.size(0);
  return {B, B == 0 ? 0 : mu.numel() / B};
}

}  // namespace gan_ext
