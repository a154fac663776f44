// Plain parameter structs handed from the host layer (csrc/host) to the CPU and CUDA kernels.
// Pointers are device pointers of the op's device; nullptr means "not requested".
#pragma once
#include "dtypes.h"
#include "nm.h"
#include "ste.h"
#include "tiles.h"

SP_NAMESPACE_BEGIN

// One pass of a stochastic mask (ASLP or Supermask) over a weight-shaped tensor: element i in
// row-major order takes Philox element i of (seed, offset), see philox.h.
struct StochasticParams {
  int64_t numel = 0;
  Stochastic rule = Stochastic::kAslp;
  uint64_t seed = 0;
  uint64_t offset = 0;
  float inv_temperature = 1.0f;
  const float* scale = nullptr;  // Smart Rescale scalar; nullptr means 1
  DType score_dtype = DType::kFloat32;
  DType weight_dtype = DType::kFloat32;
  const void* scores = nullptr;
  const void* weight = nullptr;

  // The masked weight (forward; backward when set, possibly aliasing `grad`: every pass reads an
  // element before it writes it).
  void* masked = nullptr;

  const void* grad = nullptr;   // dLoss/d(masked weight), weight dtype
  void* grad_scores = nullptr;  // score dtype
  void* grad_weight = nullptr;  // weight dtype

  // Per-tile partial sums, in tile order: the forward's kept count (DWR), the backward's
  // sum of g * w * z (Smart Rescale), or DWR pass 1's pair (sum of w * z * g, kept count).
  double* partials = nullptr;
  float* grad_scale = nullptr;  // CUDA: the reduced Smart Rescale gradient

  // DWR passes (see ste.h): pass 1 writes the packed slopes, pass 2 reads them and [r, c].
  float* slopes = nullptr;
  const double* dwr_factors = nullptr;  // [r, c]
  // CPU only (CUDA leaves it null): one bit per element, bit i % 32 of word i / 32 set where
  // z_i = 1. The forward's count pass writes it and its write pass applies r from it; with
  // Supermask the backward's pass 1 writes it instead of `slopes` and pass 2 recomputes the
  // noise-free slope from the score.
  uint32_t* keep_bits = nullptr;
};

// N:M pattern masks (nm.h) over `groups` groups of m consecutive elements of a [groups, m] weight
// (the host regroups convolutions). nm_gumbel: scores are the [groups, c] pattern logits, element
// g * c + k takes Philox element g * c + k of (seed, offset); nm_topk: scores have the weight's
// [groups, m] layout; srste: no scores (the weight ranks itself).
struct NmParams {
  int64_t groups = 0;
  int32_t n = 2, m = 4, c = 6;  // n kept of every m; c = C(m, n) candidates
  uint32_t patterns[kNmMaxCandidates] = {};  // bit j of patterns[k]: candidate k keeps position j
  NmRule rule = NmRule::kGumbel;
  bool hard = true;               // nm_gumbel: the one-hot pattern (false: MaskLLM's soft mask)
  uint64_t seed = 0;
  uint64_t offset = 0;
  double logit_scale = 1.0;       // kappa (rounded to float unless the math runs in double)
  double inv_temperature = 1.0;   // 1 / tau
  double decay = 0.0;             // srste's lambda_w
  const float* scale = nullptr;   // Smart Rescale scalar (nm_gumbel); nullptr means 1
  DType score_dtype = DType::kFloat32;
  DType weight_dtype = DType::kFloat32;
  const void* scores = nullptr;
  const void* weight = nullptr;

  void* masked = nullptr;        // the masked weight (forward; backward when set, may alias grad)
  const void* grad = nullptr;    // dLoss/d(masked weight), weight dtype
  void* grad_scores = nullptr;   // score dtype
  void* grad_weight = nullptr;   // weight dtype

  double* partials = nullptr;    // per-tile sums of g * w * m (Smart Rescale), in tile order
  float* grad_scale = nullptr;   // CUDA: the reduced Smart Rescale gradient
};

// Edge-Popup: keep the elements whose magnitude key (ste.h) is above `threshold`, and of those
// equal to it the first `tie_quota[t]` in tile t (all of them when tie_quota is null).
struct TopkParams {
  int64_t numel = 0;
  DType score_dtype = DType::kFloat32;
  DType weight_dtype = DType::kFloat32;
  const void* scores = nullptr;
  const void* weight = nullptr;
  uint32_t threshold = 0;
  const int64_t* tie_quota = nullptr;
  void* masked = nullptr;
  const void* grad = nullptr;
  void* grad_scores = nullptr;
  void* grad_weight = nullptr;
};

// Weight reparametrisation (reparam.h): w_hat = w * h_t(w) over a weight-shaped tensor. t and the
// gradient of the sum of h are one double each on the device (the host converts them).
struct ReparamParams {
  int64_t numel = 0;
  int32_t power = 4;  // n >= 1
  DType weight_dtype = DType::kFloat32;
  const void* weight = nullptr;
  const double* t = nullptr;
  void* w_hat = nullptr;  // forward output

  const void* grad = nullptr;        // dLoss/dw_hat, weight dtype (backward)
  const double* grad_sum = nullptr;  // dLoss/d(sum of h); nullptr means 0
  void* grad_weight = nullptr;       // weight dtype; nullptr: not requested

  // Per-tile partial sums, in tile order: the forward's sum of h, the backward's dLoss/dt terms.
  double* partials = nullptr;
  double* total = nullptr;  // CUDA: the partials summed in tile order (no host sync)
};

// Hard-concrete gates (hard_concrete.h) over a log_alpha-shaped tensor: element i in row-major
// order takes Philox element i of (seed, offset). The constants are doubles: float64 log_alpha
// computes with them as they are, the other dtypes with their float32 rounding.
struct HardConcreteParams {
  int64_t numel = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;
  double inv_beta = 1.5;  // 1 / beta
  double width = 1.2;     // zeta - gamma
  double gamma = -0.1;
  DType dtype = DType::kFloat32;  // of log_alpha, z, grad and grad_log_alpha
  const void* log_alpha = nullptr;
  void* z = nullptr;  // forward output

  const void* grad = nullptr;     // dLoss/dz (backward)
  void* grad_log_alpha = nullptr;  // backward output
};

// One radix-select step: count the keys whose bits above `shift + 11` equal `prefix`, by the
// 11-bit digit at `shift` (2048 bins; `prefix_shift` = shift + 11, 32 meaning no prefix).
struct DigitHistogram {
  int32_t shift = 0;
  int32_t prefix_shift = 32;
  uint32_t prefix = 0;
};
constexpr int kHistogramBins = 2048;

enum class NoiseKind : int32_t { kBits = 0, kLogistic = 1 };

// Raw Philox words (uint32) or logistic noise (float32) for elements [0, numel).
struct NoiseParams {
  int64_t numel = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;
  NoiseKind kind = NoiseKind::kBits;
  void* out = nullptr;
};

SP_NAMESPACE_END
