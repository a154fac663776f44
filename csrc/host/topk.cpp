#include "topk.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <mutex>
#include <vector>

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

// Note [Sampled top-k selection]
// On CPU a large layer's threshold takes one pass over the scores instead of three radix steps:
//   1. a fixed sample of kSamples keys (spread over the tensor, positions from a hash) gives, by
//      its order statistics, a band [lo, hi] that holds the k-th largest key unless the sample is
//      off by more than ~5 standard deviations;
//   2. one pass (MaskKernels::topk_band) counts the keys above hi and gathers those in the band,
//      in index order, with the count per tile;
//   3. if above < k <= above + gathered (and the band fitted its buffer), the threshold is the
//      (k - above)-th largest gathered key, found by a radix select over the small buffer, and
//      the per-tile tie counts come from the same buffer. Otherwise (a skewed sample, or a band of
//      mostly equal keys) the radix steps run as before.
// Either way the threshold and tie quotas are the exact ones: the sample only chooses where to
// look, so masks are bit-identical to the radix path's on every ISA and thread count.
constexpr int64_t kSampleMinNumel = int64_t{1} << 18;
constexpr int64_t kSamples = int64_t{1} << 16;

struct BandChunk {
  int64_t tile_begin, tile_end, slot, gathered;
};

// Scratch the sampled selection keeps per thread between calls (the band buffer, the gathered
// keys, the radix histogram): fresh ones were page faults on every call with glibc's default
// allocator. Each grows to the largest layer's band (a few percent of its keys) and stays.
struct BandScratch {
  std::vector<uint32_t> buffer, keys;
  std::vector<int64_t> hist;
};
BandScratch& band_scratch() {
  thread_local BandScratch scratch;
  return scratch;
}

// The magnitude keys of the sample, at one position per stride-wide slot.
std::vector<uint32_t> sample_keys(const at::Tensor& scores, int64_t numel) {
  const int64_t stride = numel / kSamples;
  at::Tensor index = at::empty({kSamples}, at::TensorOptions().dtype(at::kLong));
  int64_t* ix = index.data_ptr<int64_t>();
  for (int64_t j = 0; j < kSamples; ++j) {
    const uint64_t h = static_cast<uint64_t>(j + 1) * 0x9E3779B97F4A7C15ull;
    ix[j] = j * stride + static_cast<int64_t>((h >> 32) % static_cast<uint64_t>(stride));
  }
  const at::Tensor values =
      scores.reshape({-1}).index_select(0, index).to(at::kFloat).contiguous();
  const float* v = values.data_ptr<float>();
  std::vector<uint32_t> keys(kSamples);
  for (int64_t j = 0; j < kSamples; ++j) {
    uint32_t bits;
    std::memcpy(&bits, v + j, sizeof bits);
    keys[j] = bits & 0x7FFFFFFFu;
  }
  return keys;
}

// The need-th largest (1-based) of `keys`, all in [lo, hi], by radix steps of up to 16 bits over
// key - lo; `remaining` is left as the number of keys equal to it that are kept.
uint32_t select_in_band(const std::vector<uint32_t>& keys, uint32_t lo, uint32_t hi,
                        int64_t& remaining, std::vector<int64_t>& hist) {
  const uint32_t range = hi - lo;
  int top = range == 0 ? 0 : 32 - __builtin_clz(range);  // bits of key - lo still undecided
  uint32_t prefix = 0;
  hist.resize(size_t{1} << 16);
  while (top > 0) {
    const int shift = std::max(top - 16, 0);
    const uint32_t digit_mask = (1u << (top - shift)) - 1u;
    std::fill(hist.begin(), hist.begin() + digit_mask + 1, 0);
    for (const uint32_t key : keys) {
      const uint32_t d = key - lo;
      if ((d >> top) == prefix) ++hist[(d >> shift) & digit_mask];
    }
    uint32_t digit = digit_mask;
    for (; digit > 0 && remaining > hist[digit]; --digit) remaining -= hist[digit];
    prefix = (prefix << (top - shift)) | digit;
    top = shift;
  }
  return lo + prefix;
}

