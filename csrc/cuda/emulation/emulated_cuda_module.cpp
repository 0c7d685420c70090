// pylibnn_emulated_cuda: a test-only extension that runs pylibnn's CUDA backend (the same
// linear_cuda.cu and mlp_cuda.cu the real build compiles with nvcc) on the CPU through the
// emulator. Its ops live in the `pylibnn_emulated_cuda` library with pylibnn's schemas
// (ops/op_list.h), the op layer over the CUDA backend (ops/op_layer.h, cuda_backend.h), and
// take CPU tensors; tests/cuda_emulation.py routes pylibnn's ops to them.
// Built by the tests (torch.utils.cpp_extension.load), never installed.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "cuda/cuda_backend.h"
#include "cuda/emulation/emulator.h"
#include "cuda/gemm_select.h"
#include "ops/op_layer.h"
#include "ops/op_list.h"

TORCH_LIBRARY(pylibnn_emulated_cuda, m) {
  for (const char* schema : pylibnn::kOpSchemas) m.def(schema);
}

PYLIBNN_REGISTER_OPS(pylibnn_emulated_cuda, CPU, pylibnn::OpLayer<pylibnn::cuda::CudaBackend>)

namespace {

namespace emulation = pylibnn::emulation;

void set_fiber_order(const std::string& order, uint64_t seed) {
  if (order == "forward") {
    emulation::set_fiber_order(emulation::FiberOrder::Forward, seed);
  } else if (order == "reverse") {
    emulation::set_fiber_order(emulation::FiberOrder::Reverse, seed);
  } else if (order == "shuffle") {
    emulation::set_fiber_order(emulation::FiberOrder::Shuffle, seed);
  } else if (order == "warp_run_ahead") {
    emulation::set_fiber_order(emulation::FiberOrder::WarpRunAhead, seed);
  } else {
    throw pybind11::value_error("set_fiber_order: expected 'forward', 'reverse', 'shuffle' or 'warp_run_ahead', got '" +
                                order + "'");
  }
}

std::string fiber_order() {
  switch (emulation::fiber_order()) {
    case emulation::FiberOrder::Forward: return "forward";
    case emulation::FiberOrder::Reverse: return "reverse";
    case emulation::FiberOrder::Shuffle: return "shuffle";
    case emulation::FiberOrder::WarpRunAhead: return "warp_run_ahead";
  }
  return "?";
}

pybind11::dict statistics() {
  const emulation::Statistics s = emulation::statistics();
  pybind11::dict d;
  d["launches"] = s.launches;
  d["blocks"] = s.blocks;
  d["threads"] = s.threads;
  d["barriers"] = s.barriers;
  d["warp_collectives"] = s.warp_collectives;
  d["fiber_switches"] = s.fiber_switches;
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pylibnn's CUDA backend on the CPU, through the CUDA emulator (tests only)";
  m.def("set_fiber_order", &set_fiber_order, pybind11::arg("order"), pybind11::arg("seed") = 0,
        "The order in which a block's runnable threads resume: 'forward', 'reverse' or 'shuffle' (seeded)");
  m.def("fiber_order", &fiber_order);
  m.def("fiber_order_seed", &emulation::fiber_order_seed);
  m.def("set_strict", &emulation::set_strict, pybind11::arg("strict"),
        "Strict mode: a block that raises the floating-point invalid flag fails (finite inputs only)");
  m.def("strict", &emulation::strict);
  m.def("set_worker_threads", &emulation::set_worker_threads, pybind11::arg("threads"));
  m.def("worker_threads", &emulation::worker_threads);
  m.def("statistics", &statistics);
  m.def(
      "set_gemm_kernel",
      [](const std::string& name) { pylibnn::cuda::set_gemm_kernel_override(pylibnn::cuda::gemm_kernel_from_name(name)); },
      pybind11::arg("name"), "Forces the CUDA GEMM kernel (gemm_select.h): auto, simt_basic, simt_warptile, tensor_core");
  m.def("gemm_kernel", [] { return std::string(pylibnn::cuda::gemm_kernel_name(pylibnn::cuda::gemm_kernel_override())); });
  m.def("set_split_k", &pylibnn::cuda::set_split_k_override, pybind11::arg("splits"),
        "Forces split-K: 0 for the rule, S >= 1 slices");
  m.def("split_k", &pylibnn::cuda::split_k_override);
  m.def(
      "gemm_plan",
      [](const std::string& dtype, int64_t M, int64_t N, int64_t K, bool allow_tf32) {
        namespace c = pylibnn::cuda;
        const c::ElementKind kind = dtype == "bfloat16" ? c::ElementKind::BFloat16
                                    : dtype == "float16" ? c::ElementKind::Float16
                                    : dtype == "float32" ? c::ElementKind::Float32
                                    : dtype == "float64" ? c::ElementKind::Float64
                                    : throw pybind11::value_error("gemm_plan: dtype bfloat16, float16, float32 or float64");
        const c::GemmPlan plan = c::plan_gemm(kind, M, N, K, allow_tf32, false);
        pybind11::dict d;
        d["kernel"] = c::gemm_kernel_name(plan.kernel);
        d["tile"] = pybind11::make_tuple(plan.tile.bm, plan.tile.bn, plan.tile.bk);
        d["splits"] = plan.splits;
        d["k_slice"] = plan.k_slice;
        return d;
      },
      pybind11::arg("dtype"), pybind11::arg("M"), pybind11::arg("N"), pybind11::arg("K"),
      pybind11::arg("allow_tf32") = false, "The kernel, tile and split-K plan_gemm chooses (gemm_select.h)");
  m.def("reset_statistics", &emulation::reset_statistics);
}
