// Kernel entry points of one ISA (declared inside that ISA's namespace; see vec.h). The table
// (kernel_table.h) documents what each does.
#pragma once
#include "vec.h"

SP_NAMESPACE_BEGIN

constexpr int kChunk = 64;  // elements per ChunkGenerator call: 16 Philox blocks
static_assert(kTileElems % kChunk == 0, "a tile holds whole chunks");

bool run_stochastic_forward(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
void run_stochastic_backward(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
void run_dwr_collect(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
void run_dwr_finish(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);

void run_topk_histogram(const TopkParams& p, const DigitHistogram& step, int64_t tile_begin,
                        int64_t tile_end, int64_t* hist);
void run_topk_count_ties(const TopkParams& p, int64_t tile_begin, int64_t tile_end,
                         int64_t* per_tile);
bool run_topk_forward(const TopkParams& p, int64_t tile_begin, int64_t tile_end);
void run_topk_backward(const TopkParams& p, int64_t tile_begin, int64_t tile_end);

void run_noise(const NoiseParams& p, int64_t tile_begin, int64_t tile_end);

SP_NAMESPACE_END
