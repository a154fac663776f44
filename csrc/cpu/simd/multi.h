// Multi<T, N>: N independent SIMD vectors used as one wider lane type. Every operation is applied
// part by part, so the compiler emits N interleaved copies of each dependency chain (the log/exp
// polynomials are long chains of 4-cycle FMAs; interleaving keeps both vector ports busy).
#pragma once
#include <type_traits>

#include <sparseprune/lanes.h>

// Fully unrolled part loops: the point of Multi is the interleaved copies.
#define SP_UNROLL _Pragma("GCC unroll 16")

SP_NAMESPACE_BEGIN

template <class T, int N>
struct Multi {
  T part[N];

  Multi() = default;
  template <class S, std::enable_if_t<std::is_arithmetic<S>::value, int> = 0>
  explicit Multi(S x) {
    SP_UNROLL for (T& p : part) p = T(x);
  }
};

template <class T, int N>
struct Lanes<Multi<T, N>> {
  using U = Multi<typename Lanes<T>::U, N>;
  using M = Multi<typename Lanes<T>::M, N>;
  static constexpr int kWidth = N * Lanes<T>::kWidth;
};

// The vector type one Multi part is made of (T itself for non-Multi types).
template <class T>
struct PartOf {
  using type = T;
};
template <class T, int N>
struct PartOf<Multi<T, N>> {
  using type = T;
};

template <class Fn, class A, int N>
inline auto map(Fn fn, const Multi<A, N>& a) {
  Multi<decltype(fn(a.part[0])), N> r;
  SP_UNROLL for (int k = 0; k < N; ++k) r.part[k] = fn(a.part[k]);
  return r;
}
template <class Fn, class A, class B, int N>
inline auto map(Fn fn, const Multi<A, N>& a, const Multi<B, N>& b) {
  Multi<decltype(fn(a.part[0], b.part[0])), N> r;
  SP_UNROLL for (int k = 0; k < N; ++k) r.part[k] = fn(a.part[k], b.part[k]);
  return r;
}
template <class Fn, class A, class B, class C, int N>
inline auto map(Fn fn, const Multi<A, N>& a, const Multi<B, N>& b, const Multi<C, N>& c) {
  Multi<decltype(fn(a.part[0], b.part[0], c.part[0])), N> r;
  SP_UNROLL for (int k = 0; k < N; ++k) r.part[k] = fn(a.part[k], b.part[k], c.part[k]);
  return r;
}

#define SP_MULTI_BINARY(op)                                                    \
  template <class T, int N>                                                    \
  inline auto operator op(const Multi<T, N>& a, const Multi<T, N>& b) {        \
    return map([](const T& x, const T& y) { return x op y; }, a, b);           \
  }
SP_MULTI_BINARY(+)
SP_MULTI_BINARY(-)
SP_MULTI_BINARY(*)
SP_MULTI_BINARY(/)
SP_MULTI_BINARY(<)
SP_MULTI_BINARY(>)
SP_MULTI_BINARY(==)
SP_MULTI_BINARY(^)
SP_MULTI_BINARY(&)
SP_MULTI_BINARY(|)
#undef SP_MULTI_BINARY

template <class T, int N>
inline Multi<T, N> operator>>(const Multi<T, N>& a, int n) {
  return map([n](const T& x) { return x >> n; }, a);
}
template <class T, int N>
inline Multi<T, N> operator<<(const Multi<T, N>& a, int n) {
  return map([n](const T& x) { return x << n; }, a);
}

#define SP_MULTI_UNARY(fn)                                       \
  template <class T, int N>                                      \
  inline auto fn(const Multi<T, N>& a) {                         \
    return map([](const T& x) { return fn(x); }, a);             \
  }
SP_MULTI_UNARY(float_bits)
SP_MULTI_UNARY(bits_float)
SP_MULTI_UNARY(s32_to_float)
SP_MULTI_UNARY(float_to_s32_trunc)
SP_MULTI_UNARY(is_nan)
#undef SP_MULTI_UNARY

template <class T, int N>
inline Multi<T, N> fmadd(const Multi<T, N>& a, const Multi<T, N>& b, const Multi<T, N>& c) {
  return map([](const T& x, const T& y, const T& z) { return fmadd(x, y, z); }, a, b, c);
}
template <class M, class T, int N>
inline Multi<T, N> select(const Multi<M, N>& m, const Multi<T, N>& a, const Multi<T, N>& b) {
  return map([](const M& k, const T& x, const T& y) { return select(k, x, y); }, m, a, b);
}
template <class M, int N>
inline bool any(const Multi<M, N>& m) {
  bool r = false;
  SP_UNROLL for (int k = 0; k < N; ++k) r = r || any(m.part[k]);
  return r;
}
template <class M, int N>
inline bool all(const Multi<M, N>& m) {
  bool r = true;
  SP_UNROLL for (int k = 0; k < N; ++k) r = r && all(m.part[k]);
  return r;
}
// Bit j * w + i set where lane i of part j (w lanes each) is true; at most 64 lanes in all.
template <class M, int N>
inline uint64_t lane_bits(const Multi<M, N>& m) {
  uint64_t r = 0;
  int at = 0;
  SP_UNROLL for (int k = 0; k < N; ++k) {
    r |= lane_bits(m.part[k]) << at;
    at += mask_width(m.part[k]);
  }
  return r;
}
// The inverse of lane_bits: part k's lanes from the bits that follow the parts before it.
template <class M, int N>
inline Multi<M, N> mask_from_bits(uint64_t b, const Multi<M, N>*) {
  Multi<M, N> r;
  int at = 0;
  SP_UNROLL for (int k = 0; k < N; ++k) {
    r.part[k] = mask_from_bits(b >> at, static_cast<const M*>(nullptr));
    at += mask_width(M{});
  }
  return r;
}
template <class T, int N>
inline void mulhilo(uint32_t a, const Multi<T, N>& b, Multi<T, N>& hi, Multi<T, N>& lo) {
  SP_UNROLL for (int k = 0; k < N; ++k) mulhilo(a, b.part[k], hi.part[k], lo.part[k]);
}

SP_NAMESPACE_END
