// Sparse inference kernel entry points of one ISA (inside that ISA's namespace; see vec.h).
#pragma once
#include <sparseprune/sparse_params.h>

#include "sparse_simd.h"
#include "sparse_table.h"

SP_NAMESPACE_BEGIN

void spmv(const SpmvParams& p, int64_t row_begin, int64_t row_end);
void spmm(const SpmmParams& p, int64_t row_begin, int64_t row_end, int64_t col_begin,
          int64_t col_end);
void im2col(const Im2colParams& p, int64_t col_begin, int64_t col_end, float* out,
            int64_t out_stride);

SP_NAMESPACE_END
