// Raw Philox words and logistic noise (for tests and for users who want the stream itself).
#include <string.h>

#include <sparseprune/noise.h>

#include "kernels.h"

SP_NAMESPACE_BEGIN
namespace {

template <class F>
void logistic_group(float* out, int n, const uint32_t* bits) {
  for (int j = 0; j < n; j += Lanes<F>::kWidth)
    IO<F>::store(out + j, logistic_noise(uniform_open<F>(IO<F>::load_bits(bits + j))));
}

}  // namespace

void run_noise(const NoiseParams& p, int64_t tile_begin, int64_t tile_end) {
  alignas(64) uint32_t bits[kChunk];
  const ChunkGenerator philox(p.seed, p.offset);
  const int64_t end = tile_end * kTileElems < p.numel ? tile_end * kTileElems : p.numel;
  for (int64_t c = tile_begin * kTileElems; c < end; c += kChunk) {
    philox(static_cast<uint64_t>(c) / 4, bits);
    const int n = end - c < kChunk ? static_cast<int>(end - c) : kChunk;
    if (p.kind == NoiseKind::kBits) {
      memcpy(static_cast<uint32_t*>(p.out) + c, bits, sizeof(uint32_t) * n);
    } else if (n == kChunk) {
      logistic_group<Vec>(static_cast<float*>(p.out) + c, n, bits);
    } else {
      logistic_group<float>(static_cast<float*>(p.out) + c, n, bits);
    }
  }
}

SP_NAMESPACE_END
