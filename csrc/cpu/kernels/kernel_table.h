// The per-ISA kernel entry points. Each CPU kernel TU fills one KernelTable; csrc/cpu/dispatch.cpp
// (compiled for the baseline ISA) picks one at run time. The functions process whole tiles
// [tile_begin, tile_end) single-threaded; the host layer spreads tiles over threads.
#pragma once
#include <sparseprune/params.h>

namespace sparseprune {
namespace cpu {

struct KernelTable {
  const char* isa;
  // Writes p.masked; returns true if any score in the range is NaN.
  bool (*aslp_forward)(const AslpParams& p, int64_t tile_begin, int64_t tile_end);
  // Writes whichever of p.grad_scores, p.grad_weight, p.masked are set, and p.scale_partials[t].
  void (*aslp_backward)(const AslpParams& p, int64_t tile_begin, int64_t tile_end);
  void (*noise)(const NoiseParams& p, int64_t tile_begin, int64_t tile_end);
};

const KernelTable& kernels_scalar();
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();

}  // namespace cpu
}  // namespace sparseprune
