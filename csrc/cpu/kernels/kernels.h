// Kernel entry points of one ISA (declared inside that ISA's namespace; see vec.h).
#pragma once
#include "vec.h"

SP_NAMESPACE_BEGIN

constexpr int kChunk = 64;  // elements per philox_chunk: 16 Philox blocks
static_assert(kTileElems % kChunk == 0, "a tile holds whole chunks");

bool aslp_forward(const AslpParams& p, int64_t tile_begin, int64_t tile_end);
void aslp_backward(const AslpParams& p, int64_t tile_begin, int64_t tile_end);
void noise(const NoiseParams& p, int64_t tile_begin, int64_t tile_end);

SP_NAMESPACE_END
