// The CPU engine's part of pylibnn._C: its tuning profile and packing memory in build_info(),
// and the functions that tests, benchmarks and the sweep script use to change or inspect them
// (declared in cpu_isa.h, called from pylibnn.cpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/cpu_isa.h"
#include "cpu/cpu_profile.h"
#include "cpu/gemm.h"
#include "cpu/gemm_scratch.h"

namespace pylibnn::cpu {

namespace {

pybind11::dict profile_dict() {
  pybind11::dict d;
  for (const auto& [key, value] : cpu_profile_description()) d[pybind11::str(key)] = value;
  return d;
}

pybind11::dict scratch_dict() {
  const ScratchStats s = scratch_stats();
  pybind11::dict d;
  d["mapped_bytes"] = s.mapped_bytes;
  d["peak_bytes"] = s.peak_bytes;
  d["regions"] = s.regions;
  d["maps"] = s.maps;
  return d;
}

}  // namespace

void add_cpu_engine_info(pybind11::dict& info) {
  info["cpu_profile"] = profile_dict();
  info["cpu_scratch"] = scratch_dict();
}

void register_cpu_engine_functions(pybind11::module_& m) {
  m.def("cpu_profile", &profile_dict, "The CPU tuning profile in use (name, origin, CPU, parameters)");
  m.def("cpu_profile_names", &cpu_profile_names, "The CPU tuning profiles built in");
  m.def("set_cpu_profile", &set_cpu_profile, pybind11::arg("name"),
        "Replaces the CPU tuning profile: 'auto' (the one CPUID picks) or one of cpu_profile_names(); "
        "PYLIBNN_CPU_<PARAMETER> overrides apply");
  m.def("set_cpu_profile_parameter", &set_cpu_profile_parameter, pybind11::arg("name"), pybind11::arg("value"),
        "Sets one parameter of the CPU tuning profile in use (kc, mc, nc, dot_min_depth, ...)");
  m.def("cpu_gemm_path", &gemm_path_name, pybind11::arg("M"), pybind11::arg("N"), pybind11::arg("K"),
        pybind11::arg("a_col_stride"), pybind11::arg("b_row_stride"), pybind11::arg("b_col_stride"),
        pybind11::arg("row_sums"),
        "The path the CPU GEMM C (M, N) = A (M, K) B (K, N) takes for these strides now");
  m.def("cpu_scratch_stats", &scratch_dict,
        "The CPU GEMM packing memory: mapped_bytes, peak_bytes, regions, maps (growth events)");
  m.def("release_cpu_scratch", &release_scratch,
        "Unmaps every thread's CPU GEMM packing memory (raises while a GEMM is running)");
}

}  // namespace pylibnn::cpu
