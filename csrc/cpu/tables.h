// The CPU kernel families, all declared one way. A family is a struct of function pointers whose
// first member is the ISA's name; setup.py compiles csrc/cpu/kernels once per ISA, so there is one
// table of each family per ISA:
//   SP_KERNEL_FAMILY(Family) after the struct declares its per-ISA tables, table<Family, Isa>();
//   SP_KERNEL_TABLE(Family, entries...) defines the table of the ISA being compiled, in the
//     family's kernel file (constant-initialised: per-ISA TUs run no static initialisers);
//   cpu::active<Family>() (dispatch.h) returns the table of the ISA running now.
// Every function works on a range single-threaded; the host spreads ranges over threads.
#pragma once
#include <sparseprune/params.h>
#include <sparseprune/nm_params.h>
#include <sparseprune/sparse_params.h>

namespace sparseprune {
namespace cpu {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
inline constexpr const char* kIsaNames[] = {"scalar", "avx2", "avx512"};

// Defined only in the kernel TUs of ISA I, so only for the ISAs built.
template <class Family, Isa I>
const Family& table();

#define SP_KERNEL_FAMILY(Family)                             \
  template <>                                                \
  const Family& table<Family, Isa::kScalar>();               \
  template <>                                                \
  const Family& table<Family, Isa::kAvx2>();                 \
  template <>                                                \
  const Family& table<Family, Isa::kAvx512>()

// At global scope in a kernel TU (SP_CPU_ISA_ID comes from setup.py).
#define SP_KERNEL_TABLE(Family, ...)                                                    \
  namespace sparseprune::cpu {                                                          \
  template <>                                                                           \
  const Family& table<Family, static_cast<Isa>(SP_CPU_ISA_ID)>() {                      \
    static constexpr Family kTable{kIsaNames[SP_CPU_ISA_ID], __VA_ARGS__};              \
    return kTable;                                                                      \
  }                                                                                     \
  }

// Edge-Popup's sampled selection (host/topk.cpp), one pass over the scores of tiles
// [tile_begin, tile_end): keys (ste.h magnitude_key) above `hi` are counted, keys in [lo, hi] are
// written to keys[0, capacity) in index order (the count goes on past capacity: more than
// `capacity` gathered means the band overflowed), per_tile[t] the number tile t gave.
struct TopkBand {
  uint32_t lo = 0, hi = 0;
  uint32_t* keys = nullptr;
  int64_t capacity = 0;
  int64_t* per_tile = nullptr;  // indexed by absolute tile
  int64_t above = 0;            // out
  int64_t gathered = 0;         // out
};

// Stochastic masks (ASLP, Supermask) and Edge-Popup's top-k, over whole tiles
// [tile_begin, tile_end): cpu/kernels/mask_table.cpp.
struct MaskKernels {
  const char* isa;
  // Stochastic forward writes p.masked and, when p.partials is set, the kept count per tile;
  // returns true if any score in the range is NaN.
  bool (*stochastic_forward)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  // One-pass backward: whichever of grad_scores, grad_weight, masked are set, and per-tile sums
  // of g * w * z into p.partials when set; true if any score in the range is NaN.
  bool (*stochastic_backward)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  // DWR backward, pass 1: packed slopes into p.slopes (Supermask with p.keep_bits set: the keep
  // bits instead), per-tile (sum w z g, kept) pairs; true on a NaN score.
  bool (*dwr_collect)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  // DWR backward, pass 2: from p.slopes and p.dwr_factors, no noise.
  void (*dwr_finish)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  // DWR forward, count before writing: pass 1 writes p.keep_bits and the kept count per tile
  // into p.partials (true on a NaN score); pass 2 writes p.masked = r * w * z from them.
  bool (*dwr_count)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
  void (*dwr_apply)(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);

