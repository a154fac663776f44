// Straight-through mask math per element, shared by the CPU kernels (every ISA) and CUDA.
// F is the float lane type of the score math; W is the lane type of the weight math (F itself, or
// double for float64 weights on the scalar path). Formulas: docs/METHODS.md sections 1-3.
#pragma once
#include "noise.h"

SP_NAMESPACE_BEGIN

// Forward value of every straight-through mask: the masked weight scale * w * z.
template <class M, class W>
SP_HD W masked_weight(M keep, W w, W scale) {
  return select(keep, w * scale, W(0.0f));
}

// ---- Stochastic masks: ASLP and Supermask ------------------------------------------------------
// Both keep weight i with probability sigmoid(s_i), decided from the same logistic noise
// L = logit(u) of the element's uniform u:
//   ASLP       z = 1[s + L > 0]   the hard Gumbel-softmax sample over the logits (s, 0);
//   Supermask  z = 1[s - L > 0]   i.e. u < sigmoid(s), a Bernoulli(sigmoid(s)) sample.
// The backward surrogates differ: ASLP passes the gradient of the soft sample
// y = sigmoid((s + L) / tau) at the same noise; Supermask the noise-free sigmoid'(s).
enum class Stochastic : int32_t { kAslp = 0, kSupermask = 1 };

template <Stochastic R, class F>
SP_HD F decision_sum(F s, F L) {
  return R == Stochastic::kAslp ? s + L : s - L;
}

template <Stochastic R, class F>
SP_HD typename Lanes<F>::M stochastic_keep(F s, F L) {
  return decision_sum<R>(s, L) > F(0.0f);
}

// The same hard sample from the uniform u, cheaply: decide from the estimate of L where it is
// farther than its error bound from 0, and compute L exactly only when a lane is too close to
// call. The result is identical to stochastic_keep(s, logistic_noise(u)) (NaN scores are never
// kept). The margin adds 2^-17 for the rounding of s +- estimate when |s| < 32; for larger |s|
// the sign of s decides (|L| < 17).
template <Stochastic R, class F>
SP_HD typename Lanes<F>::M stochastic_keep_from_uniform(F s, F u) {
  constexpr float kMargin = kLogisticEstimateBound + 1.0f / 131072.0f;
  const F t = decision_sum<R>(s, logistic_noise_estimate(u));
  const auto keep = t > F(kMargin);
  if (all(keep | (t < F(-kMargin)))) return keep;
  return stochastic_keep<R>(s, logistic_noise(u));
}

// sigmoid'(t * k) * k = y (1 - y) k with y = sigmoid(t k), computed as e / (1 + e)^2 * k with
// e = exp(-|t k|), which keeps full precision when y is near 0 or 1.
template <class F>
SP_HD F logistic_slope(F t, F k) {
  const F e = exp_nonpositive(neg_abs(t * k));
  const F d = F(1.0f) + e;
  return (e / (d * d)) * k;
}

// The hard sample and its surrogate slope from the element's uniform. Supermask needs no exact
// noise for either (its slope is noise-free), ASLP's slope needs L.
template <Stochastic R, class F, class M>
SP_HD void keep_and_slope(F s, F u, F inv_tau, M& keep, F& slope) {
  if constexpr (R == Stochastic::kSupermask) {
    keep = stochastic_keep_from_uniform<R>(s, u);
    slope = logistic_slope(s, F(1.0f));
  } else {
    const F L = logistic_noise(u);
    keep = stochastic_keep<R>(s, L);
    slope = logistic_slope(s + L, inv_tau);
  }
}

// Backward of scale * w * z (no DWR), from g = dLoss/d(masked weight):
//   grad_scores = g * scale * w * slope          (straight-through)
//   grad_weight = g * scale * z
//   scale_term  = g * w * z                      (summed over the layer: dLoss/dscale)
template <class F, class M, class W>
SP_HD void stochastic_backward(W g, W w, M keep, F slope, W scale, F& grad_scores,
                               W& grad_weight, W& scale_term) {
  const W gw = g * w;
  grad_scores = F(gw * scale) * slope;
  grad_weight = select(keep, g * scale, W(0.0f));
  scale_term = select(keep, gw, W(0.0f));
}

// ---- Dynamic Weight Rescaling (Supermask's DWR, METHODS 2.2-2.3) -------------------------------
// w_hat = r * w * z with r = N / M, M = sum(z), recomputed every forward. With z's straight-through
// surrogate, dLoss/ds_j = slope_j * (r * w_j * g_j - c), c = (r / M) * sum_i w_i z_i g_i, which
// needs a layer-wide sum first. Pass 1 stores each element's slope with z in its sign bit (slopes
// are >= 0) and sums w z g and z; pass 2 finishes from it without regenerating the noise.

template <class F, class M>
SP_HD F pack_slope(F slope, M keep) {
  using U = typename Lanes<F>::U;
  return bits_float(float_bits(slope) | select(keep, U(0u), U(0x80000000u)));
}

template <class F>
SP_HD typename Lanes<F>::M unpacked_keep(F packed) {
  using U = typename Lanes<F>::U;
  return (float_bits(packed) & U(0x80000000u)) == U(0u);
}

// Pass 2 for one element: r and c are the layer's factors.
template <class F, class W>
SP_HD void dwr_finish(W g, W w, F packed_slope, W r, W c, F& grad_scores, W& grad_weight,
                      W& masked) {
  const auto keep = unpacked_keep(packed_slope);
  grad_scores = F((r * w) * g - c) * abs_value(packed_slope);
  grad_weight = select(keep, r * g, W(0.0f));
  masked = select(keep, r * w, W(0.0f));
}

// ---- Edge-Popup (METHODS 3) --------------------------------------------------------------------
// Keep the top-k |s| of the layer; the gradient passes straight through the top-k and |.|:
// dLoss/ds = sign(s) * w * g.

// The ordering key of |s|: its float bits with the sign cleared (monotonic in |s|).
template <class F>
SP_HD typename Lanes<F>::U magnitude_key(F s) {
  using U = typename Lanes<F>::U;
  return float_bits(s) & U(0x7FFFFFFFu);
}

template <class F, class W>
SP_HD F edge_popup_grad_scores(W g, W w, F s) {
  using U = typename Lanes<F>::U;
  const F gw(g * w);
  // sign(s) * gw, with sign(0) = 0: flip by s's sign bit, zero where s == 0.
  const F signed_gw = bits_float(float_bits(gw) ^ (float_bits(s) & U(0x80000000u)));
  return select(s == F(0.0f), F(0.0f), signed_gw);
}

SP_NAMESPACE_END
