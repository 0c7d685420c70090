// Tuning profiles of the CPU GEMM engine, one per microarchitecture (as BLIS's config/<arch>
// contexts and OpenBLAS's per-core parameter tables): the kernel set to prefer, the cache
// blocking and the thresholds that choose between the engine's paths. Picked once, at load,
// from CPUID (vendor, family, model) and the cache sizes (leaf 4 on Intel, 0x8000001D on
// AMD); a CPU with no profile of its own gets values derived from its caches.
//
//   PYLIBNN_CPU_PROFILE=<name>       force a profile (names: cpu_profile_names())
//   PYLIBNN_CPU_<PARAMETER>=<value>  override one parameter (KC, MC, NC, DOT_MAX_ROWS, ...;
//                                    the list is cpu_profile_parameters())
// Both are read at load; set_cpu_profile() / set_cpu_profile_parameter() change them at run
// time (the sweep script, benchmarks/sweep_profile.py, does so).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pylibnn::cpu {

struct CpuId {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD", ...
  int family = 0;      // display family (base + extended)
  int model = 0;       // display model (extended model included)
  int64_t l1d = 0;     // bytes per core
  int64_t l2 = 0;      // bytes per core
  int64_t l3 = 0;      // bytes, the whole cache
  bool avx512_bf16 = false;
};

struct CpuProfile {
  std::string name;
  std::string origin;    // why this profile: "CPUID match", "derived from caches", "PYLIBNN_CPU_PROFILE"
  std::string measured;  // where its numbers come from (stated, not assumed)
  std::string isa;       // preferred micro-kernel set, when the CPU supports it
  // Blocking of the broadcast path, in float32 elements for the widest kernel (float64 keeps
  // kc and nc and halves mc, so the A block keeps its bytes).
  int64_t kc = 512;  // depth of a packed block
  int64_t mc = 96;   // rows of A per task (rounded to MR)
  int64_t nc = 4096; // columns of B per packed block (rounded to NR)
  // M (float32 rows; float64 half) up to which the blocked path keeps all rows in one block,
  // with each B panel packed by the task that uses it. Emerald Rapids, forward at one thread
  // against torch, one block vs blocks of mc = 96: M = 128 (W 4096^2) 0.84x -> 1.00x,
  // M = 192 / 256 (W 1024^2) 0.93x / 0.92x -> 1.02x / 0.97x; grad_weight for 1024 x 512 -> 128
  // (M = 128) 0.71x -> 0.91x. Larger M is unmeasured.
  int64_t single_block_rows = 256;
  // Bytes of the packed A block of a task on the native bfloat16 kernels (gemm_widened, which
  // packs all of K at once): half of L2, so that the block stays there while the B panels
  // stream past it, each reused by all of the block's rows.
  int64_t bf16_block_bytes = 512 * 1024;
  // The blocked path reads A in place, unpacked, where A is contiguous across rows (or
  // row-major, not 4 KiB-aliased) and C has at most this many NR-column panels (each packed A
  // element would be reused by so few of them that packing it costs more than it saves). Emerald Rapids, grad_weight at one thread
  // against torch: 1024 x 128 -> 128 0.71x -> 0.82x, 1024 x 128 -> 512 0.79x -> 0.88x; 32
  // panels (1024^3) in place fell to 0.73x.
  int64_t a_in_place_max_panels = 8;
  // The outer path (gemm_engine.cpp) writes C by non-temporal stores from this many bytes
  // of C on (a store that misses reads its line first, so a C far larger than the caches cost
  // twice its bytes in memory traffic). Emerald Rapids, one thread, the M = 1 fwd+bwd
  // followed by an SGD step reading grad_weight: 4 MiB 1.78 -> 1.58 ms and 2.01 -> 1.94 ms
  // (two runs), 16 MiB 7.06 -> 5.95 ms, 64 MiB 37.3 -> 31.5 ms; fwd+bwd alone, 64 MiB
  // 24.1 -> 18.8 ms. 8 MiB keeps a C that L2 and a slice of L3 could hold cached for its reader.
  int64_t write_once_min_bytes = 8 << 20;
  // Path thresholds (gemm_engine.cpp applies them in this order).
  int64_t direct_max_madds = 4096;     // reference loop at or below this many multiply-adds
  int64_t stream_max_depth = 4;        // outer-product path for depth (K of the product) <= this
  int64_t gemv_max_rows = 4;           // GEMV path for rows (M) <= this (at most 4)
  int64_t gemv_cols = 1024;            // columns of C per GEMV task (a few KiB per row in L1)
  int64_t dot_max_rows = 192;          // dot path for M <= this (float32; float64 half) and K >= dot_min_depth,
  int64_t dot_min_depth = 64;          // ...
  int64_t dot_thin_rows = 16;          // ... or for M <= this at any K (the 12-row tiles would idle)
  int64_t transposed_max_rows = 0;     // transposed path (W's rows in place) for M <= this (float32; float64 half)
  int64_t transposed_min_depth = 512;  // ... and K >= this
  int64_t parallel_min_madds = 110592; // one thread below (48^3)
  int64_t small_max_madds = 0;         // one thread region per call (private B packing) at or below
};

const CpuId& cpu_id();

// The profile in use now.
const CpuProfile& cpu_profile();

std::vector<std::string> cpu_profile_names();
std::vector<std::string> cpu_profile_parameters();

// Replaces the profile in use by the named one ("auto": the one CPUID picks), environment
// overrides applied. Unknown names raise.
void set_cpu_profile(const std::string& name);
// Sets one integer parameter of the profile in use. Unknown names and values < 0 raise.
void set_cpu_profile_parameter(const std::string& name, int64_t value);

// name -> value of every parameter, plus the CPU and the profile's name and origin: what
// build_info()["cpu_profile"] reports.
std::vector<std::pair<std::string, std::string>> cpu_profile_description();

}  // namespace pylibnn::cpu
