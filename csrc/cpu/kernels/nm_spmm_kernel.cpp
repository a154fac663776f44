// N:M sparse x dense, format "nm" (include/sparseprune/nm_params.h): y = x W^T (+ bias) where W
// keeps at most n of every m consecutive inputs, stored as n slots per group (a value, float32 or
// bfloat16, and a `bits`-wide in-group position).
//
// Batch 1 (gemv, memory-bound): a row's slots kWidth at a time; their columns (group base +
// position, the positions cut out of a packed word by variable shifts) gather x, one FMA with the
// values. It reads 4 (bf16: 2) bytes + bits / 8 per kept weight where dense reads 4 per weight:
// at 2:4, 0.53x the bytes. Vector paths where n divides kWidth (1:m, 2:m, 4:m, 8:m), a slot at a
// time otherwise.
// Batch >= 2 (gemm, compute-bound): the transposed input xt, tiles of up to kTile batch rows and
// kRowBlock outputs; the input dimension in blocks whose slice of xt stays in L1, each kept weight
// one broadcast FMA per vector of the tile: half the FMAs of dense at 2:4.
// The sums run in another order per ISA (vector width): results agree within float tolerance,
// not bit for bit.
#include <string.h>

#include "sparse_kernels.h"  // transpose

SP_NAMESPACE_BEGIN
namespace {

using V = Simd::V;
constexpr int kW = Simd::kWidth;

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline float value_at(const float* v, int64_t j) { return v[j]; }
inline float value_at(const uint16_t* v, int64_t j) { return bf16_to_float(v[j]); }

// The in-group positions of a row's slots: slot j's is the `bits`-wide field at bit
// (j % per_word) * bits of word j / per_word, per_word = 32 / bits (shifts, not divisions).
struct Positions {
  const uint32_t* idx;
  int log_per_word, log_bits;
  uint32_t mask;
  Positions(const uint32_t* idx_, int bits)
      : idx(idx_), log_per_word(bits == 1 ? 5 : bits == 2 ? 4 : 3), log_bits(bits == 1 ? 0 : bits == 2 ? 1 : 2),
        mask((1u << bits) - 1u) {}
  uint32_t operator()(int64_t j) const {
    return (idx[j >> log_per_word] >> ((j & ((int64_t{1} << log_per_word) - 1)) << log_bits)) & mask;
  }
};

// One output row, a slot at a time (the scalar ISA, and patterns whose n does not divide kWidth).
template <class T>
float row_slots(const NmMatrix& w, const T* val, const uint32_t* idx, const float* x) {
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const Positions position(idx, w.bits);
  int64_t j = 0;
  for (int64_t g = 0, groups = w.cols / w.m; g < groups; ++g) {
    const float* xg = x + g * w.m;
    for (int s = 0; s < w.n; ++s, ++j) acc[j & 3] += value_at(val, j) * xg[position(j)];
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

#if SP_CPU_ISA_ID == 2

using Vi = __m512i;
using Mask = __mmask16;
inline Mask first(int k) { return static_cast<Mask>((1u << k) - 1u); }
inline Vi lane_ids() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
inline Vi vset1(int32_t v) { return _mm512_set1_epi32(v); }
inline Vi vadd(Vi a, Vi b) { return _mm512_add_epi32(a, b); }
inline Vi vmullo(Vi a, Vi b) { return _mm512_mullo_epi32(a, b); }
inline Vi vand(Vi a, Vi b) { return _mm512_and_si512(a, b); }
inline Vi vsrl(Vi a, Vi b) { return _mm512_srlv_epi32(a, b); }
inline Vi vdiv_pow2(Vi a, int shift) { return _mm512_srli_epi32(a, shift); }
inline V gather(const float* x, Vi cols, int k) {
  return k == kW ? _mm512_i32gather_ps(cols, x, 4)
                 : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), first(k), cols, x, 4);
}
inline V load_values(const float* v, int k) {
  return k == kW ? _mm512_loadu_ps(v) : _mm512_maskz_loadu_ps(first(k), v);
}
inline V load_values(const uint16_t* v, int k) {
  const __m256i h = k == kW ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v))
                            : _mm256_maskz_loadu_epi16(first(k), v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// x[c] for each lane's column c < span (span in (16, 64]) of a window of x, from two or four vector
// loads and in-register permutes: cheaper than a gather.
inline V window(const float* x, Vi rel, int span) {
  const V x0 = _mm512_loadu_ps(x);
  const V x1 = span >= 32 ? _mm512_loadu_ps(x + 16) : _mm512_maskz_loadu_ps(first(span - 16), x + 16);
  const V lo = _mm512_permutex2var_ps(x0, rel, x1);
  if (span <= 32) return lo;
  const V x2 = span >= 48 ? _mm512_loadu_ps(x + 32) : _mm512_maskz_loadu_ps(first(span - 32), x + 32);
  const V x3 = span >= 64 ? _mm512_loadu_ps(x + 48)
                          : span > 48 ? _mm512_maskz_loadu_ps(first(span - 48), x + 48) : x2;
  const V hi = _mm512_permutex2var_ps(x2, rel, x3);
  return _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(rel, _mm512_set1_epi32(32)), lo, hi);
}
// The packed words under slots j0 .. j0 + 15 (j0 a multiple of 16), one per lane: with 4-bit
// positions 8 slots per word, so two words; else one.
inline Vi slot_words(const uint32_t* idx, int64_t j0, int bits, int k) {
  if (bits == 4) {
    const uint32_t b = k > 8 ? idx[j0 / 8 + 1] : 0u;
    return _mm512_inserti64x4(_mm512_set1_epi32(static_cast<int>(idx[j0 / 8])),
                              _mm256_set1_epi32(static_cast<int>(b)), 1);
  }
  return _mm512_set1_epi32(static_cast<int>(idx[j0 / (32 / bits)]));
}

