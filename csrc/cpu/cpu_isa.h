// Which CPU GEMM path runs: chosen at load time from the CPU's features (the best one
// compiled in and supported), overridable by the PYLIBNN_CPU_ISA environment variable at
// load time or by pylibnn._C.set_cpu_isa() at run time (tests and benchmarks force each
// path this way).
//   "avx512", "avx2", "portable": the blocked engine with that ISA's micro-kernels
//   "reference": the naive triple loop (gemm_reference.cpp)
#pragma once

#include <string>
#include <vector>

#include "cpu/gemm_microkernels.h"

namespace pylibnn::cpu {

std::vector<std::string> compiled_isas();   // micro-kernel sets built into this library
std::vector<std::string> supported_isas();  // those this CPU can run, plus "reference"
std::string selected_isa();
// Accepts "auto" or one of supported_isas(); raises a clear error otherwise.
void select_isa(const std::string& name);

// The micro-kernels of the selected path; nullptr when "reference" is selected.
const MicroKernelSet* selected_microkernels();

}  // namespace pylibnn::cpu
