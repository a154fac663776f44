// Sparse matrix x dense matrix: Y = W X (+ bias) for many right-hand sides at once (a Linear layer
// at batch >= 2 on the transposed input, or a convolution on its unfolded input). X's columns are
// contiguous, so each kept weight W[n, k] is one broadcast FMA over a tile of X's row k: the work
// is proportional to the kept weights, and X stays in cache across rows.
#include "sparse_kernels.h"

SP_NAMESPACE_BEGIN
namespace {

using V = Simd::V;
constexpr int kW = Simd::kWidth;
// Vectors per column tile: 8, so that a kept weight's value and column loads serve 8 FMAs (12-20 %
// faster than 4 on MiniLM's layers at 128 columns, AVX-512).
constexpr int kMaxParts = 8;

// Accumulates W[n, k] * X[k, tile] for one row n over one column tile of kParts vectors (the last
// one partial unless kFull), in kSets independent sums so that consecutive FMAs do not wait for
// each other (an FMA's latency is 4 cycles; two issue per cycle).
template <int kParts, bool kFull>
struct RowTile {
  static constexpr int kSets = kParts == 1 ? 8 : kParts == 2 ? 4 : kParts <= 4 ? 2 : 1;
  V acc[kSets][kParts];
  const float* x;         // X at this tile's first column
  const int64_t* offsets;  // X's row offsets (this row's group)
  int last;                // lanes of the last vector

  RowTile(const float* x_, const int64_t* offsets_, int last_)
      : x(x_), offsets(offsets_), last(last_) {
    for (auto& set : acc)
      for (V& a : set) a = Simd::zero();
  }

  V part(const float* row, int t) const {
    return kFull || t < kParts - 1 ? Simd::load(row + t * kW) : Simd::load_n(row + t * kW, last);
  }

  // The kept weights val[j] at columns col[j], j < count.
  void add(const int32_t* col, const float* val, int64_t count) {
    int64_t j = 0;
    for (; j + kSets <= count; j += kSets) {
      SP_UNROLL for (int s = 0; s < kSets; ++s) {
        const V w = Simd::set1(val[j + s]);
        const float* row = x + offsets[col[j + s]];
        SP_UNROLL for (int t = 0; t < kParts; ++t) acc[s][t] = Simd::fmadd(w, part(row, t), acc[s][t]);
      }
    }
    for (; j < count; ++j) {
      const V w = Simd::set1(val[j]);
      const float* row = x + offsets[col[j]];
      SP_UNROLL for (int t = 0; t < kParts; ++t) acc[0][t] = Simd::fmadd(w, part(row, t), acc[0][t]);
    }
  }

