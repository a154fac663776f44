// sparseprune::masked_weight: a mask method's masked weight on its own (the functional forms
// aslp_weight, supermask_weight and edge_popup_weight call it).
#include "check.h"
#include "mask.h"
#include "ops.h"

namespace sparseprune {
namespace host {

at::Tensor masked_weight(const at::Tensor& weight, const at::Tensor& scores,
                         const OptTensor& scale, std::string method, std::string rescale,
                         double temperature, double density, const at::Tensor& rng) {
  const char* op = "masked_weight";
  const MaskArgs args =
      mask_args(op, weight, scores, scale, method, rescale, temperature, density, rng);
  return full_masked_weight(op, weight, scores, args);
}

Grads3 masked_weight_backward(const at::Tensor& grad, const at::Tensor& weight,
                              const at::Tensor& scores, const OptTensor& scale, std::string method,
                              std::string rescale, double temperature, double density,
                              const at::Tensor& rng, std::array<bool, 3> output_mask) {
  const char* op = "masked_weight_backward";
  const MaskArgs args =
      mask_args(op, weight, scores, scale, method, rescale, temperature, density, rng);
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
