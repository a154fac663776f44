// Edge-Popup's fused passes: exact per-layer top-k of |scores| by radix select (no sort).
#pragma once
#include <ATen/ATen.h>

namespace sparseprune {
namespace host {

// The number of weights kept: round(density * numel), ties to even as Python's round.
int64_t top_k_count(double density, int64_t numel);

// The masked weight: w where |s| is among the top round(density * numel) of the layer, else 0;
// ties at the threshold are kept in index order. NaN scores raise.
// `out`, when defined, is the contiguous weight-shaped buffer to write into.
at::Tensor topk_forward(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                        double density, at::Tensor out = {});

// Straight-through backward: grad_scores = sign(s) * w * g, grad_weight = mask * g (each only if
// defined), and the masked weight into `masked` when not null (it may alias `grad`).
void topk_backward(const char* op, const at::Tensor& grad, const at::Tensor& weight,
                   const at::Tensor& scores, double density, const at::Tensor& grad_weight,
                   const at::Tensor& grad_scores, void* masked);

}  // namespace host
}  // namespace sparseprune
