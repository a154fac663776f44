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
  // Non-temporal: p 64-byte aligned (see stream_out in vec.h).
  static void stream(float* p, VF v) { _mm512_stream_ps(p, v.v); }
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
// 16), as two independent vectors of 8 blocks. Each block's words sit in the low halves of 64-bit
// lanes: _mm512_mul_epu32 reads only those and returns the whole 64-bit product, so a round needs
// no shuffles (the high halves carry garbage that never reaches a low half), and the two chains
// of ten dependent multiplies overlap. 1.5x the throughput of 16 blocks in 32-bit lanes (which
// needs two permutes per multiply and is one latency-bound chain). The rounds are philox.h's.
// Lane j of half h runs block 8h + (j / 2) + 4 (j % 2), so that the closing 64-bit unpacks leave
// the words in element order.
struct ChunkGenerator {
  __m512i k0[kPhiloxRounds], k1[kPhiloxRounds];  // round keys, broadcast to every 64-bit lane
  __m512i c2, c3;                                // the offset's words

  ChunkGenerator(uint64_t seed, uint64_t offset)
      : c2(_mm512_set1_epi64(static_cast<uint32_t>(offset))),
        c3(_mm512_set1_epi64(static_cast<uint32_t>(offset >> 32))) {
    const PhiloxKey<uint32_t> key(seed);
    for (int round = 0; round < kPhiloxRounds; ++round) {
      k0[round] = _mm512_set1_epi64(key.k0[round]);
      k1[round] = _mm512_set1_epi64(key.k1[round]);
    }
  }

  void operator()(uint64_t block0, uint32_t* out) const {
    constexpr int kHalves = 2;
    const __m512i m0 = _mm512_set1_epi64(kPhiloxM0), m1 = _mm512_set1_epi64(kPhiloxM1);
    const __m512i lane_block = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
    __m512i x0[kHalves], x1[kHalves], x2[kHalves], x3[kHalves];
    for (int h = 0; h < kHalves; ++h) {
      x0[h] = _mm512_add_epi64(_mm512_set1_epi64(static_cast<uint32_t>(block0) + 8u * h),
                               lane_block);  // no carry out of 32 bits: block0 % 16 == 0
      x1[h] = _mm512_set1_epi64(static_cast<uint32_t>(block0 >> 32));
      x2[h] = c2;
      x3[h] = c3;
    }
    for (int round = 0; round < kPhiloxRounds; ++round) {
      for (int h = 0; h < kHalves; ++h) {
        const __m512i p0 = _mm512_mul_epu32(m0, x0[h]), p1 = _mm512_mul_epu32(m1, x2[h]);
        // 0x96: a ^ b ^ c. hi = the product's high half; lo = the product (low half valid).
        x0[h] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), x1[h], k0[round], 0x96);
        x2[h] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), x3[h], k1[round], 0x96);
        x1[h] = p1;
        x3[h] = p0;
      }
    }
    for (int h = 0; h < kHalves; ++h) {
      // Words (0, 1) and (2, 3) of each lane's block side by side, then two blocks per unpack.
      const __m512i w01 = _mm512_mask_shuffle_epi32(x0[h], 0xAAAA, x1[h], _MM_PERM_CDAB);
      const __m512i w23 = _mm512_mask_shuffle_epi32(x2[h], 0xAAAA, x3[h], _MM_PERM_CDAB);
      _mm512_storeu_si512(out + 32 * h, _mm512_unpacklo_epi64(w01, w23));
      _mm512_storeu_si512(out + 32 * h + 16, _mm512_unpackhi_epi64(w01, w23));
    }
  }
};

// Four interleaved vectors per step (see multi.h).
using Vec = Multi<VF, 4>;

SP_NAMESPACE_END
