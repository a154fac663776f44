// Run-time choice of the CPU kernel ISA. Compiled for the baseline ISA only.
//
// Each kernel family (mask kernels, sparse inference, ...) has its own table struct, filled once
// per ISA by a function <family>_scalar / _avx2 / _avx512 defined in its per-ISA translation units
// (SP_ISA_FN in kernels/vec.h names them), and picks the active one with SP_KERNELS_FOR_ISA(family).
#pragma once
#include <string>
#include <vector>

#include "kernels/kernel_table.h"
#include "kernels/sparse_table.h"

namespace sparseprune {
namespace cpu {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The active ISA: SPARSEPRUNE_CPU_ISA if set (an unknown or unsupported value is an error at first
// use), else the best ISA this CPU supports.
Isa active_isa_id();
std::string active_isa();
std::vector<std::string> compiled_isas();   // built into this extension
std::vector<std::string> supported_isas();  // built and runnable on this CPU
// Forces an ISA for this process ("scalar", "avx2", "avx512"); throws std::invalid_argument with
// the accepted names if `name` is unknown or not supported here.
void set_isa(const std::string& name);

// The table of the active ISA among one family's per-ISA tables (null for ISAs not built, which
// can then never be active).
template <class Table>
const Table& for_isa(const Table& (*scalar)(), const Table& (*avx2)(), const Table& (*avx512)()) {
  switch (active_isa_id()) {
    case Isa::kAvx512: return avx512();
    case Isa::kAvx2: return avx2();
    default: return scalar();
  }
}

#ifdef SP_BUILD_AVX2
#define SP_ISA_AVX2_FN(family) &family##_avx2
#else
#define SP_ISA_AVX2_FN(family) nullptr
#endif
#ifdef SP_BUILD_AVX512
#define SP_ISA_AVX512_FN(family) &family##_avx512
#else
#define SP_ISA_AVX512_FN(family) nullptr
#endif
#define SP_KERNELS_FOR_ISA(family) \
  ::sparseprune::cpu::for_isa(&family##_scalar, SP_ISA_AVX2_FN(family), SP_ISA_AVX512_FN(family))

// The active ISA's table of each kernel family: the mask kernels (stochastic, top-k, noise) and
// the sparse inference kernels (spmv, spmm, im2col).
const KernelTable& kernels();
const SparseKernelTable& sparse_kernels();

}  // namespace cpu
}  // namespace sparseprune
