// Weight reparametrisation kernels (reparam.h): forward w -> w_hat (and the sum of h per tile),
// backward -> dLoss/dw and the per-tile sums of the dLoss/dt terms, one pass each way. Per-tile sums
// go through TileSums (element e of a tile to lane e % 16, fixed tree), so they are the same bits
// on every ISA and thread count, and the CUDA kernels' (tile_sum).
#include <sparseprune/reparam.h>

#include "tile_loops.h"

SP_NAMESPACE_BEGIN
namespace {

// Elements [first, first + n) with lane type F; each element's term (h, or its dLoss/dt term) is
// added to `sums` at tile position pos + j.
template <bool kBackward, class F, class WT, class Sums>
void reparam_group(const ReparamParams& p, int64_t first, int n, int64_t pos, Sums& sums) {
  using W = WeightLane<F, WT>;
  const WT* w = in<WT>(p.weight, first);
  const W t = lane_of<W>(*p.t);
  const bool sum = p.partials != nullptr;
  if constexpr (!kBackward) {
    WT* w_hat = out<WT>(p.w_hat, first);
    for (int j = 0; j < n; j += Lanes<F>::kWidth) {
      W wh, h;
      reparam_forward(IO<W>::load(w + j), t, p.power, wh, h);
      IO<W>::store(w_hat + j, wh);
      if (sum) sums.add(pos + j, h);
    }
  } else {
    const WT* g = in<WT>(p.grad, first);
    WT* grad_weight = out<WT>(p.grad_weight, first);
    const W gs = lane_of<W>(p.grad_sum ? *p.grad_sum : 0.0);
    for (int j = 0; j < n; j += Lanes<F>::kWidth) {
      W gw, term;
      reparam_backward(IO<W>::load(g + j), gs, IO<W>::load(w + j), t, p.power, gw, term);
      if (grad_weight) IO<W>::store(grad_weight + j, gw);
      if (sum) sums.add(pos + j, term);
    }
  }
}

template <bool kBackward, class V, class WT>
void reparam_tiles(const ReparamParams& p, int64_t tile_begin, int64_t tile_end) {
  auto group = [&](auto lane, int64_t first, int n, int64_t pos, auto* sums) {
    reparam_group<kBackward, decltype(lane), WT>(p, first, n, pos, sums[0]);
  };
  auto finish = [&](int64_t t, const double* totals) {
    if (p.partials) p.partials[t] = totals[0];
  };
  for_each_tile<V, WT, 1>(p.numel, tile_begin, tile_end, group, finish);
}

template <bool kBackward>
void run_reparam(const ReparamParams& p, int64_t tile_begin, int64_t tile_end) {
  visit_dtypes(p.weight_dtype, p.weight_dtype, [&](auto*, auto* wt) {
    using WT = std::remove_pointer_t<decltype(wt)>;
    reparam_tiles<kBackward, LaneFor<WT, WT>, WT>(p, tile_begin, tile_end);
  });
}

void run_reparam_forward(const ReparamParams& p, int64_t tile_begin, int64_t tile_end) {
  run_reparam<false>(p, tile_begin, tile_end);
}
void run_reparam_backward(const ReparamParams& p, int64_t tile_begin, int64_t tile_end) {
  run_reparam<true>(p, tile_begin, tile_end);
}

}  // namespace
SP_NAMESPACE_END

SP_KERNEL_TABLE(ReparamKernels, &run_reparam_forward, &run_reparam_backward)
