// The lane types of the ISA this translation unit is compiled for (SP_CPU_ISA_ID: 0 scalar,
// 1 AVX2, 2 AVX-512), plus what the kernels need on top: typed loads/stores (IO<F>) for the vector
// type and for one scalar lane, and the lane-type rules for mixed dtypes.
#pragma once
#include <cstdint>
#include <type_traits>

#include "multi.h"

#if SP_CPU_ISA_ID == 2
#include "vec_avx512.h"
#elif SP_CPU_ISA_ID == 1
#include "vec_avx2.h"
#else
#include "vec_scalar.h"
#endif

SP_NAMESPACE_BEGIN

// One lane's mask as lane bits (vec_*.h define lane_bits for the vector masks).
inline uint64_t lane_bits(bool m) { return m ? 1u : 0u; }
inline bool mask_from_bits(uint64_t b, const bool*) { return (b & 1u) != 0; }

// Loads/stores of Lanes<F>::kWidth consecutive elements converted to/from the math type F.
template <class F>
struct IO;

template <>
struct IO<float> {
  template <class T>
  static float load(const T* p) { return static_cast<float>(load_lane(p)); }
  static uint32_t load_bits(const uint32_t* p) { return *p; }
  static void store_bits(uint32_t* p, uint32_t v) { *p = v; }
  template <class T>
  static void store(T* p, float v) { store_lane(p, v); }
};

template <>
struct IO<double> {
  static double load(const double* p) { return *p; }
  static void store(double* p, double v) { *p = v; }
};

#if SP_CPU_ISA_ID != 0
template <>
struct IO<VF> : VecIO {};
#endif

template <class T, int N>
struct IO<Multi<T, N>> {
  static constexpr int kPart = Lanes<T>::kWidth;
  template <class S>
  static Multi<T, N> load(const S* p) {
    Multi<T, N> r;
    SP_UNROLL for (int k = 0; k < N; ++k) r.part[k] = IO<T>::load(p + k * kPart);
    return r;
  }
  static auto load_bits(const uint32_t* p) {
    typename Lanes<Multi<T, N>>::U r;
    SP_UNROLL for (int k = 0; k < N; ++k) r.part[k] = IO<T>::load_bits(p + k * kPart);
    return r;
  }
  template <class U>
  static void store_bits(uint32_t* p, const Multi<U, N>& v) {
    SP_UNROLL for (int k = 0; k < N; ++k) IO<T>::store_bits(p + k * kPart, v.part[k]);
  }
  template <class S>
  static void store(S* p, const Multi<T, N>& v) {
    SP_UNROLL for (int k = 0; k < N; ++k) IO<T>::store(p + k * kPart, v.part[k]);
  }
  static void stream(float* p, const Multi<T, N>& v) {
    SP_UNROLL for (int k = 0; k < N; ++k) IO<T>::stream(p + k * kPart, v.part[k]);
  }
};

// float64 on either side runs one lane at a time (it exists for gradcheck, not for speed).
template <class ST, class WT>
using LaneFor = std::conditional_t<std::is_same<ST, double>::value || std::is_same<WT, double>::value,
                                   float, Vec>;

// Typed views of the Params' void pointers at element `first` (null stays null).
template <class T>
const T* in(const void* p, int64_t first) {
  return static_cast<const T*>(p) + first;
}
template <class T>
T* out(void* p, int64_t first) {
  return p ? static_cast<T*>(p) + first : nullptr;
}

// Streaming stores: a pass whose float32 output is larger than the last-level cache writes it
// with non-temporal stores, which skip reading each line before overwriting it (the line would
// be evicted before anyone reads it anyway): 17-21 % less time for a memory-bound pass over
// 64 MiB here. Smaller outputs stay cached for the GEMM that reads them next. The decision is
// one per call and output (streams()); other dtypes and single lanes store normally; a kernel
// that may stream holds a StreamFence, so that its stores are ordered before it returns.
constexpr int64_t kStreamMinBytes = int64_t{32} << 20;  // this machine's L3 (32 MiB)

inline bool streams(const void* out, int64_t numel, DType dtype) {
  return SP_CPU_ISA_ID != 0 && out && dtype == DType::kFloat32 &&
         numel * int64_t{4} >= kStreamMinBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0;
}

template <class F, class T>
void stream_out(bool stream, T* p, const F& v) {
#if SP_CPU_ISA_ID != 0
  if constexpr (std::is_same<T, float>::value && std::is_same<typename PartOf<F>::type, VF>::value) {
    if (stream) return IO<F>::stream(p, v);
  }
#endif
  IO<F>::store(p, v);
}

// Orders the scope's non-temporal stores before whatever follows it (an sfence on leaving).
struct StreamFence {
  StreamFence() = default;
  StreamFence(const StreamFence&) = delete;
  StreamFence& operator=(const StreamFence&) = delete;
  ~StreamFence() {
#if SP_CPU_ISA_ID != 0
    _mm_sfence();
#endif
  }
};

// Weight math runs in double for float64 weights (scalar path only), else in the score lane type.
template <class F, class WT>
using WeightLane = std::conditional_t<std::is_same<WT, double>::value, double, F>;

// A double constant as a math lane W: full precision for double, rounded to float otherwise (so a
// float lane sees the same constant on every ISA).
template <class W>
W lane_of(double x) {
  if constexpr (std::is_same<W, double>::value)
    return x;
  else
    return W(static_cast<float>(x));
}

SP_NAMESPACE_END
