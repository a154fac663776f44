#include "register.h"

#include "ops.h"

namespace sparseprune {
namespace host {

void register_device_impls(torch::Library& m) {
  m.impl("masked_weight", &masked_weight);
  m.impl("masked_weight_backward", &masked_weight_backward);
  m.impl("masked_linear", &masked_linear);
  m.impl("masked_linear_backward", &masked_linear_backward);
  m.impl("masked_conv2d", &masked_conv2d);
  m.impl("masked_conv2d_backward", &masked_conv2d_backward);
  // Sparse inference.
  m.impl("sparse_linear", &sparse_linear);
  m.impl("sparse_conv2d", &sparse_conv2d);
  m.impl("reparam_weight", &reparam_weight);
  m.impl("reparam_weight_backward", &reparam_weight_backward);
  m.impl("hard_concrete_sample", &hard_concrete_sample);
  m.impl("hard_concrete_sample_backward", &hard_concrete_sample_backward);
}

}  // namespace host
}  // namespace sparseprune

// Factory ops have no tensor argument to dispatch on; they route on their `device` argument.
TORCH_LIBRARY_IMPL(sparseprune, CompositeExplicitAutograd, m) {
  m.impl("philox_bits", &sparseprune::host::philox_bits);
  m.impl("logistic_noise", &sparseprune::host::logistic_noise);
}
