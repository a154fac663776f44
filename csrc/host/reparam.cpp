// sparseprune::reparam_weight / reparam_weight_backward: the budget-aware weight reparametrisation
// w_hat = w * h_t(w) (include/sparseprune/reparam.h) in one fused pass each way, with the layer's
// sum of h (the budget's cost C) and dLoss/dt reduced from per-tile partials in tile order.
#include "check.h"
#include "ops.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

void check_reparam(const char* op, const at::Tensor& weight, const at::Tensor& t, int64_t power) {
  kernel_dtype(op, "weight", weight);
  check_cpu_or_cuda(op, "weight", weight.device());
  TORCH_CHECK_VALUE(t.numel() == 1, "sparseprune::", op,
                    ": t must hold exactly one element (the layer's learned width), got shape ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "sparseprune::", op, ": t must be float32 or float64, got ", t.scalar_type());
  check_same_device(op, "t", t, "weight", weight);
  TORCH_CHECK_VALUE(power >= 1 && power <= 64, "sparseprune::", op,
                    ": power (the exponent n) must be an integer in [1, 64], got ", power);
  check_scalar_not_nan(op, "t", t);
}

at::ScalarType sum_dtype(const at::Tensor& weight) {
  return weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

ReparamParams params_for(const at::Tensor& w, const at::Tensor& t_double, int64_t power) {
  ReparamParams p;
  p.numel = w.numel();
  p.power = static_cast<int32_t>(power);
  p.weight_dtype = kernel_dtype("reparam", "weight", w);
  p.weight = w.data_ptr();
  p.t = t_double.data_ptr<double>();
  return p;
}

// One pass over all tiles; with `sum`, the per-tile partials summed in tile order from +0 (a 0-dim
// double tensor on the weight's device; the CUDA launchers sum on the device).
template <bool kBackward>
at::Tensor run_reparam(const char* op, ReparamParams& p, const at::Device& device, bool sum) {
  const auto doubles = at::TensorOptions().dtype(at::kDouble).device(device);
  at::Tensor partials, total;
  if (sum) {
    partials = at::empty({num_tiles(p.numel)}, doubles);
    total = at::zeros({}, doubles);
    p.partials = partials.data_ptr<double>();
    if (device.is_cuda()) p.total = total.data_ptr<double>();
  }
  run_tiles(op, device, p,
            kBackward ? &cpu::ReparamKernels::backward : &cpu::ReparamKernels::forward,
            kBackward ? SP_CUDA(reparam_backward) : SP_CUDA(reparam_forward));
  if (sum && device.is_cpu()) total.fill_(sum_in_tile_order(p.partials, partials.size(0)));
  return total;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reparam_weight(const at::Tensor& weight, const at::Tensor& t,
                                                  int64_t power, bool compute_sum) {
  constexpr const char* op = "reparam_weight";
  check_reparam(op, weight, t, power);
  const at::Tensor w = weight.contiguous();
  const at::Tensor t_double = t.reshape({}).to(at::kDouble).contiguous();
  at::Tensor w_hat = at::empty_like(w, at::MemoryFormat::Contiguous);
  ReparamParams p = params_for(w, t_double, power);
  p.w_hat = w_hat.data_ptr();
  const at::Tensor total = run_reparam<false>(op, p, w.device(), compute_sum);
  const auto sums = w.options().dtype(sum_dtype(w));
  return {w_hat, compute_sum ? total.to(sum_dtype(w)) : at::empty({0}, sums)};
}

std::tuple<at::Tensor, at::Tensor> reparam_weight_backward(
    const at::Tensor& grad, const std::optional<at::Tensor>& grad_sum, const at::Tensor& weight,
    const at::Tensor& t, int64_t power, std::array<bool, 2> output_mask) {
  constexpr const char* op = "reparam_weight_backward";
  check_reparam(op, weight, t, power);
  TORCH_CHECK_VALUE(grad.sizes() == weight.sizes(), "sparseprune::", op,
                    ": grad must have the weight's shape ", weight.sizes(), ", got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == weight.scalar_type(), "sparseprune::", op,
                   ": grad must have the weight's dtype ", weight.scalar_type(), ", got ",
                   grad.scalar_type());
  check_same_device(op, "grad", grad, "weight", weight);
  if (grad_sum.has_value()) {
    TORCH_CHECK_VALUE(grad_sum->numel() == 1, "sparseprune::", op,
                      ": grad_sum must hold exactly one element, got shape ", grad_sum->sizes());
    check_same_device(op, "grad_sum", *grad_sum, "weight", weight);
  }
  at::Tensor grad_weight, grad_t;
  if (!output_mask[0] && !output_mask[1]) return {grad_weight, grad_t};
  const at::Tensor w = weight.contiguous(), g = grad.contiguous();
  const at::Tensor t_double = t.reshape({}).to(at::kDouble).contiguous();
  at::Tensor gs;
  ReparamParams p = params_for(w, t_double, power);
  if (grad_sum.has_value()) {
    gs = grad_sum->reshape({}).to(at::kDouble).contiguous();
    p.grad_sum = gs.data_ptr<double>();
  }
  p.grad = g.data_ptr();
  if (output_mask[0]) {
    grad_weight = at::empty_like(w, at::MemoryFormat::Contiguous);
    p.grad_weight = grad_weight.data_ptr();
  }
  const at::Tensor total = run_reparam<true>(op, p, w.device(), output_mask[1]);
  if (output_mask[1]) grad_t = total.to(t.scalar_type()).reshape(t.sizes());
  return {grad_weight, grad_t};
}

}  // namespace host
}  // namespace sparseprune
