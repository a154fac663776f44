#include "mask.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "buffers.h"
#include "check.h"
#include "route.h"
#include "topk.h"

namespace sparseprune {
namespace host {
namespace {

bool is_stochastic(const MaskArgs& args) { return args.method != Method::kEdgePopup; }
bool uses_dwr(const MaskArgs& args) { return args.rescale == Rescale::kDwr; }

StochasticParams stochastic_params(const at::Tensor& weight, const at::Tensor& scores,
                                   const MaskArgs& args) {
  StochasticParams p;
  p.numel = weight.numel();
  p.rule = args.method == Method::kSupermask ? Stochastic::kSupermask : Stochastic::kAslp;
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
// (float32 for 16-bit weights, whose products are taken in float32). Shape [1], not a 0-dim
// tensor: ATen casts a 0-dim operand to the other's dtype first, which would round r to bf16 /
// fp16 before the product (the CPU kernels use the float r; first seen on an H200, gpu-check).
at::Tensor dwr_multiplier(int64_t numel, const at::Tensor& kept, at::ScalarType weight_dtype) {
  return (static_cast<double>(numel) / kept.clamp_min(1.0))
      .to(weight_dtype == at::kDouble ? at::kDouble : at::kFloat)
      .reshape({1});
}

// p.keep_bits storage for numel elements: whole 64-bit groups.
at::Tensor keep_bits_for(int64_t numel) {
  return at::empty({(numel + 63) / 64 * 2}, at::TensorOptions().dtype(at::kInt));
}

// DWR forward on CPU, counting before writing: pass 1 samples z into one bit per weight and
// counts it, pass 2 writes r * w * z, so r costs no pass of its own (not even on the output).
// The same values as w * z then a multiply by r: one rounding of w * r either way.
void dwr_forward_cpu(const char* op, StochasticParams& p) {
  const at::Tensor bits = keep_bits_for(p.numel);
  const at::Tensor kept = partials_for(p.numel, 1, at::kCPU);
  p.keep_bits = reinterpret_cast<uint32_t*>(bits.data_ptr<int32_t>());
  p.partials = kept.data_ptr<double>();
  const cpu::MaskKernels& k = cpu::active<cpu::MaskKernels>();
  std::atomic<bool> nan{false};
  at::parallel_for(0, kept.size(0), kGrainTiles, [&](int64_t begin, int64_t end) {
    if (k.dwr_count(p, begin, end)) nan = true;
  });
  check_no_nan(op, nan);
  // dwr_multiplier's r (the kernel rounds it to float unless the weight is float64); the
  // counts are integers, so their sum is exact in any order.
  const double total = sum_in_tile_order(p.partials, kept.size(0));
  const double factors[2] = {static_cast<double>(p.numel) / std::max(total, 1.0), 0.0};
  p.dwr_factors = factors;
  at::parallel_for(0, kept.size(0), kGrainTiles,
                   [&](int64_t begin, int64_t end) { k.dwr_apply(p, begin, end); });
}

at::Tensor stochastic_forward(const char* op, const at::Tensor& w, const at::Tensor& s,
                              const MaskArgs& args, at::Tensor& multiplier, at::Tensor masked) {
  StochasticParams p = stochastic_params(w, s, args);
  p.masked = masked.data_ptr();
  if (uses_dwr(args) && w.device().is_cpu()) {
    if (p.numel > 0) dwr_forward_cpu(op, p);
    return masked;
  }
  at::Tensor kept;
  if (uses_dwr(args)) {
    kept = partials_for(p.numel, 1, w.device());
    p.partials = kept.data_ptr<double>();
  }
  const bool nan = run_tiles(op, w.device(), p, &cpu::MaskKernels::stochastic_forward,
                             SP_CUDA(stochastic_forward));
  check_no_nan(op, nan);
  if (uses_dwr(args)) multiplier = dwr_multiplier(p.numel, kept.sum(), w.scalar_type());
  return masked;
}

// Without DWR: one pass; Smart Rescale's gradient reduced from per-tile sums in tile order (by
// the CUDA launcher itself on CUDA, without a host sync).
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
  if (grad_scale && device.is_cuda()) p.grad_scale = grad_scale->data_ptr<float>();
  // The backward ops are public too: a NaN score is refused as in forward.
  check_no_nan(op, run_tiles(op, device, p, &cpu::MaskKernels::stochastic_backward,
                             SP_CUDA(stochastic_backward)));
  if (grad_scale && device.is_cpu())
    grad_scale->fill_(sum_in_tile_order(partials.data_ptr<double>(), partials.size(0)));
}

// With DWR: pass 1 packs slopes and sums (w z g, z) per tile; the factors r = N / max(M, 1) and
// c = r * T / max(M, 1) follow on the device; pass 2 finishes every output without noise.
void dwr_backward(const char* op, StochasticParams& p, const at::Device& device,
                  const at::Tensor& slopes) {
  if (p.numel == 0) return;
  at::Tensor partials = partials_for(p.numel, 2, device);
  p.partials = partials.data_ptr<double>();
  at::Tensor bits;
  if (p.rule == Stochastic::kSupermask && device.is_cpu()) {  // one bit per weight, not a slope
    bits = keep_bits_for(p.numel);
    p.keep_bits = reinterpret_cast<uint32_t*>(bits.data_ptr<int32_t>());
  } else {
    p.slopes = slopes.data_ptr<float>();
  }
  check_no_nan(op, run_tiles(op, device, p, &cpu::MaskKernels::dwr_collect, SP_CUDA(dwr_collect)));
  const at::Tensor sums = partials.sum(0);  // [sum w z g, M]
  const at::Tensor kept = sums.select(0, 1).clamp_min(1.0);
  const at::Tensor r = static_cast<double>(p.numel) / kept;
  const at::Tensor factors = at::stack({r, r * sums.select(0, 0) / kept}).contiguous();
  p.dwr_factors = factors.data_ptr<double>();
  run_tiles(op, device, p, &cpu::MaskKernels::dwr_finish, SP_CUDA(dwr_finish));
}

}  // namespace

MaskArgs mask_args(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                   const std::optional<at::Tensor>& scale, const std::string& method,
                   const std::string& rescale, double temperature, double density,
                   const at::Tensor& rng) {
  const MaskArgs args{
      static_cast<Method>(choice(op, "method", method, {"aslp", "supermask", "edge_popup"})),
      static_cast<Rescale>(choice(op, "rescale", rescale, {"none", "smart", "dwr"})),
      scale, temperature, density, rng};
  TORCH_CHECK_VALUE(!uses_dwr(args) || is_stochastic(args), "sparseprune::", op,
                    ": rescale='dwr' applies to stochastic masks (aslp, supermask), got method '",
                    method, "'");
  TORCH_CHECK_VALUE((args.rescale == Rescale::kSmart) == scale.has_value(), "sparseprune::", op,
                    ": a scale tensor goes with rescale='smart' and only with it, got rescale='",
                    rescale, "' and ", scale.has_value() ? "a" : "no", " scale");
  kernel_dtype(op, "weight", weight);
  kernel_dtype(op, "scores", scores);
  TORCH_CHECK_VALUE(weight.sizes() == scores.sizes(), "sparseprune::", op,
                    ": scores must have the weight's shape ", weight.sizes(), ", got ",
                    scores.sizes());
  check_same_device(op, "scores", scores, "weight", weight);
  check_cpu_or_cuda(op, "tensors", weight.device());
  check_scale(op, scale, weight);
  check_temperature(op, temperature);
  TORCH_CHECK_VALUE(std::isfinite(density) && density > 0 && density <= 1, "sparseprune::", op,
                    ": density must be in (0, 1], got ", density);
  check_rng(op, rng);
  return args;
}

Masked masked_weight(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                     const MaskArgs& args) {
  const at::Tensor w = weight.contiguous(), s = scores.contiguous();
  const at::Tensor buffer = empty_buffer(w);
  Masked out;
  if (is_stochastic(args))
    out.weight = stochastic_forward(op, w, s, args, out.multiplier, buffer);
  else
    out.weight = topk_forward(op, w, s, args.density, buffer);
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
  if (need_weight) out.weight = empty_buffer(w);
  if (need_scores) out.scores = empty_buffer(s);
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
    const bool bits = p.rule == Stochastic::kSupermask && w.device().is_cpu();  // no slopes
    dwr_backward(op, p, w.device(),
                 reuse || bits ? out.scores
                               : at::empty(w.sizes(), w.options().dtype(at::kFloat)));
    return out;
  }
  if (need_scale) out.scale = at::empty_like(*args.scale);
  stochastic_backward(op, p, w.device(), need_scale ? &out.scale : nullptr);
  return out;
}

}  // namespace host
}  // namespace sparseprune
