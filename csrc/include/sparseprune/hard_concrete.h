// Hard-concrete gates (Louizos, Welling, Kingma, ICLR 2018; docs/METHODS.md 5), per element,
// shared by the CPU kernels (every ISA) and CUDA. From the element's logistic noise L (noise.h):
//
//   x = (L + log_alpha) / beta,  s = sigmoid(x),  a = s * (zeta - gamma) + gamma,  z = clamp(a, 0, 1)
//
// and the pathwise gradient (METHODS 5.2: hardtanh passes nothing where it clips)
//
//   dLoss/dlog_alpha = g * (zeta - gamma) * s (1 - s) / beta   where 0 < z < 1, else 0.
//
// 1 / beta is a multiplication by the host's inv_beta (as ASLP's temperature). With e = exp(-|x|)
// and d = 1 + e, s is 1 / d (x >= 0) or e / d (x < 0) and s (1 - s) = e / d^2, full precision
// at both ends (logistic_slope in ste.h, the same formula). NaN log_alpha gives NaN z and grad.
//
// W is a float lane type (float, a SIMD type, Multi<...>: the project's exp, the same bits on every
// ISA and CUDA) or double (float64 log_alpha, scalar path: the C library's exp, so gradcheck sees
// the true derivative). L is float32 in both cases, the noise every op of the project uses.
#pragma once
#include "noise.h"

SP_NAMESPACE_BEGIN

// The stretched value a (before the clip) and the slope ds/dlog_alpha = s (1 - s) * inv_beta.
template <class W>
SP_HD void hard_concrete_stretch(W L, W log_alpha, W inv_beta, W width, W gamma, W& a, W& slope) {
  const W x = (L + log_alpha) * inv_beta;
  const W e = exp_nonpositive(neg_abs(x));
  const W d = W(1.0f) + e;
  const W s = select(x < W(0.0f), e / d, W(1.0f) / d);
  a = s * width + gamma;  // two roundings, as the PyTorch reference computes it
  slope = (e / (d * d)) * inv_beta;
}

// z = clamp(a, 0, 1), NaN kept (as torch.clamp).
template <class W>
SP_HD W hard_concrete_clip(W a) {
  return select(a < W(0.0f), W(0.0f), select(a > W(1.0f), W(1.0f), a));
}

// Forward of one element: the gate z. width = zeta - gamma.
template <class W>
SP_HD W hard_concrete_forward(W L, W log_alpha, W inv_beta, W width, W gamma) {
  W a, slope;
  hard_concrete_stretch(L, log_alpha, inv_beta, width, gamma, a, slope);
  return hard_concrete_clip(a);
}

// Backward of one element: dLoss/dlog_alpha from g = dLoss/dz, 0 where the gate is clipped
// (z exactly 0 or 1).
template <class W>
SP_HD W hard_concrete_backward(W g, W L, W log_alpha, W inv_beta, W width, W gamma) {
  W a, slope;
  hard_concrete_stretch(L, log_alpha, inv_beta, width, gamma, a, slope);
  const W z = hard_concrete_clip(a);
  return select((z == W(0.0f)) | (z == W(1.0f)), W(0.0f), g * (width * slope));
}

SP_NAMESPACE_END
