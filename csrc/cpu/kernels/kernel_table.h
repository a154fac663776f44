// The mask kernels of one ISA. Each CPU kernel TU set fills one KernelTable; csrc/cpu/dispatch.cpp
// (compiled for the baseline ISA) picks one at run time. The functions process whole tiles
// [tile_begin, tile_end) single-threaded; the host layer spreads tiles over threads.
#pragma once
#include <sparseprune/params.h>

namespace sparseprune {
namespace cpu {

struct KernelTable {
  const char* isa;
  // Stochastic masks (ASLP, Supermask). Forward writes p.masked and, when p.partials is set, the
  // kept count per tile; returns true if any score in the range is NaN.
  bool (*stochastic_forward)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  // One-pass backward: whichever of grad_scores, grad_weight, masked are set, and per-tile sums
  // of g * w * z into p.partials when set.
  void (*stochastic_backward)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  // DWR backward, pass 1: packed slopes into p.slopes, per-tile (sum w z g, kept) pairs.
  void (*dwr_collect)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  // DWR backward, pass 2: from p.slopes and p.dwr_factors, no noise.
  void (*dwr_finish)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);

  // Edge-Popup: a radix-select histogram step (adds into hist[kHistogramBins]), the number of keys
  // equal to the threshold per tile, and the forward / backward passes.
  void (*topk_histogram)(const TopkParams& p, const DigitHistogram& step, int64_t tile_begin,
                         int64_t tile_end, int64_t* hist);
  void (*topk_count_ties)(const TopkParams& p, int64_t tile_begin, int64_t tile_end,
                          int64_t* per_tile);
  bool (*topk_forward)(const TopkParams& p, int64_t tile_begin, int64_t tile_end);  // true on NaN
  void (*topk_backward)(const TopkParams& p, int64_t tile_begin, int64_t tile_end);

  void (*noise)(const NoiseParams& p, int64_t tile_begin, int64_t tile_end);
};

const KernelTable& kernels_scalar();
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();

}  // namespace cpu
}  // namespace sparseprune
