// The op implementations behind the schemas of csrc/ops.cpp, registered for every dispatch key
// here: the same device-agnostic functions for CPU and CUDA (route.h picks the kernels).
#include <torch/library.h>

#include "ops.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

void register_device_impls(torch::Library& m) {
  m.impl("masked_weight", &masked_weight);
  m.impl("masked_weight_backward", &masked_weight_backward);
  m.impl("topk_threshold", &topk_threshold);
  m.impl("masked_linear", &masked_linear);
  m.impl("masked_linear_backward", &masked_linear_backward);
  m.impl("masked_conv2d", &masked_conv2d);
  m.impl("masked_conv2d_backward", &masked_conv2d_backward);
  m.impl("reparam_weight", &reparam_weight);
  m.impl("reparam_weight_backward", &reparam_weight_backward);
  m.impl("hard_concrete_sample", &hard_concrete_sample);
  m.impl("hard_concrete_sample_backward", &hard_concrete_sample_backward);
  m.impl("nm_masked_weight", &nm_masked_weight);
  m.impl("nm_masked_weight_backward", &nm_masked_weight_backward);
  m.impl("nm_masked_linear", &nm_masked_linear);
  m.impl("nm_masked_linear_backward", &nm_masked_linear_backward);
  // Sparse inference.
  m.impl("sparse_linear", &sparse_linear);
  m.impl("sparse_conv2d", &sparse_conv2d);
  m.impl("nm_linear", &nm_linear);
}

}  // namespace
}  // namespace host
}  // namespace sparseprune

TORCH_LIBRARY_IMPL(sparseprune, CPU, m) { sparseprune::host::register_device_impls(m); }

// A build without CUDA kernels registers nothing for CUDA, so that the dispatcher's own "no CUDA
// kernel" answer (and build_info()) tell the truth about this build.
TORCH_LIBRARY_IMPL(sparseprune, CUDA, m) {
  if (sparseprune::host::kWithCuda) sparseprune::host::register_device_impls(m);
}

// Factory ops have no tensor argument to dispatch on; they route on their `device` argument.
TORCH_LIBRARY_IMPL(sparseprune, CompositeExplicitAutograd, m) {
  m.impl("philox_bits", &sparseprune::host::philox_bits);
  m.impl("logistic_noise", &sparseprune::host::logistic_noise);
}
