// gan_ext::scale_loss_grads: the argument checks of its CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/losses.h"

namespace gan_ext {

// scale_loss_grads: grad is the loss's gradient (one value); each saved
// gradient present must match its dtype and device.
inline void check_scale_loss_grads_args(const at::Tensor& grad, const at::Tensor* saved_a,
                                        const at::Tensor* saved_b) {
  check_float_dtype(grad, "grad");
  TORCH_CHECK_VALUE(grad.numel() == 1, "grad must hold the loss's gradient (one value), got shape ",
                    grad.sizes());
  if (saved_a != nullptr) {
    check_same_device(*saved_a, "saved_a", grad, "grad");
    check_same_dtype(*saved_a, "saved_a", grad, "grad");
  }
  if (saved_b != nullptr) {
    check_same_device(*saved_b, "saved_b", grad, "grad");
    check_same_dtype(*saved_b, "saved_b", grad, "grad");
  }
}

}  // namespace gan_ext
