#include "nm.h"

#include <cmath>

#include "check.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

// The weight-shaped tensor t as (groups, m) rows, contiguous: t itself for a contiguous 2-D
// tensor, else (out, kh, kw, in) (a copy) for a convolution's (out, in, kh, kw).
at::Tensor grouped(const at::Tensor& t) {
  return t.dim() == 2 ? t.contiguous() : t.movedim(1, -1).contiguous();
}

// The inverse of grouped(): rows of the grouped layout back to `shape`, contiguous.
at::Tensor ungrouped(const at::Tensor& rows, at::IntArrayRef shape) {
  if (shape.size() == 2) return rows;
  std::vector<int64_t> moved{shape[0]};
  for (size_t d = 2; d < shape.size(); ++d) moved.push_back(shape[d]);
  moved.push_back(shape[1]);
  return rows.view(moved).movedim(-1, 1).contiguous();
}

NmParams params_for(const at::Tensor& w, const at::Tensor& s, const NmArgs& args) {
  NmParams p;
  p.groups = w.numel() / args.m;
  p.n = args.n;
  p.m = args.m;
  p.c = nm_patterns(args.n, args.m, p.patterns);
  p.rule = args.rule;
  p.hard = args.hard;
  const int64_t* rng = args.rng.data_ptr<int64_t>();
  p.seed = static_cast<uint64_t>(rng[0]);
  p.offset = static_cast<uint64_t>(rng[1]);
  p.logit_scale = args.logit_scale;
  p.inv_temperature = 1.0 / args.temperature;
  p.decay = args.decay;
  p.scale = args.scale.has_value() ? args.scale->data_ptr<float>() : nullptr;
  p.weight_dtype = kernel_dtype("nm", "weight", w);
  p.score_dtype = args.rule == NmRule::kSrste ? p.weight_dtype : kernel_dtype("nm", "scores", s);
  p.weight = w.data_ptr();
  p.scores = args.rule == NmRule::kSrste ? nullptr : s.data_ptr();
  return p;
}

bool run_nm(const char* op, const at::Device& device, const NmParams& p, bool backward) {
  auto cpu_pass = [&](const cpu::NmKernels& k, int64_t begin, int64_t end) {
    return (backward ? k.backward : k.forward)(p, begin, end);
  };
  return backward ? route_tiles<cpu::NmKernels>(op, device, nm_num_tiles(p.groups), cpu_pass,
                                                SP_CUDA(nm_backward), p)
                  : route_tiles<cpu::NmKernels>(op, device, nm_num_tiles(p.groups), cpu_pass,
                                                SP_CUDA(nm_forward), p);
}

void check_nan(const char* op, const NmArgs& args, bool nan_seen) {
  TORCH_CHECK_VALUE(!nan_seen, "sparseprune::", op, ": ",
                    args.rule == NmRule::kSrste ? "weight contains" : "scores contain",
                    " NaN; a NaN has no N:M mask (check the learning rate or the optimizer "
                    "state)");
}

}  // namespace

