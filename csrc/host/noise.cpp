// sparseprune::philox_bits / logistic_noise: the raw random stream the masks are built from.
#include <limits>

#include "ops.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

at::Tensor generate(const char* op, int64_t numel, int64_t seed, int64_t offset,
                    at::Device device, NoiseKind kind) {
  // At most 2^61 - 1 elements of 4 bytes: the largest tensor whose byte size is an int64.
  TORCH_CHECK_VALUE(numel >= 0 && numel <= std::numeric_limits<int64_t>::max() / 4,
                    "sparseprune::", op, ": numel must be in [0, 2^61), got ", numel);
  TORCH_CHECK_VALUE(device.is_cpu() || device.is_cuda(), "sparseprune::", op,
                    ": device must be CPU or CUDA, got ", device);
  const auto dtype = kind == NoiseKind::kBits ? at::kInt : at::kFloat;
  at::Tensor out = at::empty({numel}, at::TensorOptions().dtype(dtype).device(device));
  NoiseParams p;
  p.numel = numel;
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint64_t>(offset);
  p.kind = kind;
  p.out = out.data_ptr();
  run_tiles(op, device, p, &cpu::MaskKernels::noise, SP_CUDA(noise));
  return out;
}

}  // namespace

at::Tensor philox_bits(int64_t numel, int64_t seed, int64_t offset, at::Device device) {
  return generate("philox_bits", numel, seed, offset, device, NoiseKind::kBits);
}

at::Tensor logistic_noise(int64_t numel, int64_t seed, int64_t offset, at::Device device) {
  return generate("logistic_noise", numel, seed, offset, device, NoiseKind::kLogistic);
}

}  // namespace host
}  // namespace sparseprune
