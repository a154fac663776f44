// Raw Philox words and logistic noise (for tests and for users who want the stream itself).
#include <string.h>

#include <sparseprune/noise.h>

#include "mask_kernels.h"

SP_NAMESPACE_BEGIN

void run_noise(const NoiseParams& p, int64_t tile_begin, int64_t tile_end) {
  auto group = [&](auto lane, int64_t first, int n, const uint32_t* bits, int64_t, auto*) {
    using F = decltype(lane);
    if (p.kind == NoiseKind::kBits) {
      memcpy(static_cast<uint32_t*>(p.out) + first, bits, sizeof(uint32_t) * n);
      return;
    }
    float* out = static_cast<float*>(p.out) + first;
    for (int j = 0; j < n; j += Lanes<F>::kWidth)
      IO<F>::store(out + j, logistic_noise(uniform_open<F>(IO<F>::load_bits(bits + j))));
  };
  for_each_philox_tile<Vec, float, 0>(p.seed, p.offset, p.numel, tile_begin, tile_end, group,
                                      kNoTotals);
}

SP_NAMESPACE_END
