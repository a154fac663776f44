// sparseprune::masked_conv2d: a 2-D convolution with the masked weight, which exists only as a
// transient. Convolution and its input/weight gradients are ATen's (oneDNN / cuDNN).
#include "check.h"
#include "mask.h"
#include "ops.h"

namespace sparseprune {
namespace host {
namespace {

// Returns the input as a batch (an unbatched (C, H, W) input gains a leading 1).
at::Tensor check_conv(const char* op, const at::Tensor& input, const at::Tensor& weight,
                      const OptTensor& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK_VALUE(weight.dim() == 4, "sparseprune::", op,
                    ": weight must be 4-D (out_channels, in_channels / groups, kH, kW), got shape ",
                    weight.sizes());
  const at::Tensor batch = conv2d_batch(op, input);
  check_conv2d_options(op, stride, padding, dilation, groups, weight.size(0));
  TORCH_CHECK_VALUE(batch.size(1) == weight.size(1) * groups, "sparseprune::", op,
                    ": input has ", batch.size(1), " channels but weight expects ",
                    weight.size(1) * groups, " (in_channels / groups = ", weight.size(1),
                    ", groups = ", groups, ")");
  check_layer_input(op, input, weight);
  check_bias(op, bias, weight.size(0), "weight", weight);
  return batch;
}

}  // namespace

at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& scores, const OptTensor& bias, const OptTensor& scale,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                         int64_t groups, std::string method, std::string rescale,
                         double temperature, double density, const at::Tensor& rng) {
  const char* op = "masked_conv2d";
  const MaskArgs args =
      mask_args(op, weight, scores, scale, method, rescale, temperature, density, rng);
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
  const MaskArgs args =
      mask_args(op, weight, scores, scale, method, rescale, temperature, density, rng);
  const at::Tensor batch =
      check_conv(op, input, weight, std::nullopt, stride, padding, dilation, groups);
  std::vector<int64_t> out_shape{batch.size(0), weight.size(0)};
  for (int d = 0; d < 2; ++d)
    out_shape.push_back((batch.size(2 + d) + 2 * padding[d] - dilation[d] * (weight.size(2 + d) - 1) -
                         1) / stride[d] + 1);
  if (input.dim() == 3) out_shape.erase(out_shape.begin());
  check_grad(op, "grad_output", grad_output, out_shape, "weight", weight);
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
