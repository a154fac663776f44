// Portability macros for the header-only math shared by g++ (host code and every CPU ISA) and nvcc.
// These headers never include torch: kernels see raw pointers and POD parameter structs only.
#pragma once

#if defined(__CUDACC__)
#define SP_HD __host__ __device__ __forceinline__
#else
#define SP_HD inline __attribute__((always_inline))
#endif

// Note [Per-ISA namespaces]
// The CPU kernels are compiled once per ISA (scalar, AVX2, AVX-512) from the same sources. Every
// function in these headers is inline, so without care the linker could keep the AVX-512 copy of
// one of them and call it from baseline code, which crashes on older CPUs. Each kernel translation
// unit therefore defines SP_ISA_NS (isa_scalar, isa_avx2, isa_avx512); the inline namespace gives
// every header symbol a distinct mangled name per ISA. Host code and CUDA use isa_base.
#ifndef SP_ISA_NS
#define SP_ISA_NS isa_base
#endif
#define SP_NAMESPACE_BEGIN \
  namespace sparseprune {  \
  inline namespace SP_ISA_NS {
#define SP_NAMESPACE_END \
  }                      \
  }
