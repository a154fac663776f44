// Logistic noise from one uniform, with the project's own log and exp: one implementation for every
// CPU ISA and CUDA, so the same (seed, offset) gives bit-identical noise everywhere (DESIGN 2.1).
// The polynomials are the classic Cephes single-precision ones (about 1 ulp), in Horner form with
// explicit fused multiply-adds (exact on every device, see fmadd in lanes.h); they only ever see
// the inputs below, so they need no special cases for zero, negatives, infinities or NaN.
#pragma once
#include <math.h>

#include "uniform.h"

SP_NAMESPACE_BEGIN

template <class F>
SP_HD F neg_abs(F x) {
  using U = typename Lanes<F>::U;
  return bits_float(float_bits(x) | U(0x80000000u));
}

template <class F>
SP_HD F abs_value(F x) {
  using U = typename Lanes<F>::U;
  return bits_float(float_bits(x) & U(0x7FFFFFFFu));
}

// Natural log of a positive, finite, normal float (here: uniforms in [2^-24, 1 - 2^-24]).
template <class F>
SP_HD F log_positive(F x) {
  using U = typename Lanes<F>::U;
  const U bits = float_bits(x);
  // x = m * 2^e with m in [0.5, 1).
  const F m = bits_float((bits & U(0x007FFFFFu)) | U(0x3F000000u));
  F e = s32_to_float((bits >> 23) - U(126u));
  // Centre the mantissa on 1: f = m - 1, or 2m - 1 (and e - 1) when m < sqrt(1/2).
  const auto low = m < F(0.70710678118654752f);
  const F f = select(low, m + m, m) - F(1.0f);
  e = select(low, e - F(1.0f), e);
  const F z = f * f;
  F p = F(7.0376836292e-2f);
  p = fmadd(p, f, F(-1.1514610310e-1f));
  p = fmadd(p, f, F(1.1676998740e-1f));
  p = fmadd(p, f, F(-1.2420140846e-1f));
  p = fmadd(p, f, F(1.4249322787e-1f));
  p = fmadd(p, f, F(-1.6668057665e-1f));
  p = fmadd(p, f, F(2.0000714765e-1f));
  p = fmadd(p, f, F(-2.4999993993e-1f));
  p = fmadd(p, f, F(3.3333331174e-1f));
  F y = (p * f) * z;
  // ln 2 split in two so that e * 0.693359375 is exact.
  y = fmadd(e, F(-2.12194440e-4f), y);
  y = fmadd(F(-0.5f), z, y);
  return fmadd(e, F(0.693359375f), f + y);
}

// exp(x) for x <= 0; arguments below -87 are clamped (exp(-87) ~ 1.6e-38 stays a normal float).
template <class F>
SP_HD F exp_nonpositive(F x) {
  using U = typename Lanes<F>::U;
  x = select(x < F(-87.0f), F(-87.0f), x);
  // n = floor(x / ln2 + 1/2), r = x - n ln2 (ln 2 in two parts).
  const F t = fmadd(x, F(1.44269504088896341f), F(0.5f));
  F n = s32_to_float(float_to_s32_trunc(t));
  n = select(n > t, n - F(1.0f), n);
  F r = fmadd(n, F(-0.693359375f), x);
  r = fmadd(n, F(2.12194440e-4f), r);
  const F z = r * r;
  F p = F(1.9875691500e-4f);
  p = fmadd(p, r, F(1.3981999507e-3f));
  p = fmadd(p, r, F(8.3334519073e-3f));
  p = fmadd(p, r, F(4.1665795894e-2f));
  p = fmadd(p, r, F(1.6666665459e-1f));
  p = fmadd(p, r, F(5.0000001201e-1f));
  const F y = fmadd(p, z, r) + F(1.0f);
  // 2^n for n in [-126, 0], built from its exponent bits.
  const U pow2 = (float_to_s32_trunc(n) + U(127u)) << 23;
  return y * bits_float(pow2);
}

// float64 lanes (the scalar float64 paths, there for gradcheck): the C library's functions, chosen
// over the templates above by overload resolution.
SP_HD double neg_abs(double x) { return -fabs(x); }
SP_HD double abs_value(double x) { return fabs(x); }
SP_HD double exp_nonpositive(double x) { return exp(x); }

// Logistic(0, 1) noise, the difference of two independent Gumbels: L = log(u) - log(1 - u),
// evaluated as one log of u / (1 - u) (both exact, the quotient correctly rounded).
template <class F>
SP_HD F logistic_noise(F u) {
  return log_positive(u / (F(1.0f) - u));
}

// A cheap estimate of logistic_noise(u): exponent plus a cubic in the mantissa for each log
// (minimax on [1, 2), error 4.42e-4 per log). tests/test_rng.py checks exhaustively, over all
// 2^23 possible uniforms, that it stays within kLogisticEstimateBound of logistic_noise(u).
constexpr float kLogisticEstimateBound = 1.0e-3f;

template <class F>
SP_HD F log_estimate(F x) {
  using U = typename Lanes<F>::U;
  const U bits = float_bits(x);
  const F e = s32_to_float((bits >> 23) - U(127u));
  const F f = bits_float((bits & U(0x007FFFFFu)) | U(0x3F800000u)) - F(1.0f);  // m - 1, m in [1, 2)
  F p = F(0.10968904197216034f);
  p = fmadd(p, f, F(-0.4000322222709656f));
  p = fmadd(p, f, F(0.9834903478622437f));
  p = fmadd(p, f, F(0.0004420172772370279f));
  return fmadd(e, F(0.6931471805599453f), p);
}

template <class F>
SP_HD F logistic_noise_estimate(F u) {
  return log_estimate(u) - log_estimate(F(1.0f) - u);
}

SP_NAMESPACE_END
