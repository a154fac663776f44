// AVX2 lane types (8 x 32-bit) for the generic element math. Only included by kernel TUs built
// with -mavx2 -mfma -mf16c (SP_CPU_ISA_ID == 1).
#pragma once
#include <immintrin.h>

#include <sparseprune/dtypes.h>
#include <sparseprune/philox.h>

SP_NAMESPACE_BEGIN

struct VF {
  __m256 v;
  VF() = default;
  explicit VF(__m256 x) : v(x) {}
  explicit VF(float x) : v(_mm256_set1_ps(x)) {}
};
struct VU {
  __m256i v;
  VU() = default;
  explicit VU(__m256i x) : v(x) {}
  explicit VU(uint32_t x) : v(_mm256_set1_epi32(static_cast<int>(x))) {}
};
struct VM {
  __m256 m;  // all-ones lanes where true
};

template <>
struct Lanes<VF> {
  using U = VU;
  using M = VM;
  static constexpr int kWidth = 8;
};

inline VF operator+(VF a, VF b) { return VF(_mm256_add_ps(a.v, b.v)); }
inline VF operator-(VF a, VF b) { return VF(_mm256_sub_ps(a.v, b.v)); }
inline VF operator*(VF a, VF b) { return VF(_mm256_mul_ps(a.v, b.v)); }
inline VF operator/(VF a, VF b) { return VF(_mm256_div_ps(a.v, b.v)); }
inline VF fmadd(VF a, VF b, VF c) { return VF(_mm256_fmadd_ps(a.v, b.v, c.v)); }
inline VM operator<(VF a, VF b) { return VM{_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
inline VM operator>(VF a, VF b) { return VM{_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
inline VM operator|(VM a, VM b) { return VM{_mm256_or_ps(a.m, b.m)}; }
inline VM operator==(VF a, VF b) { return VM{_mm256_cmp_ps(a.v, b.v, _CMP_EQ_OQ)}; }
inline VM operator==(VU a, VU b) { return VM{_mm256_castsi256_ps(_mm256_cmpeq_epi32(a.v, b.v))}; }
// Signed comparison: the kernels compare values below 2^31 only.
inline VM operator>(VU a, VU b) { return VM{_mm256_castsi256_ps(_mm256_cmpgt_epi32(a.v, b.v))}; }

inline VU operator+(VU a, VU b) { return VU(_mm256_add_epi32(a.v, b.v)); }
inline VU operator-(VU a, VU b) { return VU(_mm256_sub_epi32(a.v, b.v)); }
inline VU operator^(VU a, VU b) { return VU(_mm256_xor_si256(a.v, b.v)); }
inline VU operator&(VU a, VU b) { return VU(_mm256_and_si256(a.v, b.v)); }
inline VU operator|(VU a, VU b) { return VU(_mm256_or_si256(a.v, b.v)); }
inline VU operator>>(VU a, int n) { return VU(_mm256_srli_epi32(a.v, n)); }
inline VU operator<<(VU a, int n) { return VU(_mm256_slli_epi32(a.v, n)); }

inline VU float_bits(VF x) { return VU(_mm256_castps_si256(x.v)); }
inline VF bits_float(VU x) { return VF(_mm256_castsi256_ps(x.v)); }
inline VF s32_to_float(VU x) { return VF(_mm256_cvtepi32_ps(x.v)); }
inline VU float_to_s32_trunc(VF x) { return VU(_mm256_cvttps_epi32(x.v)); }
inline VF select(VM m, VF a, VF b) { return VF(_mm256_blendv_ps(b.v, a.v, m.m)); }
inline VU select(VM m, VU a, VU b) {
  return VU(_mm256_castps_si256(
      _mm256_blendv_ps(_mm256_castsi256_ps(b.v), _mm256_castsi256_ps(a.v), m.m)));
}
inline VM is_nan(VF x) { return VM{_mm256_cmp_ps(x.v, x.v, _CMP_UNORD_Q)}; }
inline bool any(VM m) { return _mm256_movemask_ps(m.m) != 0; }
inline bool all(VM m) { return _mm256_movemask_ps(m.m) == 0xFF; }
// Bit i set where lane i is true; mask_width: the number of lanes (8).
inline int mask_width(VM) { return 8; }
inline uint64_t lane_bits(VM m) { return static_cast<uint32_t>(_mm256_movemask_ps(m.m)); }
// The mask whose lane i is bit i of b (the inverse of lane_bits).
inline VM mask_from_bits(uint64_t b, const VM*) {
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i v = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(b & 0xFFu)), lane);
  return VM{_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, lane))};
}

