// sparseprune::masked_linear: F.linear with the masked weight, which exists only as a transient.
#include <algorithm>

#include "buffers.h"
#include "check.h"
#include "mask.h"
#include "ops.h"

namespace sparseprune {
namespace host {

at::Tensor masked_linear(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& scores, const OptTensor& bias, const OptTensor& scale,
                         std::string method, std::string rescale, double temperature,
                         double density, const at::Tensor& rng) {
  const char* op = "masked_linear";
  const MaskArgs args =
      mask_args(op, weight, scores, scale, method, rescale, temperature, density, rng);
  check_linear(op, input, weight, bias);
  Masked m = masked_weight(op, weight, scores, args);
  if (!m.multiplier.defined()) return at::linear(input, m.weight, bias);
  // DWR's r scales whichever of weight and output is smaller.
  const int64_t out_numel = input.numel() / std::max<int64_t>(weight.size(1), 1) * weight.size(0);
  if (weight.numel() <= out_numel) return at::linear(input, m.weight.mul_(m.multiplier), bias);
  at::Tensor out = at::linear(input, m.weight).mul_(m.multiplier);
  return bias.has_value() ? out.add_(*bias) : out;
}

Grads5 masked_linear_backward(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight, const at::Tensor& scores,
                              const OptTensor& scale, std::string method, std::string rescale,
                              double temperature, double density, const at::Tensor& rng,
                              std::array<bool, 5> output_mask) {
  const char* op = "masked_linear_backward";
  const MaskArgs args =
      mask_args(op, weight, scores, scale, method, rescale, temperature, density, rng);
  check_linear(op, input, weight, std::nullopt);
  const auto [need_input, need_weight, need_scores, need_bias, need_scale_arg] = output_mask;
  const bool need_scale = need_scale_arg && scale.has_value();
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = out_features;
  check_grad(op, "grad_output", grad_output, out_shape, "weight", weight);
  // Explicit sizes: -1 cannot be inferred when a dimension is 0 (a zero-width layer).
  const int64_t batch = c10::multiply_integers(input.sizes().begin(), input.sizes().end() - 1);
  const at::Tensor go = grad_output.reshape({batch, out_features});
  at::Tensor grad_input, grad_bias;
  MaskGrads grads;
  // One weight-sized buffer: first dLoss/d(masked weight), then the masked weight itself.
  at::Tensor buffer;
  if (need_weight || need_scores || need_scale) {
    buffer = empty_buffer(weight);  // (out, in); Note [Large CPU buffers] in buffers.cpp
    at::mm_out(buffer, go.t(), input.reshape({batch, in_features}));
    grads = mask_backward(op, buffer, weight, scores, args, need_weight, need_scores, need_scale,
                          /*masked_into_grad=*/need_input);
  } else if (need_input) {
    buffer = full_masked_weight(op, weight, scores, args);
  }
  if (need_input) grad_input = at::mm(go, buffer).view(input.sizes());
  if (need_bias) grad_bias = go.sum(0);
  return {grad_input, grads.weight, grads.scores, grad_bias, grads.scale};
}

}  // namespace host
}  // namespace sparseprune
