// Weight reparametrisation kernels (reparam.h): forward w -> w_hat (and the sum of h per tile),
// backward -> dLoss/dw and the per-tile sums of the dLoss/dt terms, one pass each way. Per-tile sums
// go through TileSums (element e of a tile to lane e % 16, fixed tree), so they are the same bits
// on every ISA and thread count, and the CUDA kernels' (tile_sum).
#include <sparseprune/reparam.h>

#include "kernels.h"
#include "reparam_table.h"

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

// Whole 64-element chunks with the ISA's vector type, the tensor's last partial chunk one lane at
// a time; then the tile's 16 lane sums meet in the fixed tree.
template <bool kBackward, class V, class WT>
void reparam_tiles(const ReparamParams& p, int64_t tile_begin, int64_t tile_end) {
  using VectorSum = TileSums<typename PartOf<WeightLane<V, WT>>::type>;
  using LaneSum = TileSums<WeightLane<float, WT>>;
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t begin = t * kTileElems;
    const int64_t end = begin + kTileElems < p.numel ? begin + kTileElems : p.numel;
    VectorSum vector_sums;
    vector_sums.clear();
    int64_t c = begin;
    for (; c + kChunk <= end; c += kChunk)
      reparam_group<kBackward, V, WT>(p, c, kChunk, c - begin, vector_sums);
    LaneSum lane_sums;
    vector_sums.spill(lane_sums.acc);
    if (c < end)
      reparam_group<kBackward, float, WT>(p, c, static_cast<int>(end - c), c - begin, lane_sums);
    if (p.partials) p.partials[t] = tree_total(lane_sums.acc);
  }
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

namespace sparseprune {
namespace cpu {

const ReparamKernels& SP_ISA_FN(reparam_kernels)() {
  static constexpr ReparamKernels table{SP_ISA_NAME, &run_reparam_forward, &run_reparam_backward};
  return table;
}

}  // namespace cpu
}  // namespace sparseprune
