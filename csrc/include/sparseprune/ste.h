// Straight-through mask math per element, shared by the CPU kernels (every ISA) and CUDA.
// F is the float lane type of the score math; W is the lane type of the weight math (F itself, or
// double for float64 weights on the scalar path).
#pragma once
#include "noise.h"

SP_NAMESPACE_BEGIN

// ---- ASLP (docs/METHODS.md 1.2-1.3) -----------------------------------------------------------
// Hard sample z = 1[s + L > 0]: the argmax of the Gumbel-softmax over the logits (s, 0).
template <class F>
SP_HD typename Lanes<F>::M aslp_keep(F s, F L) {
  return (s + L) > F(0.0f);
}

// The same hard sample from the uniform u, cheaply: decide from the estimate of L where it is
// farther than its error bound from 0, and compute L exactly only when a lane is too close to call.
// The result is identical to aslp_keep(s, logistic_noise(u)) (NaN scores are never kept).
// The margin adds 2^-17 for the rounding of s + estimate when |s| < 32; for larger |s| the sign of
// s decides (|L| < 17).
template <class F>
SP_HD typename Lanes<F>::M aslp_keep_from_uniform(F s, F u) {
  constexpr float kMargin = kLogisticEstimateBound + 1.0f / 131072.0f;
  const F t = s + logistic_noise_estimate(u);
  const auto keep = t > F(kMargin);
  if (all(keep | (t < F(-kMargin)))) return keep;
  return aslp_keep(s, logistic_noise(u));
}

// d y / d s for the soft sample y = sigmoid((s + L) / tau): y (1 - y) / tau, computed as
// e / (1 + e)^2 / tau with e = exp(-|t|), which keeps full precision when y is near 0 or 1.
template <class F>
SP_HD F aslp_soft_slope(F s, F L, F inv_tau) {
  const F t = (s + L) * inv_tau;
  const F e = exp_nonpositive(neg_abs(t));
  const F d = F(1.0f) + e;
  return (e / (d * d)) * inv_tau;
}

// Forward value of every straight-through mask: the masked weight scale * w * z.
template <class M, class W>
SP_HD W masked_weight(M keep, W w, W scale) {
  return select(keep, w * scale, W(0.0f));
}

// Backward, from g = dLoss/d(masked weight):
//   grad_scores = g * scale * w * y (1 - y) / tau      (straight-through Gumbel-softmax)
//   grad_weight = g * scale * z
//   scale_term  = g * w * z                             (summed over the layer: dLoss/dscale)
template <class F, class W>
SP_HD void aslp_backward(W g, W w, F s, F L, W scale, F inv_tau, F& grad_scores, W& grad_weight,
                         W& scale_term) {
  const auto keep = aslp_keep(s, L);
  const W gw = g * w;
  grad_scores = F(gw * scale) * aslp_soft_slope(s, L, inv_tau);
  grad_weight = select(keep, g * scale, W(0.0f));
  scale_term = select(keep, gw, W(0.0f));
}

SP_NAMESPACE_END
