// sparseprune::nm_masked_weight: an N:M method's masked weight on its own (the functional forms
// nm_gumbel_weight, nm_topk_weight and srste_weight, and convolutions, call it).
#include "check.h"
#include "nm.h"
#include "ops.h"

namespace sparseprune {
namespace host {

at::Tensor nm_masked_weight(const at::Tensor& weight, const at::Tensor& scores,
                            const OptTensor& scale, std::string method, int64_t n, int64_t m,
                            const at::Tensor& schedule, bool hard, double decay,
                            const at::Tensor& rng) {
  const char* op = "nm_masked_weight";
  const NmArgs args = nm_args(op, weight, scores, scale, method, n, m, schedule, hard, decay,
                              rng);
  return nm_forward(op, weight, scores, args);
}

Grads3 nm_masked_weight_backward(const at::Tensor& grad, const at::Tensor& weight,
                                 const at::Tensor& scores, const OptTensor& scale,
                                 std::string method, int64_t n, int64_t m,
                                 const at::Tensor& schedule, bool hard, double decay,
                                 const at::Tensor& rng, std::array<bool, 3> output_mask) {
  const char* op = "nm_masked_weight_backward";
  const NmArgs args = nm_args(op, weight, scores, scale, method, n, m, schedule, hard, decay,
                              rng);
  TORCH_CHECK_VALUE(grad.sizes() == weight.sizes(), "sparseprune::", op,
                    ": grad must have the weight's shape ", weight.sizes(), ", got ", grad.sizes());
  check_same_device(op, "grad", grad, "weight", weight);
  at::Tensor g = grad.to(weight.scalar_type()).contiguous();  // never written (no masked_into_grad)
  NmGrads grads = nm_backward(op, g, weight, scores, args, output_mask[0], output_mask[1],
                              output_mask[2], /*masked_into_grad=*/false);
  return {grads.weight, grads.scores, grads.scale};
}

}  // namespace host
}  // namespace sparseprune
