// Plain parameter structs of the sparse inference kernels (CPU and CUDA): a compressed float32
// weight matrix, and the three jobs the kernels do with it. Pointers are device pointers of the
// op's device; the host layer (csrc/host/sparse_*.cpp) has validated every size.
#pragma once
#include <stdint.h>

#include "macros.h"

SP_NAMESPACE_BEGIN

enum class SparseFormat : int32_t {
  kCsr = 0,     // a 32-bit column index per kept weight
  kBitmap = 1,  // one bit per weight (kept or not); the kept values packed in row-major order
};

// A rows x cols float32 matrix: a Linear weight (out x in) or a Conv2d weight flattened to
// out x (in / groups * kh * kw). Row n's kept values are values[row_ptr[n] .. row_ptr[n + 1]).
struct SparseMatrix {
  SparseFormat format = SparseFormat::kCsr;
  int64_t rows = 0;
  int64_t cols = 0;
  const int32_t* row_ptr = nullptr;  // rows + 1 offsets into values
  const float* values = nullptr;
  const int32_t* col_idx = nullptr;  // CSR: the column of each value, ascending within a row
  // Bitmap: words_per_row = ceil(cols / 32) words per row; bit b of word w is column 32 w + b.
  const uint32_t* bitmap = nullptr;
  int64_t words_per_row = 0;
};

// Batch 1: y[n] = bias[n] + sum_k W[n, k] x[k].
struct SpmvParams {
  SparseMatrix w;
  const float* bias = nullptr;  // nullptr: no bias
  const float* x = nullptr;     // cols floats
  float* y = nullptr;           // rows floats
};

// Many right-hand sides: Y[n, c] = bias[n] + sum_k W[n, k] X[g * cols + k, c], c < ncols, where
// g = n / rows_per_group (conv groups; one group for a Linear). Row r of X starts x_offsets[r]
// floats after x and its columns are contiguous, so one kept weight scales a contiguous run of X.
// The offsets let X be a view: the transposed input of a Linear (row r at r * batch), each image
// of a 1x1 convolution (channel r at r * H * W), or a padded image for a stride-1 convolution
// (tap (c, i, j) at c * Hp * Wp + i * dilation_h * Wp + j * dilation_w, column oh * Wp + ow).
// Y[n, c] is at y + n * y_row_stride + c * y_col_stride. `batch` independent problems lie
// x_batch_stride / y_batch_stride apart (the CUDA kernels take them in one launch; the CPU host
// loops).
struct SpmmParams {
  SparseMatrix w;
  const float* bias = nullptr;
  int64_t rows_per_group = 0;
  int64_t ncols = 0;
  const float* x = nullptr;
  const int64_t* x_offsets = nullptr;  // groups * cols entries
  float* y = nullptr;
  int64_t y_row_stride = 0;
  int64_t y_col_stride = 1;
  int64_t batch = 1;
  int64_t x_batch_stride = 0;
  int64_t y_batch_stride = 0;
};

// The unfold (im2col) of one C x H x W float32 image (contiguous) for a kh x kw convolution:
// row (c * kh + i) * kw + j, column oh * out_w + ow holds the input pixel under kernel tap (i, j)
// at output position (oh, ow), or 0 in the padding.
struct Im2colParams {
  const float* input = nullptr;
  int64_t channels = 0, height = 0, width = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;
};

SP_NAMESPACE_END
