// Baseline "vector" of one lane: the plain float math from <sparseprune/lanes.h> (SP_CPU_ISA_ID == 0).
#pragma once
#include <sparseprune/dtypes.h>
#include <sparseprune/philox.h>

SP_NAMESPACE_BEGIN

// Philox words for 64 consecutive elements (16 blocks) starting at block `block0`.
struct ChunkGenerator {
  PhiloxKey<uint32_t> key;
  uint64_t offset;

  ChunkGenerator(uint64_t seed, uint64_t offset_) : key(seed), offset(offset_) {}
  void operator()(uint64_t block0, uint32_t* out) const {
    for (int b = 0; b < 16; ++b) philox_block(key, offset, block0 + b, out + 4 * b);
  }
};

using Vec = float;

SP_NAMESPACE_END
