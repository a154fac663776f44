// Budget-aware weight reparametrisation (Dupont, Sahbi, Michel, ICIP 2021; docs/METHODS.md 4), per
// element, shared by the CPU kernels (every ISA) and CUDA:
//
//   w_hat = w * h_t(w),   h_t(x) = (exp(-1 / (|t x|^n + 1)) - C2) / (1 - C2),   C2 = exp(-1)
//
// i.e. C1 * (exp(...) - C2) with C1 = 1 / (1 - e^-1). C2 is computed by the same exp as the
// exp(...) term, so h(0) = 0 and h(+-inf) = 1 exactly in every precision. n is a positive integer
// and |t x|^n is a product of exact repeated multiplications (the same on every device).
//
// With a = |t x| and u = a^n, dh/da = n a^(n-1) E / ((1 - C2) (u + 1)^2), E = exp(-1 / (u + 1)),
// and da/dx = |t| sign(x), da/dt = |x| sign(t). For g = dLoss/dw_hat and gs = dLoss/d(sum of h):
//   dLoss/dw = g h + (g w + gs) dh/da |t| sign(w)
//   dLoss/dt = sum over elements of (g w + gs) dh/da |w| sign(t)
//
// T is a float lane type (float, a SIMD type, Multi<...>: the project's exp_nonpositive) or double
// (float64 weights, scalar path: the C library's exp, so gradcheck sees the true derivative).
#pragma once
#include <math.h>

#include "noise.h"

SP_NAMESPACE_BEGIN

// |mag| with the sign of `sign`.
template <class T>
SP_HD T with_sign_of(T mag, T sign) {
  using U = typename Lanes<T>::U;
  return bits_float((float_bits(mag) & U(0x7FFFFFFFu)) | (float_bits(sign) & U(0x80000000u)));
}
SP_HD double with_sign_of(double mag, double sign) { return copysign(mag, sign); }

// a^k for an integer k >= 0 by binary exponentiation (a fixed sequence of products for each k).
template <class T>
SP_HD T integer_power(T a, int32_t k) {
  T result(1.0f);
  T base = a;
  while (k > 0) {
    if (k & 1) result = result * base;
    k >>= 1;
    if (k > 0) base = base * base;
  }
  return result;
}

// Beyond this u + 1, dh/da < n / (a (u + 1)) is below 1e-18 and is returned as 0 (this also keeps
// (u + 1)^2 and a^(n-1) from overflowing into inf * 0).
constexpr float kReparamFlat = 1.0e18f;

// h and dh/da at a = |t x| >= 0 (or NaN) for the integer power n >= 1.
template <class T>
SP_HD void reparam_h(T a, int32_t n, T& h, T& dh_da) {
  const T c2 = exp_nonpositive(T(-1.0f));
  const T k = T(1.0f) - c2;
  const T p = integer_power(a, n - 1);
  const T d = p * a + T(1.0f);
  const T e = exp_nonpositive(T(-1.0f) / d);
  h = (e - c2) / k;
  const T slope = (T(static_cast<float>(n)) * p) * (e / ((k * d) * d));
  dh_da = select(d > T(kReparamFlat), T(0.0f), slope);
}

// Forward of one element: w_hat and h.
template <class T>
SP_HD void reparam_forward(T w, T t, int32_t n, T& w_hat, T& h) {
  T dh_da;
  reparam_h(abs_value(t * w), n, h, dh_da);
  w_hat = w * h;
}

// Backward of one element: dLoss/dw and this element's term of dLoss/dt, from g = dLoss/dw_hat and
// gs = dLoss/d(sum of h) (0 when the sum is unused).
template <class T>
SP_HD void reparam_backward(T g, T gs, T w, T t, int32_t n, T& grad_w, T& t_term) {
  T h, dh_da;
  reparam_h(abs_value(t * w), n, h, dh_da);
  const T common = (g * w + gs) * dh_da;
  grad_w = g * h + common * with_sign_of(t, w);
  t_term = common * with_sign_of(w, t);
}

SP_NAMESPACE_END
