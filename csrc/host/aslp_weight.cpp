// sparseprune::aslp_weight: the ASLP masked weight scale * w * 1[s + L > 0] on its own.
#include "check.h"
#include "mask.h"
#include "ops.h"

namespace sparseprune {
namespace host {

at::Tensor aslp_weight(const at::Tensor& weight, const at::Tensor& scores, const OptTensor& scale,
                       double temperature, const at::Tensor& rng) {
  const MaskArgs args{"aslp", scale, temperature, rng};
  check_mask_args("aslp_weight", weight, scores, args);
  return masked_weight("aslp_weight", weight, scores, args);
}

Grads3 aslp_weight_backward(const at::Tensor& grad, const at::Tensor& weight,
                            const at::Tensor& scores, const OptTensor& scale, double temperature,
                            const at::Tensor& rng, std::array<bool, 3> output_mask) {
  const char* op = "aslp_weight_backward";
  const MaskArgs args{"aslp", scale, temperature, rng};
  check_mask_args(op, weight, scores, args);
  TORCH_CHECK_VALUE(grad.sizes() == weight.sizes(), "sparseprune::", op,
                    ": grad must have the weight's shape ", weight.sizes(), ", got ", grad.sizes());
  check_same_device(op, "grad", grad, "weight", weight);
  // Never written (masked_into_grad is false), so the caller's gradient is left as it was.
  at::Tensor g = grad.to(weight.scalar_type()).contiguous();
  MaskGrads grads = mask_backward(op, g, weight, scores, args, output_mask[0], output_mask[1],
                                  output_mask[2] && scale.has_value(), /*masked_into_grad=*/false);
  return {grads.weight, grads.scores, grads.scale};
}

}  // namespace host
}  // namespace sparseprune
