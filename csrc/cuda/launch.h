// CUDA launchers for the fused kernels (defined in csrc/cuda/*.cu, built only with CUDA). Each
// launches on the current stream of `device` under a device guard and checks the launch.
#pragma once
#include <sparseprune/params.h>

namespace sparseprune {
namespace cuda {

void aslp_forward(const AslpParams& p, int device);
// Also reduces the per-tile partials into *p.grad_scale when p.grad_scale is set (no host sync).
void aslp_backward(const AslpParams& p, int device);
void noise(const NoiseParams& p, int device);

}  // namespace cuda
}  // namespace sparseprune
