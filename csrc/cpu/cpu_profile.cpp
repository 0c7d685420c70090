// CPUID detection and the table of tuning profiles (see cpu_profile.h).
#include "cpu/cpu_profile.h"

#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

namespace pylibnn::cpu {
namespace {

// Deterministic cache parameters: leaf 4 (Intel) and 0x8000001D (AMD) share one layout.
// Returns (L1d, L2, L3) in bytes; 0 where the leaf does not say.
void read_caches(unsigned leaf, CpuId& id) {
  for (unsigned sub = 0; sub < 16; ++sub) {
    unsigned eax, ebx, ecx, edx;
    __cpuid_count(leaf, sub, eax, ebx, ecx, edx);
    const unsigned type = eax & 0x1f;  // 0: no more caches, 1: data, 2: instruction, 3: unified
    if (type == 0) break;
    if (type == 2) continue;
    const unsigned level = (eax >> 5) & 0x7;
    const int64_t bytes = int64_t((ebx >> 22) + 1) * (((ebx >> 12) & 0x3ff) + 1) * ((ebx & 0xfff) + 1) * (int64_t(ecx) + 1);
    if (level == 1) id.l1d = bytes;
    if (level == 2) id.l2 = bytes;
    if (level == 3) id.l3 = bytes;
  }
}

CpuId detect() {
  CpuId id;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return id;
  const unsigned max_leaf = eax;
  char vendor[13] = {};
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  id.vendor = vendor;
  __get_cpuid(1, &eax, &ebx, &ecx, &edx);
  const int base_family = (eax >> 8) & 0xf;
  const int base_model = (eax >> 4) & 0xf;
  id.family = base_family == 0xf ? base_family + int((eax >> 20) & 0xff) : base_family;
  id.model = (base_family == 0x6 || base_family == 0xf) ? (int((eax >> 16) & 0xf) << 4) + base_model : base_model;
  if (max_leaf >= 7) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    id.avx512_bf16 = (eax >> 5) & 1;
  }
  unsigned max_ext = __get_cpuid_max(0x80000000, nullptr);
  if (id.vendor == "AuthenticAMD" && max_ext >= 0x8000001D) {
    read_caches(0x8000001D, id);
  } else if (max_leaf >= 4) {
    read_caches(4, id);
  }
#endif
  return id;
}

// Blocking from the caches alone, with the ratios measured on Zen 4/5 (1 MiB L2, where they
// give the engine's earlier constants): a kc x 32 float32 micro-panel of B of L2/16, an
// mc x kc block of A of 3/16 of L2.
CpuProfile derived_from_caches(const CpuId& id, const char* name, const char* isa) {
  CpuProfile p;
  p.name = name;
  p.isa = isa;
  p.origin = "derived from caches";
  p.measured = "not measured: blocking derived from the cache sizes, thresholds are the engine's defaults";
  const int64_t l2 = id.l2 > 0 ? id.l2 : 1 << 20;
  const int64_t nr = std::string(isa) == "avx2" ? 16 : 32;
  p.kc = std::clamp<int64_t>(l2 / 16 / (nr * 4), 128, 512) / 8 * 8;
  p.mc = std::max<int64_t>(24, l2 * 3 / 16 / (p.kc * 4));
  p.nc = 4096;
  p.bf16_block_bytes = std::max<int64_t>(64 * 1024, l2 / 2);
  return p;
}

bool is_zen4(const CpuId& id) {
  // Family 19h: Zen 3 (models 00-0F, 20-5F) and Zen 4 (10-1F Genoa, 60-7F Raphael/Phoenix,
  // A0-AF Bergamo/Siena).
  return id.vendor == "AuthenticAMD" && id.family == 0x19 &&
         ((id.model >= 0x10 && id.model <= 0x1f) || (id.model >= 0x60 && id.model <= 0x7f) ||
          (id.model >= 0xa0 && id.model <= 0xaf));
}

bool is_zen3(const CpuId& id) {
  // Family 19h models 00-0F (Milan), 20-2F (Vermeer), 40-4F (Rembrandt), 50-5F (Cezanne): AVX2.
  return id.vendor == "AuthenticAMD" && id.family == 0x19 &&
         (id.model <= 0x0f || (id.model >= 0x20 && id.model <= 0x2f) || (id.model >= 0x40 && id.model <= 0x5f));
}

bool is_intel_avx512_server(const CpuId& id) {
  // Skylake-SP/Cascade/Cooper Lake 0x55, Ice Lake-SP 0x6A/0x6C, Sapphire Rapids 0x8F,
  // Emerald Rapids 0xCF, Granite Rapids 0xAD/0xAE.
  const int models[] = {0x55, 0x6a, 0x6c, 0x8f, 0xcf, 0xad, 0xae};
  return id.vendor == "GenuineIntel" && id.family == 6 &&
         std::find(std::begin(models), std::end(models), id.model) != std::end(models);
}

CpuProfile named_profile(const std::string& name, const CpuId& id) {
  if (name == "zen4") {
    // Measured on a 2-core Zen 4 EPYC (family 25 model 17; 32 KiB 8-way L1d, 1 MiB L2 per
    // core) at one thread with benchmarks/sweep_profile.py
    // (benchmarks/results/sweep_zen4_1thread*.md). kc 512 best or tied (192-768 within 1-8%);
    // mc 48-288 and nc 1024-8192 within 1-2%: the defaults stay. Paths, float32:
    //   - the dot path loses to the blocked one wherever more than a few rows share B: 128^3 and
    //     64 x 128 -> 128 1.5x slower, 64 x 4096 -> 4096 1.07x; it wins at 8-16 rows
    //     (8 x 4096 -> 4096 1.41x faster, 16 x 1024 -> 1024 1.27x) and at 32 rows for long K
    //     (32 x 4096 -> 4096 1.17x; the transposed path is refused there, W's rows 4 KiB apart);
    //   - the transposed path (W's rows in place) beats both where W's rows are not 4 KiB
    //     apart: 32 / 64 / 128 / 192 / 256 x 4000 -> 4000 1.53x / 1.30x / 1.30x / 1.11x / 1.05x
    //     faster, 64 x 1000 -> 1000 1.21x; from K = 256 on (64 x 256 -> 4000 1.03x);
    //   - where they are (K = 1024, 2048, 4096) it is 1.00-1.14x slower than the blocked path on
    //     this 8-way L1, as gemm_engine.cpp's L1 rule assumes;
    //   - the outer product pays off up to depth 8 (M = 1 / 8 x 1024 -> 1024 backward 1.21x /
    //     1.17x faster than depth 4).
    CpuProfile p;
    p.name = "zen4";
    p.isa = "avx512";
    p.measured =
        "measured on a 2-core AMD Zen 4 EPYC (family 25 model 17) with benchmarks/sweep_profile.py; other Zen 4 "
        "parts (Raphael, Phoenix, Bergamo) use it unmeasured";
    p.dot_max_rows = 32;
    p.dot_min_depth = 1024;
    p.dot_thin_rows = 16;
    p.transposed_max_rows = 256;
    p.transposed_min_depth = 256;
    p.stream_max_depth = 8;
    p.small_max_madds = 128 * 128 * 128;
    return p;
  }
  if (name == "zen3") {
    // Measured on a 2-core Zen 3 EPYC (family 25 model 1, Milan; AVX2, 32 KiB 8-way L1d,
    // 512 KiB L2 per core) at one thread with benchmarks/sweep_profile.py
    // (benchmarks/results/sweep_zen3_1thread.md). This VM's speed drifts by up to 2x within
    // minutes, so only differences of 1.3x and more between interleaved values are taken:
    //   - kc 192-768 and mc 48-288 lie within the noise (float32 and float64): the blocking
    //     derived from the caches stays;
    //   - the dot path loses to the blocked one from 32 rows on: 64^3 / 128^3 forward 1.9x /
    //     1.7x slower, 64 x 512 -> 512 1.5x, 64 x 4096 -> 4096 1.46x; at 8-16 rows it ties;
    //   - the transposed path (W's rows in place, where they are not 4 KiB apart) is 1.8x /
    //     1.5x / 1.2x faster at 16 / 32 / 64 x 4000 -> 4000, a tie at 128 rows and more;
    //   - one thread region for products up to 128^3 (small_max_madds, as zen4): 64^3 fwd+bwd
    //     1.02-1.08x faster than none, 128^3 within the noise.
    CpuProfile p = derived_from_caches(id, "zen3", "avx2");
    p.origin.clear();
    p.measured =
        "measured on a 2-core AMD Zen 3 EPYC (family 25 model 1) with benchmarks/sweep_profile.py; other Zen 3 "
        "parts (Vermeer, Rembrandt, Cezanne) use it unmeasured";
    p.dot_max_rows = 16;
    p.dot_min_depth = 1024;
    p.dot_thin_rows = 16;
    p.transposed_max_rows = 64;
    p.small_max_madds = 128 * 128 * 128;
    return p;
  }
  if (name == "zen5") {
    CpuProfile p;
    p.name = "zen5";
    p.isa = "avx512";
    p.measured =
        "blocking: the engine's earlier constants, measured on a Zen 5 machine by the session that wrote them "
        "(benchmarks/results/linear_cpu.md of that time); thresholds as zen4; not measured in this session";
    p.dot_min_depth = 128;
    p.small_max_madds = 128 * 128 * 128;
    return p;
  }
  if (name == "intel-avx512") {
    // Measured on Emerald Rapids (family 6 model 207; 48 KiB L1d, 2 MiB L2 per core) with
    // benchmarks/sweep_profile.py (benchmarks/results/sweep_intel-avx512*.md): kc 192-768 and
    // mc 48-288 lie within 1-5% of each other, 512 / 96 best or tied; the dot path loses to
    // the blocked one up to K = 256 from 32 rows on (1.6-2x at 64-128 rows, K <= 128) and wins
    // for a few rows at any K; the outer product pays off up to depth 8. Other Intel AVX-512
    // server cores share it unmeasured.
    CpuProfile p;
    p.name = "intel-avx512";
    p.isa = "avx512";
    p.measured =
        "measured on Intel Emerald Rapids (family 6 model 207) with benchmarks/sweep_profile.py; other "
        "Intel AVX-512 server cores (Skylake-SP .. Granite Rapids) use it unmeasured";
    p.kc = 512;
    p.mc = 96;
    p.nc = 4096;
    // Half the 2 MiB L2. Against torch at one thread (AMX, interleaved medians): 192 KiB gave
    // 0.79x / 0.68x at 1024^3 / 2048^3, 512 KiB 0.89x / 0.94x, 1 MiB 0.89x / 1.03x.
    p.bf16_block_bytes = 1024 * 1024;
    p.dot_min_depth = 512;
    // x W^T for W of 4096 x 4096, one thread, against torch: the dot path gave 1.17x / 1.04x /
    // 0.58x at M = 32 / 64 / 128 (float32), the blocked one 0.78x / 0.80x / 0.86x; float64
    // (dot_max_rows halved) 1.01x at 32 and 0.45x at 64, blocked 0.73x / 0.74x.
    p.dot_max_rows = 64;
    p.dot_thin_rows = 16;
    // x W^T for W of 4096 x 4096, one thread, against torch in one process: the transposed
    // path (W's rows in place) gave 1.35x / 1.17x / 1.16x at M = 64 / 96 / 128 float32, where
    // the dot or blocked path gave 1.00x / 1.05x / 1.02x; float64 1.40x / 1.13x / 0.96x at
    // M = 16 / 32 / 64 against 1.06x / 0.93x / 0.90x. The sweep
    // (benchmarks/results/sweep_intel-avx512_1thread_transposed.md) agrees up to 64 rows
    // (1.47-1.68x the blocked / dot time), finds 128 rows a wash and 256 x 1024 -> 1024
    // 1.31x slower: the limit stays at 128, where the ratios above favoured it.
    p.transposed_max_rows = 128;
    p.stream_max_depth = 8;
    p.small_max_madds = 128 * 128 * 128;
    return p;
  }
  if (name == "avx2") {
    CpuProfile p = derived_from_caches(id, "avx2", "avx2");
    p.measured = "not measured: AVX2-only CPUs, blocking derived from the cache sizes";
    return p;
  }
  if (name == "generic") return derived_from_caches(id, "generic", "avx512");
  TORCH_CHECK(false, "pylibnn: unknown CPU profile '", name, "'; expected 'auto' or one of: ",
              c10::Join(", ", cpu_profile_names()));
}

std::string detected_name(const CpuId& id) {
  if (is_zen4(id)) return "zen4";
  if (is_zen3(id)) return "zen3";
  if (id.vendor == "AuthenticAMD" && id.family == 0x1a) return "zen5";
  if (is_intel_avx512_server(id)) return "intel-avx512";
  if (!__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2")) return "avx2";
  return "generic";
}

struct Parameter {
  const char* name;
  int64_t CpuProfile::*field;
};
constexpr Parameter kParameters[] = {
    {"kc", &CpuProfile::kc},
    {"mc", &CpuProfile::mc},
    {"nc", &CpuProfile::nc},
    {"single_block_rows", &CpuProfile::single_block_rows},
    {"direct_max_madds", &CpuProfile::direct_max_madds},
    {"stream_max_depth", &CpuProfile::stream_max_depth},
    {"gemv_max_rows", &CpuProfile::gemv_max_rows},
    {"gemv_cols", &CpuProfile::gemv_cols},
    {"dot_max_rows", &CpuProfile::dot_max_rows},
    {"dot_min_depth", &CpuProfile::dot_min_depth},
    {"dot_thin_rows", &CpuProfile::dot_thin_rows},
    {"transposed_max_rows", &CpuProfile::transposed_max_rows},
    {"transposed_min_depth", &CpuProfile::transposed_min_depth},
    {"a_in_place_max_panels", &CpuProfile::a_in_place_max_panels},
    {"write_once_min_bytes", &CpuProfile::write_once_min_bytes},
    {"parallel_min_madds", &CpuProfile::parallel_min_madds},
    {"small_max_madds", &CpuProfile::small_max_madds},
    {"bf16_block_bytes", &CpuProfile::bf16_block_bytes},
};

void check_value(CpuProfile& p, const std::string& name, int64_t value) {
  TORCH_CHECK(value >= 0, "pylibnn: CPU profile parameter ", name, " must be >= 0, got ", value);
  if (name == "kc" || name == "mc" || name == "nc" || name == "gemv_cols")
    TORCH_CHECK(value >= 1, "pylibnn: CPU profile parameter ", name, " must be >= 1, got ", value);
  if (name == "gemv_max_rows")
    TORCH_CHECK(value <= 4, "pylibnn: CPU profile parameter gemv_max_rows must be <= 4, got ", value);
}

void set_parameter(CpuProfile& p, const std::string& name, int64_t value) {
  for (const Parameter& param : kParameters)
    if (name == param.name) {
      check_value(p, name, value);
      p.*param.field = value;
      return;
    }
  TORCH_CHECK(false, "pylibnn: unknown CPU profile parameter '", name, "'; expected one of: ",
              c10::Join(", ", cpu_profile_parameters()));
}

// PYLIBNN_CPU_<PARAMETER> overrides, noted in the profile's origin.
void apply_environment(CpuProfile& p) {
  for (const Parameter& param : kParameters) {
    std::string var = "PYLIBNN_CPU_";
    for (const char* c = param.name; *c; ++c) var += static_cast<char>(std::toupper(*c));
    const char* text = std::getenv(var.c_str());
    if (text == nullptr || *text == '\0') continue;
    char* end = nullptr;
    const long long value = std::strtoll(text, &end, 10);
    TORCH_CHECK(end != text && *end == '\0', "pylibnn: ", var, "='", text, "' is not an integer");
    set_parameter(p, param.name, value);
    p.origin += ", " + var + "=" + text;
  }
}

// `forced_by` names who asked for a profile other than the detected one.
CpuProfile make_profile(const std::string& requested, const std::string& forced_by) {
  const CpuId& id = cpu_id();
  const bool automatic = requested.empty() || requested == "auto";
  CpuProfile p = named_profile(automatic ? detected_name(id) : requested, id);
  if (!automatic) p.origin = "forced by " + forced_by;
  else if (p.origin.empty()) p.origin = "CPUID match";
  apply_environment(p);
  return p;
}

std::mutex& profile_mutex() {
  static std::mutex m;
  return m;
}

// Profiles are replaced, never changed in place, so a GEMM reading the old one while
// another thread installs a new one keeps a consistent set; the old ones are kept (a few
// hundred bytes each, replaced only by tests and sweeps).
std::atomic<const CpuProfile*>& current() {
  static std::atomic<const CpuProfile*> profile{[] {
    const char* forced = std::getenv("PYLIBNN_CPU_PROFILE");
    const std::string name = forced ? forced : "";
    return new CpuProfile(make_profile(name, "PYLIBNN_CPU_PROFILE=" + name));
  }()};
  return profile;
}

}  // namespace

const CpuId& cpu_id() {
  static const CpuId id = detect();
  return id;
}

const CpuProfile& cpu_profile() { return *current().load(std::memory_order_acquire); }

std::vector<std::string> cpu_profile_names() { return {"zen3", "zen4", "zen5", "intel-avx512", "avx2", "generic"}; }

std::vector<std::string> cpu_profile_parameters() {
  std::vector<std::string> names;
  for (const Parameter& param : kParameters) names.emplace_back(param.name);
  return names;
}

void set_cpu_profile(const std::string& name) {
  std::lock_guard<std::mutex> lock(profile_mutex());
  current().store(new CpuProfile(make_profile(name, "set_cpu_profile('" + name + "')")),
                 std::memory_order_release);
}

void set_cpu_profile_parameter(const std::string& name, int64_t value) {
  std::lock_guard<std::mutex> lock(profile_mutex());
  CpuProfile p = cpu_profile();
  set_parameter(p, name, value);
  if (p.origin.find("set at run time") == std::string::npos) p.origin += ", set at run time";
  current().store(new CpuProfile(std::move(p)), std::memory_order_release);
}

std::vector<std::pair<std::string, std::string>> cpu_profile_description() {
  const CpuId& id = cpu_id();
  const CpuProfile& p = cpu_profile();
  std::vector<std::pair<std::string, std::string>> d = {
      {"name", p.name},
      {"origin", p.origin},
      {"measured", p.measured},
      {"isa", p.isa},
      {"vendor", id.vendor},
      {"family", std::to_string(id.family)},
      {"model", std::to_string(id.model)},
      {"l1d_bytes", std::to_string(id.l1d)},
      {"l2_bytes", std::to_string(id.l2)},
      {"l3_bytes", std::to_string(id.l3)},
      {"avx512_bf16", id.avx512_bf16 ? "1" : "0"},
  };
  for (const Parameter& param : kParameters) d.emplace_back(param.name, std::to_string(p.*param.field));
  return d;
}

}  // namespace pylibnn::cpu
