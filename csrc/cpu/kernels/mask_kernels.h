// The mask family's entry points of one ISA (inside that ISA's namespace; see macros.h), gathered
// into its table by mask_table.cpp. What each does: MaskKernels in csrc/cpu/tables.h.
#pragma once
#include "tile_loops.h"

SP_NAMESPACE_BEGIN

bool run_stochastic_forward(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
bool run_stochastic_backward(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
bool run_dwr_collect(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
void run_dwr_finish(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
bool run_dwr_count(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);
void run_dwr_apply(const StochasticParams& p, int64_t tile_begin, int64_t tile_end);

void run_topk_histogram(const TopkParams& p, const DigitHistogram& step, int64_t tile_begin,
                        int64_t tile_end, int64_t* hist);
void run_topk_band(const TopkParams& p, cpu::TopkBand& band, int64_t tile_begin, int64_t tile_end);
void run_topk_count_ties(const TopkParams& p, int64_t tile_begin, int64_t tile_end,
                         int64_t* per_tile);
bool run_topk_forward(const TopkParams& p, int64_t tile_begin, int64_t tile_end);
bool run_topk_backward(const TopkParams& p, int64_t tile_begin, int64_t tile_end);

void run_noise(const NoiseParams& p, int64_t tile_begin, int64_t tile_end);

SP_NAMESPACE_END
