#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace sparseprune {
namespace cpu {
namespace {

struct IsaEntry {
  const char* name;
  Isa id;
  bool (*runnable)();
};

bool always() { return true; }

#if defined(__x86_64__) || defined(__i386__)
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
bool has_avx512() {
  __builtin_cpu_init();
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#endif

// Best last.
const std::vector<IsaEntry>& isa_entries() {
  static const std::vector<IsaEntry> entries = {
      {"scalar", Isa::kScalar, &always},
#ifdef SP_BUILD_AVX2
      {"avx2", Isa::kAvx2, &has_avx2},
#endif
#ifdef SP_BUILD_AVX512
      {"avx512", Isa::kAvx512, &has_avx512},
#endif
  };
  return entries;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

const IsaEntry& find_supported(const std::string& name) {
  for (const auto& e : isa_entries()) {
    if (name == e.name) {
      if (!e.runnable())
        throw std::invalid_argument("sparseprune: CPU ISA '" + name +
                                    "' is not supported by this CPU; supported: " +
                                    join(supported_isas()));
      return e;
    }
  }
  throw std::invalid_argument("sparseprune: unknown CPU ISA '" + name +
                              "'; expected one of: " + join(compiled_isas()));
}

const IsaEntry& initial_entry() {
  if (const char* forced = std::getenv("SPARSEPRUNE_CPU_ISA")) {
    if (*forced) return find_supported(forced);
  }
  const IsaEntry* best = nullptr;
  for (const auto& e : isa_entries())
    if (e.runnable()) best = &e;
  return *best;
}

std::atomic<const IsaEntry*>& active_entry() {
  static std::atomic<const IsaEntry*> active{&initial_entry()};
  return active;
}

}  // namespace

Isa active_isa_id() { return active_entry().load()->id; }

std::string active_isa() { return active_entry().load()->name; }

std::vector<std::string> compiled_isas() {
  std::vector<std::string> names;
  for (const auto& e : isa_entries()) names.push_back(e.name);
  return names;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const auto& e : isa_entries())
    if (e.runnable()) names.push_back(e.name);
  return names;
}

void set_isa(const std::string& name) { active_entry().store(&find_supported(name)); }

}  // namespace cpu
}  // namespace sparseprune
