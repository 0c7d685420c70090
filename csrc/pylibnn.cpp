// pylibnn._C: the six op schemas (TORCH_LIBRARY, from ops/op_list.h) and the small Python
// module around them: build information, the CPU instruction-set switch, the activation
// names (activation.h) and the fake kernels' C++ half (ops/shape_ops.cpp). Implementations
// register per dispatch key through the op list: CPU (cpu/linear_cpu.cpp), CUDA
// (cuda/cuda_ops.cpp), Meta and the unsupported layouts (ops/shape_ops.cpp), Autograd
// (linear_autograd.cpp), Autocast (autocast.cpp).
#include <torch/extension.h>

#include "activation.h"
#include "cpu/cpu_isa.h"
#include "ops/op_checks.h"
#include "ops/op_list.h"
#include "ops/shape_ops.h"
#include "pylibnn_build_config.h"

TORCH_LIBRARY(pylibnn, m) {
  for (const char* schema : pylibnn::kOpSchemas) m.def(schema);
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["cuda"] = static_cast<bool>(PYLIBNN_BUILT_WITH_CUDA);
  info["cuda_arch_list"] = std::string(PYLIBNN_CUDA_ARCH_LIST);
  info["torch"] = std::string(PYLIBNN_TORCH_VERSION);
  pybind11::dict cpu;
  cpu["compiled"] = pylibnn::cpu::compiled_isas();
  cpu["supported"] = pylibnn::cpu::supported_isas();
  cpu["selected"] = pylibnn::cpu::selected_isa();
  info["cpu_isa"] = cpu;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pylibnn kernels; the ops live in torch.ops.pylibnn";
  m.def("build_info", &build_info, "What this build of pylibnn was compiled with");
  m.def("set_cpu_isa", &pylibnn::cpu::select_isa, pybind11::arg("name"),
        "Forces the CPU GEMM path: 'auto' (best supported), 'avx512', 'avx2', 'portable' or 'reference'");
  m.def("get_cpu_isa", &pylibnn::cpu::selected_isa, "The CPU GEMM path now in use");
  m.def("activation_names", [] {
    return std::vector<std::string>(std::begin(pylibnn::kActivationNames), std::end(pylibnn::kActivationNames));
  }, "The activation names of the fused ops, in the order of activation.h's list");
  m.def(
      "check_activation",
      [](const std::string& op, const std::string& name) { pylibnn::activation_from_name(op.c_str(), name); },
      pybind11::arg("op"), pybind11::arg("activation"), "ValueError naming op unless activation is a known name");
  pylibnn::add_fake_kernel_functions(m);
}
