#include "topk.h"

#include <array>
#include <cmath>
#include <mutex>

#include "check.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

using Histogram = std::array<int64_t, kHistogramBins>;

TopkParams topk_params(const at::Tensor& weight, const at::Tensor& scores) {
  TopkParams p;
  p.numel = weight.numel();
  p.score_dtype = kernel_dtype("topk", "scores", scores);
  p.weight_dtype = kernel_dtype("topk", "weight", weight);
  p.scores = scores.data_ptr();
  p.weight = weight.data_ptr();
  return p;
}

Histogram histogram(const char* op, const TopkParams& p, const DigitHistogram& step,
                    const at::Device& device) {
  Histogram hist{};
  if (on_cuda(op, device)) {
    at::Tensor counts =
        at::zeros({kHistogramBins}, at::TensorOptions().dtype(at::kLong).device(device));
    launch(SP_CUDA(topk_histogram), device, p, step, counts.data_ptr<int64_t>());
    counts = counts.cpu();  // the next digit depends on it: one sync per radix step
    std::copy_n(counts.data_ptr<int64_t>(), kHistogramBins, hist.begin());
    return hist;
  }
  const cpu::MaskKernels& k = cpu::active<cpu::MaskKernels>();
  std::mutex merge;
  at::parallel_for(0, num_tiles(p.numel), kGrainTiles, [&](int64_t begin, int64_t end) {
    Histogram local{};
    k.topk_histogram(p, step, begin, end, local.data());
    std::lock_guard<std::mutex> lock(merge);
    for (int b = 0; b < kHistogramBins; ++b) hist[b] += local[b];  // integer sums: any order
  });
  return hist;
}

// Finds the threshold key and, when only some of the keys equal to it are kept, the per-tile
// quotas that keep the first ones in index order. Three radix steps of 11, 11 and 10 bits.
void select_threshold(const char* op, TopkParams& p, const at::Device& device, int64_t k,
                      at::Tensor& tie_quota) {
  const auto tile_options = at::TensorOptions().dtype(at::kLong).device(device);
  if (k >= p.numel) {  // every key is >= 0
    p.threshold = 0;
    return;
  }
  if (k == 0) {  // no finite key reaches the largest possible one, and no tie is kept
    p.threshold = 0x7FFFFFFFu;
    tie_quota = at::zeros({num_tiles(p.numel)}, tile_options);
    p.tie_quota = tie_quota.data_ptr<int64_t>();
    return;
  }
  uint32_t prefix = 0;
  int32_t prefix_shift = 32;
  int64_t remaining = k, ties = 0;
  for (const int32_t shift : {21, 10, 0}) {
    const Histogram hist = histogram(op, p, DigitHistogram{shift, prefix_shift, prefix}, device);
    int digit = (1 << (prefix_shift - shift)) - 1;
    for (; digit > 0 && remaining > hist[digit]; --digit) remaining -= hist[digit];
    prefix = (prefix << (prefix_shift - shift)) | static_cast<uint32_t>(digit);
    prefix_shift = shift;
    ties = hist[digit];
  }
  p.threshold = prefix;
  if (remaining == ties) return;  // every key equal to the threshold is kept
  at::Tensor per_tile = at::empty({num_tiles(p.numel)}, tile_options);
  int64_t* tile_ties = per_tile.data_ptr<int64_t>();
  auto count_ties = [&](const cpu::MaskKernels& kt, int64_t begin, int64_t end) {
    kt.topk_count_ties(p, begin, end, tile_ties);
    return false;
  };
  route<cpu::MaskKernels>(op, device, p.numel, count_ties, SP_CUDA(topk_count_ties), p, tile_ties);
  const at::Tensor before = per_tile.cumsum(0) - per_tile;
  tie_quota = (remaining - before).clamp(0).minimum(per_tile).contiguous();
  p.tie_quota = tie_quota.data_ptr<int64_t>();
}

}  // namespace

int64_t top_k_count(double density, int64_t numel) {
  return static_cast<int64_t>(std::nearbyint(density * static_cast<double>(numel)));
}

at::Tensor topk_forward(const char* op, const at::Tensor& weight, const at::Tensor& scores,
                        double density) {
  at::Tensor masked = at::empty_like(weight, at::MemoryFormat::Contiguous);
  TopkParams p = topk_params(weight, scores);
  p.masked = masked.data_ptr();
  at::Tensor tie_quota;
  if (p.numel == 0) return masked;
  select_threshold(op, p, weight.device(), top_k_count(density, p.numel), tie_quota);
  const bool nan =
      run_tiles(op, weight.device(), p, &cpu::MaskKernels::topk_forward, SP_CUDA(topk_forward));
  check_no_nan(op, nan);
  return masked;
}

void topk_backward(const char* op, const at::Tensor& grad, const at::Tensor& weight,
                   const at::Tensor& scores, double density, const at::Tensor& grad_weight,
                   const at::Tensor& grad_scores, void* masked) {
  TopkParams p = topk_params(weight, scores);
  p.grad = grad.data_ptr();
  p.grad_weight = grad_weight.defined() ? grad_weight.data_ptr() : nullptr;
  p.grad_scores = grad_scores.defined() ? grad_scores.data_ptr() : nullptr;
  p.masked = masked;
  at::Tensor tie_quota;
  if (p.numel == 0) return;
  // The mask is recomputed, not saved: the selection is a few reads of the scores.
  if (p.grad_weight || p.masked)
    select_threshold(op, p, weight.device(), top_k_count(density, p.numel), tie_quota);
  check_no_nan(op, run_tiles(op, weight.device(), p, &cpu::MaskKernels::topk_backward,
                             SP_CUDA(topk_backward)));
}

}  // namespace host
}  // namespace sparseprune
