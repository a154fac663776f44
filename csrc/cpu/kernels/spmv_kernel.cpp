// Sparse matrix x vector (a Linear layer at batch 1), one output row at a time, bias fused.
// CSR gathers x at the stored columns; the bitmap format expands each group of kWidth bits into a
// vector of weights (zeros where pruned) and multiplies it with the matching slice of x, so it
// costs the same at any density but reads only 1 bit per pruned weight.
#include "sparse_kernels.h"

SP_NAMESPACE_BEGIN
namespace {

using V = Simd::V;
constexpr int kW = Simd::kWidth;

float csr_row(const SparseMatrix& w, const float* x, int64_t n) {
  const int32_t* idx = w.col_idx;
  const float* val = w.values;
  int64_t j = w.row_ptr[n];
  const int64_t end = w.row_ptr[n + 1];
  // Two independent sums, so that consecutive FMAs do not wait for each other.
  V acc0 = Simd::zero(), acc1 = Simd::zero();
  for (; j + 2 * kW <= end; j += 2 * kW) {
    acc0 = Simd::fmadd(Simd::load(val + j), Simd::gather(x, idx + j), acc0);
    acc1 = Simd::fmadd(Simd::load(val + j + kW), Simd::gather(x, idx + j + kW), acc1);
  }
  if (j + kW <= end) {
    acc0 = Simd::fmadd(Simd::load(val + j), Simd::gather(x, idx + j), acc0);
    j += kW;
  }
  if (j < end) {
    const int n_left = static_cast<int>(end - j);
    acc1 = Simd::fmadd(Simd::load_n(val + j, n_left), Simd::gather_n(x, idx + j, n_left), acc1);
  }
  return Simd::sum(Simd::add(acc0, acc1));
}

#if SP_CPU_ISA_ID == 0
float bitmap_row(const SparseMatrix& w, const float* x, int64_t n) {
  const uint32_t* words = w.bitmap + n * w.words_per_row;
  const float* val = w.values + w.row_ptr[n];
  float acc0 = 0.0f, acc1 = 0.0f;
  for (int64_t word = 0; word < w.words_per_row; ++word) {
    const float* xw = x + 32 * word;
    uint32_t bits = words[word];
    while (bits) {
      acc0 += *val++ * xw[lowest_bit(bits)];
      bits &= bits - 1;
      if (!bits) break;
      acc1 += *val++ * xw[lowest_bit(bits)];
      bits &= bits - 1;
    }
  }
  return acc0 + acc1;
}
#else
float bitmap_row(const SparseMatrix& w, const float* x, int64_t n) {
  constexpr int kGroups = 32 / kW;  // vector groups per 32-bit word
  constexpr uint32_t kGroupMask = (1u << kW) - 1u;
  const uint32_t* words = w.bitmap + n * w.words_per_row;
  const float* val = w.values + w.row_ptr[n];
  const float* val_end = w.values + w.row_ptr[w.rows];
  V acc[2] = {Simd::zero(), Simd::zero()};
  // Whole words read whole slices of x; the last word may extend past the end of x.
  const int64_t full_words = w.cols / 32;
  for (int64_t word = 0; word < full_words; ++word) {
    const uint32_t bits = words[word];
    const float* xw = x + 32 * word;
    for (int g = 0; g < kGroups; ++g) {
      const uint32_t group = (bits >> (g * kW)) & kGroupMask;
      acc[g & 1] = Simd::fmadd(Simd::expand(val, group, val_end), Simd::load(xw + g * kW), acc[g & 1]);
      val += popcount(group);
    }
  }
  if (full_words < w.words_per_row) {  // columns beyond `cols` have no bits set
    const uint32_t bits = words[full_words];
    const int64_t base = 32 * full_words;
    for (int g = 0; g < kGroups && base + g * kW < w.cols; ++g) {
      const uint32_t group = (bits >> (g * kW)) & kGroupMask;
      const int64_t left = w.cols - base - g * kW;
      const V xv = Simd::load_n(x + base + g * kW, left < kW ? static_cast<int>(left) : kW);
      acc[0] = Simd::fmadd(Simd::expand(val, group, val_end), xv, acc[0]);
      val += popcount(group);
    }
  }
  return Simd::sum(Simd::add(acc[0], acc[1]));
}
#endif

}  // namespace

void spmv(const SpmvParams& p, int64_t row_begin, int64_t row_end) {
  for (int64_t n = row_begin; n < row_end; ++n) {
    const float dot = p.w.format == SparseFormat::kCsr ? csr_row(p.w, p.x, n)
                                                       : bitmap_row(p.w, p.x, n);
    p.y[n] = p.bias ? dot + p.bias[n] : dot;
  }
}

SP_NAMESPACE_END
