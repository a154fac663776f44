// Sparse matrix x dense matrix: Y = W X (+ bias) for many right-hand sides at once (a Linear layer
// at batch >= 2 on the transposed input, or a convolution on its unfolded input). X's columns are
// contiguous, so each kept weight W[n, k] is one broadcast FMA over a tile of X's row k: the work
// is proportional to the kept weights, and X stays in cache across rows.
#include "sparse_kernels.h"

SP_NAMESPACE_BEGIN
namespace {

using V = Simd::V;
constexpr int kW = Simd::kWidth;
constexpr int kMaxParts = 4;  // vectors per column tile

// Calls add0(k, v) and add1(k, v) alternately on the kept weights (column k, value v) of row n,
// so that two independent accumulator sets hide the FMA latency.
template <class Add0, class Add1>
inline void for_each_kept(const SparseMatrix& w, int64_t n, Add0&& add0, Add1&& add1) {
  if (w.format == SparseFormat::kCsr) {
    const int32_t* idx = w.col_idx;
    const float* val = w.values;
    int64_t j = w.row_ptr[n];
    const int64_t end = w.row_ptr[n + 1];
    for (; j + 1 < end; j += 2) {
      add0(idx[j], val[j]);
      add1(idx[j + 1], val[j + 1]);
    }
    if (j < end) add0(idx[j], val[j]);
    return;
  }
  const uint32_t* words = w.bitmap + n * w.words_per_row;
  const float* val = w.values + w.row_ptr[n];
  for (int64_t word = 0; word < w.words_per_row; ++word) {
    const int64_t base = 32 * word;
    uint32_t bits = words[word];
    while (bits) {
      add0(base + lowest_bit(bits), *val++);
      bits &= bits - 1;
      if (!bits) break;
      add1(base + lowest_bit(bits), *val++);
      bits &= bits - 1;
    }
  }
}

// Row n of Y over columns [col, col + (kParts - 1) * kW + last); kFull: last == kW.
template <int kParts, bool kFull>
void row_tile(const SpmmParams& p, const float* x, int64_t n, int64_t col, int last) {
  V acc0[kParts], acc1[kParts];
  for (int t = 0; t < kParts; ++t) acc0[t] = acc1[t] = Simd::zero();
  const float* xc = x + col;
  const int64_t stride = p.x_stride;
  auto part = [&](const float* row, int t) {
    return kFull || t < kParts - 1 ? Simd::load(row + t * kW) : Simd::load_n(row + t * kW, last);
  };
  for_each_kept(
      p.w, n,
      [&](int64_t k, float v) {
        const V s = Simd::set1(v);
        const float* row = xc + k * stride;
        for (int t = 0; t < kParts; ++t) acc0[t] = Simd::fmadd(s, part(row, t), acc0[t]);
      },
      [&](int64_t k, float v) {
        const V s = Simd::set1(v);
        const float* row = xc + k * stride;
        for (int t = 0; t < kParts; ++t) acc1[t] = Simd::fmadd(s, part(row, t), acc1[t]);
      });
  const V bias = Simd::set1(p.bias ? p.bias[n] : 0.0f);
  float* y = p.y + n * p.y_row_stride + col * p.y_col_stride;
  for (int t = 0; t < kParts; ++t) {
    const V r = Simd::add(Simd::add(acc0[t], acc1[t]), bias);
    const int lanes = kFull || t < kParts - 1 ? kW : last;
    if (p.y_col_stride == 1) {
      if (lanes == kW) Simd::store(y + t * kW, r);
      else Simd::store_n(y + t * kW, r, lanes);
    } else {  // a Linear's output (batch, out): this row's values are a column there
      alignas(64) float tmp[kW];
      Simd::store(tmp, r);
      for (int i = 0; i < lanes; ++i) y[(t * kW + i) * p.y_col_stride] = tmp[i];
    }
  }
}

template <int kParts>
void row_tile_any(const SpmmParams& p, const float* x, int64_t n, int64_t col, int last) {
  if (last == kW) row_tile<kParts, true>(p, x, n, col, last);
  else row_tile<kParts, false>(p, x, n, col, last);
}

}  // namespace

void spmm(const SpmmParams& p, int64_t row_begin, int64_t row_end, int64_t col_begin,
          int64_t col_end) {
  constexpr int64_t kTile = kMaxParts * kW;
  for (int64_t n = row_begin; n < row_end; ++n) {
    const float* x = p.x + (n / p.rows_per_group) * p.w.cols * p.x_stride;  // this row's group
    for (int64_t col = col_begin; col < col_end; col += kTile) {
      const int64_t width = col_end - col < kTile ? col_end - col : kTile;
      const int parts = static_cast<int>((width + kW - 1) / kW);
      const int last = static_cast<int>(width - (parts - 1) * kW);
      switch (parts) {
        case 1: row_tile_any<1>(p, x, n, col, last); break;
        case 2: row_tile_any<2>(p, x, n, col, last); break;
        case 3: row_tile_any<3>(p, x, n, col, last); break;
        default: row_tile_any<4>(p, x, n, col, last); break;
      }
    }
  }
}

SP_NAMESPACE_END
