// The CPU engine's part of pylibnn._C: its tuning profile and packing memory in build_info(),
// and the functions that tests, benchmarks and the sweep script use to change or inspect them
// (declared in cpu_isa.h, called from pylibnn.cpp).
#include <torch/extension.h>

#include "cpu/cpu_isa.h"
#include "cpu/cpu_profile.h"
#include "cpu/gemm.h"
#include "cpu/gemm_scratch.h"
#include "cpu/output_cache.h"

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

pybind11::dict output_cache_dict() {
  const OutputCacheStats s = output_cache_stats();
  pybind11::dict d;
  d["free_bytes"] = s.free_bytes;
  d["free_blocks"] = s.free_blocks;
  d["used_bytes"] = s.used_bytes;
  d["limit_bytes"] = s.limit_bytes;
  d["hits"] = s.hits;
  d["maps"] = s.maps;
  return d;
}

template <typename T>
MatrixView<T> view_of(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

// C = A @ B [+ bias] and the row sums of A through the engine alone (no op plumbing), for
// every dtype the engine computes: the engine-level tests call it as pylibnn._C.cpu_gemm.
std::tuple<at::Tensor, at::Tensor> engine_gemm(const at::Tensor& a, const at::Tensor& b,
                                               const std::optional<at::Tensor>& bias, bool with_row_sums) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, "pylibnn._C.cpu_gemm: expected 2-D a and b, got ", a.dim(), "-D and ",
              b.dim(), "-D");
  TORCH_CHECK(a.size(1) == b.size(0), "pylibnn._C.cpu_gemm: a is ", a.sizes(), " but b is ", b.sizes());
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "pylibnn._C.cpu_gemm: expected CPU tensors");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "pylibnn._C.cpu_gemm: a is ", a.scalar_type(), " but b is ",
              b.scalar_type());
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == b.size(1) && bias->scalar_type() == a.scalar_type() &&
                    bias->device().is_cpu(),
                "pylibnn._C.cpu_gemm: bias must be a CPU ", a.scalar_type(), " vector of ", b.size(1),
                " elements, got ", bias->sizes(), " ", bias->scalar_type());
  }
  at::Tensor c = at::empty({a.size(0), b.size(1)}, a.options());
  at::Tensor sums = at::empty({with_row_sums ? a.size(0) : 0}, a.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "cpu_gemm", [&] {
    GemmArgs<scalar_t> args{view_of<scalar_t>(a), view_of<scalar_t>(b), c.mutable_data_ptr<scalar_t>(), c.stride(0)};
    if (has_bias) {
      args.bias = bias->const_data_ptr<scalar_t>();
      args.bias_stride = bias->stride(0);
    }
    if (with_row_sums) args.a_row_sums = sums.mutable_data_ptr<scalar_t>();
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) gemm(args);
    else gemm_widened(args);
  });
  return {c, sums};
}

}  // namespace

void add_cpu_engine_info(pybind11::dict& info) {
  info["cpu_profile"] = profile_dict();
  info["cpu_scratch"] = scratch_dict();
  info["cpu_output_cache"] = output_cache_dict();
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
        pybind11::arg("row_sums"), pybind11::arg("element_bytes") = 4,
        "The path the CPU GEMM C (M, N) = A (M, K) B (K, N) takes for these strides now (float32 elements, or "
        "element_bytes = 8 for float64)");
  m.def("cpu_gemm", &engine_gemm, pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("bias") = pybind11::none(),
        pybind11::arg("row_sums") = false,
        "C = a @ b [+ bias] and the row sums of a, by the CPU GEMM engine alone (float32, float64, "
        "bfloat16, float16); for tests");
  m.def("cpu_scratch_stats", &scratch_dict,
        "The CPU GEMM packing memory: mapped_bytes, peak_bytes, regions, maps (growth events)");
  m.def("release_cpu_scratch", &release_scratch,
        "Unmaps every thread's CPU GEMM packing memory (raises while a GEMM is running)");
  m.def("cpu_output_cache_stats", &output_cache_dict,
        "The CPU ops' output cache: free_bytes / free_blocks (kept for the next output of their size), "
        "used_bytes (held by live tensors), limit_bytes, hits, maps (blocks mapped afresh)");
  m.def("release_cpu_output_cache", &release_output_cache, "Unmaps the CPU output cache's free blocks");
  m.def("set_cpu_output_cache_limit", &set_output_cache_limit, pybind11::arg("bytes"),
        "Most free bytes the CPU output cache keeps (0: no output is cached); drops the free blocks");
}

}  // namespace pylibnn::cpu
