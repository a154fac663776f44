// The fused per-weight mask work, device-routed: one kernel pass forward, one backward. Every op
// that masks a weight (aslp_weight, masked_linear, masked_conv2d) goes through here.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace sparseprune {
namespace host {

// What every masking op takes besides the weight and its scores.
struct MaskArgs {
  std::string method;  // "aslp"
  std::optional<at::Tensor> scale;
  double temperature;
  at::Tensor rng;  // CPU int64 [seed, offset]
};

// Validates weight, scores and args for `op` (shapes, dtypes, devices, method, temperature).
void check_mask_args(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                     const MaskArgs& args);

// The masked weight: contiguous, with the weight's shape and dtype.
at::Tensor masked_weight(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                         const MaskArgs& args);

struct MaskGrads {
  at::Tensor weight, scores, scale;  // undefined unless requested
};

// From grad = dLoss/d(masked weight) (contiguous, weight's shape and dtype) computes the requested
// gradients in one pass. With masked_into_grad, that same pass overwrites `grad` with the masked
// weight, so a caller that needs both holds one weight-sized buffer instead of two.
MaskGrads mask_backward(const char* op, at::Tensor& grad, const at::Tensor& weight,
                        const at::Tensor& scores, const MaskArgs& args, bool need_weight,
                        bool need_scores, bool need_scale, bool masked_into_grad);

}  // namespace host
}  // namespace sparseprune
