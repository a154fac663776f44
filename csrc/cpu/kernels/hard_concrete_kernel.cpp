// Hard-concrete kernels (hard_concrete.h): forward log_alpha -> z, backward dLoss/dz ->
// dLoss/dlog_alpha, one pass each. Both draw the logistic noise from (seed, offset) chunk by
// chunk, so backward needs no saved noise. Whole 64-element chunks run with the ISA's vector type,
// the tensor's last partial chunk one lane at a time (float64 always one lane); every step is one
// IEEE operation, so every ISA computes the same bits.
#include <sparseprune/hard_concrete.h>

#include "tile_loops.h"

SP_NAMESPACE_BEGIN
namespace {

// Elements [first, first + n) with noise lane type F (its words in `bits`) and math lane W.
template <bool kBackward, class F, class T>
bool hard_concrete_group(const HardConcreteParams& p, int64_t first, int n, const uint32_t* bits) {
  using W = WeightLane<F, T>;
  const W inv_beta = lane_of<W>(p.inv_beta), width = lane_of<W>(p.width),
          gamma = lane_of<W>(p.gamma);
  const T* log_alpha = in<T>(p.log_alpha, first);
  auto nan = is_nan(W(0.0f));
  for (int j = 0; j < n; j += Lanes<F>::kWidth) {
    const W L(logistic_noise(uniform_open<F>(IO<F>::load_bits(bits + j))));
    const W la = IO<W>::load(log_alpha + j);
    nan = nan | is_nan(la);
    if constexpr (kBackward) {
      const W g = IO<W>::load(in<T>(p.grad, first + j));
      IO<W>::store(out<T>(p.grad_log_alpha, first + j),
                   hard_concrete_backward(g, L, la, inv_beta, width, gamma));
    } else {
      IO<W>::store(out<T>(p.z, first + j), hard_concrete_forward(L, la, inv_beta, width, gamma));
    }
  }
  return any(nan);
}

template <bool kBackward, class V, class T>
bool hard_concrete_tiles(const HardConcreteParams& p, int64_t tile_begin, int64_t tile_end) {
  bool nan_seen = false;
  auto group = [&](auto lane, int64_t first, int n, const uint32_t* bits, int64_t, auto*) {
    nan_seen |= hard_concrete_group<kBackward, decltype(lane), T>(p, first, n, bits);
  };
  for_each_philox_tile<V, T, 0>(p.seed, p.offset, p.numel, tile_begin, tile_end, group, kNoTotals);
  return nan_seen;
}

template <bool kBackward>
bool run_hard_concrete(const HardConcreteParams& p, int64_t tile_begin, int64_t tile_end) {
  return visit_dtypes(p.dtype, p.dtype, [&](auto*, auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    return hard_concrete_tiles<kBackward, LaneFor<T, T>, T>(p, tile_begin, tile_end);
  });
}

bool run_hard_concrete_forward(const HardConcreteParams& p, int64_t tile_begin, int64_t tile_end) {
  return run_hard_concrete<false>(p, tile_begin, tile_end);
}
bool run_hard_concrete_backward(const HardConcreteParams& p, int64_t tile_begin,
                                int64_t tile_end) {
  return run_hard_concrete<true>(p, tile_begin, tile_end);
}

}  // namespace
SP_NAMESPACE_END

SP_KERNEL_TABLE(HardConcreteKernels, &run_hard_concrete_forward, &run_hard_concrete_backward)
