// Plain parameter structs of the N:M inference kernels (format "nm", csrc/cpu/kernels/nm_spmm_kernel.cpp).
// The host layer (csrc/host/nm_linear.cpp) has validated every size and every stored position.
#pragma once
#include <stdint.h>

#include "macros.h"

SP_NAMESPACE_BEGIN

// A rows x cols weight keeping at most n of every m consecutive inputs (cols % m == 0), stored as
// exactly n slots per group: row r, group g, slot s is slot j = g * n + s of the row (a pruned
// slot holds the value 0). values: rows * (cols / m * n) float32 or bfloat16 (bit patterns), row
// after row. indices: words_per_row uint32 words per row; slot j's in-group position (< m) is the
// `bits`-wide field at bit (j % (32 / bits)) * bits of word j / (32 / bits); bits is 1, 2 or 4.
struct NmMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  int32_t n = 0, m = 0, bits = 0;
  int64_t slots_per_row = 0;  // cols / m * n
  int64_t words_per_row = 0;  // ceil(slots_per_row * bits / 32)
  const void* values = nullptr;
  bool bf16 = false;  // values are bfloat16 (else float32)
  const uint32_t* indices = nullptr;
};

// Batch rows per chunk of the transposed input.
inline constexpr int64_t kNmBatchChunk = 64;

// y = x W^T (+ bias): x is `batch` rows of cols float32. Batch 1 reads x as is; batch >= 2 reads
// xt, x transposed in chunks of kNmBatchChunk batch rows: chunk c is a cols x kNmBatchChunk block
// (rows past the batch zero), so that one kept weight scales a contiguous run of one chunk.
// y[b * rows + r]. gemm's batch range lies within one chunk.
struct NmSpmmParams {
  NmMatrix w;
  const float* bias = nullptr;  // nullptr: no bias
  int64_t batch = 0;
  const float* x = nullptr;   // batch 1
  const float* xt = nullptr;  // batch >= 2
  float* y = nullptr;
};

SP_NAMESPACE_END