inline void mulhilo(uint32_t a, VU b, VU& hi, VU& lo) {
  const __m256i av = _mm256_set1_epi32(static_cast<int>(a));
  const __m256i even = _mm256_mul_epu32(av, b.v);                         // lanes 0, 2, ...
  const __m256i odd = _mm256_mul_epu32(av, _mm256_srli_epi64(b.v, 32));   // lanes 1, 3, ...
  hi = VU(_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA));
  lo = VU(_mm256_mullo_epi32(av, b.v));
}

// Loads and stores of 8 lanes in the math type.
struct VecIO {
  static VF load(const float* p) { return VF(_mm256_loadu_ps(p)); }
  static VF load(const BF16* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return VF(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  static VF load(const F16* p) {
    return VF(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static VU load_bits(const uint32_t* p) {
    return VU(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_bits(uint32_t* p, VU v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v.v);
  }
  static void store(float* p, VF v) { _mm256_storeu_ps(p, v.v); }
  // Non-temporal: p 32-byte aligned (see stream_out in vec.h).
  static void stream(float* p, VF v) { _mm256_stream_ps(p, v.v); }
  static void store(BF16* p, VF v) {
    // Round to nearest even on the bit pattern, NaN to the canonical quiet NaN (as c10::BFloat16).
    const VU x = float_bits(v);
    VU r = (x + VU(0x7FFFu) + ((x >> 16) & VU(1u))) >> 16;
    r = select(is_nan(v), VU(0x7FC0u), r);
    const __m128i packed =
        _mm_packus_epi32(_mm256_castsi256_si128(r.v), _mm256_extracti128_si256(r.v, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
  static void store(F16* p, VF v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v.v, _MM_FROUND_TO_NEAREST_INT));
  }
};

// Philox words for 64 consecutive elements (16 blocks) starting at block `block0` (a multiple of
// 16), as two 8-block halves run side by side (Multi<VU, 2>: two independent chains of ten
// dependent multiplies overlap; one half after the other was latency-bound, 1.2x slower). In each
// half lane j runs block 2 * (j % 4) + j / 4, so that the 4x4 transposes inside each 128-bit lane
// leave the words in element order.
struct ChunkGenerator {
  using U2 = Multi<VU, 2>;
  PhiloxKey<U2> key;
  U2 c2, c3;

  ChunkGenerator(uint64_t seed, uint64_t offset)
      : key(seed), c2(static_cast<uint32_t>(offset)), c3(static_cast<uint32_t>(offset >> 32)) {}

  void operator()(uint64_t block0, uint32_t* out) const {
    const __m256i lane_block = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    U2 c0, c1(static_cast<uint32_t>(block0 >> 32)), d2 = c2, d3 = c3;
    for (int half = 0; half < 2; ++half) {
      const uint32_t base = static_cast<uint32_t>(block0) + 8u * static_cast<uint32_t>(half);
      c0.part[half] = VU(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base)), lane_block));
    }
    philox4x32_10(c0, c1, d2, d3, key);
    for (int half = 0; half < 2; ++half) {
      const __m256i w0 = c0.part[half].v, w1 = c1.part[half].v;
      const __m256i w2 = d2.part[half].v, w3 = d3.part[half].v;
      const __m256i t0 = _mm256_unpacklo_epi32(w0, w1), t1 = _mm256_unpacklo_epi32(w2, w3);
      const __m256i t2 = _mm256_unpackhi_epi32(w0, w1), t3 = _mm256_unpackhi_epi32(w2, w3);
      uint32_t* o = out + 32 * half;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 0), _mm256_unpacklo_epi64(t0, t1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), _mm256_unpackhi_epi64(t0, t1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), _mm256_unpacklo_epi64(t2, t3));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 24), _mm256_unpackhi_epi64(t2, t3));
    }
  }
};

// Four interleaved vectors per step (see multi.h).
using Vec = Multi<VF, 4>;

SP_NAMESPACE_END
