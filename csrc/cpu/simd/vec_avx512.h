// AVX-512 lane types (16 x 32-bit) for the generic element math. Only included by kernel TUs built
// with -mavx512f -mavx512bw -mavx512vl -mavx512dq (SP_CPU_ISA_ID == 2).
#pragma once
#include <immintrin.h>

#include <sparseprune/dtypes.h>
#include <sparseprune/philox.h>

SP_NAMESPACE_BEGIN

struct VF {
  __m512 v;
  VF() = default;
  explicit VF(__m512 x) : v(x) {}
  explicit VF(float x) : v(_mm512_set1_ps(x)) {}
};
struct VU {
  __m512i v;
  VU() = default;
  explicit VU(__m512i x) : v(x) {}
  explicit VU(uint32_t x) : v(_mm512_set1_epi32(static_cast<int>(x))) {}
};
struct VM {
  __mmask16 m;
};

template <>
struct Lanes<VF> {
  using U = VU;
  using M = VM;
  static constexpr int kWidth = 16;
};

inline VF operator+(VF a, VF b) { return VF(_mm512_add_ps(a.v, b.v)); }
inline VF operator-(VF a, VF b) { return VF(_mm512_sub_ps(a.v, b.v)); }
inline VF operator*(VF a, VF b) { return VF(_mm512_mul_ps(a.v, b.v)); }
inline VF operator/(VF a, VF b) { return VF(_mm512_div_ps(a.v, b.v)); }
inline VF fmadd(VF a, VF b, VF c) { return VF(_mm512_fmadd_ps(a.v, b.v, c.v)); }
inline VM operator<(VF a, VF b) { return VM{_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
inline VM operator>(VF a, VF b) { return VM{_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
inline VM operator|(VM a, VM b) { return VM{static_cast<__mmask16>(a.m | b.m)}; }
inline VM operator==(VF a, VF b) { return VM{_mm512_cmp_ps_mask(a.v, b.v, _CMP_EQ_OQ)}; }
inline VM operator==(VU a, VU b) { return VM{_mm512_cmpeq_epi32_mask(a.v, b.v)}; }
// Signed comparison: the kernels compare values below 2^31 only.
inline VM operator>(VU a, VU b) { return VM{_mm512_cmpgt_epi32_mask(a.v, b.v)}; }

inline VU operator+(VU a, VU b) { return VU(_mm512_add_epi32(a.v, b.v)); }
inline VU operator-(VU a, VU b) { return VU(_mm512_sub_epi32(a.v, b.v)); }
inline VU operator^(VU a, VU b) { return VU(_mm512_xor_si512(a.v, b.v)); }
inline VU operator&(VU a, VU b) { return VU(_mm512_and_si512(a.v, b.v)); }
inline VU operator|(VU a, VU b) { return VU(_mm512_or_si512(a.v, b.v)); }
inline VU operator>>(VU a, int n) { return VU(_mm512_srli_epi32(a.v, static_cast<unsigned>(n))); }
inline VU operator<<(VU a, int n) { return VU(_mm512_slli_epi32(a.v, static_cast<unsigned>(n))); }

inline VU float_bits(VF x) { return VU(_mm512_castps_si512(x.v)); }
inline VF bits_float(VU x) { return VF(_mm512_castsi512_ps(x.v)); }
inline VF s32_to_float(VU x) { return VF(_mm512_cvtepi32_ps(x.v)); }
inline VU float_to_s32_trunc(VF x) { return VU(_mm512_cvttps_epi32(x.v)); }
inline VF select(VM m, VF a, VF b) { return VF(_mm512_mask_blend_ps(m.m, b.v, a.v)); }
inline VU select(VM m, VU a, VU b) { return VU(_mm512_mask_blend_epi32(m.m, b.v, a.v)); }
inline VM is_nan(VF x) { return VM{_mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q)}; }
inline bool any(VM m) { return m.m != 0; }
inline bool all(VM m) { return m.m == 0xFFFF; }
// Bit i set where lane i is true; mask_width: the number of lanes (16).
inline int mask_width(VM) { return 16; }
inline uint64_t lane_bits(VM m) { return m.m; }
// The mask whose lane i is bit i of b (the inverse of lane_bits).
inline VM mask_from_bits(uint64_t b, const VM*) { return VM{static_cast<__mmask16>(b)}; }

inline void mulhilo(uint32_t a, VU b, VU& hi, VU& lo) {
  const __m512i av = _mm512_set1_epi32(static_cast<int>(a));
  const __m512i even = _mm512_mul_epu32(av, b.v);                         // 64-bit products, lanes 0, 2, ...
  const __m512i odd = _mm512_mul_epu32(av, _mm512_srli_epi64(b.v, 32));   // lanes 1, 3, ...
  // Interleave the 32-bit halves back into lane order: index i < 16 picks even[i], 16 + i odd[i].
  const __m512i hi_index = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  const __m512i lo_index = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
  hi = VU(_mm512_permutex2var_epi32(even, hi_index, odd));
  lo = VU(_mm512_permutex2var_epi32(even, lo_index, odd));
}

// Loads and stores of 16 lanes in the math type.
struct VecIO {
  static VF load(const float* p) { return VF(_mm512_loadu_ps(p)); }
  static VF load(const BF16* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return VF(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
  }
  static VF load(const F16* p) {
    return VF(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
  }
  static VU load_bits(const uint32_t* p) { return VU(_mm512_loadu_si512(p)); }
  static void store_bits(uint32_t* p, VU v) { _mm512_storeu_si512(p, v.v); }
  static void store(float* p, VF v) { _mm512_storeu_ps(p, v.v); }
  static void store(BF16* p, VF v) {
    // Round to nearest even on the bit pattern, NaN to the canonical quiet NaN (as c10::BFloat16).
    const VU x = float_bits(v);
    VU r = (x + VU(0x7FFFu) + ((x >> 16) & VU(1u))) >> 16;
    r = select(is_nan(v), VU(0x7FC0u), r);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r.v));
  }
  static void store(F16* p, VF v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};

// Philox words for 64 consecutive elements (16 blocks) starting at block `block0` (a multiple of
// 16). Lane j runs block 4 * (j % 4) + j / 4, so that the 4x4 transposes inside each 128-bit lane
// leave the words in element order.
struct ChunkGenerator {
  PhiloxKey<VU> key;
  VU c2, c3;

  ChunkGenerator(uint64_t seed, uint64_t offset)
      : key(seed), c2(static_cast<uint32_t>(offset)), c3(static_cast<uint32_t>(offset >> 32)) {}

  void operator()(uint64_t block0, uint32_t* out) const {
    const __m512i lane_block = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    VU c0(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(block0))), lane_block));
    VU c1(static_cast<uint32_t>(block0 >> 32));
    VU d2 = c2, d3 = c3;
    philox4x32_10(c0, c1, d2, d3, key);
    const __m512i t0 = _mm512_unpacklo_epi32(c0.v, c1.v), t1 = _mm512_unpacklo_epi32(d2.v, d3.v);
    const __m512i t2 = _mm512_unpackhi_epi32(c0.v, c1.v), t3 = _mm512_unpackhi_epi32(d2.v, d3.v);
    _mm512_storeu_si512(out + 0, _mm512_unpacklo_epi64(t0, t1));
    _mm512_storeu_si512(out + 16, _mm512_unpackhi_epi64(t0, t1));
    _mm512_storeu_si512(out + 32, _mm512_unpacklo_epi64(t2, t3));
    _mm512_storeu_si512(out + 48, _mm512_unpackhi_epi64(t2, t3));
  }
};

// Four interleaved vectors per step (see multi.h).
using Vec = Multi<VF, 4>;

SP_NAMESPACE_END
