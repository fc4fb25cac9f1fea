// gan_ext::scale_loss_grads: the schema. It has no autograd of its own: the
// loss ops' backward calls it (common/loss_autograd.h).
#include <torch/library.h>

namespace gan_ext {

TORCH_LIBRARY_FRAGMENT(gan_ext, m) {
  // Backward of the *_with_grad losses: (grad * saved_a, grad * saved_b), an
  // empty tensor for an absent one, with grad the loss's gradient (one value of
  // their dtype). The CUDA kernel reads grad on the device (no host sync, so
  // CUDA-graph safe) and scales both in one launch. Autograd calls it off the
  // CPU only: on the CPU it multiplies directly and skips grad == 1.
  m.def("scale_loss_grads(Tensor grad, Tensor? saved_a, Tensor? saved_b) -> (Tensor, Tensor)");
}

}  // namespace gan_ext
