// CUDA launchers of the stochastic masks' forward and one-pass backward (kernel: stochastic.cuh),
// and the reduction of Smart Rescale's per-tile partials into dLoss/dscale on the device.
#include <c10/util/Exception.h>

#include "launch.h"
#include "stochastic.cuh"

namespace sparseprune {
namespace device {
namespace {

// *out = the partials summed in tile order from +0 in double, then rounded to float: the CPU
// host's loop (csrc/host/mask.cpp) operation for operation. One thread, because that order is a
// single dependency chain; the independent loads run ahead of it (unrolled), so a layer of
// n tiles costs about n dependent double additions.
__global__ void sum_in_tile_order_kernel(const double* partials, int64_t n, float* out) {
  double total = 0;
#pragma unroll 8
  for (int64_t t = 0; t < n; ++t) total += partials[t];
  *out = static_cast<float>(total);
}

}  // namespace
}  // namespace device

namespace cuda {

void stochastic_forward(const StochasticParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    device::launch_stochastic<device::Pass::kForward>(p, stream);
  });
}

void stochastic_backward(const StochasticParams& p, int device_index) {
  TORCH_CHECK(!p.grad_scale || p.partials,
              "sparseprune: internal error: grad_scale needs per-tile partials");
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    device::launch_stochastic<device::Pass::kBackward>(p, stream);
    if (p.grad_scale) {
      device::sum_in_tile_order_kernel<<<1, 1, 0, stream>>>(p.partials, num_tiles(p.numel),
                                                             p.grad_scale);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace cuda
}  // namespace sparseprune
