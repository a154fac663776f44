// sparseprune::nm_masked_linear: F.linear with an N:M method's masked weight, which exists only as
// a transient: backward regenerates it in the pass that computes the mask gradients.
#include "check.h"
#include "nm.h"
#include "ops.h"

namespace sparseprune {
namespace host {

at::Tensor nm_masked_linear(const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& scores, const OptTensor& bias,
                            const OptTensor& scale, std::string method, int64_t n, int64_t m,
                            const at::Tensor& schedule, bool hard, double decay,
                            const at::Tensor& rng) {
  const char* op = "nm_masked_linear";
  const NmArgs args = nm_args(op, weight, scores, scale, method, n, m, schedule, hard, decay,
                              rng);
  check_linear(op, input, weight, bias);
  return at::linear(input, nm_forward(op, weight, scores, args), bias);
}

Grads5 nm_masked_linear_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                 const at::Tensor& weight, const at::Tensor& scores,
                                 const OptTensor& scale, std::string method, int64_t n,
                                 int64_t m, const at::Tensor& schedule, bool hard,
                                 double decay, const at::Tensor& rng,
                                 std::array<bool, 5> output_mask) {
  const char* op = "nm_masked_linear_backward";
  const NmArgs args = nm_args(op, weight, scores, scale, method, n, m, schedule, hard, decay,
                              rng);
  check_linear(op, input, weight, std::nullopt);
  const auto [need_input, need_weight, need_scores, need_bias, need_scale] = output_mask;
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor go = grad_output.reshape({-1, out_features});  // (batch, out)
  at::Tensor grad_input, grad_bias;
  NmGrads grads;
  // One weight-sized buffer: first dLoss/d(masked weight), then the masked weight itself.
  at::Tensor buffer;
  if (need_weight || (need_scores && args.rule != NmRule::kSrste) ||
      (need_scale && scale.has_value())) {
    buffer = at::mm(go.t(), input.reshape({-1, in_features})).contiguous();  // (out, in)
    grads = nm_backward(op, buffer, weight, scores, args, need_weight, need_scores, need_scale,
                        /*masked_into_grad=*/need_input);
  } else if (need_input) {
    buffer = nm_forward(op, weight, scores, args);
  }
  if (need_input) grad_input = at::mm(go, buffer).view(input.sizes());
  if (need_bias) grad_bias = go.sum(0);
  return {grad_input, grads.weight, grads.scores, grad_bias, grads.scale};
}

}  // namespace host
}  // namespace sparseprune
