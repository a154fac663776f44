#include "mask.h"

#include <cmath>

#include "check.h"
#include "run.h"
#include "topk.h"

namespace sparseprune {
namespace host {
namespace {

bool is_stochastic(const MaskArgs& args) { return args.method != "edge_popup"; }
bool uses_dwr(const MaskArgs& args) { return args.rescale == "dwr"; }

StochasticParams stochastic_params(const at::Tensor& weight, const at::Tensor& scores,
                                   const MaskArgs& args) {
  StochasticParams p;
  p.numel = weight.numel();
  p.rule = args.method == "supermask" ? Stochastic::kSupermask : Stochastic::kAslp;
  const int64_t* rng = args.rng.data_ptr<int64_t>();
  p.seed = static_cast<uint64_t>(rng[0]);
  p.offset = static_cast<uint64_t>(rng[1]);
  p.inv_temperature = static_cast<float>(1.0 / args.temperature);
  p.scale = args.scale.has_value() ? args.scale->data_ptr<float>() : nullptr;
  p.score_dtype = kernel_dtype("mask", "scores", scores);
  p.weight_dtype = kernel_dtype("mask", "weight", weight);
  p.scores = scores.data_ptr();
  p.weight = weight.data_ptr();
  return p;
}

at::Tensor partials_for(int64_t numel, int64_t per_tile, const at::Device& device) {
  return at::empty({num_tiles(numel), per_tile},
                   at::TensorOptions().dtype(at::kDouble).device(device));
}

// r = N / max(M, 1): an empty sampled mask gives a zero layer, not NaN. In the weight's precision
// (float32 for 16-bit weights, whose products are taken in float32).
at::Tensor dwr_multiplier(int64_t numel, const at::Tensor& kept, at::ScalarType weight_dtype) {
  return (static_cast<double>(numel) / kept.clamp_min(1.0))
      .to(weight_dtype == at::kDouble ? at::kDouble : at::kFloat);
}

at::Tensor stochastic_forward(const char* op, const at::Tensor& w, const at::Tensor& s,
                              const MaskArgs& args, at::Tensor& multiplier) {
  at::Tensor masked = at::empty_like(w, at::MemoryFormat::Contiguous);
  StochasticParams p = stochastic_params(w, s, args);
  p.masked = masked.data_ptr();
  at::Tensor kept;
  if (uses_dwr(args)) {
    kept = partials_for(p.numel, 1, w.device());
    p.partials = kept.data_ptr<double>();
  }
  const bool nan = run_tiles(op, w.device(), p, &cpu::KernelTable::stochastic_forward,
                             SP_CUDA_FN(stochastic_forward));
  check_no_nan(op, nan);
  if (uses_dwr(args)) multiplier = dwr_multiplier(p.numel, kept.sum(), w.scalar_type());
  return masked;
}

// Without DWR: one pass; Smart Rescale's gradient reduced from per-tile sums.
void stochastic_backward(const char* op, StochasticParams& p, const at::Device& device,
                         at::Tensor* grad_scale) {
  at::Tensor partials;
  if (grad_scale) {
    partials = partials_for(p.numel, 1, device);
    p.partials = partials.data_ptr<double>();
  }
  if (p.numel == 0) {
    if (grad_scale) grad_scale->zero_();
    return;
  }
#ifdef SP_WITH_CUDA
  if (grad_scale && device.is_cuda()) p.grad_scale = grad_scale->data_ptr<float>();
#endif
  run_tiles(op, device, p, &cpu::KernelTable::stochastic_backward,
            SP_CUDA_FN(stochastic_backward));
  if (grad_scale && device.is_cpu()) {  // tile partials summed in tile order
    const double* part = partials.data_ptr<double>();
    double total = 0;
    for (int64_t t = 0; t < partials.size(0); ++t) total += part[t];
    grad_scale->fill_(total);
  }
}

// With DWR: pass 1 packs slopes and sums (w z g, z) per tile; the factors r = N / max(M, 1) and
// c = r * T / max(M, 1) follow on the device; pass 2 finishes every output without noise.
void dwr_backward(const char* op, StochasticParams& p, const at::Device& device,
                  const at::Tensor& slopes) {
  if (p.numel == 0) return;
  at::Tensor partials = partials_for(p.numel, 2, device);
  p.partials = partials.data_ptr<double>();
  p.slopes = slopes.data_ptr<float>();
  run_tiles(op, device, p, &cpu::KernelTable::dwr_collect, SP_CUDA_FN(dwr_collect));
  const at::Tensor sums = partials.sum(0);  // [sum w z g, M]
  const at::Tensor kept = sums.select(0, 1).clamp_min(1.0);
  const at::Tensor r = static_cast<double>(p.numel) / kept;
  const at::Tensor factors = at::stack({r, r * sums.select(0, 0) / kept}).contiguous();
  p.dwr_factors = factors.data_ptr<double>();
  run_tiles(op, device, p, &cpu::KernelTable::dwr_finish, SP_CUDA_FN(dwr_finish));
}

}  // namespace

void check_mask_args(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                     const MaskArgs& args) {
  TORCH_CHECK_VALUE(args.method == "aslp" || args.method == "supermask" ||
                        args.method == "edge_popup",
                    "sparseprune::", op, ": method must be aslp, supermask or edge_popup, got '",
                    args.method, "'");
  TORCH_CHECK_VALUE(args.rescale == "none" || args.rescale == "smart" || args.rescale == "dwr",
                    "sparseprune::", op, ": rescale must be none, smart or dwr, got '",
                    args.rescale, "'");
  TORCH_CHECK_VALUE(args.rescale != "dwr" || is_stochastic(args), "sparseprune::", op,
                    ": rescale='dwr' applies to stochastic masks (aslp, supermask), got method '",
                    args.method, "'");
  TORCH_CHECK_VALUE((args.rescale == "smart") == args.scale.has_value(), "sparseprune::", op,
                    ": a scale tensor goes with rescale='smart' and only with it, got rescale='",
                    args.rescale, "' and ", args.scale.has_value() ? "a" : "no", " scale");
  kernel_dtype(op, "weight", weight);
  kernel_dtype(op, "scores", scores);
  TORCH_CHECK_VALUE(weight.sizes() == scores.sizes(), "sparseprune::", op,
                    ": scores must have the weight's shape ", weight.sizes(), ", got ",
                    scores.sizes());
  check_same_device(op, "scores", scores, "weight", weight);
  TORCH_CHECK_VALUE(weight.device().is_cpu() || weight.device().is_cuda(), "sparseprune::", op,
                    ": tensors must be on CPU or CUDA, got ", weight.device());
  check_scale(op, args.scale, weight);
  check_temperature(op, args.temperature);
  TORCH_CHECK_VALUE(std::isfinite(args.density) && args.density > 0 && args.density <= 1,
                    "sparseprune::", op, ": density must be in (0, 1], got ", args.density);
  check_rng(op, args.rng);
}

Masked masked_weight(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                     const MaskArgs& args) {
  const at::Tensor w = weight.contiguous(), s = scores.contiguous();
  Masked out;
  if (is_stochastic(args))
    out.weight = stochastic_forward(op, w, s, args, out.multiplier);
  else
    out.weight = topk_forward(op, w, s, args.density);
  return out;
}

at::Tensor full_masked_weight(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                              const MaskArgs& args) {
  Masked m = masked_weight(op, weight, scores, args);
  if (m.multiplier.defined()) m.weight.mul_(m.multiplier);
  return m.weight;
}

MaskGrads mask_backward(const char* op, at::Tensor& grad, const at::Tensor& weight,
                        const at::Tensor& scores, const MaskArgs& args, bool need_weight,
                        bool need_scores, bool need_scale, bool masked_into_grad) {
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == weight.sizes() &&
                  grad.scalar_type() == weight.scalar_type(),
              "sparseprune::", op, ": internal error: bad gradient buffer");
  const at::Tensor w = weight.contiguous(), s = scores.contiguous();
  MaskGrads out;
  if (need_weight) out.weight = at::empty_like(w, at::MemoryFormat::Contiguous);
  if (need_scores) out.scores = at::empty_like(s, at::MemoryFormat::Contiguous);
  void* masked = masked_into_grad ? grad.data_ptr() : nullptr;
  if (!is_stochastic(args)) {
    topk_backward(op, grad, w, s, args.density, out.weight, out.scores, masked);
    return out;
  }
  StochasticParams p = stochastic_params(w, s, args);
  p.grad = grad.data_ptr();
  p.grad_weight = need_weight ? out.weight.data_ptr() : nullptr;
  p.grad_scores = need_scores ? out.scores.data_ptr() : nullptr;
  p.masked = masked;
  if (uses_dwr(args)) {
    // Pass 1's packed slopes go to the score gradient itself when it is float32.
    const bool reuse = need_scores && s.scalar_type() == at::kFloat;
    dwr_backward(op, p, w.device(),
                 reuse ? out.scores : at::empty(w.sizes(), w.options().dtype(at::kFloat)));
    return out;
  }
  if (need_scale) out.scale = at::empty_like(*args.scale);
  stochastic_backward(op, p, w.device(), need_scale ? &out.scale : nullptr);
  return out;
}

}  // namespace host
}  // namespace sparseprune