#elif SP_CPU_ISA_ID == 1

using Vi = __m256i;
using Mask = __m256i;
inline Mask first(int k) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vi lane_ids() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
inline Vi vset1(int32_t v) { return _mm256_set1_epi32(v); }
inline Vi vadd(Vi a, Vi b) { return _mm256_add_epi32(a, b); }
inline Vi vmullo(Vi a, Vi b) { return _mm256_mullo_epi32(a, b); }
inline Vi vand(Vi a, Vi b) { return _mm256_and_si256(a, b); }
inline Vi vsrl(Vi a, Vi b) { return _mm256_srlv_epi32(a, b); }
inline Vi vdiv_pow2(Vi a, int shift) { return _mm256_srli_epi32(a, shift); }
inline V gather(const float* x, Vi cols, int k) {
  return k == kW ? _mm256_i32gather_ps(x, cols, 4)
                 : _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, cols,
                                            _mm256_castsi256_ps(first(k)), 4);
}
inline V load_values(const float* v, int k) {
  return k == kW ? _mm256_loadu_ps(v) : _mm256_maskload_ps(v, first(k));
}
inline V load_values(const uint16_t* v, int k) {
  __m128i h;
  if (k == kW) {
    h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v));
  } else {
    alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(tmp, v, 2 * k);
    h = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
  }
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// The packed word under slots j0 .. j0 + 7 (j0 a multiple of 8): at most 1, 2 or 4 bits per slot,
// so one word holds them all.
inline Vi slot_words(const uint32_t* idx, int64_t j0, int bits, int /*k*/) {
  return _mm256_set1_epi32(static_cast<int>(idx[j0 / (32 / bits)]));
}

#endif

#if SP_CPU_ISA_ID != 0
inline int log2_of(int v) { return __builtin_ctz(static_cast<unsigned>(v)); }

