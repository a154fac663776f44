// CUDA kernel for sparseprune::philox_bits / logistic_noise: the raw Philox4x32-10 stream of
// (seed, offset), as uint32 words or as logistic noise, bit-identical to the CPU kernels because
// every step comes from the shared headers (philox.h, uniform.h, noise.h).
#include <sparseprune/noise.h>
#include <sparseprune/philox.h>

#include "common.cuh"
#include "launch.h"

namespace sparseprune {
namespace device {
namespace {

// One thread per Philox block: its four words go to elements 4b .. 4b + 3 (fewer in the last).
__global__ void __launch_bounds__(kThreads) noise_kernel(NoiseParams p, bool vec) {
  const PhiloxKey<uint32_t> key(p.seed);
  const int64_t num_blocks = (p.numel + 3) / 4;
  SP_FOR_EACH_PHILOX_BLOCK(b, num_blocks) {
    const int64_t e = 4 * b;
    const int n = pack_size(p.numel, e);
    Pack4<uint32_t> bits;
    philox_block(key, p.offset, static_cast<uint64_t>(b), bits.v);
    if (p.kind == NoiseKind::kBits) {  // uniform across the grid: no divergence
      store_pack(static_cast<uint32_t*>(p.out) + e, bits, n, vec);
    } else {
      Pack4<float> noise;
#pragma unroll
      for (int i = 0; i < 4; ++i) noise.v[i] = logistic_noise(uniform_open<float>(bits.v[i]));
      store_pack(static_cast<float*>(p.out) + e, noise, n, vec);
    }
  }
}

}  // namespace
}  // namespace device

namespace cuda {

void noise(const NoiseParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    const unsigned grid = device::grid_for((p.numel + 3) / 4, device::kThreads);
    // uint32 and float packs have the same alignment.
    const bool vec = device::pack_aligned<uint32_t>(p.out);
    device::noise_kernel<<<grid, device::kThreads, 0, stream>>>(p, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace sparseprune
