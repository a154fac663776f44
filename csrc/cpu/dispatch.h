// Run-time choice of the CPU kernel ISA, and each kernel family's active table (tables.h).
// Compiled for the baseline ISA only.
#pragma once
#include <string>
#include <vector>

#include "tables.h"

namespace sparseprune {
namespace cpu {

// The active ISA: SPARSEPRUNE_CPU_ISA if set (an unknown or unsupported value is an error at first
// use), else the best ISA this CPU supports.
Isa active_isa_id();
std::string active_isa();
std::vector<std::string> compiled_isas();   // built into this extension
std::vector<std::string> supported_isas();  // built and runnable on this CPU
// Forces an ISA for this process ("scalar", "avx2", "avx512"); throws std::invalid_argument with
// the accepted names if `name` is unknown or not supported here.
void set_isa(const std::string& name);

// The table of Family for the active ISA (ISAs not built are never active).
template <class Family>
const Family& active() {
  switch (active_isa_id()) {
#ifdef SP_BUILD_AVX512
    case Isa::kAvx512: return table<Family, Isa::kAvx512>();
#endif
#ifdef SP_BUILD_AVX2
    case Isa::kAvx2: return table<Family, Isa::kAvx2>();
#endif
    default: return table<Family, Isa::kScalar>();
  }
}

}  // namespace cpu
}  // namespace sparseprune
