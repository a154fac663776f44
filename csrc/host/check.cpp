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

void check_same_device(const char* op, const char* arg_a, const at::Tensor& a, const char* arg_b,
                       const at::Tensor& b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), "sparseprune::", op, ": ", arg_a, " and ", arg_b,
                    " must be on the same device, got ", a.device(), " and ", b.device());
}

void check_temperature(const char* op, double temperature) {
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0, "sparseprune::", op,
                    ": temperature must be a finite number > 0, got ", temperature);
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
}

}  // namespace host
}  // namespace sparseprune