// One output row, kWidth slots per step (n divides kWidth, so a step covers whole groups).
template <class T>
float row_vector(const NmMatrix& w, const T* val, const uint32_t* idx, const float* x) {
  const int bits = w.bits, per_word = 32 / bits;
  const Vi lanes = lane_ids();
  // Lane l's column within the step: (l / n) * m + its position; the position's shift within
  // its word: ((j0 + l) % per_word) * bits, where j0 % per_word is 0 or (1-bit positions, AVX-512)
  // 16, or (AVX2) a multiple of 8.
  const Vi lane_base = vmullo(vdiv_pow2(lanes, log2_of(w.n)), vset1(w.m));
  const Vi lane_shift = vmullo(vand(lanes, vset1(per_word - 1)), vset1(bits));
  const Vi pos_mask = vset1((1 << bits) - 1);
  const int64_t slots = w.slots_per_row;
  const int32_t cols_per_step = kW / w.n * w.m;
  V acc0 = Simd::zero(), acc1 = Simd::zero();
  int64_t j = 0;
  int32_t col = 0;
  int step = 0;
  for (; j < slots; j += kW, col += cols_per_step, ++step) {
    const int k = slots - j < kW ? static_cast<int>(slots - j) : kW;
    Vi shift = lane_shift;
    if (per_word > kW) shift = vadd(shift, vset1(static_cast<int32_t>(j % per_word) * bits));
    const Vi pos = vand(vsrl(slot_words(idx, j, bits, k), shift), pos_mask);
    const Vi rel = vadd(lane_base, pos);  // columns from col
#if SP_CPU_ISA_ID == 2
    const V prod_in = k == kW && cols_per_step <= 64 ? window(x + col, rel, cols_per_step)
                                                      : gather(x, vadd(vset1(col), rel), k);
#else
    const V prod_in = gather(x, vadd(vset1(col), rel), k);
#endif
    if (step & 1) acc1 = Simd::fmadd(load_values(val + j, k), prod_in, acc1);
    else acc0 = Simd::fmadd(load_values(val + j, k), prod_in, acc0);
  }
  return Simd::sum(Simd::add(acc0, acc1));
}
#endif

template <class T>
float row_dot(const NmMatrix& w, int64_t r, const float* x) {
  const T* val = static_cast<const T*>(w.values) + r * w.slots_per_row;
  const uint32_t* idx = w.indices + r * w.words_per_row;
#if SP_CPU_ISA_ID != 0
  if (kW % w.n == 0 && (w.n & (w.n - 1)) == 0) return row_vector(w, val, idx, x);
#endif
  return row_slots(w, val, idx, x);
}

template <class T>
void gemv_rows(const NmSpmmParams& p, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float dot = row_dot<T>(p.w, r, p.x);
    p.y[r] = p.bias ? dot + p.bias[r] : dot;
  }
}

// ---- batch >= 2 ----

constexpr int kMaxParts = 4;               // vectors per batch tile
constexpr int64_t kTile = kMaxParts * kW;  // batch rows per tile
constexpr int64_t kRowBlock = 16;          // outputs per block
constexpr int64_t kL1Floats = 8192;        // the slice of xt one input block keeps (32 KiB, an L1)

