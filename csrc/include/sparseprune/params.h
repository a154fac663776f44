// Plain parameter structs handed from the host layer (csrc/host) to the CPU and CUDA kernels.
// Pointers are device pointers of the op's device; nullptr means "not requested".
#pragma once
#include "dtypes.h"

SP_NAMESPACE_BEGIN

// Kernels work in tiles of kTileElems elements. A tile is the unit of threading on CPU, and
// per-tile partial sums make every reduction independent of thread count and vector width.
constexpr int64_t kTileElems = 4096;

SP_HD int64_t num_tiles(int64_t numel) { return (numel + kTileElems - 1) / kTileElems; }

// One ASLP mask pass over a weight-shaped tensor (element i in row-major order takes Philox
// element i of (seed, offset), see philox.h).
struct AslpParams {
  int64_t numel = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;
  float inv_temperature = 1.0f;
  const float* scale = nullptr;  // Smart Rescale scalar; nullptr means 1
  DType score_dtype = DType::kFloat32;
  DType weight_dtype = DType::kFloat32;
  const void* scores = nullptr;
  const void* weight = nullptr;

  // Forward writes the masked weight here. Backward writes it here too when set: backward may
  // alias it with `grad`, turning the gradient buffer into the masked weight in the same pass.
  void* masked = nullptr;

  // Backward only.
  const void* grad = nullptr;         // dLoss/d(masked weight), weight dtype
  void* grad_scores = nullptr;        // score dtype
  void* grad_weight = nullptr;        // weight dtype
  double* scale_partials = nullptr;   // num_tiles(numel) partial sums of g * w * z
  float* grad_scale = nullptr;        // CUDA: the reduced sum; CPU: reduced by the host
};

enum class NoiseKind : int32_t { kBits = 0, kLogistic = 1 };

// Raw Philox words (uint32) or logistic noise (float32) for elements [0, numel).
struct NoiseParams {
  int64_t numel = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;
  NoiseKind kind = NoiseKind::kBits;
  void* out = nullptr;
};

SP_NAMESPACE_END