// Steps 1-3 of the Note; false when the band missed (nothing set then).
bool select_threshold_sampled(const char* op, TopkParams& p, const at::Tensor& scores, int64_t k,
                              at::Tensor& tie_quota) {
  std::vector<uint32_t> sample = sample_keys(scores, p.numel);
  // Descending ranks: the k-th largest key sits near rank k * m / n of the sample.
  const double q = static_cast<double>(k) / static_cast<double>(p.numel);
  const int64_t expect = static_cast<int64_t>(q * static_cast<double>(kSamples));
  const int64_t margin =
      static_cast<int64_t>(std::ceil(5.0 * std::sqrt(kSamples * q * (1.0 - q)))) + 32;
  auto at_rank = [&](int64_t rank) {
    std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<>());
    return sample[rank];
  };
  const uint32_t hi = expect - margin < 0 ? 0x7FFFFFFFu : at_rank(expect - margin);
  const uint32_t lo = expect + margin >= kSamples ? 0u : at_rank(expect + margin);
  const int64_t tiles = num_tiles(p.numel);
  const double band_share = static_cast<double>(2 * margin + 1) / static_cast<double>(kSamples);
  const int64_t capacity = std::min<int64_t>(
      p.numel, static_cast<int64_t>(2.0 * band_share * static_cast<double>(p.numel)) + 64 * tiles);
  BandScratch& scratch = band_scratch();
  if (static_cast<int64_t>(scratch.buffer.size()) < capacity) scratch.buffer.resize(capacity);
  uint32_t* const buffer = scratch.buffer.data();
  std::vector<int64_t> per_tile(tiles);
  std::vector<BandChunk> chunks;
  int64_t above = 0;
  bool overflow = false;
  std::mutex merge;
  const cpu::MaskKernels& kernels = cpu::active<cpu::MaskKernels>();
  at::parallel_for(0, tiles, kGrainTiles, [&](int64_t begin, int64_t end) {
    // Each task's slot of the buffer is its share of the tiles.
    const int64_t slot = capacity * begin / tiles, slot_end = capacity * end / tiles;
    cpu::TopkBand band;
    band.lo = lo;
    band.hi = hi;
    band.keys = buffer + slot;
    band.capacity = slot_end - slot;
    band.per_tile = per_tile.data();
    kernels.topk_band(p, band, begin, end);
    std::lock_guard<std::mutex> lock(merge);
    above += band.above;
    overflow = overflow || band.gathered > band.capacity;
    chunks.push_back({begin, end, slot, band.gathered});
  });
  int64_t gathered = 0;
  for (const BandChunk& c : chunks) gathered += c.gathered;
  if (overflow || above >= k || above + gathered < k) return false;
  std::sort(chunks.begin(), chunks.end(),
            [](const BandChunk& a, const BandChunk& b) { return a.tile_begin < b.tile_begin; });
  std::vector<uint32_t>& keys = scratch.keys;
  keys.clear();
  for (const BandChunk& c : chunks)
    keys.insert(keys.end(), buffer + c.slot, buffer + c.slot + c.gathered);
  int64_t remaining = k - above;
  p.threshold = select_in_band(keys, lo, hi, remaining, scratch.hist);
  const int64_t ties = std::count(keys.begin(), keys.end(), p.threshold);
  if (remaining == ties) return true;  // every key equal to the threshold is kept
  // The first `remaining` ties in index order: tile by tile, from the gathered keys.
  tie_quota = at::empty({tiles}, at::TensorOptions().dtype(at::kLong));
  int64_t* quota = tie_quota.data_ptr<int64_t>();
  const uint32_t* next = keys.data();
  int64_t before = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t tile_ties = std::count(next, next + per_tile[t], p.threshold);
    next += per_tile[t];
    quota[t] = std::min(std::max<int64_t>(remaining - before, 0), tile_ties);
    before += tile_ties;
  }
  p.tie_quota = quota;
  return true;
}

// Finds the threshold key and, when only some of the keys equal to it are kept, the per-tile
// quotas that keep the first ones in index order. Three radix steps of 11, 11 and 10 bits.
void select_threshold(const char* op, TopkParams& p, const at::Tensor& scores,
                      const at::Device& device, int64_t k, at::Tensor& tie_quota) {
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
  if (device.is_cpu() && p.numel >= kSampleMinNumel &&
      select_threshold_sampled(op, p, scores, k, tie_quota))
    return;
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
                        double density, at::Tensor out) {
  at::Tensor masked = out.defined() ? out : at::empty_like(weight, at::MemoryFormat::Contiguous);
  TopkParams p = topk_params(weight, scores);
  p.masked = masked.data_ptr();
  at::Tensor tie_quota;
  if (p.numel == 0) return masked;
  select_threshold(op, p, scores, weight.device(), top_k_count(density, p.numel), tie_quota);
  const bool nan =
      run_tiles(op, weight.device(), p, &cpu::MaskKernels::topk_forward, SP_CUDA(topk_forward));
  check_no_nan(op, nan);
  return masked;
}

at::Tensor topk_threshold(const at::Tensor& scores, double density) {
  const char* op = "topk_threshold";
  const DType dtype = kernel_dtype(op, "scores", scores);
  check_cpu_or_cuda(op, "scores", scores.device());
  TORCH_CHECK_VALUE(std::isfinite(density) && density > 0 && density <= 1, "sparseprune::", op,
                    ": density must be in (0, 1], got ", density);
  const at::Tensor s = scores.contiguous();
  TopkParams p;
  p.numel = s.numel();
  p.score_dtype = dtype;
  p.scores = s.data_ptr();
  at::Tensor tie_quota;
  if (p.numel > 0)
    select_threshold(op, p, s, s.device(), top_k_count(density, p.numel), tie_quota);
  float value;
  std::memcpy(&value, &p.threshold, sizeof value);
  return at::full({}, value, s.options().dtype(at::kFloat));
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
    select_threshold(op, p, scores, weight.device(), top_k_count(density, p.numel), tie_quota);
  check_no_nan(op, run_tiles(op, weight.device(), p, &cpu::MaskKernels::topk_backward,
                             SP_CUDA(topk_backward)));
}

}  // namespace host
}  // namespace sparseprune
