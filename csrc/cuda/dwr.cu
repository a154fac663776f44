// CUDA launchers of Dynamic Weight Rescaling's two-pass backward (see ste.h). Pass 1 regenerates
// the noise (kernel: stochastic.cuh) and stores each element's slope with z in its sign bit, plus
// the per-tile pairs (sum of w * z * g, kept count); the host reduces those into the factors
// [r, c] on the device; pass 2 finishes every output from the packed slopes, without noise.
#include <c10/util/Exception.h>

#include "launch.h"
#include "stochastic.cuh"

namespace sparseprune {
namespace device {
namespace {

// Pass 2, one thread per pack of four elements. The packed slopes may alias the score gradient
// (float32 scores) and the gradient the masked weight: each thread reads a pack before it
// writes the same pack.
template <class ST, class WT>
__global__ void __launch_bounds__(kThreads) dwr_finish_kernel(StochasticParams p, bool vec) {
  using W = WeightMath<WT>;
  const W r = static_cast<W>(p.dwr_factors[0]), c = static_cast<W>(p.dwr_factors[1]);
  SP_FOR_EACH_PHILOX_BLOCK(b, (p.numel + 3) / 4) {
    const int64_t e = 4 * b;
    const int n = pack_size(p.numel, e);
    const Pack4<float> slopes = load_pack(p.slopes + e, n, vec);
    const Pack4<WT> w = load_pack(in<WT>(p.weight, e), n, vec);
    const Pack4<WT> g = load_pack(in<WT>(p.grad, e), n, vec);
    Pack4<ST> grad_scores;
    Pack4<WT> grad_weight, masked;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float gs;
      W gw, m;
      dwr_finish(W(load_lane(&g.v[i])), W(load_lane(&w.v[i])), slopes.v[i], r, c, gs, gw, m);
      store_lane(&grad_scores.v[i], gs);
      store_lane(&grad_weight.v[i], gw);
      store_lane(&masked.v[i], m);
    }
    if (p.grad_scores) store_pack(out<ST>(p.grad_scores, e), grad_scores, n, vec);
    if (p.grad_weight) store_pack(out<WT>(p.grad_weight, e), grad_weight, n, vec);
    if (p.masked) store_pack(out<WT>(p.masked, e), masked, n, vec);
  }
}

}  // namespace
}  // namespace device

namespace cuda {

void dwr_collect(const StochasticParams& p, int device_index) {
  TORCH_CHECK(p.partials && p.slopes, "sparseprune: internal error: DWR pass 1 needs its outputs");
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    device::launch_stochastic<device::Pass::kCollect>(p, stream);
  });
}

void dwr_finish(const StochasticParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
      using ST = std::remove_pointer_t<decltype(st)>;
      using WT = std::remove_pointer_t<decltype(wt)>;
      const bool vec = device::packs_aligned<ST, WT>(p) && device::pack_aligned<float>(p.slopes);
      const unsigned grid = device::grid_for((p.numel + 3) / 4, device::kThreads);
      device::dwr_finish_kernel<ST, WT><<<grid, device::kThreads, 0, stream>>>(p, vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace cuda
}  // namespace sparseprune
