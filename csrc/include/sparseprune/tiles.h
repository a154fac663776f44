// Tiles and the fixed-order reductions over them, shared by the host, every CPU ISA and CUDA.
// A tile is the unit of CPU threading; every reduction sums its terms per tile in a fixed lane
// order and then the tiles in order, so the result depends neither on thread count nor on vector
// width nor on the device.
#pragma once
#include <stdint.h>

#include "macros.h"

SP_NAMESPACE_BEGIN

constexpr int64_t kTileElems = 4096;

SP_HD int64_t num_tiles(int64_t numel) { return (numel + kTileElems - 1) / kTileElems; }

// A tile's sum: element e of the tile goes to running sum e % kTileLanes, each started from +0;
// then the lane sums meet in the fixed pairwise tree of tree_total.
constexpr int kTileLanes = 16;

// The pairwise tree over kTileLanes lane sums (overwrites `lanes`): lane i += lane i + 8, then
// i + 4, i + 2, i + 1. CUDA's tile_sum (cuda/common.cuh) runs the same tree in warp shuffles.
template <class S>
SP_HD double tree_total(S* lanes) {
  for (int w = kTileLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) lanes[i] = lanes[i] + lanes[i + w];
  return static_cast<double>(lanes[0]);
}

// The per-tile partials summed in tile order from +0 in double: a layer's reduced value. The CPU
// host and CUDA's one-thread reduction kernel both call this, so they add in the same order.
SP_HD double sum_in_tile_order(const double* partials, int64_t n) {
  double total = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll 8  // the independent loads run ahead of the single chain of additions
#endif
  for (int64_t t = 0; t < n; ++t) total += partials[t];
  return total;
}

SP_NAMESPACE_END
