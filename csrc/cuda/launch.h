// CUDA launchers for the fused kernels (defined in csrc/cuda/*.cu, built only with CUDA; host code
// reaches them through csrc/host/route.h). Each launches on the current stream of `device` under a
// device guard and checks the launch. They mirror the CPU kernel families (csrc/cpu/tables.h)
// over the whole tensor.
#pragma once
#include <sparseprune/params.h>
#include <sparseprune/sparse_params.h>

namespace sparseprune {
namespace cuda {

// Writes p.masked and, when p.partials is set, the kept count of each tile (DWR).
void stochastic_forward(const StochasticParams& p, int device);
// One-pass backward; per-tile sums of g * w * z into p.partials when set, reduced into
// *p.grad_scale when that is set too (no host sync).
void stochastic_backward(const StochasticParams& p, int device);
// DWR backward: pass 1 (packed slopes, per-tile (sum w z g, kept) pairs) and pass 2.
void dwr_collect(const StochasticParams& p, int device);
void dwr_finish(const StochasticParams& p, int device);

// Edge-Popup: adds a radix step's counts into hist (device, kHistogramBins int64), counts the
// keys equal to p.threshold per tile (device, num_tiles int64), forward and backward passes.
void topk_histogram(const TopkParams& p, const DigitHistogram& step, int64_t* hist, int device);
void topk_count_ties(const TopkParams& p, int64_t* per_tile, int device);
void topk_forward(const TopkParams& p, int device);
void topk_backward(const TopkParams& p, int device);

// Weight reparametrisation: forward (w_hat, per-tile sums of h) and backward (grad_weight,
// per-tile dLoss/dt terms); when p.partials is set they are also summed in tile order into
// *p.total on the device.
void reparam_forward(const ReparamParams& p, int device);
void reparam_backward(const ReparamParams& p, int device);

// Hard-concrete gates: z (forward), dLoss/dlog_alpha (backward), the noise regenerated in both.
void hard_concrete_forward(const HardConcreteParams& p, int device);
void hard_concrete_backward(const HardConcreteParams& p, int device);

// N:M pattern masks (nm.h): forward (p.masked) and backward (whichever of grad_scores,
// grad_weight, masked are set; per-tile Smart Rescale sums into p.partials, reduced into
// *p.grad_scale when that is set too). One thread per group, one block per kNmTileGroups tile.
void nm_forward(const NmParams& p, int device);
void nm_backward(const NmParams& p, int device);

void noise(const NoiseParams& p, int device);

// Sparse inference (csrc/cuda/sparse.cu): y = W x, and Y = W X for p.batch problems.
void sparse_spmv(const SpmvParams& p, int device);
void sparse_spmm(const SpmmParams& p, int device);

}  // namespace cuda
}  // namespace sparseprune
