// The fused per-weight mask work, device-routed: forward and backward passes of every mask method.
// Every op that masks a weight (masked_weight, masked_linear, masked_conv2d) goes through here.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace sparseprune {
namespace host {

// In the order of their names in mask_args (mask.cpp), which parses them.
enum class Method { kAslp, kSupermask, kEdgePopup };
enum class Rescale { kNone, kSmart, kDwr };

// What every masking op takes besides the weight and its scores, validated and parsed.
struct MaskArgs {
  Method method;
  Rescale rescale;                  // kDwr for the stochastic methods only
  std::optional<at::Tensor> scale;  // with kSmart and only with it
  double temperature;               // ASLP
  double density;                   // Edge-Popup: the fraction of weights kept
  at::Tensor rng;                   // CPU int64 [seed, offset] (stochastic methods)
};

// Validates weight, scores and the mask arguments of `op` (shapes, dtypes, devices, method and
// options: ops.h lists them) and parses them.
MaskArgs mask_args(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                   const std::optional<at::Tensor>& scale, const std::string& method,
                   const std::string& rescale, double temperature, double density,
                   const at::Tensor& rng);

// The masked weight (contiguous, the weight's shape and dtype) and, with DWR, the multiplier
// r = N / max(M, 1) it still has to be multiplied by (a 0-dim float tensor on its device), so
// that a caller may apply r to whichever of weight and output is smaller.
struct Masked {
  at::Tensor weight;
  at::Tensor multiplier;  // undefined without DWR
};
// The masked weight is written into a host::empty_buffer (buffers.h): the pooled huge-page
// blocks that spare a large layer's step its page faults.
Masked masked_weight(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                     const MaskArgs& args);

// The masked weight with any DWR multiplier applied.
at::Tensor full_masked_weight(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                              const MaskArgs& args);

struct MaskGrads {
  at::Tensor weight, scores, scale;  // undefined unless requested
};

// From grad = dLoss/d(masked weight) (contiguous, weight's shape and dtype, the multiplier
// included) computes the requested gradients. With masked_into_grad the same pass overwrites
// `grad` with the (full) masked weight, so a caller needing both holds one weight-sized buffer.
MaskGrads mask_backward(const char* op, at::Tensor& grad, const at::Tensor& weight,
                        const at::Tensor& scores, const MaskArgs& args, bool need_weight,
                        bool need_scores, bool need_scale, bool masked_into_grad);

}  // namespace host
}  // namespace sparseprune
