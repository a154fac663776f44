// CUDA launchers of the stochastic masks' forward and one-pass backward (kernel: stochastic.cuh),
// and the reduction of Smart Rescale's per-tile partials into dLoss/dscale on the device.
#include <c10/util/Exception.h>

#include "launch.h"
#include "stochastic.cuh"

namespace sparseprune {
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
    if (p.grad_scale)
      device::launch_sum_in_tile_order(p.partials, num_tiles(p.numel), p.grad_scale, stream);
  });
}

}  // namespace cuda
}  // namespace sparseprune
