// Argument validation shared by the op implementations: each check and its message exist once.
// Every message starts with the op name, names the argument and shows the value received.
// ValueError / TypeError reach Python as such.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <initializer_list>
#include <optional>
#include <string>

#include <sparseprune/params.h>

namespace sparseprune {
namespace host {

// The kernel dtype of a floating tensor, or a TypeError naming the argument.
DType kernel_dtype(const char* op, const char* arg, const at::Tensor& t);

// The position of `value` among `names`, or a ValueError "<arg> must be a, b or c, got 'value'"
// (the names in quotes with `quoted`).
int choice(const char* op, const char* arg, const std::string& value,
           std::initializer_list<const char*> names, bool quoted = false);

void check_same_device(const char* op, const char* arg_a, const at::Tensor& a, const char* arg_b,
                       const at::Tensor& b);

// `arg` (one tensor, or "tensors" for all of an op's) must be on a device with kernels.
void check_cpu_or_cuda(const char* op, const char* arg, const at::Device& device);

// The ASLP temperature: finite, in [kMinTemperature, kMaxTemperature]. Below the minimum the
// float32 surrogate slope sigmoid'((s + L) / tau) / tau is dominated by the rounding of s + L (its
// error over tau reaches O(1)); above the maximum 1 / tau is no longer a normal float32.
inline constexpr double kMinTemperature = 1e-3;
inline constexpr double kMaxTemperature = 1e30;
void check_temperature(const char* op, double temperature);

// Every tensor argument of an op on `like`'s device (a meta or other-device tensor among CPU ones
// would otherwise be read, or dispatch elsewhere): "<arg> and <like_arg> must be on the same
// device". Optional tensors may be absent.
void check_same_device(const char* op, const char* arg, const std::optional<at::Tensor>& t,
                       const char* like_arg, const at::Tensor& like);

// A gradient argument of a backward op: exactly `expected` (the forward's output shape), with the
// dtype and device of `like` (the argument named like_arg).
void check_grad(const char* op, const char* arg, const at::Tensor& grad, at::IntArrayRef expected,
                const char* like_arg, const at::Tensor& like);

// A learned scalar (scale, t) must not be NaN; read on CPU only (on CUDA it would need a sync).
void check_scalar_not_nan(const char* op, const char* arg, const at::Tensor& t);

// The rng argument: a contiguous CPU int64 tensor [seed, offset].
void check_rng(const char* op, const at::Tensor& rng);

// The optional Smart Rescale scalar: one float32 element on the weight's device.
void check_scale(const char* op, const std::optional<at::Tensor>& scale, const at::Tensor& weight);

// A masked layer's input: the weight's dtype and device.
void check_layer_input(const char* op, const at::Tensor& input, const at::Tensor& weight);

// A linear layer's input: at least 1-D, its last dimension in_features.
void check_in_features(const char* op, const at::Tensor& input, int64_t in_features);

// The optional bias of a layer with `rows` outputs: shape (rows,), the dtype and device of `like`
// (the argument named `like_arg`).
void check_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t rows,
                const char* like_arg, const at::Tensor& like);

// A linear layer: weight 2-D (out_features, in_features), the input's last dimension in_features,
// its dtype and device the weight's, the optional bias (out_features,).
void check_linear(const char* op, const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias);

// A 2-D convolution's stride, padding and dilation (two integers each, >= 1, >= 0, >= 1) and its
// groups (>= 1, dividing out_channels).
void check_conv2d_options(const char* op, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups, int64_t out_channels);

// A 2-D convolution's input, 3-D (C, H, W) or 4-D (N, C, H, W), as a batch (N, C, H, W).
at::Tensor conv2d_batch(const char* op, const at::Tensor& input);

// The padded (height, width) of a batch is at least the dilated kernel's (kh, kw) extent, so the
// output has at least one row and column.
void check_conv2d_fits(const char* op, const at::Tensor& batch, int64_t kh, int64_t kw,
                       at::IntArrayRef padding, at::IntArrayRef dilation);

void check_no_nan(const char* op, bool nan_seen, const char* arg = "scores");

}  // namespace host
}  // namespace sparseprune
