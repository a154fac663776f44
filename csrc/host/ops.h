// The op implementations behind the schemas in csrc/ops.cpp. They are device-agnostic (ATen for
// GEMM/conv, route.h for the fused passes) and registered for CPU and CUDA in host/register.cpp.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

namespace sparseprune {
namespace host {

using OptTensor = std::optional<at::Tensor>;
using Grads3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Grads5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The masking ops share their mask arguments: scale (Smart Rescale), method ("aslp",
// "supermask", "edge_popup"), rescale ("none", "smart", "dwr"), temperature (ASLP), density
// (Edge-Popup: fraction kept) and rng (CPU int64 [seed, offset]).
at::Tensor masked_weight(const at::Tensor& weight, const at::Tensor& scores,
                         const OptTensor& scale, std::string method, std::string rescale,
                         double temperature, double density, const at::Tensor& rng);
// -> (grad_weight, grad_scores, grad_scale), each undefined unless output_mask asks for it.
Grads3 masked_weight_backward(const at::Tensor& grad, const at::Tensor& weight,
                              const at::Tensor& scores, const OptTensor& scale, std::string method,
                              std::string rescale, double temperature, double density,
                              const at::Tensor& rng, std::array<bool, 3> output_mask);

// Edge-Popup's top-k threshold of |scores| on its own (csrc/ops.cpp).
at::Tensor topk_threshold(const at::Tensor& scores, double density);

at::Tensor masked_linear(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& scores, const OptTensor& bias, const OptTensor& scale,
                         std::string method, std::string rescale, double temperature,
                         double density, const at::Tensor& rng);
// -> (grad_input, grad_weight, grad_scores, grad_bias, grad_scale)
Grads5 masked_linear_backward(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight, const at::Tensor& scores,
                              const OptTensor& scale, std::string method, std::string rescale,
                              double temperature, double density, const at::Tensor& rng,
                              std::array<bool, 5> output_mask);

at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& scores, const OptTensor& bias, const OptTensor& scale,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                         int64_t groups, std::string method, std::string rescale,
                         double temperature, double density, const at::Tensor& rng);
Grads5 masked_conv2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight, const at::Tensor& scores,
                              const OptTensor& scale, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              std::string method, std::string rescale, double temperature,
                              double density, const at::Tensor& rng,
                              std::array<bool, 5> output_mask);

// N:M pattern masks (include/sparseprune/nm.h): method "nm_gumbel" (scores: the (groups, C(m, n))
// pattern logits; schedule (CPU float64 [temperature, logit_scale]), hard; scale: Smart Rescale),
// "nm_topk" (weight-shaped scores) or "srste" (scores unused; decay); n kept of every m weights
// along dimension 1; rng (CPU int64 [seed, offset]) for nm_gumbel.
at::Tensor nm_masked_weight(const at::Tensor& weight, const at::Tensor& scores,
                            const OptTensor& scale, std::string method, int64_t n, int64_t m,
                            const at::Tensor& schedule, bool hard, double decay,
                            const at::Tensor& rng);
// -> (grad_weight, grad_scores, grad_scale), each undefined unless output_mask asks for it.
Grads3 nm_masked_weight_backward(const at::Tensor& grad, const at::Tensor& weight,
                                 const at::Tensor& scores, const OptTensor& scale,
                                 std::string method, int64_t n, int64_t m,
                                 const at::Tensor& schedule, bool hard, double decay,
                                 const at::Tensor& rng, std::array<bool, 3> output_mask);
at::Tensor nm_masked_linear(const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& scores, const OptTensor& bias,
                            const OptTensor& scale, std::string method, int64_t n, int64_t m,
                            const at::Tensor& schedule, bool hard, double decay,
                            const at::Tensor& rng);
// -> (grad_input, grad_weight, grad_scores, grad_bias, grad_scale)
Grads5 nm_masked_linear_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                 const at::Tensor& weight, const at::Tensor& scores,
                                 const OptTensor& scale, std::string method, int64_t n,
                                 int64_t m, const at::Tensor& schedule, bool hard,
                                 double decay, const at::Tensor& rng,
                                 std::array<bool, 5> output_mask);

// Sparse inference (csrc/host/sparse_*.cpp): a compressed float32 weight (values, row_ptr,
// indices, format "csr" or "bitmap") times the input, bias fused.
at::Tensor sparse_linear(const at::Tensor& input, const at::Tensor& values,
                         const at::Tensor& row_ptr, const at::Tensor& indices,
                         const OptTensor& bias, std::string format, at::IntArrayRef weight_shape);
at::Tensor sparse_conv2d(const at::Tensor& input, const at::Tensor& values,
                         const at::Tensor& row_ptr, const at::Tensor& indices,
                         const OptTensor& bias, std::string format, at::IntArrayRef weight_shape,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                         int64_t groups);
// N:M inference (csrc/host/nm_linear.cpp, format "nm"): n value slots (float32 or bfloat16) and
// packed in-group positions per group of m inputs; input float32 or bfloat16; CPU only.
at::Tensor nm_linear(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                     const OptTensor& bias, int64_t n, int64_t m, at::IntArrayRef weight_shape);
// Weight reparametrisation (include/sparseprune/reparam.h): -> (w_hat, sum of h); the sum is a
// 0-dim float32 tensor (float64 for float64 weights), or empty when compute_sum is false.
std::tuple<at::Tensor, at::Tensor> reparam_weight(const at::Tensor& weight, const at::Tensor& t,
                                                  int64_t power, bool compute_sum);
// -> (grad_weight, grad_t), each undefined unless output_mask asks for it.
std::tuple<at::Tensor, at::Tensor> reparam_weight_backward(
    const at::Tensor& grad, const std::optional<at::Tensor>& grad_sum, const at::Tensor& weight,
    const at::Tensor& t, int64_t power, std::array<bool, 2> output_mask);

// Hard-concrete gates (include/sparseprune/hard_concrete.h): z from log_alpha (any float dtype)
// and the logistic noise of rng; backward -> dLoss/dlog_alpha (undefined unless output_mask asks).
at::Tensor hard_concrete_sample(const at::Tensor& log_alpha, double beta, double gamma,
                                double zeta, const at::Tensor& rng);
at::Tensor hard_concrete_sample_backward(const at::Tensor& grad, const at::Tensor& log_alpha,
                                         double beta, double gamma, double zeta,
                                         const at::Tensor& rng, std::array<bool, 1> output_mask);

at::Tensor philox_bits(int64_t numel, int64_t seed, int64_t offset, at::Device device);
at::Tensor logistic_noise(int64_t numel, int64_t seed, int64_t offset, at::Device device);

}  // namespace host
}  // namespace sparseprune
