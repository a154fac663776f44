#include "check.h"

namespace sparseprune {
namespace host {

DType kernel_dtype(const char* op, const char* arg, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default:
      TORCH_CHECK_TYPE(false, "sparseprune::", op, ": ", arg,
                       " must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
  }
}

int choice(const char* op, const char* arg, const std::string& value,
           std::initializer_list<const char*> names, bool quoted) {
  const int count = static_cast<int>(names.size());
  const std::string quote = quoted ? "'" : "";
  int index = 0;
  std::string accepted;
  for (const char* name : names) {
    if (value == name) return index;
    accepted += index == 0 ? "" : index == count - 1 ? " or " : ", ";
    accepted += quote + name + quote;
    ++index;
  }
  TORCH_CHECK_VALUE(false, "sparseprune::", op, ": ", arg, " must be ", accepted, ", got '", value,
                    "'");
  return -1;
}

void check_same_device(const char* op, const char* arg_a, const at::Tensor& a, const char* arg_b,
                       const at::Tensor& b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), "sparseprune::", op, ": ", arg_a, " and ", arg_b,
                    " must be on the same device, got ", a.device(), " and ", b.device());
}

void check_cpu_or_cuda(const char* op, const char* arg, const at::Device& device) {
  TORCH_CHECK_VALUE(device.is_cpu() || device.is_cuda(), "sparseprune::", op, ": ", arg,
                    " must be on CPU or CUDA, got ", device);
}

void check_temperature(const char* op, double temperature) {
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature >= kMinTemperature &&
                        temperature <= kMaxTemperature,
                    "sparseprune::", op, ": temperature must be a finite number in [",
                    kMinTemperature, ", ", kMaxTemperature, "], got ", temperature);
}

void check_same_device(const char* op, const char* arg, const std::optional<at::Tensor>& t,
                       const char* like_arg, const at::Tensor& like) {
  if (t.has_value() && t->defined()) check_same_device(op, arg, *t, like_arg, like);
}

void check_grad(const char* op, const char* arg, const at::Tensor& grad, at::IntArrayRef expected,
                const char* like_arg, const at::Tensor& like) {
  TORCH_CHECK_VALUE(grad.sizes() == expected, "sparseprune::", op, ": ", arg,
                    " must have the forward output's shape ", expected, ", got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == like.scalar_type(), "sparseprune::", op, ": ", arg,
                   " must have the ", like_arg, "'s dtype ", like.scalar_type(), ", got ",
                   grad.scalar_type());
  check_same_device(op, arg, grad, like_arg, like);
}

void check_scalar_not_nan(const char* op, const char* arg, const at::Tensor& t) {
  if (!t.device().is_cpu() || t.numel() != 1) return;
  TORCH_CHECK_VALUE(!std::isnan(t.item<double>()), "sparseprune::", op, ": ", arg,
                    " is NaN (check the learning rate or the optimizer state)");
}

void check_rng(const char* op, const at::Tensor& rng) {
  TORCH_CHECK_VALUE(rng.device().is_cpu() && rng.scalar_type() == at::kLong && rng.numel() == 2 &&
                        rng.is_contiguous(),
                    "sparseprune::", op,
                    ": rng must be a contiguous CPU int64 tensor [seed, offset], got ",
                    rng.scalar_type(), " tensor of shape ", rng.sizes(), " on ", rng.device());
}

void check_scale(const char* op, const std::optional<at::Tensor>& scale, const at::Tensor& weight) {
  if (!scale.has_value()) return;
  TORCH_CHECK_VALUE(scale->numel() == 1, "sparseprune::", op,
                    ": scale must hold exactly one element (the layer's rescale factor), got shape ",
                    scale->sizes());
  TORCH_CHECK_TYPE(scale->scalar_type() == at::kFloat, "sparseprune::", op,
                   ": scale must be float32, got ", scale->scalar_type());
  check_same_device(op, "scale", *scale, "weight", weight);
  check_scalar_not_nan(op, "scale", *scale);
}

void check_layer_input(const char* op, const at::Tensor& input, const at::Tensor& weight) {
  TORCH_CHECK_TYPE(input.scalar_type() == weight.scalar_type(), "sparseprune::", op,
                   ": input and weight must have the same dtype, got ", input.scalar_type(),
                   " and ", weight.scalar_type());
  check_same_device(op, "input", input, "weight", weight);
}

void check_in_features(const char* op, const at::Tensor& input, int64_t in_features) {
  TORCH_CHECK_VALUE(input.dim() >= 1 && input.size(-1) == in_features, "sparseprune::", op,
                    ": input's last dimension must equal in_features = ", in_features,
                    ", got input of shape ", input.sizes());
}

void check_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t rows,
                const char* like_arg, const at::Tensor& like) {
  if (!bias.has_value()) return;
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == rows, "sparseprune::", op,
                    ": bias must have shape (", rows, ",), got ", bias->sizes());
  TORCH_CHECK_TYPE(bias->scalar_type() == like.scalar_type(), "sparseprune::", op,
                   ": bias must have the ", like_arg, "'s dtype ", like.scalar_type(), ", got ",
                   bias->scalar_type());
  check_same_device(op, "bias", *bias, like_arg, like);
}

void check_linear(const char* op, const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(weight.dim() == 2, "sparseprune::", op,
                    ": weight must be 2-D (out_features, in_features), got shape ", weight.sizes());
  check_in_features(op, input, weight.size(1));
  check_layer_input(op, input, weight);
  check_bias(op, bias, weight.size(0), "weight", weight);
}

namespace {

void check_pair(const char* op, const char* arg, at::IntArrayRef v, int64_t min_value) {
  TORCH_CHECK_VALUE(v.size() == 2 && v[0] >= min_value && v[1] >= min_value, "sparseprune::", op,
                    ": ", arg, " must be two integers >= ", min_value, ", got ", v);
}

}  // namespace

void check_conv2d_options(const char* op, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups, int64_t out_channels) {
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK_VALUE(groups >= 1 && out_channels % groups == 0, "sparseprune::", op,
                    ": groups must be >= 1 and divide out_channels = ", out_channels, ", got ",
                    groups);
}

at::Tensor conv2d_batch(const char* op, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 3 || input.dim() == 4, "sparseprune::", op,
                    ": input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape ", input.sizes());
  return input.dim() == 3 ? input.unsqueeze(0) : input;
}

void check_conv2d_fits(const char* op, const at::Tensor& batch, int64_t kh, int64_t kw,
                       at::IntArrayRef padding, at::IntArrayRef dilation) {
  const int64_t height = batch.size(2) + 2 * padding[0], width = batch.size(3) + 2 * padding[1];
  const int64_t extent_h = dilation[0] * (kh - 1) + 1, extent_w = dilation[1] * (kw - 1) + 1;
  TORCH_CHECK_VALUE(height >= extent_h && width >= extent_w, "sparseprune::", op,
                    ": the padded input (", height, " x ", width,
                    ") is smaller than the dilated kernel (", extent_h, " x ", extent_w, ")");
}

void check_no_nan(const char* op, bool nan_seen, const char* arg) {
  TORCH_CHECK_VALUE(!nan_seen, "sparseprune::", op, ": ", arg,
                    " contain NaN; a NaN entry has no mask (check the learning rate or the "
                    "optimizer state)");
}

}  // namespace host
}  // namespace sparseprune
