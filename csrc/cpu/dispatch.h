// Run-time choice of the CPU kernel ISA. Compiled for the baseline ISA only.
#pragma once
#include <string>
#include <vector>

#include "kernels/kernel_table.h"

namespace sparseprune {
namespace cpu {

// The table of the active ISA: SPARSEPRUNE_CPU_ISA if set (an unknown or unsupported value is an
// error at first use), else the best ISA this CPU supports.
const KernelTable& kernels();

std::string active_isa();
std::vector<std::string> compiled_isas();   // built into this extension
std::vector<std::string> supported_isas();  // built and runnable on this CPU
// Forces an ISA for this process ("scalar", "avx2", "avx512"); throws std::invalid_argument with
// the accepted names if `name` is unknown or not supported here.
void set_isa(const std::string& name);

}  // namespace cpu
}  // namespace sparseprune
