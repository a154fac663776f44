// The fused N:M pattern mask passes (include/sparseprune/nm.h), device-routed: every N:M op
// (nm_masked_weight, nm_masked_linear) goes through here.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include <sparseprune/params.h>

namespace sparseprune {
namespace host {

// What every N:M op takes besides the weight and its scores, validated and parsed.
struct NmArgs {
  NmRule rule;
  int n, m, c;                      // n kept of every m; c = C(m, n) candidates
  double temperature;               // nm_gumbel
  double logit_scale;               // nm_gumbel: kappa
  bool hard;                        // nm_gumbel
  double decay;                     // srste: lambda_w
  std::optional<at::Tensor> scale;  // nm_gumbel's Smart Rescale scalar
  at::Tensor rng;                   // CPU int64 [seed, offset] (nm_gumbel)
};

// Validates weight, scores and the N:M arguments of `op` (ops.h lists them) and parses them. The
// weight is (out, in, ...) with groups of m consecutive entries along dimension 1 at every
// position of the others; scores are nm_gumbel's (groups, c) logits, nm_topk's weight-shaped
// scores, anything for srste (unused).
NmArgs nm_args(const char* op, const at::Tensor& weight, const at::Tensor& scores,
               const std::optional<at::Tensor>& scale, const std::string& method, int64_t n,
               int64_t m, const at::Tensor& schedule, bool hard, double decay,
               const at::Tensor& rng);

// The masked weight (the weight's shape and dtype, contiguous).
at::Tensor nm_forward(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                      const NmArgs& args);

struct NmGrads {
  at::Tensor weight, scores, scale;  // undefined unless requested
};

// From grad = dLoss/d(masked weight) (contiguous, the weight's shape and dtype) computes the
// requested gradients. With masked_into_grad (2-D weights only) the same pass overwrites `grad`
// with the masked weight, so a caller needing both holds one weight-sized buffer.
NmGrads nm_backward(const char* op, at::Tensor& grad, const at::Tensor& weight,
                    const at::Tensor& scores, const NmArgs& args, bool need_weight,
                    bool need_scores, bool need_scale, bool masked_into_grad);

}  // namespace host
}  // namespace sparseprune
