// N:M pattern masks (docs/METHODS.md 13, DESIGN 2.7): the per-group math shared by every CPU ISA
// and CUDA. A group is M consecutive weights along a layer's input (the host regroups
// convolutions so that groups are always M consecutive elements of a [G, M] tensor).
//
// nm_gumbel (MaskLLM's categorical Gumbel-softmax over the C = C(M, N) candidate patterns of a
// group, straight-through; METHODS 13.2):
//   G[g, k] = -log(-log u)   u the open uniform of Philox element e = g * C + k (DESIGN 2.1), in
//                            float32 with noise.h's log, whatever the dtypes
//   a_k     = kappa * pi[g, k] + G[g, k]            (kappa: the logit scale; two roundings)
//   hard:     k* = argmax_k a_k (ties: the lower k), m = P[k*]: exactly N of M kept
//   soft:     m_j = sum_{k : P[k, j] = 1} y_k,  y = softmax(a / tau)   (MaskLLM's default mode)
//   backward (both modes): h_j = w_j * g_j * scale,  s_k = sum_{j in P_k} h_j,
//     dLoss/dpi_k = (kappa / tau) * y_k * (s_k - sum_l y_l s_l)
//   which is what autograd gives F.gumbel_softmax(kappa * pi, tau, hard) @ P at the same noise.
// nm_topk (Edge-Popup per group, METHODS 13.3): keep the N largest |s| of each group (ties: the
//   lower index); dLoss/ds = sign(s) * w * g, dLoss/dw = g * m.
// srste (Zhou et al., ICLR 2021; METHODS 13.4): keep the N largest |w| of each group; the weight
//   gradient passes densely, dLoss/dw = g + decay * (1 - m) * w.
//
// Reductions (the Smart Rescale gradient, sum of g * w * m): a tile is kNmTileGroups groups; a
// group's term sums its M products in position order; group q of a tile goes to lane sum q % 16
// and the lanes meet in tiles.h's tree; the tiles are summed in order in double. Independent of
// thread count, vector width and device, as every reduction of the project.
#pragma once
#include "noise.h"

SP_NAMESPACE_BEGIN

constexpr int kNmMaxM = 8;
constexpr int kNmMaxCandidates = 70;     // C(8, 4)
constexpr int64_t kNmTileGroups = 256;   // groups per reduction tile (one CUDA block)

SP_HD int64_t nm_num_tiles(int64_t groups) {
  return (groups + kNmTileGroups - 1) / kNmTileGroups;
}

enum class NmRule : int32_t { kGumbel = 0, kTopk = 1, kSrste = 2 };

// The candidate patterns of n kept of m positions in itertools.combinations(range(m), n) order:
// bit j of bits[k] is set when candidate k keeps position j. Returns their number C(m, n).
SP_HD int nm_patterns(int n, int m, uint32_t* bits) {
  int idx[kNmMaxM];
  for (int i = 0; i < n; ++i) idx[i] = i;
  int c = 0;
  while (true) {
    uint32_t b = 0;
    for (int i = 0; i < n; ++i) b |= 1u << idx[i];
    bits[c++] = b;
    int i = n - 1;
    while (i >= 0 && idx[i] == m - n + i) --i;
    if (i < 0) return c;
    ++idx[i];
    for (int j = i + 1; j < n; ++j) idx[j] = idx[j - 1] + 1;
  }
}

// Gumbel(0, 1) noise from one open uniform: -log(-log u), both logs noise.h's (u lies in
// [2^-24, 1 - 2^-24], so -log u is a positive normal float and the outer log is defined).
template <class F>
SP_HD F gumbel_noise(F u) {
  return F(0.0f) - log_positive(F(0.0f) - log_positive(u));
}

// The perturbed logit a = kappa * pi + G (a product, then a sum: two roundings).
template <class F>
SP_HD F nm_perturbed(F kappa, F pi, F noise) {
  return kappa * pi + noise;
}

// Hard sample of one group from its c perturbed logits a[0..c) (scalar: float or double):
// the pattern bits of the first maximum. NaN never wins a comparison (the host rejects NaN).
template <class S>
SP_HD uint32_t nm_argmax_bits(const S* a, int c, const uint32_t* patterns) {
  S best = a[0];
  uint32_t bits = patterns[0];
  for (int k = 1; k < c; ++k) {
    const bool better = a[k] > best;
    best = better ? a[k] : best;
    bits = better ? patterns[k] : bits;
  }
  return bits;
}

// exp(z - zmax) for the softmax (z <= zmax: noise.h's exp of a non-positive argument; double
// lanes use the C library's).
template <class F>
SP_HD F nm_softmax_term(F z, F zmax) {
  return exp_nonpositive(z - zmax);
}

// dLoss/dpi_k = coef * (y_k * (s_k - mean)), coef = kappa / tau, mean = sum_l y_l s_l.
template <class F>
SP_HD F nm_logit_grad(F coef, F y, F s, F mean) {
  return coef * (y * (s - mean));
}

// Top-n of one group of m keys (|s| or |w| as comparable values: float bits with the sign cleared,
// or doubles): bit j set when key j is among the n largest, ties to the lower index.
template <class K>
SP_HD uint32_t nm_top_bits(const K* key, int n, int m) {
  uint32_t bits = 0;
  for (int j = 0; j < m; ++j) {
    int rank = 0;
    for (int i = 0; i < m; ++i) rank += i < j ? key[i] >= key[j] : (i > j && key[i] > key[j]);
    if (rank < n) bits |= 1u << j;
  }
  return bits;
}

// The ordering key of |x| for nm_top_bits: float bits with the sign cleared (monotonic in |x| for
// non-NaN x; +0 and -0 tie), or |x| itself for doubles.
SP_HD uint32_t nm_magnitude_key(float x) { return float_bits(x) & 0x7FFFFFFFu; }
SP_HD double nm_magnitude_key(double x) { return fabs(x); }

// SR-STE's weight gradient: g where kept, g + decay * w where pruned.
template <class M, class W>
SP_HD W srste_grad_weight(M keep, W g, W w, W decay) {
  return select(keep, g, g + decay * w);
}

// sign(s) * w * g for double lanes (ste.h's edge_popup_grad_scores covers the float ones).
SP_HD double nm_topk_grad_scores(double g, double w, double s) {
  const double gw = g * w;
  return s == 0 ? 0.0 : (s < 0 ? -gw : gw);
}

SP_NAMESPACE_END
