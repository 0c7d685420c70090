// Run-time choice of the CPU micro-kernel set (see cpu_isa.h).
#include "cpu/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <c10/util/Exception.h>

#include "cpu/cpu_profile.h"
#include "pylibnn_build_config.h"

namespace pylibnn::cpu {
namespace {

// Two tables below (micro-kernel sets, bfloat16 kernels) of entries {name, ..., supported},
// best first, share these.
template <typename Entry>
std::vector<std::string> supported_names(const std::vector<Entry>& table) {
  std::vector<std::string> names;
  for (const Entry& entry : table)
    if (entry.supported) names.emplace_back(entry.name);
  return names;
}

// The entry called `name`; a clear error naming `setter` when it is unknown or unsupported.
template <typename Entry>
const Entry* find_named(const std::vector<Entry>& table, const std::string& name, const char* setter,
                        const char* what, const char* supporter) {
  for (const Entry& entry : table)
    if (name == entry.name) {
      TORCH_CHECK(entry.supported, setter, ": '", name, "' is compiled in but ", supporter,
                  " does not support it; supported: ", c10::Join(", ", supported_names(table)));
      return &entry;
    }
  TORCH_CHECK(false, setter, ": unknown ", what, " '", name, "'; expected 'auto' or one of: ",
              c10::Join(", ", supported_names(table)));
}

struct IsaEntry {
  const char* name;
  const MicroKernelSet* kernels;  // nullptr for the reference loop and for a set this CPU cannot run
  bool supported;
  bool compiled;  // a micro-kernel set of this library (not the reference loop)
};

// The set made by `make` (microkernels_avx512(), ...) when this CPU runs it, else nullptr.
// The makers are compiled with their ISA's flags, and the compiler uses that ISA even to fill
// the table (an EVEX vpbroadcastq in microkernels_avx512()): calling one on a CPU without the
// ISA raises SIGILL, as it did on AVX2-only Zen 3 at the first build_info().
const MicroKernelSet* kernels_if(bool supported, MicroKernelSet (*make)()) {
  return supported ? new MicroKernelSet(make()) : nullptr;  // made once, kept for the process
}

// Best first. Built once, on first use; the sets are plain data afterwards.
const std::vector<IsaEntry>& isa_table() {
  static const std::vector<IsaEntry> table = [] {
    std::vector<IsaEntry> entries;
#if defined(PYLIBNN_HAVE_AVX512)
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
    entries.push_back({"avx512", kernels_if(avx512, &microkernels_avx512), avx512, true});
#endif
#if defined(PYLIBNN_HAVE_AVX2)
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    entries.push_back({"avx2", kernels_if(avx2, &microkernels_avx2), avx2, true});
#endif
    static const MicroKernelSet portable = microkernels_portable();
    entries.push_back({"portable", &portable, true, true});
    entries.push_back({"reference", nullptr, true, false});
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
  return find_named(isa_table(), name, "pylibnn.set_cpu_isa", "CPU path", "this CPU");
}

const IsaEntry* initial_choice() {
  const char* forced = std::getenv("PYLIBNN_CPU_ISA");
  return (forced && *forced) ? find_supported(forced) : best_supported();
}

std::atomic<const IsaEntry*>& current() {
  static std::atomic<const IsaEntry*> entry{initial_choice()};
  return entry;
}

// ---------------------------------------------------------------- native bfloat16 kernels

// AVX512-BF16: CPUID leaf 7 subleaf 1, EAX bit 5 (with AVX512-BW for the packing).
bool cpu_has_avx512_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
  return ((eax >> 5) & 1) && __builtin_cpu_supports("avx512bw");
}

// AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), and Linux's permission for this
// process to use the tile data state: without arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)
// the first tile instruction raises SIGILL. The permission is process-wide.
bool amx_usable() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (!((edx >> 24) & 1) || !((edx >> 22) & 1)) return false;
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

struct Bf16Entry {
  const char* name;
  const Bf16Kernel* kernel;  // nullptr for "widened"
  bool supported;
};

// Best first.
const std::vector<Bf16Entry>& bf16_table() {
  static const std::vector<Bf16Entry> table = [] {
    std::vector<Bf16Entry> entries;
#if defined(PYLIBNN_HAVE_AVX512BF16) && defined(PYLIBNN_HAVE_AVX512)
    bool avx512 = false;
    for (const IsaEntry& isa : isa_table()) avx512 = avx512 || (std::strcmp(isa.name, "avx512") == 0 && isa.supported);
    const bool bf16 = avx512 && cpu_has_avx512_bf16();
    const bool amx = bf16 && amx_usable();
    // Made only where they run, for the reason kernels_if gives.
    static const Bf16Kernel* amx_kernel = amx ? new Bf16Kernel(bf16_kernel_amx()) : nullptr;
    static const Bf16Kernel* dpbf16_kernel = bf16 ? new Bf16Kernel(bf16_kernel_avx512bf16()) : nullptr;
    entries.push_back({"amx", amx_kernel, amx});
    entries.push_back({"avx512bf16", dpbf16_kernel, bf16});
#endif
    entries.push_back({"widened", nullptr, true});
    return entries;
  }();
  return table;
}

const Bf16Entry* find_bf16(const std::string& name) {
  if (name == "auto") {
    for (const Bf16Entry& entry : bf16_table())
      if (entry.supported) return &entry;
  }
  return find_named(bf16_table(), name, "pylibnn.set_cpu_bf16_kernel", "bfloat16 kernel", "this CPU (or OS)");
}

std::atomic<const Bf16Entry*>& current_bf16() {
  static std::atomic<const Bf16Entry*> entry{[] {
    const char* forced = std::getenv("PYLIBNN_CPU_BF16");
    return find_bf16((forced && *forced) ? forced : "auto");
  }()};
  return entry;
}

}  // namespace

std::vector<std::string> supported_bf16_kernels() { return supported_names(bf16_table()); }

std::string selected_bf16_kernel_name() { return current_bf16().load()->name; }

void select_bf16_kernel(const std::string& name) { current_bf16().store(find_bf16(name)); }

const Bf16Kernel* selected_bf16_kernel() {
  if (std::strcmp(current().load()->name, "avx512") != 0) return nullptr;
  return current_bf16().load()->kernel;
}

std::vector<std::string> compiled_isas() {
  std::vector<std::string> names;
  for (const IsaEntry& entry : isa_table())
    if (entry.compiled) names.emplace_back(entry.name);
  return names;
}

std::vector<std::string> supported_isas() { return supported_names(isa_table()); }

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
