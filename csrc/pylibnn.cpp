// pylibnn._C: the op schemas (TORCH_LIBRARY) and the small Python module around them
// (build information, the CPU instruction-set switch). The backends register their
// implementations in csrc/cpu/linear_cpu.cpp and csrc/cuda/linear_cuda.cu.
#include <torch/extension.h>

#include "cpu/cpu_isa.h"
#include "pylibnn_build_config.h"

TORCH_LIBRARY(pylibnn, m) {
  // y = input @ weight.T + bias;  input (M, K), weight (N, K), bias (N) -> y (M, N)
  m.def("linear_forward(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  // (grad_input (M, K), grad_weight (N, K), grad_bias (N)); gradients whose output_mask
  // entry is false are returned as empty tensors.
  m.def(
      "linear_backward(Tensor grad_output, Tensor input, Tensor weight, bool[3] output_mask)"
      " -> (Tensor, Tensor, Tensor)");

  // The fused ops (activation names and formulas: activation.h).
  // (output = act(z), preactivation = z) with z = input @ weight.T + bias, both (M, N);
  // preactivation is an empty (0,) tensor unless save_preactivation.
  m.def(
      "linear_act_forward(Tensor input, Tensor weight, Tensor? bias, str activation, bool save_preactivation)"
      " -> (Tensor, Tensor)");
  // linear_backward of grad_z = grad_output * act'(preactivation).
  m.def(
      "linear_act_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor preactivation, str activation,"
      " bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // A whole MLP: layer l computes z_l = a_{l-1} @ weights[l].T + biases[l] (a_{-1} = input),
  // a_l = act(z_l) for every layer but the last, whose z is the output (M, N_{L-1}).
  // hidden: every hidden layer's z_l and a_l in the layout of mlp_layout.h, or an empty (0,)
  // tensor unless save_hidden.
  m.def(
      "mlp_forward(Tensor input, Tensor[] weights, Tensor?[] biases, str activation, bool save_hidden)"
      " -> (Tensor, Tensor)");
  // (grad_input (M, K_0) or empty (0,) unless input_grad, grad_weights[l] (N_l, K_l),
  //  grad_biases[l] (N_l) where has_bias[l], else empty (0,)).
  m.def(
      "mlp_backward(Tensor grad_output, Tensor input, Tensor[] weights, Tensor hidden, str activation,"
      " bool[] has_bias, bool input_grad) -> (Tensor, Tensor[], Tensor[])");
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
}
