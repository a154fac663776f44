// The unfold (im2col) of one image for a range of output positions, so that a convolution runs
// through the sparse x dense kernel chunk by chunk instead of unfolding the whole batch.
#include <string.h>

#include "sparse_kernels.h"

SP_NAMESPACE_BEGIN
namespace {

// The output columns ow in [lo, hi) whose input column ow * stride + offset lies in [0, width).
inline void valid_range(int64_t out_w, int64_t stride, int64_t offset, int64_t width,
                        int64_t& lo, int64_t& hi) {
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = width - offset <= 0 ? 0 : (width - offset + stride - 1) / stride;
  if (hi > out_w) hi = out_w;
  if (lo > hi) lo = hi;
}

inline int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

}  // namespace

void im2col(const Im2colParams& p, int64_t col_begin, int64_t col_end, float* out,
            int64_t out_stride) {
  for (int64_t c = 0; c < p.channels; ++c) {
    const float* plane = p.input + c * p.height * p.width;
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        float* row = out + ((c * p.kernel_h + i) * p.kernel_w + j) * out_stride;
        const int64_t col_offset = j * p.dilation_w - p.pad_w;
        int64_t lo, hi;
        valid_range(p.out_w, p.stride_w, col_offset, p.width, lo, hi);
        // One output row (fixed oh) at a time: zeros, the copied middle, zeros.
        for (int64_t col = col_begin; col < col_end;) {
          const int64_t oh = col / p.out_w, first = col % p.out_w;
          const int64_t stop = first + (col_end - col) < p.out_w ? first + (col_end - col) : p.out_w;
          const int64_t at = col - col_begin - first;  // row[at + ow]: output column ow of oh
          const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
          const bool inside = ih >= 0 && ih < p.height;
          // zeros on [first, a), input on [a, b), zeros on [b, stop)
          const int64_t a = inside ? clamp(lo, first, stop) : stop;
          const int64_t b = inside ? clamp(hi, a, stop) : stop;
          for (int64_t ow = first; ow < a; ++ow) row[at + ow] = 0.0f;
          if (a < b) {
            const float* src = plane + ih * p.width + a * p.stride_w + col_offset;  // at ow = a
            if (p.stride_w == 1) memcpy(row + at + a, src, sizeof(float) * (b - a));
            else for (int64_t ow = a; ow < b; ++ow) row[at + ow] = src[(ow - a) * p.stride_w];
          }
          for (int64_t ow = b; ow < stop; ++ow) row[at + ow] = 0.0f;
          col += stop - first;
        }
      }
    }
  }
}

SP_NAMESPACE_END