// One output row over the slots of groups [g_begin, g_end) (g_begin a multiple of 16, so at a word
// boundary), for a tile of kParts vectors of batch rows (the last one `last` lanes wide unless
// kFull), added into out[0 .. tile). The sums stay in registers: kSets independent sets so that
// consecutive FMAs do not wait for each other. kN / kBits: the pattern's n and index bits known
// at compile time (a word's fields cut out by constant shifts), or 0: read from w.
template <int kParts, bool kFull, int kN, int kBits, class T>
void row_tile(const NmMatrix& w, const T* val, const uint32_t* idx, const float* xt, int64_t ld,
              int last, int64_t g_begin, int64_t g_end, float* out) {
  constexpr int kSets = kParts == 1 ? 8 : kParts == 2 ? 4 : 2;
  V acc[kSets][kParts];
  for (int s = 0; s < kSets; ++s)
    for (int t = 0; t < kParts; ++t) acc[s][t] = Simd::zero();
  auto part = [&](const float* row, int t) {
    return kFull || t < kParts - 1 ? Simd::load(row + t * kW) : Simd::load_n(row + t * kW, last);
  };
  const int64_t group_stride = w.m * ld;
  const int64_t offset[8] = {0, ld, 2 * ld, 3 * ld, 4 * ld, 5 * ld, 6 * ld, 7 * ld};
  const int n = kN ? kN : w.n;
  int64_t j = g_begin * n;
  const int64_t j_end = g_end * n;
  if constexpr (kN != 0) {
    constexpr int kPerWord = 32 / kBits;
    constexpr uint32_t kMask = (1u << kBits) - 1u;
    for (; j < j_end; j += kPerWord) {
      const uint32_t word = idx[j / kPerWord];
      const float* base = xt + (j / kN) * group_stride;
      if (j + kPerWord <= j_end) {
        SP_UNROLL for (int s = 0; s < kPerWord; ++s) {
          const V wv = Simd::set1(value_at(val, j + s));
          const float* row = base + (s / kN) * group_stride + offset[(word >> (s * kBits)) & kMask];
          SP_UNROLL for (int t = 0; t < kParts; ++t)
            acc[s % kSets][t] = Simd::fmadd(wv, part(row, t), acc[s % kSets][t]);
        }
      } else {
        for (int s = 0; s < j_end - j; ++s) {
          const V wv = Simd::set1(value_at(val, j + s));
          const float* row = base + (s / kN) * group_stride + offset[(word >> (s * kBits)) & kMask];
          SP_UNROLL for (int t = 0; t < kParts; ++t) acc[0][t] = Simd::fmadd(wv, part(row, t), acc[0][t]);
        }
      }
    }
  } else {
    const Positions position(idx, w.bits);
    const float* group_rows = xt + g_begin * group_stride;  // slot j's group's first row
    int in_group = 0;
    for (; j < j_end; ++j) {
      const V wv = Simd::set1(value_at(val, j));
      const float* row = group_rows + offset[position(j)];
      SP_UNROLL for (int t = 0; t < kParts; ++t) acc[0][t] = Simd::fmadd(wv, part(row, t), acc[0][t]);
      if (++in_group == n) {
        in_group = 0;
        group_rows += group_stride;
      }
    }
  }
  for (int t = 0; t < kParts; ++t) {
    V sum = acc[0][t];
    for (int s = 1; s < kSets; ++s) sum = Simd::add(sum, acc[s][t]);
    if (kFull || t < kParts - 1) Simd::store(out + t * kW, Simd::add(sum, Simd::load(out + t * kW)));
    else Simd::store_n(out + t * kW, Simd::add(sum, Simd::load_n(out + t * kW, last)), last);
  }
}

template <int kParts, bool kFull, class T>
void row_tile_any(const NmMatrix& w, const T* val, const uint32_t* idx, const float* xt,
                  int64_t ld, int last, int64_t g_begin, int64_t g_end, float* out) {
  if (w.n == 2 && w.bits == 2)
    row_tile<kParts, kFull, 2, 2, T>(w, val, idx, xt, ld, last, g_begin, g_end, out);
  else if (w.n == 1 && w.bits == 2)
    row_tile<kParts, kFull, 1, 2, T>(w, val, idx, xt, ld, last, g_begin, g_end, out);
  else if (w.n == 4 && w.bits == 4)
    row_tile<kParts, kFull, 4, 4, T>(w, val, idx, xt, ld, last, g_begin, g_end, out);
  else
    row_tile<kParts, kFull, 0, 0, T>(w, val, idx, xt, ld, last, g_begin, g_end, out);
}

