// CUDA kernels of the hard-concrete gates (include/sparseprune/hard_concrete.h), mirroring
// csrc/cpu/kernels/hard_concrete_kernel.cpp: the noise regenerated from (seed, offset) in both
// passes and the same per-element header math, so z and dLoss/dlog_alpha are the CPU's bits for
// float32 and 16-bit log_alpha. (float64 uses the device's double exp, which may differ from the
// C library's in the last bit.)
#include <c10/util/Exception.h>

#include <sparseprune/hard_concrete.h>
#include <sparseprune/philox.h>

#include "common.cuh"
#include "launch.h"

namespace sparseprune {
namespace device {
namespace {

// One thread per Philox block: its four words feed elements 4b .. 4b + 3 (fewer in the last).
template <bool kBackward, class T>
__global__ void __launch_bounds__(kThreads) hard_concrete_kernel(HardConcreteParams p, bool vec) {
  using W = WeightMath<T>;
  const PhiloxKey<uint32_t> key(p.seed);
  const W inv_beta = static_cast<W>(p.inv_beta), width = static_cast<W>(p.width),
          gamma = static_cast<W>(p.gamma);
  const int64_t num_blocks = (p.numel + 3) / 4;
  SP_FOR_EACH_PHILOX_BLOCK(b, num_blocks) {
    const int64_t e = 4 * b;
    const int n = pack_size(p.numel, e);
    uint32_t bits[4];
    philox_block(key, p.offset, static_cast<uint64_t>(b), bits);
    const Pack4<T> la = load_pack(in<T>(p.log_alpha, e), n, vec);
    Pack4<T> g{};
    if (kBackward) g = load_pack(in<T>(p.grad, e), n, vec);
    Pack4<T> result;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const W L = static_cast<W>(logistic_noise(uniform_open<float>(bits[i])));
      const W lv = load_lane(&la.v[i]);
      if constexpr (kBackward)
        store_lane(&result.v[i], hard_concrete_backward(W(load_lane(&g.v[i])), L, lv, inv_beta,
                                                        width, gamma));
      else
        store_lane(&result.v[i], hard_concrete_forward(L, lv, inv_beta, width, gamma));
    }
    store_pack(out<T>(kBackward ? p.grad_log_alpha : p.z, e), result, n, vec);
  }
}

template <bool kBackward>
void launch_hard_concrete(const HardConcreteParams& p, cudaStream_t stream) {
  visit_dtypes(p.dtype, p.dtype, [&](auto*, auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    const bool vec = pack_aligned<T>(p.log_alpha) && pack_aligned<T>(p.z) &&
                     pack_aligned<T>(p.grad) && pack_aligned<T>(p.grad_log_alpha);
    const unsigned grid = grid_for((p.numel + 3) / 4, kThreads);
    hard_concrete_kernel<kBackward, T><<<grid, kThreads, 0, stream>>>(p, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace
}  // namespace device

namespace cuda {

void hard_concrete_forward(const HardConcreteParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index,
                    [&](cudaStream_t stream) { device::launch_hard_concrete<false>(p, stream); });
}

void hard_concrete_backward(const HardConcreteParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index,
                    [&](cudaStream_t stream) { device::launch_hard_concrete<true>(p, stream); });
}

}  // namespace cuda
}  // namespace sparseprune
