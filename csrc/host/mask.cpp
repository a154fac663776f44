#include "mask.h"

#include <ATen/Parallel.h>

#include <atomic>

#include "../cpu/dispatch.h"
#include "check.h"
#ifdef SP_WITH_CUDA
#include "../cuda/launch.h"
#endif

namespace sparseprune {
namespace host {
namespace {

// Tiles per thread task: small tensors stay on one thread.
constexpr int64_t kGrainTiles = 8;

AslpParams aslp_params(const at::Tensor& weight, const at::Tensor& scores, const MaskArgs& args) {
  AslpParams p;
  p.numel = weight.numel();
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

#ifndef SP_WITH_CUDA
[[noreturn]] void no_cuda(const char* op) {
  TORCH_CHECK(false, "sparseprune::", op,
              ": this build has no CUDA kernels; rebuild with SPARSEPRUNE_CUDA=1 (see README)");
}
#endif

void run_forward(const char* op, const AslpParams& p, const at::Device& device) {
  if (p.numel == 0) return;
  if (device.is_cuda()) {
#ifdef SP_WITH_CUDA
    cuda::aslp_forward(p, device.index());
    return;
#else
    no_cuda(op);
#endif
  }
  const cpu::KernelTable& k = cpu::kernels();
  std::atomic<bool> nan_seen{false};
  at::parallel_for(0, num_tiles(p.numel), kGrainTiles, [&](int64_t begin, int64_t end) {
    if (k.aslp_forward(p, begin, end)) nan_seen = true;
  });
  TORCH_CHECK_VALUE(!nan_seen, "sparseprune::", op,
                    ": scores contain NaN; a NaN logit has no mask (check the learning rate or "
                    "the optimizer state)");
}

void run_backward(const char* op, AslpParams& p, const at::Device& device, at::Tensor* grad_scale) {
  at::Tensor partials;
  if (grad_scale) {
    partials = at::empty({num_tiles(p.numel)}, at::TensorOptions().dtype(at::kDouble).device(device));
    p.scale_partials = partials.data_ptr<double>();
  }
  if (p.numel == 0) {
    if (grad_scale) grad_scale->zero_();
    return;
  }
  if (device.is_cuda()) {
#ifdef SP_WITH_CUDA
    if (grad_scale) p.grad_scale = grad_scale->data_ptr<float>();
    cuda::aslp_backward(p, device.index());
    return;
#else
    no_cuda(op);
#endif
  }
  const cpu::KernelTable& k = cpu::kernels();
  at::parallel_for(0, num_tiles(p.numel), kGrainTiles,
                   [&](int64_t begin, int64_t end) { k.aslp_backward(p, begin, end); });
  if (grad_scale) {  // tile partials summed in tile order: independent of the thread count
    const double* part = partials.data_ptr<double>();
    double total = 0;
    for (int64_t t = 0; t < partials.numel(); ++t) total += part[t];
    grad_scale->fill_(total);
  }
}

}  // namespace

void check_mask_args(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                     const MaskArgs& args) {
  TORCH_CHECK_VALUE(args.method == "aslp", "sparseprune::", op, ": unknown method '", args.method,
                    "'; the fused kernels implement: aslp");
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
  TORCH_CHECK_VALUE(args.rng.device().is_cpu() && args.rng.scalar_type() == at::kLong &&
                        args.rng.numel() == 2 && args.rng.is_contiguous(),
                    "sparseprune::", op,
                    ": rng must be a contiguous CPU int64 tensor [seed, offset], got ",
                    args.rng.scalar_type(), " tensor of shape ", args.rng.sizes(), " on ",
                    args.rng.device());
}

at::Tensor masked_weight(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                         const MaskArgs& args) {
  const at::Tensor w = weight.contiguous(), s = scores.contiguous();
  at::Tensor masked = at::empty_like(w, at::MemoryFormat::Contiguous);
  AslpParams p = aslp_params(w, s, args);
  p.masked = masked.data_ptr();
  run_forward(op, p, w.device());
  return masked;
}

MaskGrads mask_backward(const char* op, at::Tensor& grad, const at::Tensor& weight,
                        const at::Tensor& scores, const MaskArgs& args, bool need_weight,
                        bool need_scores, bool need_scale, bool masked_into_grad) {
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == weight.sizes() &&
                  grad.scalar_type() == weight.scalar_type(),
              "sparseprune::", op, ": internal error: bad gradient buffer");
  const at::Tensor w = weight.contiguous(), s = scores.contiguous();
  MaskGrads out;
  AslpParams p = aslp_params(w, s, args);
  p.grad = grad.data_ptr();
  if (need_weight) {
    out.weight = at::empty_like(w, at::MemoryFormat::Contiguous);
    p.grad_weight = out.weight.data_ptr();
  }
  if (need_scores) {
    out.scores = at::empty_like(s, at::MemoryFormat::Contiguous);
    p.grad_scores = out.scores.data_ptr();
  }
  if (masked_into_grad) p.masked = grad.data_ptr();
  if (need_scale) out.scale = at::empty_like(*args.scale);
  run_backward(op, p, w.device(), need_scale ? &out.scale : nullptr);
  return out;
}

}  // namespace host
}  // namespace sparseprune
