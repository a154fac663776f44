// CUDA kernels of the weight reparametrisation (include/sparseprune/reparam.h), mirroring
// csrc/cpu/kernels/reparam_kernel.cpp: one block per tile, the same per-element header math, the
// per-tile sums through tile_sum (the CPU's lane order) and then summed in tile order, so w_hat,
// the sum of h and both gradients are the CPU's bits for float32 and 16-bit weights. (float64
// weights use the device's double exp, which may differ from the C library's in the last bit.)
#include <c10/util/Exception.h>

#include <sparseprune/reparam.h>

#include "common.cuh"
#include "launch.h"

namespace sparseprune {
namespace device {
namespace {

template <bool kBackward, class WT>
__global__ void __launch_bounds__(kThreads) reparam_kernel(ReparamParams p, bool vec) {
  using W = WeightMath<WT>;
  // The tile's terms (kTileElems W) when per-tile sums are requested.
  extern __shared__ __align__(16) unsigned char smem[];
  Pack4<W>* terms = reinterpret_cast<Pack4<W>*>(smem);
  const bool sum = p.partials != nullptr;
  const W t = static_cast<W>(*p.t);
  const W gs = static_cast<W>(p.grad_sum ? *p.grad_sum : 0.0);
  SP_FOR_EACH_TILE(tile, p.numel) {
    for (int k = threadIdx.x; k < kTilePacks; k += kThreads) {
      const int64_t e = tile * kTileElems + 4 * k;
      const int n = pack_size(p.numel, e);
      Pack4<W> term{};  // +0 past the end (see tile_sum)
      if (n > 0) {
        const Pack4<WT> w = load_pack(in<WT>(p.weight, e), n, vec);
        Pack4<WT> g{};
        if (kBackward) g = load_pack(in<WT>(p.grad, e), n, vec);
        Pack4<WT> result;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const W wv = load_lane(&w.v[i]);
          W value, element_term;
          if constexpr (kBackward)
            reparam_backward(W(load_lane(&g.v[i])), gs, wv, t, p.power, value, element_term);
          else
            reparam_forward(wv, t, p.power, value, element_term);
          store_lane(&result.v[i], value);
          if (i < n) term.v[i] = element_term;
        }
        if (!kBackward) store_pack(out<WT>(p.w_hat, e), result, n, vec);
        if (kBackward && p.grad_weight) store_pack(out<WT>(p.grad_weight, e), result, n, vec);
      }
      if (sum) terms[k] = term;
    }
    if (!sum) continue;  // the same for the whole block, so the barriers in tile_sum are safe
    const double tile_total = tile_sum(reinterpret_cast<const W*>(terms));
    if (threadIdx.x == 0) p.partials[tile] = tile_total;
  }
}

template <bool kBackward>
void launch_reparam(const ReparamParams& p, cudaStream_t stream) {
  visit_dtypes(p.weight_dtype, p.weight_dtype, [&](auto*, auto* wt) {
    using WT = std::remove_pointer_t<decltype(wt)>;
    const bool vec = pack_aligned<WT>(p.weight) && pack_aligned<WT>(p.w_hat) &&
                     pack_aligned<WT>(p.grad) && pack_aligned<WT>(p.grad_weight);
    const unsigned grid = grid_for(num_tiles(p.numel), 1);
    // 16 KB (32 KB for float64 weights): under the 48 KB that needs no opt-in.
    const size_t smem = p.partials ? kTileElems * sizeof(WeightMath<WT>) : 0;
    reparam_kernel<kBackward, WT><<<grid, kThreads, smem, stream>>>(p, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (p.partials && p.total)
    launch_sum_in_tile_order(p.partials, num_tiles(p.numel), p.total, stream);
}

}  // namespace
}  // namespace device

namespace cuda {

void reparam_forward(const ReparamParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index,
                    [&](cudaStream_t stream) { device::launch_reparam<false>(p, stream); });
}

void reparam_backward(const ReparamParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index,
                    [&](cudaStream_t stream) { device::launch_reparam<true>(p, stream); });
}

}  // namespace cuda
}  // namespace sparseprune
