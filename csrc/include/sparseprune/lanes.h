// Scalar "lane" primitives. The element math in philox.h / noise.h / ste.h is written once, as
// templates over a float type F (with its uint32 type U and mask type M). Here F = float, one lane,
// used by CUDA, by the scalar CPU kernels and by every SIMD kernel's tail. The SIMD kernels supply
// the same primitives for vector types (csrc/cpu/simd/vec_*.h), found by argument-dependent lookup.
//
// Every operation below is a single IEEE-754 operation or an exact bit manipulation, so a lane
// computes the same bits whatever the vector width, provided no FMA contraction happens (the build
// passes -ffp-contract=off to g++ and --fmad=false to nvcc).
#pragma once
#include <stdint.h>
#include <string.h>

#include "macros.h"

SP_NAMESPACE_BEGIN

// Lane traits: U = same-width uint32 lanes, M = comparison mask, kWidth = lanes per value.
template <class F>
struct Lanes;

template <>
struct Lanes<float> {
  using U = uint32_t;
  using M = bool;
  static constexpr int kWidth = 1;
};

template <>
struct Lanes<double> {
  using U = uint64_t;
  using M = bool;
  static constexpr int kWidth = 1;
};

SP_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
#endif
}

SP_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// Signed int32 lanes converted to float (exact for |x| < 2^24).
SP_HD float s32_to_float(uint32_t x) { return static_cast<float>(static_cast<int32_t>(x)); }

// Truncation toward zero to signed int32 lanes.
SP_HD uint32_t float_to_s32_trunc(float x) {
  return static_cast<uint32_t>(static_cast<int32_t>(x));
}

// a * b + c rounded once (IEEE fused multiply-add). Every device computes it exactly, so the
// polynomials below may use it without breaking bit-identity: hardware FMA where the target has it
// (CUDA, and the AVX2 / AVX-512 builds, where even the one-lane tail code compiles to vfmadd),
// else an exact software version: the product is exact in double, the sum is rounded to odd in
// double, and the final rounding to float is then correct (no double-rounding error).
SP_HD float fmadd(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#elif defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  const double p = static_cast<double>(a) * static_cast<double>(b);
  const double cd = static_cast<double>(c);
  double s = p + cd;
  const double bp = s - p;
  const double err = (p - (s - bp)) + (cd - bp);  // exact: p + cd == s + err
  if (err != 0) {
    uint64_t u;
    memcpy(&u, &s, sizeof u);
    if ((u & 1) == 0) u += ((err > 0) == (s > 0)) ? 1 : static_cast<uint64_t>(-1);
    memcpy(&s, &u, sizeof s);
  }
  return static_cast<float>(s);
#endif
}

SP_HD float select(bool m, float a, float b) { return m ? a : b; }
SP_HD uint32_t select(bool m, uint32_t a, uint32_t b) { return m ? a : b; }
SP_HD double select(bool m, double a, double b) { return m ? a : b; }
SP_HD bool is_nan(float x) { return x != x; }
SP_HD bool is_nan(double x) { return x != x; }
SP_HD bool any(bool m) { return m; }
SP_HD bool all(bool m) { return m; }

// High and low 32 bits of the 64-bit product a * b.
SP_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#endif
}

SP_NAMESPACE_END