  V total(int t) const {
    V sum = acc[0][t];
    for (int s = 1; s < kSets; ++s) sum = Simd::add(sum, acc[s][t]);
    return sum;
  }
};

// Feeds row n's kept weights to tile.add: CSR rows directly; bitmap rows decoded into column lists
// a piece at a time (branch-free, kWidth bits per step).
template <class Tile>
void add_row(const SparseMatrix& w, int64_t n, Tile& tile) {
  const int64_t begin = w.row_ptr[n];
  if (w.format == SparseFormat::kCsr) {
    tile.add(w.col_idx + begin, w.values + begin, w.row_ptr[n + 1] - begin);
    return;
  }
  constexpr int kPiece = 1024;
  alignas(64) int32_t cols[kPiece + 32];
  const uint32_t* words = w.bitmap + n * w.words_per_row;
  const float* val = w.values + begin;
  int count = 0;
  for (int64_t word = 0; word < w.words_per_row; ++word) {
    const uint32_t bits = words[word];
    for (int g = 0; g < 32; g += kW) {
      const uint32_t group = kW == 32 ? bits : (bits >> g) & ((1u << kW) - 1u);
      count += Simd::kept_columns(group, static_cast<int32_t>(32 * word + g), cols + count);
    }
    if (count > kPiece - 32 || word + 1 == w.words_per_row) {
      tile.add(cols, val, count);
      val += count;
      count = 0;
    }
  }
}

// Row n of Y over columns [col, col + (kParts - 1) * kW + last) into out[0 ..]; kFull: last == kW.
template <int kParts, bool kFull>
void row_tile(const SpmmParams& p, const int64_t* offsets, int64_t n, int64_t col, int last,
              float* out) {
  RowTile<kParts, kFull> tile(p.x + col, offsets, last);
  add_row(p.w, n, tile);
  const V bias = Simd::set1(p.bias ? p.bias[n] : 0.0f);
  for (int t = 0; t < kParts; ++t) {
    const V r = Simd::add(tile.total(t), bias);
    if (kFull || t < kParts - 1) Simd::store(out + t * kW, r);
    else Simd::store_n(out + t * kW, r, last);
  }
}

template <int kParts>
void row_tile_any(const SpmmParams& p, const int64_t* offsets, int64_t n, int64_t col, int last,
                  float* out) {
  if (last == kW) row_tile<kParts, true>(p, offsets, n, col, last, out);
  else row_tile<kParts, false>(p, offsets, n, col, last, out);
}

constexpr int64_t kTile = kMaxParts * kW;  // columns per tile
constexpr int64_t kRowBlock = 16;          // rows per transposed block (one cache line of output)

// Row n of Y over columns [col, col + width), width <= kTile, into out[0 .. width).
void row_columns(const SpmmParams& p, int64_t n, int64_t col, int64_t width, float* out) {
  const int64_t* offsets = p.x_offsets + (n / p.rows_per_group) * p.w.cols;  // this row's group
  const int parts = static_cast<int>((width + kW - 1) / kW);
  const int last = static_cast<int>(width - (parts - 1) * kW);
  switch (parts) {
    case 1: row_tile_any<1>(p, offsets, n, col, last, out); break;
    case 2: row_tile_any<2>(p, offsets, n, col, last, out); break;
    case 3: row_tile_any<3>(p, offsets, n, col, last, out); break;
    case 4: row_tile_any<4>(p, offsets, n, col, last, out); break;
    case 5: row_tile_any<5>(p, offsets, n, col, last, out); break;
    case 6: row_tile_any<6>(p, offsets, n, col, last, out); break;
    case 7: row_tile_any<7>(p, offsets, n, col, last, out); break;
    default: row_tile_any<8>(p, offsets, n, col, last, out); break;
  }
}

}  // namespace

void spmm(const SpmmParams& p, int64_t row_begin, int64_t row_end, int64_t col_begin,
          int64_t col_end) {
  if (p.y_col_stride == 1) {  // Y's rows are contiguous: write each tile in place
    for (int64_t n = row_begin; n < row_end; ++n)
      for (int64_t col = col_begin; col < col_end; col += kTile)
        row_columns(p, n, col, col_end - col < kTile ? col_end - col : kTile,
                    p.y + n * p.y_row_stride + col);
    return;
  }
  // Y's columns are strided (a Linear's output is (batch, out), Y = its transpose): compute a
  // block of rows, then write it transposed, one contiguous run of rows per column.
  alignas(64) float block[kRowBlock][kTile];
  for (int64_t n0 = row_begin; n0 < row_end; n0 += kRowBlock) {
    const int64_t rows = row_end - n0 < kRowBlock ? row_end - n0 : kRowBlock;
    for (int64_t col = col_begin; col < col_end; col += kTile) {
      const int64_t width = col_end - col < kTile ? col_end - col : kTile;
      for (int64_t i = 0; i < rows; ++i) row_columns(p, n0 + i, col, width, block[i]);
      float* y = p.y + n0 * p.y_row_stride + col * p.y_col_stride;
      if (p.y_row_stride == 1) {
        transpose(block[0], rows, width, kTile, y, p.y_col_stride);
        continue;
      }
      for (int64_t c = 0; c < width; ++c)
        for (int64_t i = 0; i < rows; ++i)
          y[c * p.y_col_stride + i * p.y_row_stride] = block[i][c];
    }
  }
}

SP_NAMESPACE_END