// Outputs [r0, r1) (at most kRowBlock) x batch rows [b0, b0 + width) (width <= kTile), into
// block[r - r0][0 .. width), starting from the bias.
template <int kParts, bool kFull, class T>
void block_tile(const NmSpmmParams& p, int64_t r0, int64_t r1, int64_t b0, int64_t width,
                float (*block)[kTile]) {
  const NmMatrix& w = p.w;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < width; ++c) block[r - r0][c] = p.bias ? p.bias[r] : 0.0f;
  // xt holds the input in chunks of kNmBatchChunk batch rows: chunk c is a cols x kNmBatchChunk
  // block (zero-padded), so that an input block's slice is contiguous in L1.
  const float* xt = p.xt + (b0 / kNmBatchChunk) * w.cols * kNmBatchChunk + b0 % kNmBatchChunk;
  const int last = static_cast<int>(width - (kParts - 1) * kW);
  const int64_t groups = w.cols / w.m;
  // Groups per input block: a multiple of 16, so that every block starts at a word boundary.
  int64_t step = kL1Floats / (kParts * kW) / w.m / 16 * 16;
  step = step < 16 ? 16 : step;
  for (int64_t g0 = 0; g0 < groups; g0 += step) {
    const int64_t g1 = groups - g0 < step ? groups : g0 + step;
    for (int64_t r = r0; r < r1; ++r)
      row_tile_any<kParts, kFull, T>(w, static_cast<const T*>(w.values) + r * w.slots_per_row,
                                     w.indices + r * w.words_per_row, xt, kNmBatchChunk, last,
                                     g0, g1, block[r - r0]);
  }
}

template <int kParts, class T>
void block_any(const NmSpmmParams& p, int64_t r0, int64_t r1, int64_t b0, int64_t width,
               float (*block)[kTile]) {
  if (width == kParts * kW) block_tile<kParts, true, T>(p, r0, r1, b0, width, block);
  else block_tile<kParts, false, T>(p, r0, r1, b0, width, block);
}

template <class T>
void gemm_rows(const NmSpmmParams& p, int64_t row_begin, int64_t row_end, int64_t batch_begin,
               int64_t batch_end) {
  alignas(64) float block[kRowBlock][kTile];
  const int64_t rows = p.w.rows;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowBlock) {
    const int64_t r1 = row_end - r0 < kRowBlock ? row_end : r0 + kRowBlock;
    for (int64_t b0 = batch_begin; b0 < batch_end; b0 += kTile) {
      const int64_t width = batch_end - b0 < kTile ? batch_end - b0 : kTile;
      switch ((width + kW - 1) / kW) {
        case 1: block_any<1, T>(p, r0, r1, b0, width, block); break;
        case 2: block_any<2, T>(p, r0, r1, b0, width, block); break;
        case 3: block_any<3, T>(p, r0, r1, b0, width, block); break;
        default: block_any<4, T>(p, r0, r1, b0, width, block); break;
      }
      // y is (batch, rows): a contiguous run per batch row.
      transpose(block[0], r1 - r0, width, kTile, p.y + b0 * rows + r0, rows);
    }
  }
}

}  // namespace

void nm_gemv(const NmSpmmParams& p, int64_t row_begin, int64_t row_end) {
  if (p.w.bf16) gemv_rows<uint16_t>(p, row_begin, row_end);
  else gemv_rows<float>(p, row_begin, row_end);
}

void nm_gemm(const NmSpmmParams& p, int64_t row_begin, int64_t row_end, int64_t batch_begin,
             int64_t batch_end) {
  if (p.w.bf16) gemm_rows<uint16_t>(p, row_begin, row_end, batch_begin, batch_end);
  else gemm_rows<float>(p, row_begin, row_end, batch_begin, batch_end);
}

SP_NAMESPACE_END

SP_KERNEL_TABLE(NmSpmmKernels, &nm_gemv, &nm_gemm)
