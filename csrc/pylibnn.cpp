// pylibnn._C: the six op schemas (TORCH_LIBRARY, from ops/op_list.h) and the small Python
// module around them: build information, the CPU instruction-set switch, the activation
// names (activation.h) and the fake kernels' C++ half (ops/shape_ops.cpp). Implementations
// register per dispatch key through the op list: CPU (cpu/linear_cpu.cpp), CUDA
// (cuda/cuda_ops.cpp), Meta and the unsupported layouts (ops/shape_ops.cpp), Autograd
// (linear_autograd.cpp), Autocast (autocast.cpp).
#include <torch/extension.h>

#include "activation.h"
#include "cpu/cpu_isa.h"
#include "cuda/gemm_select.h"
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
  cpu["bf16_supported"] = pylibnn::cpu::supported_bf16_kernels();
  cpu["bf16_selected"] = pylibnn::cpu::selected_bf16_kernel_name();
  info["cpu_isa"] = cpu;
  pylibnn::cpu::add_cpu_engine_info(info);
  // The CUDA GEMM selection (cuda/gemm_select.h): the kernel and split-K overrides in force
  // ("auto" and 0: the rule) and the kernels the rule chooses between.
  pybind11::dict gemm;
  gemm["kernel"] = std::string(pylibnn::cuda::gemm_kernel_name(pylibnn::cuda::gemm_kernel_override()));
  gemm["split_k"] = pylibnn::cuda::split_k_override();
  gemm["kernels"] = std::vector<std::string>{"simt_basic", "simt_warptile", "tensor_core"};
  gemm["rule"] = std::string(
      "bfloat16/float16: tensor_core (128x128x32, 64x128x32 for M <= 64); float32: tensor_core as TF32 when "
      "torch allows TF32 for matmuls, else simt_warptile (128x128x16, 8x8 per lane); float64: simt_warptile "
      "(64x64x16, 4x4 per lane); split-K below 128 output tiles when K >= 512 (<= 16 slices, summed in order)");
  info["cuda_gemm"] = gemm;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pylibnn kernels; the ops live in torch.ops.pylibnn";
  m.def("build_info", &build_info, "What this build of pylibnn was compiled with");
  m.def("set_cpu_isa", &pylibnn::cpu::select_isa, pybind11::arg("name"),
        "Forces the CPU GEMM path: 'auto' (best supported), 'avx512', 'avx2', 'portable' or 'reference'");
  m.def("get_cpu_isa", &pylibnn::cpu::selected_isa, "The CPU GEMM path now in use");
  m.def("set_cpu_bf16_kernel", &pylibnn::cpu::select_bf16_kernel, pybind11::arg("name"),
        "Forces the CPU's bfloat16 GEMM kernel: 'auto' (best supported), 'amx', 'avx512bf16' or 'widened' "
        "(used while the 'avx512' path is selected)");
  m.def("get_cpu_bf16_kernel", &pylibnn::cpu::selected_bf16_kernel_name, "The CPU bfloat16 GEMM kernel now chosen");
  m.def(
      "cpu_bf16_kernel_in_use",
      [] {
        const pylibnn::cpu::Bf16Kernel* kernel = pylibnn::cpu::selected_bf16_kernel();
        return std::string(kernel ? kernel->name : "widened");
      },
      "The kernel bfloat16 GEMMs above the direct loop's size run on now: the chosen one on the avx512 path, "
      "'widened' on any other");
  m.def(
      "set_cuda_gemm_kernel",
      [](const std::string& name) { pylibnn::cuda::set_gemm_kernel_override(pylibnn::cuda::gemm_kernel_from_name(name)); },
      pybind11::arg("name"), "Forces the CUDA GEMM kernel: 'auto', 'simt_basic', 'simt_warptile' or 'tensor_core'");
  m.def("set_cuda_split_k", &pylibnn::cuda::set_split_k_override, pybind11::arg("splits"),
        "Forces the CUDA GEMMs' split-K: 0 for the rule, S >= 1 slices");
  m.def("activation_names", [] {
    return std::vector<std::string>(std::begin(pylibnn::kActivationNames), std::end(pylibnn::kActivationNames));
  }, "The activation names of the fused ops, in the order of activation.h's list");
  m.def(
      "check_activation",
      [](const std::string& op, const std::string& name) { pylibnn::activation_from_name(op.c_str(), name); },
      pybind11::arg("op"), pybind11::arg("activation"), "ValueError naming op unless activation is a known name");
  pylibnn::add_fake_kernel_functions(m);
  pylibnn::cpu::register_cpu_engine_functions(m);
}