  // Edge-Popup: a radix-select histogram step (adds into hist[kHistogramBins]), the number of keys
  // equal to the threshold per tile, and the forward / backward passes.
  void (*topk_histogram)(const TopkParams& p, const DigitHistogram& step, int64_t tile_begin,
                         int64_t tile_end, int64_t* hist);
  void (*topk_count_ties)(const TopkParams& p, int64_t tile_begin, int64_t tile_end,
                          int64_t* per_tile);
  void (*topk_band)(const TopkParams& p, TopkBand& band, int64_t tile_begin, int64_t tile_end);
  bool (*topk_forward)(const TopkParams& p, int64_t tile_begin, int64_t tile_end);  // true on NaN
  bool (*topk_backward)(const TopkParams& p, int64_t tile_begin, int64_t tile_end);  // true on NaN

  // Raw Philox words or logistic noise.
  void (*noise)(const NoiseParams& p, int64_t tile_begin, int64_t tile_end);
};
SP_KERNEL_FAMILY(MaskKernels);

// Weight reparametrisation, over whole tiles: cpu/kernels/reparam_kernel.cpp.
struct ReparamKernels {
  const char* isa;
  // w_hat into p.w_hat and, when p.partials is set, the sum of h per tile.
  void (*forward)(const ReparamParams& p, int64_t tile_begin, int64_t tile_end);
  // p.grad_weight when set, and the dLoss/dt terms summed per tile into p.partials when set.
  void (*backward)(const ReparamParams& p, int64_t tile_begin, int64_t tile_end);
};
SP_KERNEL_FAMILY(ReparamKernels);

// Hard-concrete gates, over whole tiles, the noise regenerated from (seed, offset):
// cpu/kernels/hard_concrete_kernel.cpp.
struct HardConcreteKernels {
  const char* isa;
  // The gates z into p.z; true if any log_alpha in the range is NaN.
  bool (*forward)(const HardConcreteParams& p, int64_t tile_begin, int64_t tile_end);
  // dLoss/dlog_alpha into p.grad_log_alpha from p.grad; true on a NaN log_alpha.
  bool (*backward)(const HardConcreteParams& p, int64_t tile_begin, int64_t tile_end);
};
SP_KERNEL_FAMILY(HardConcreteKernels);

// N:M pattern masks (nm.h), over whole tiles of kNmTileGroups groups [tile_begin, tile_end):
// cpu/kernels/nm_mask_kernel.cpp. Forward writes p.masked; backward whichever of grad_scores,
// grad_weight, masked (possibly aliasing grad) are set, and per-tile Smart Rescale sums into
// p.partials when set. Both return true if a ranked value (score, logit or srste weight) is NaN.
struct NmKernels {
  const char* isa;
  bool (*forward)(const NmParams& p, int64_t tile_begin, int64_t tile_end);
  bool (*backward)(const NmParams& p, int64_t tile_begin, int64_t tile_end);
};
SP_KERNEL_FAMILY(NmKernels);

// Sparse inference: cpu/kernels/sparse_table.cpp.
struct SparseKernels {
  const char* isa;
  // Rows [row_begin, row_end) of y.
  void (*spmv)(const SpmvParams& p, int64_t row_begin, int64_t row_end);
  // Rows [row_begin, row_end) x columns [col_begin, col_end) of Y (p.batch is ignored).
  void (*spmm)(const SpmmParams& p, int64_t row_begin, int64_t row_end, int64_t col_begin,
               int64_t col_end);
  // Columns [col_begin, col_end) of the unfolded image into out (row k at out + k * out_stride).
  void (*im2col)(const Im2colParams& p, int64_t col_begin, int64_t col_end, float* out,
                 int64_t out_stride);
  // dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols.
  void (*transpose)(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float* dst,
                    int64_t dst_stride);
};
SP_KERNEL_FAMILY(SparseKernels);

// N:M inference (format "nm"): cpu/kernels/nm_spmm_kernel.cpp.
struct NmSpmmKernels {
  const char* isa;
  // Batch 1: outputs [row_begin, row_end) of y from p.x.
  void (*gemv)(const NmSpmmParams& p, int64_t row_begin, int64_t row_end);
  // Batch >= 2: outputs [row_begin, row_end) of batch rows [batch_begin, batch_end), from p.xt.
  void (*gemm)(const NmSpmmParams& p, int64_t row_begin, int64_t row_end, int64_t batch_begin,
               int64_t batch_end);
};
SP_KERNEL_FAMILY(NmSpmmKernels);

}  // namespace cpu
}  // namespace sparseprune
