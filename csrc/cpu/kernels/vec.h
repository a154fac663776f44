// The lane types of the ISA this translation unit is compiled for (SP_CPU_ISA_ID: 0 scalar,
// 1 AVX2, 2 AVX-512), plus what the kernels need on top: typed loads/stores (IO<F>) for the vector
// type and for one scalar lane, and a fixed-shape 16-lane accumulator.
#pragma once
#include <type_traits>

#include "kernel_table.h"
#include "multi.h"

// SP_ISA_FN(family) names this ISA's table getter of a kernel family (see cpu/dispatch.h).
#if SP_CPU_ISA_ID == 2
#include "vec_avx512.h"
#define SP_ISA_FN(family) family##_avx512
#define SP_ISA_NAME "avx512"
#elif SP_CPU_ISA_ID == 1
#include "vec_avx2.h"
#define SP_ISA_FN(family) family##_avx2
#define SP_ISA_NAME "avx2"
#else
#include "vec_scalar.h"
#define SP_ISA_FN(family) family##_scalar
#define SP_ISA_NAME "scalar"
#endif

SP_NAMESPACE_BEGIN

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

// Sixteen running sums: element e of a tile always goes to lane e % 16, whatever the vector
// width, and the lanes are combined by a fixed tree, so reductions come out bit-identical on every
// ISA and thread count. V is the vector type (lanes kept in registers) or a scalar (16 slots).
template <class V>
struct TileSums {
  static constexpr int kWidth = Lanes<V>::kWidth;
  V acc[16 / kWidth];

  void clear() {
    for (V& a : acc) a = V(0.0f);
  }
  // Adds the kWidth values of the group that starts at tile element e (e % kWidth == 0).
  void add(int64_t e, V v) {
    V& a = acc[(e % 16) / kWidth];
    a = a + v;
  }
  template <int N>
  void add(int64_t e, const Multi<V, N>& v) {
    SP_UNROLL for (int k = 0; k < N; ++k) add(e + k * kWidth, v.part[k]);
  }
  // The 16 lane sums, in lane order.
  template <class S>
  void spill(S* lanes) const {
    if constexpr (kWidth == 1) {
      for (int i = 0; i < 16; ++i) lanes[i] = acc[i];
    } else {
      alignas(64) float tmp[16];
      for (int k = 0; k < 16 / kWidth; ++k) IO<V>::store(tmp + k * kWidth, acc[k]);
      for (int i = 0; i < 16; ++i) lanes[i] = tmp[i];
    }
  }
};

// The fixed pairwise tree over 16 lane sums.
template <class S>
double tree_total(S* lanes) {
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) lanes[i] = lanes[i] + lanes[i + w];
  return static_cast<double>(lanes[0]);
}

SP_NAMESPACE_END
