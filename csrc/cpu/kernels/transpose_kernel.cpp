// Float32 matrix transpose for the sparse x dense kernel: a Linear's input (batch, in) becomes the
// (in, batch) operand whose rows the kept weights scale, and each block of output rows goes back
// to the (batch, out) layout. Whole kWidth x kWidth tiles in registers, the edges a lane at a time
// (ATen's blocked copy of the same transpose moves one float at a time).
#include "sparse_kernels.h"

SP_NAMESPACE_BEGIN

void transpose(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float* dst,
               int64_t dst_stride) {
  constexpr int kW = Simd::kWidth;
  const int64_t full_rows = rows / kW * kW, full_cols = cols / kW * kW;
  for (int64_t r = 0; r < full_rows; r += kW) {
    for (int64_t c = 0; c < full_cols; c += kW)
      Simd::transpose_tile(src + r * src_stride + c, src_stride, dst + c * dst_stride + r,
                           dst_stride);
    for (int64_t c = full_cols; c < cols; ++c)
      for (int64_t i = r; i < r + kW; ++i) dst[c * dst_stride + i] = src[i * src_stride + c];
  }
  for (int64_t r = full_rows; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
}

SP_NAMESPACE_END
