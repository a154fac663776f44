// Argument validation shared by the op implementations. Every message starts with the op name,
// names the argument and shows the value received. ValueError / TypeError reach Python as such.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include <sparseprune/params.h>

namespace sparseprune {
namespace host {

// The kernel dtype of a floating tensor, or a TypeError naming the argument.
DType kernel_dtype(const char* op, const char* arg, const at::Tensor& t);

void check_same_device(const char* op, const char* arg_a, const at::Tensor& a, const char* arg_b,
                       const at::Tensor& b);

void check_temperature(const char* op, double temperature);

// The rng argument: a contiguous CPU int64 tensor [seed, offset].
void check_rng(const char* op, const at::Tensor& rng);

// The optional Smart Rescale scalar: one float32 element on the weight's device.
void check_scale(const char* op, const std::optional<at::Tensor>& scale, const at::Tensor& weight);

}  // namespace host
}  // namespace sparseprune
