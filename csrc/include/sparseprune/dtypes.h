// Element types the kernels read and write, and exact scalar conversions for the 16-bit ones.
// SIMD kernels use the hardware conversions (F16C, AVX-512), which round the same way (to nearest,
// ties to even), so every ISA stores the same bits.
#pragma once
#include "lanes.h"

SP_NAMESPACE_BEGIN

enum class DType : int32_t { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2, kFloat16 = 3 };

// Storage types: 16-bit patterns, never arithmetic.
struct BF16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

SP_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

SP_HD uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u;  // NaN
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

SP_HD float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  const uint32_t m = h & 0x3FFu;
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float
    const float v = static_cast<float>(m) * (1.0f / 16777216.0f);
    return bits_float(float_bits(v) | sign);
  }
  if (e == 31) return bits_float(sign | 0x7F800000u | (m << 13) | (m ? 0x00400000u : 0u));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

SP_HD uint16_t float_to_f16(float f) {
  uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  if (x > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((x >> 13) & 0x3FFu));
  if (x >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to infinity
  if (x < 0x38800000u) {  // below 2^-14: a half subnormal, in units of 2^-24
    const uint32_t e = x >> 23;
    if (e < 102u) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to zero
    const uint32_t m = (x & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - e;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = (x >> 13) - (112u << 10);  // rebias the exponent from 127 to 15
  const uint32_t rem = x & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

// Host side: calls fn(ST*, WT*) with null pointers of the storage types named by the two dtypes
// (every kernel family instantiates its templates for the 4 x 4 combinations this way).
template <class Fn>
decltype(auto) visit_dtypes(DType score_dtype, DType weight_dtype, Fn&& fn) {
  auto with_weight = [&](auto* st) -> decltype(auto) {
    switch (weight_dtype) {
      case DType::kFloat64: return fn(st, static_cast<double*>(nullptr));
      case DType::kBFloat16: return fn(st, static_cast<BF16*>(nullptr));
      case DType::kFloat16: return fn(st, static_cast<F16*>(nullptr));
      default: return fn(st, static_cast<float*>(nullptr));
    }
  };
  switch (score_dtype) {
    case DType::kFloat64: return with_weight(static_cast<double*>(nullptr));
    case DType::kBFloat16: return with_weight(static_cast<BF16*>(nullptr));
    case DType::kFloat16: return with_weight(static_cast<F16*>(nullptr));
    default: return with_weight(static_cast<float*>(nullptr));
  }
}

// Scalar loads and stores in the math type.
SP_HD float load_lane(const float* p) { return *p; }
SP_HD double load_lane(const double* p) { return *p; }
SP_HD float load_lane(const BF16* p) { return bf16_to_float(p->bits); }
SP_HD float load_lane(const F16* p) { return f16_to_float(p->bits); }
SP_HD void store_lane(float* p, float v) { *p = v; }
SP_HD void store_lane(double* p, double v) { *p = v; }
SP_HD void store_lane(BF16* p, float v) { p->bits = float_to_bf16(v); }
SP_HD void store_lane(F16* p, float v) { p->bits = float_to_f16(v); }

SP_NAMESPACE_END