NmArgs nm_args(const char* op, const at::Tensor& weight, const at::Tensor& scores,
               const std::optional<at::Tensor>& scale, const std::string& method, int64_t n,
               int64_t m, const at::Tensor& schedule, bool hard, double decay,
               const at::Tensor& rng) {
  NmArgs args;
  args.rule = static_cast<NmRule>(choice(op, "method", method, {"nm_gumbel", "nm_topk", "srste"}));
  TORCH_CHECK_VALUE(1 <= n && n < m && m <= kNmMaxM, "sparseprune::", op,
                    ": the pattern must be N:M with 1 <= N < M <= 8 (N kept of every M), got ", n,
                    ":", m);
  args.n = static_cast<int>(n);
  args.m = static_cast<int>(m);
  uint32_t patterns[kNmMaxCandidates];
  args.c = nm_patterns(args.n, args.m, patterns);
  TORCH_CHECK_VALUE(schedule.device().is_cpu() && schedule.scalar_type() == at::kDouble &&
                        schedule.numel() == 2 && schedule.is_contiguous(),
                    "sparseprune::", op, ": schedule must be a contiguous CPU float64 tensor "
                    "[temperature, logit_scale], got ", schedule.scalar_type(), " tensor of shape ",
                    schedule.sizes(), " on ", schedule.device());
  args.temperature = schedule.data_ptr<double>()[0];
  args.logit_scale = schedule.data_ptr<double>()[1];
  args.hard = hard;
  args.decay = decay;
  args.scale = scale;
  args.rng = rng;
  kernel_dtype(op, "weight", weight);
  check_cpu_or_cuda(op, "tensors", weight.device());
  TORCH_CHECK_VALUE(weight.dim() >= 2 && weight.size(1) % m == 0, "sparseprune::", op,
                    ": an N:M pattern with M=", m, " needs the weight's input size (dimension 1) "
                    "to be a multiple of ", m, ", got weight of shape ", weight.sizes());
  const int64_t groups = weight.numel() / m;
  if (args.rule == NmRule::kGumbel) {
    kernel_dtype(op, "scores", scores);
    TORCH_CHECK_VALUE(scores.dim() == 2 && scores.size(0) == groups && scores.size(1) == args.c,
                      "sparseprune::", op, ": nm_gumbel scores must be the (groups, C(M, N)) = (",
                      groups, ", ", args.c, ") pattern logits of this weight, got shape ",
                      scores.sizes());
    check_same_device(op, "scores", scores, "weight", weight);
  } else if (args.rule == NmRule::kTopk) {
    kernel_dtype(op, "scores", scores);
    TORCH_CHECK_VALUE(scores.sizes() == weight.sizes(), "sparseprune::", op,
                      ": nm_topk scores must have the weight's shape ", weight.sizes(), ", got ",
                      scores.sizes());
    check_same_device(op, "scores", scores, "weight", weight);
  }
  TORCH_CHECK_VALUE(!scale.has_value() || args.rule == NmRule::kGumbel, "sparseprune::", op,
                    ": a scale (Smart Rescale) applies to nm_gumbel, not ", method);
  check_scale(op, scale, weight);
  check_temperature(op, args.temperature);
  TORCH_CHECK_VALUE(std::isfinite(args.logit_scale) && args.logit_scale > 0, "sparseprune::", op,
                    ": logit_scale must be a finite number > 0, got ", args.logit_scale);
  TORCH_CHECK_VALUE(std::isfinite(decay) && decay >= 0, "sparseprune::", op,
                    ": decay must be a finite number >= 0, got ", decay);
  check_rng(op, rng);
  return args;
}

at::Tensor nm_forward(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                      const NmArgs& args) {
  const at::Tensor w = grouped(weight);
  const at::Tensor s = args.rule == NmRule::kTopk ? grouped(scores) : scores.contiguous();
  at::Tensor masked = at::empty_like(w, at::MemoryFormat::Contiguous);
  NmParams p = params_for(w, s, args);
  p.masked = masked.data_ptr();
  check_nan(op, args, run_nm(op, w.device(), p, /*backward=*/false));
  return ungrouped(masked, weight.sizes());
}

NmGrads nm_backward(const char* op, at::Tensor& grad, const at::Tensor& weight,
                    const at::Tensor& scores, const NmArgs& args, bool need_weight,
                    bool need_scores, bool need_scale, bool masked_into_grad) {
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == weight.sizes() &&
                  grad.scalar_type() == weight.scalar_type() &&
                  (!masked_into_grad || weight.dim() == 2),
              "sparseprune::", op, ": internal error: bad gradient buffer");
  need_scores = need_scores && args.rule != NmRule::kSrste;
  need_scale = need_scale && args.scale.has_value();
  const at::Tensor w = grouped(weight), g = grouped(grad);
  const at::Tensor s = args.rule == NmRule::kTopk ? grouped(scores) : scores.contiguous();
  NmParams p = params_for(w, s, args);
  NmGrads out;
  at::Tensor grad_weight, grad_scores, partials;
  if (need_weight) grad_weight = at::empty_like(w, at::MemoryFormat::Contiguous);
  if (need_scores) grad_scores = at::empty_like(s, at::MemoryFormat::Contiguous);
  p.grad = g.data_ptr();
  p.grad_weight = need_weight ? grad_weight.data_ptr() : nullptr;
  p.grad_scores = need_scores ? grad_scores.data_ptr() : nullptr;
  p.masked = masked_into_grad ? grad.data_ptr() : nullptr;
  if (need_scale) {
    out.scale = at::zeros_like(*args.scale);
    partials = at::empty({nm_num_tiles(p.groups)},
                         at::TensorOptions().dtype(at::kDouble).device(w.device()));
    p.partials = partials.data_ptr<double>();
    if (w.device().is_cuda()) p.grad_scale = out.scale.data_ptr<float>();
  }
  check_nan(op, args, run_nm(op, w.device(), p, /*backward=*/true));
  if (need_scale && w.device().is_cpu() && p.groups > 0)
    out.scale.fill_(sum_in_tile_order(partials.data_ptr<double>(), partials.size(0)));
  if (need_weight) out.weight = ungrouped(grad_weight, weight.sizes());
  if (need_scores)
    out.scores = args.rule == NmRule::kTopk ? ungrouped(grad_scores, scores.sizes()) : grad_scores;
  return out;
}

}  // namespace host
}  // namespace sparseprune
