// Which CPU GEMM path runs: chosen at load time from the CPU's features (the best one
// compiled in and supported), overridable by the PYLIBNN_CPU_ISA environment variable at
// load time or by pylibnn._C.set_cpu_isa() at run time (tests and benchmarks force each
// path this way).
//   "avx512", "avx2", "portable": the blocked engine with that ISA's micro-kernels
//   "reference": the naive triple loop (gemm_reference.cpp)
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "cpu/gemm_microkernels.h"

namespace pybind11 {
class dict;
class module_;
}  // namespace pybind11

namespace pylibnn::cpu {

// The CPU engine's entries in pylibnn._C (cpu_engine_info.cpp): build_info()'s "cpu_profile"
// (the tuning profile, cpu_profile.h), "cpu_scratch" (packing memory, gemm_scratch.h) and
// "cpu_output_cache" (output_cache.h), and the functions cpu_profile, cpu_profile_names,
// set_cpu_profile, set_cpu_profile_parameter, cpu_scratch_stats, release_cpu_scratch,
// cpu_output_cache_stats, release_cpu_output_cache, set_cpu_output_cache_limit.
void add_cpu_engine_info(pybind11::dict& info);
void register_cpu_engine_functions(pybind11::module_& m);

std::vector<std::string> compiled_isas();   // micro-kernel sets built into this library
std::vector<std::string> supported_isas();  // those this CPU can run, plus "reference"
std::string selected_isa();
// Accepts "auto" or one of supported_isas(); raises a clear error otherwise.
void select_isa(const std::string& name);

// The micro-kernels of the selected path; nullptr when "reference" is selected.
const MicroKernelSet* selected_microkernels();

// The native bfloat16 kernel of gemm_widened (gemm_microkernels.h, Bf16Kernel): "amx",
// "avx512bf16" (vdpbf16ps) or "widened" (the float32 micro-kernels on operands widened while
// packed). Chosen at load time as the best this CPU and OS support, overridable by the
// PYLIBNN_CPU_BF16 environment variable or pylibnn._C.set_cpu_bf16_kernel(). It runs only while
// the "avx512" path is selected, so forcing another path gives that path's machine.
std::vector<std::string> supported_bf16_kernels();  // best first; always ends with "widened"
std::string selected_bf16_kernel_name();
// Accepts "auto" or one of supported_bf16_kernels(); raises a clear error otherwise.
void select_bf16_kernel(const std::string& name);
// The kernel in use now; nullptr when bfloat16 is widened.
const Bf16Kernel* selected_bf16_kernel();

// The kernels of the fused ops (panel GEMMs, activations): the selected set, or the
// portable one when "reference" is selected.
const MicroKernelSet& fused_microkernels();

// The portable set (always compiled in and supported).
const MicroKernelSet& portable_microkernels();

// The float32 or float64 member of a set, for code templated on the scalar type.
template <typename T>
const PanelKernels<T>& panel_kernels(const MicroKernelSet& set) {
  if constexpr (std::is_same_v<T, float>) return set.panel_f32;
  else return set.panel_f64;
}

template <typename T>
const ActivationKernels<T>& activation_kernels(const MicroKernelSet& set) {
  if constexpr (std::is_same_v<T, float>) return set.activation_f32;
  else return set.activation_f64;
}

}  // namespace pylibnn::cpu
