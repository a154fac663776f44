// The sparse family's entry points of one ISA (inside that ISA's namespace; see macros.h),
// gathered into its table by sparse_table.cpp. What each does: SparseKernels in csrc/cpu/tables.h.
#pragma once
#include "../simd/sparse_simd.h"
#include "../tables.h"

SP_NAMESPACE_BEGIN

void spmv(const SpmvParams& p, int64_t row_begin, int64_t row_end);
void spmm(const SpmmParams& p, int64_t row_begin, int64_t row_end, int64_t col_begin,
          int64_t col_end);
void im2col(const Im2colParams& p, int64_t col_begin, int64_t col_end, float* out,
            int64_t out_stride);
void transpose(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float* dst,
               int64_t dst_stride);

SP_NAMESPACE_END
