// sparseprune::masked_conv2d: a 2-D convolution with the masked weight, which exists only as a
// transient. Convolution and its input/weight gradients are ATen's (oneDNN / cuDNN).
#include "check.h"
#include "mask.h"
#include "ops.h"

namespace sparseprune {
namespace host {
namespace {

void check_pair(const char* op, const char* arg, at::IntArrayRef v, int64_t min_value) {
  TORCH_CHECK_VALUE(v.size() == 2 && v[0] >= min_value && v[1] >= min_value, "sparseprune::", op,
                    ": ", arg, " must be two integers >= ", min_value, ", got ", v);
}

// Returns the input as a batch (an unbatched (C, H, W) input gains a leading 1).
at::Tensor check_conv(const char* op, const at::Tensor& input, const at::Tensor& weight,
                      const OptTensor& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK_VALUE(weight.dim() == 4, "sparseprune::", op,
                    ": weight must be 4-D (out_channels, in_channels / groups, kH, kW), got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(input.dim() == 3 || input.dim() == 4, "sparseprune::", op,
                    ": input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape ", input.sizes());
  TORCH_CHECK_VALUE(groups >= 1 && weight.size(0) % groups == 0, "sparseprune::", op,
                    ": groups must be >= 1 and divide out_channels = ", weight.size(0), ", got ",
                    groups);
  const at::Tensor batch = input.dim() == 3 ? input.unsqueeze(0) : input;
  TORCH_CHECK_VALUE(batch.size(1) == weight.size(1) * groups, "sparseprune::", op,
                    ": input has ", batch.size(1), " channels but weight expects ",
                    weight.size(1) * groups, " (in_channels / groups = ", weight.size(1),
                    ", groups = ", groups, ")");
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK_TYPE(input.scalar_type() == weight.scalar_type(), "sparseprune::", op,
                   ": input and weight must have the same dtype, got ", input.scalar_type(),
                   " and ", weight.scalar_type());
  check_same_device(op, "input", input, "weight", weight);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), "sparseprune::", op,
                      ": bias must have shape (", weight.size(0), ",), got ", bias->sizes());
    TORCH_CHECK_TYPE(bias->scalar_type() == weight.scalar_type(), "sparseprune::", op,
                     ": bias must have the weight's dtype ", weight.scalar_type(), ", got ",
                     bias->scalar_type());
    check_same_device(op, "bias", *bias, "weight", weight);
  }
  return batch;
}

}  // namespace

at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& scores, const OptTensor& bias, const OptTensor& scale,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                         int64_t groups, std::string method, std::string rescale,
                         double temperature, double density, const at::Tensor& rng) {
  const char* op = "masked_conv2d";
  const MaskArgs args{std::move(method), std::move(rescale), scale, temperature, density, rng};
  check_mask_args(op, weight, scores, args);
  const at::Tensor batch =
      check_conv(op, input, weight, bias, stride, padding, dilation, groups);
  Masked m = masked_weight(op, weight, scores, args);
  at::Tensor out;
  if (!m.multiplier.defined()) {
    out = at::convolution(batch, m.weight, bias, stride, padding, dilation, false, {0, 0}, groups);
  } else {
    // DWR's r: on the weight (the output of a convolution is usually the larger of the two).
    out = at::convolution(batch, m.weight.mul_(m.multiplier), bias, stride, padding, dilation,
                          false, {0, 0}, groups);
  }
  return input.dim() == 3 ? out.squeeze(0) : out;
}

Grads5 masked_conv2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight, const at::Tensor& scores,
                              const OptTensor& scale, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              std::string method, std::string rescale, double temperature,
                              double density, const at::Tensor& rng,
                              std::array<bool, 5> output_mask) {
  const char* op = "masked_conv2d_backward";
  const MaskArgs args{std::move(method), std::move(rescale), scale, temperature, density, rng};
  check_mask_args(op, weight, scores, args);
  const at::Tensor batch =
      check_conv(op, input, weight, std::nullopt, stride, padding, dilation, groups);
  const at::Tensor go = input.dim() == 3 ? grad_output.unsqueeze(0) : grad_output;
  const auto [need_input, need_weight, need_scores, need_bias, need_scale_arg] = output_mask;
  const bool need_scale = need_scale_arg && scale.has_value();
  const bool need_mask_grads = need_weight || need_scores || need_scale;
  const std::vector<int64_t> bias_sizes{weight.size(0)};
  auto conv_backward = [&](const at::Tensor& w, std::array<bool, 3> mask) {
    return at::convolution_backward(go, batch, w, bias_sizes, stride, padding, dilation, false,
                                    {0, 0}, groups, mask);
  };

  // One weight-sized buffer: first dLoss/d(masked weight), then the masked weight itself.
  at::Tensor buffer, grad_input, grad_bias;
  MaskGrads grads;
  if (need_mask_grads || need_bias) {
    auto [unused, g_weight, g_bias] = conv_backward(weight, {false, need_mask_grads, need_bias});
    grad_bias = g_bias;
    if (need_mask_grads) {
      buffer = g_weight.contiguous();
      grads = mask_backward(op, buffer, weight, scores, args, need_weight, need_scores,
                            need_scale, /*masked_into_grad=*/need_input);
    }
  }
  if (need_input) {
    if (!need_mask_grads) buffer = full_masked_weight(op, weight, scores, args);
    grad_input = std::get<0>(conv_backward(buffer, {true, false, false}));
    if (input.dim() == 3) grad_input = grad_input.squeeze(0);
  }
  return {grad_input, grads.weight, grads.scores, grad_bias, grads.scale};
}

}  // namespace host
}  // namespace sparseprune
