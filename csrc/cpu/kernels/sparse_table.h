// The sparse inference kernel family: one SparseKernelTable per ISA (spmv_kernel.cpp,
// spmm_kernel.cpp, im2col_kernel.cpp, sparse_table.cpp); csrc/cpu/dispatch.cpp (baseline ISA)
// picks the active one, cpu::sparse_kernels().
// Every function works on a range single-threaded; the host spreads ranges over threads.
#pragma once
#include <sparseprune/sparse_params.h>

namespace sparseprune {
namespace cpu {

struct SparseKernelTable {
  const char* isa;
  // Rows [row_begin, row_end) of y.
  void (*spmv)(const SpmvParams& p, int64_t row_begin, int64_t row_end);
  // Rows [row_begin, row_end) x columns [col_begin, col_end) of Y (p.batch is ignored).
  void (*spmm)(const SpmmParams& p, int64_t row_begin, int64_t row_end, int64_t col_begin,
               int64_t col_end);
  // Columns [col_begin, col_end) of the unfolded image into out (row k at out + k * out_stride).
  void (*im2col)(const Im2colParams& p, int64_t col_begin, int64_t col_end, float* out,
                 int64_t out_stride);
};

const SparseKernelTable& sparse_kernels_scalar();
const SparseKernelTable& sparse_kernels_avx2();
const SparseKernelTable& sparse_kernels_avx512();

}  // namespace cpu
}  // namespace sparseprune
