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
  } else {
    throw pybind11::value_error("set_fiber_order: expected 'forward', 'reverse' or 'shuffle', got '" + order + "'");
  }
}

std::string fiber_order() {
  switch (emulation::fiber_order()) {
    case emulation::FiberOrder::Forward: return "forward";
    case emulation::FiberOrder::Reverse: return "reverse";
    case emulation::FiberOrder::Shuffle: return "shuffle";
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
  m.def("reset_statistics", &emulation::reset_statistics);
}
