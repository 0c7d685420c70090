// pylibnn._C: the op schemas (TORCH_LIBRARY, from op_schemas.h) and the small Python module
// around them (build information, the CPU instruction-set switch). The backends register their
// implementations in csrc/cpu/linear_cpu.cpp and csrc/cuda/linear_cuda.cu.
#include <torch/extension.h>

#include "cpu/cpu_isa.h"
#include "op_schemas.h"
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
  pylibnn::cpu::add_cpu_engine_info(info);
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pylibnn kernels; the ops live in torch.ops.pylibnn";
  m.def("build_info", &build_info, "What this build of pylibnn was compiled with");
  m.def("set_cpu_isa", &pylibnn::cpu::select_isa, pybind11::arg("name"),
        "Forces the CPU GEMM path: 'auto' (best supported), 'avx512', 'avx2', 'portable' or 'reference'");
  m.def("get_cpu_isa", &pylibnn::cpu::selected_isa, "The CPU GEMM path now in use");
  pylibnn::cpu::register_cpu_engine_functions(m);
}
