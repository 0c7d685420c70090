// Run-time choice of the CPU micro-kernel set (see cpu_isa.h).
#include "cpu/cpu_isa.h"

#include <atomic>
#include <cstdlib>

#include <c10/util/Exception.h>

#include "cpu/cpu_profile.h"
#include "pylibnn_build_config.h"

namespace pylibnn::cpu {
namespace {

struct IsaEntry {
  const char* name;
  const MicroKernelSet* kernels;  // nullptr for the reference loop
  bool supported;
};

// Best first. Built once, on first use; the sets are plain data afterwards.
const std::vector<IsaEntry>& isa_table() {
  static const std::vector<IsaEntry> table = [] {
    std::vector<IsaEntry> entries;
#if defined(PYLIBNN_HAVE_AVX512)
    static const MicroKernelSet avx512 = microkernels_avx512();
    entries.push_back({"avx512", &avx512,
                       __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma")});
#endif
#if defined(PYLIBNN_HAVE_AVX2)
    static const MicroKernelSet avx2 = microkernels_avx2();
    entries.push_back({"avx2", &avx2, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                         __builtin_cpu_supports("f16c")});
#endif
    static const MicroKernelSet portable = microkernels_portable();
    entries.push_back({"portable", &portable, true});
    entries.push_back({"reference", nullptr, true});
    return entries;
  }();
  return table;
}

// The tuning profile's kernel set (cpu_profile.h) when this CPU runs it, else the best one.
const IsaEntry* best_supported() {
  const std::string& preferred = cpu_profile().isa;
  for (const IsaEntry& entry : isa_table())
    if (entry.supported && entry.kernels && preferred == entry.name) return &entry;
  for (const IsaEntry& entry : isa_table())
    if (entry.supported) return &entry;
  return nullptr;  // unreachable: "portable" is always supported
}

const IsaEntry* find_supported(const std::string& name) {
  if (name == "auto") return best_supported();
  for (const IsaEntry& entry : isa_table())
    if (name == entry.name) {
      TORCH_CHECK(entry.supported, "pylibnn.set_cpu_isa: '", name,
                  "' is compiled in but this CPU does not support it; supported: ",
                  c10::Join(", ", supported_isas()));
      return &entry;
    }
  TORCH_CHECK(false, "pylibnn.set_cpu_isa: unknown CPU path '", name, "'; expected 'auto' or one of: ",
              c10::Join(", ", supported_isas()));
}

const IsaEntry* initial_choice() {
  const char* forced = std::getenv("PYLIBNN_CPU_ISA");
  return (forced && *forced) ? find_supported(forced) : best_supported();
}

std::atomic<const IsaEntry*>& current() {
  static std::atomic<const IsaEntry*> entry{initial_choice()};
  return entry;
}

}  // namespace

std::vector<std::string> compiled_isas() {
  std::vector<std::string> names;
  for (const IsaEntry& entry : isa_table())
    if (entry.kernels) names.emplace_back(entry.name);
  return names;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const IsaEntry& entry : isa_table())
    if (entry.supported) names.emplace_back(entry.name);
  return names;
}

std::string selected_isa() { return current().load()->name; }

void select_isa(const std::string& name) { current().store(find_supported(name)); }

const MicroKernelSet* selected_microkernels() { return current().load()->kernels; }

const MicroKernelSet& portable_microkernels() {
  static const MicroKernelSet portable = microkernels_portable();
  return portable;
}

const MicroKernelSet& fused_microkernels() {
  const MicroKernelSet* selected = selected_microkernels();
  return selected ? *selected : portable_microkernels();
}

}  // namespace pylibnn::cpu
