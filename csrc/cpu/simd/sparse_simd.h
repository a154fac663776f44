// The float32 vector operations of the sparse kernels, per ISA (SP_CPU_ISA_ID: 0 scalar, 1 AVX2,
// 2 AVX-512): full and partial (first n lanes) loads and stores, gathers, the bitmap `expand`
// that spreads packed values to the lanes of their set bits, and kWidth x kWidth transposes.
// Only sparse kernel TUs include it.
#pragma once
#include <stdint.h>

#include "vec.h"  // the per-ISA namespace, SP_UNROLL

#if SP_CPU_ISA_ID != 0
#include <immintrin.h>
#endif

SP_NAMESPACE_BEGIN

inline int popcount(uint32_t bits) { return __builtin_popcount(bits); }
inline int lowest_bit(uint32_t bits) { return __builtin_ctz(bits); }

#if SP_CPU_ISA_ID == 2

struct Simd {
  using V = __m512;
  static constexpr int kWidth = 16;
  static __mmask16 first(int n) { return static_cast<__mmask16>((1u << n) - 1u); }

  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static float sum(V v) { return _mm512_reduce_add_ps(v); }
  static V gather(const float* base, const int32_t* idx) {
    return _mm512_i32gather_ps(_mm512_loadu_si512(idx), base, 4);
  }
  static V gather_n(const float* base, const int32_t* idx, int n) {
    const __m512i i = _mm512_maskz_loadu_epi32(first(n), idx);
    return _mm512_mask_i32gather_ps(zero(), first(n), i, base, 4);
  }
  // Lanes of the set bits of `bits` (kWidth bits) take vals[0], vals[1], ... in order; the others
  // are 0. Reads exactly popcount(bits) floats.
  static V expand(const float* vals, uint32_t bits, const float* /*vals_end*/) {
    return _mm512_maskz_expandloadu_ps(static_cast<__mmask16>(bits), vals);
  }
  // Writes base + i for the set bits i of `bits` (kWidth bits), in order, to out (which has room
  // for kWidth more); returns how many.
  static int kept_columns(uint32_t bits, int32_t base, int32_t* out) {
    const __m512i cols = _mm512_add_epi32(_mm512_set1_epi32(base), _mm512_setr_epi32(
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm512_storeu_si512(out, _mm512_maskz_compress_epi32(static_cast<__mmask16>(bits), cols));
    return popcount(bits);
  }
  // dst[c * dst_stride + r] = src[r * src_stride + c] for a 16 x 16 tile: pairs of rows
  // interleaved, then 4-float quarters exchanged between rows 4 apart, then between rows 8 apart.
  static void transpose_tile(const float* src, int64_t src_stride, float* dst,
                             int64_t dst_stride) {
    V r[16], t[16];
    SP_UNROLL for (int i = 0; i < 16; ++i) r[i] = load(src + i * src_stride);
    SP_UNROLL for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // r[4g + k], quarter q: column 4q + k of rows 4g .. 4g + 3.
    SP_UNROLL for (int g = 0; g < 4; ++g) {
      r[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
      r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    SP_UNROLL for (int k = 0; k < 4; ++k) {
      const V a = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88),
              b = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
      const V c = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88),
              d = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
      store(dst + k * dst_stride, _mm512_shuffle_f32x4(a, c, 0x88));
      store(dst + (k + 8) * dst_stride, _mm512_shuffle_f32x4(a, c, 0xDD));
      store(dst + (k + 4) * dst_stride, _mm512_shuffle_f32x4(b, d, 0x88));
      store(dst + (k + 12) * dst_stride, _mm512_shuffle_f32x4(b, d, 0xDD));
    }
  }
};

#elif SP_CPU_ISA_ID == 1

// For AVX2's expand: entry m holds, in nibble i, the rank of bit i among the set bits of m (the
// packed value lane i takes). Constant-initialised: no static initialiser runs.
struct ExpandTable {
  uint32_t rank[256];
  constexpr ExpandTable() : rank() {
    for (int m = 0; m < 256; ++m) {
      uint32_t packed = 0;
      for (int i = 0, r = 0; i < 8; ++i) {
        packed |= static_cast<uint32_t>(r & 7) << (4 * i);
        r += (m >> i) & 1;
      }
      rank[m] = packed;
    }
  }
};
inline constexpr ExpandTable kExpandTable{};

// For AVX2's kept_columns: entry m holds, in nibble r, the position of the r-th set bit of m.
struct CompressTable {
  uint32_t position[256];
  constexpr CompressTable() : position() {
    for (int m = 0; m < 256; ++m) {
      uint32_t packed = 0;
      for (int i = 0, r = 0; i < 8; ++i)
        if ((m >> i) & 1) packed |= static_cast<uint32_t>(i) << (4 * r++);
      position[m] = packed;
    }
  }
};
inline constexpr CompressTable kCompressTable{};

struct Simd {
  using V = __m256;
  static constexpr int kWidth = 8;
  static __m256i first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_n(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, first(n), v); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static float sum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static V gather(const float* base, const int32_t* idx) {
    return _mm256_i32gather_ps(base, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)), 4);
  }
  static V gather_n(const float* base, const int32_t* idx, int n) {
    const __m256i m = first(n);
    const __m256i i = _mm256_maskload_epi32(idx, m);
    return _mm256_mask_i32gather_ps(zero(), base, i, _mm256_castsi256_ps(m), 4);
  }
  static V expand(const float* vals, uint32_t bits, const float* vals_end) {
    // A full load when it stays inside the values (the lanes past popcount(bits) are unused).
    const V packed = vals + kWidth <= vals_end ? load(vals) : load_n(vals, popcount(bits));
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i rank = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kExpandTable.rank[bits])), shifts),
        _mm256_set1_epi32(7));
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i set = _mm256_cmpeq_epi32(
        _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane_bit), lane_bit);
    return _mm256_and_ps(_mm256_permutevar8x32_ps(packed, rank), _mm256_castsi256_ps(set));
  }
  static int kept_columns(uint32_t bits, int32_t base, int32_t* out) {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i position = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kCompressTable.position[bits])), shifts),
        _mm256_set1_epi32(15));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm256_add_epi32(position, _mm256_set1_epi32(base)));
    return popcount(bits);
  }
  // dst[c * dst_stride + r] = src[r * src_stride + c] for an 8 x 8 tile: pairs of rows
  // interleaved, then 2-float pairs between rows 2 apart, then 128-bit halves between rows 4 apart.
  static void transpose_tile(const float* src, int64_t src_stride, float* dst,
                             int64_t dst_stride) {
    V r[8], t[8];
    SP_UNROLL for (int i = 0; i < 8; ++i) r[i] = load(src + i * src_stride);
    SP_UNROLL for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    // r[4g + k], half h: column 4h + k of rows 4g .. 4g + 3.
    SP_UNROLL for (int g = 0; g < 2; ++g) {
      r[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
      r[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    SP_UNROLL for (int k = 0; k < 4; ++k) {
      store(dst + k * dst_stride, _mm256_permute2f128_ps(r[k], r[4 + k], 0x20));
      store(dst + (k + 4) * dst_stride, _mm256_permute2f128_ps(r[k], r[4 + k], 0x31));
    }
  }
};

#else

struct Simd {
  using V = float;
  static constexpr int kWidth = 1;
  static V zero() { return 0.0f; }
  static V set1(float x) { return x; }
  static V load(const float* p) { return *p; }
  static V load_n(const float* p, int) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static void store_n(float* p, V v, int) { *p = v; }
  static V fmadd(V a, V b, V c) { return a * b + c; }
  static V add(V a, V b) { return a + b; }
  static float sum(V v) { return v; }
  static V gather(const float* base, const int32_t* idx) { return base[*idx]; }
  static V gather_n(const float* base, const int32_t* idx, int) { return base[*idx]; }
  static int kept_columns(uint32_t bits, int32_t base, int32_t* out) {
    *out = base;
    return static_cast<int>(bits & 1u);
  }
  static void transpose_tile(const float* src, int64_t, float* dst, int64_t) { *dst = *src; }
};

#endif

SP_NAMESPACE_END
