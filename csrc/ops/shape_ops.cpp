// The op layer over backends that compute nothing (op_layer.h):
//   MetaBackend         the Meta kernels of the six ops, and through
//                       add_fake_kernel_functions the fake kernels that pylibnn/ops.py
//                       registers for torch.compile / torch.export: checks and output shapes
//                       only, on symbolic sizes too.
//   UnsupportedBackend  the ops for tensors the kernels do not read (sparse, quantized,
//                       nested). The dispatcher sends such tensors here instead of to the CPU /
//                       CUDA kernels; without these registrations the caller would get the
//                       dispatcher's "Could not run 'pylibnn::...' with arguments from the
//                       'SparseCPU' backend", which names neither the argument nor what is
//                       expected. The shared checks reject them first, with a
//                       NotImplementedError that names the op and the argument.
// Why fake kernels through C++ rather than a C++ Meta kernel alone: under FakeTensorMode, a
// custom op's Meta kernel that raises NotImplementedError surfaces as
// UnsupportedOperatorException without the message; a registered fake kernel's exceptions
// reach the caller as raised.
#include <string>
#include <vector>

#include <torch/extension.h>

#include "ops/op_layer.h"
#include "ops/op_list.h"
#include "ops/shape_ops.h"

namespace pylibnn {
namespace {

struct MetaBackend {
  static bool computes(at::ScalarType) { return true; }
  static void linear_forward(const at::Tensor&, const at::Tensor&, const at::Tensor&, Activation, const at::Tensor&,
                             const at::Tensor&) {}
  static void linear_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, Activation,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&) {}
  static void mlp_forward(const at::Tensor&, at::TensorList, const c10::List<std::optional<at::Tensor>>&, Activation,
                          const at::Tensor&, const at::Tensor&) {}
  static void mlp_backward(const at::Tensor&, const at::Tensor&, at::TensorList, const at::Tensor&, Activation,
                           const at::Tensor&, const std::vector<at::Tensor>&, const std::vector<at::Tensor>&) {}
};

[[noreturn]] void reject_kind(const at::Tensor& t) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "pylibnn: tensors of this kind (dispatch keys ", t.key_set(),
                              ") are not supported; expected dense (strided) tensors");
}

struct UnsupportedBackend {
  static bool computes(at::ScalarType) { return true; }
  static void linear_forward(const at::Tensor& input, const at::Tensor&, const at::Tensor&, Activation,
                             const at::Tensor&, const at::Tensor&) {
    reject_kind(input);
  }
  static void linear_backward(const at::Tensor& grad_output, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              Activation, const at::Tensor&, const at::Tensor&, const at::Tensor&) {
    reject_kind(grad_output);
  }
  static void mlp_forward(const at::Tensor& input, at::TensorList, const c10::List<std::optional<at::Tensor>>&,
                          Activation, const at::Tensor&, const at::Tensor&) {
    reject_kind(input);
  }
  static void mlp_backward(const at::Tensor& grad_output, const at::Tensor&, at::TensorList, const at::Tensor&,
                           Activation, const at::Tensor&, const std::vector<at::Tensor>&,
                           const std::vector<at::Tensor>&) {
    reject_kind(grad_output);
  }
};

using MetaOps = OpLayer<MetaBackend>;

c10::List<std::optional<at::Tensor>> optional_list(const std::vector<std::optional<at::Tensor>>& tensors) {
  c10::List<std::optional<at::Tensor>> list;
  for (const auto& t : tensors) list.push_back(t);
  return list;
}

c10::List<bool> bool_list(const std::vector<bool>& flags) {
  c10::List<bool> list;
  for (const bool flag : flags) list.push_back(flag);
  return list;
}

}  // namespace

void add_fake_kernel_functions(pybind11::module_& m) {
  // Called by the fake kernels with FakeTensors (inside FakeTensorMode, so the outputs the
  // op layer allocates are FakeTensors of the inputs' device).
  m.def("fake_linear_forward", &MetaOps::linear_forward);
  m.def("fake_linear_backward", &MetaOps::linear_backward);
  m.def("fake_linear_act_forward",
        [](const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
           const std::string& activation, bool save_preactivation) {
          return MetaOps::linear_act_forward(input, weight, bias, activation, save_preactivation);
        });
  m.def("fake_linear_act_backward",
        [](const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
           const at::Tensor& preactivation, const std::string& activation, std::array<bool, 3> output_mask) {
          return MetaOps::linear_act_backward(grad_output, input, weight, preactivation, activation, output_mask);
        });
  m.def("fake_mlp_forward",
        [](const at::Tensor& input, const std::vector<at::Tensor>& weights,
           const std::vector<std::optional<at::Tensor>>& biases, const std::string& activation, bool save_hidden) {
          return MetaOps::mlp_forward(input, weights, optional_list(biases), activation, save_hidden);
        });
  m.def("fake_mlp_backward",
        [](const at::Tensor& grad_output, const at::Tensor& input, const std::vector<at::Tensor>& weights,
           const at::Tensor& hidden, const std::string& activation, const std::vector<bool>& has_bias,
           bool input_grad) {
          return MetaOps::mlp_backward(grad_output, input, weights, hidden, activation, bool_list(has_bias),
                                       input_grad);
        });
  // The shape of mlp_forward's hidden for concrete sizes (mlp_layout.h), for Python.
  m.def(
      "mlp_hidden_shape",
      [](int64_t rows, const std::vector<int64_t>& widths, const std::string& activation) {
        const Activation act = activation_from_name("pylibnn.ops.mlp_hidden_shape", activation);
        const MlpHiddenLayout layout(rows, widths, act != Activation::None);
        return std::make_tuple(layout.rows, layout.cols);
      },
      pybind11::arg("rows"), pybind11::arg("widths"), pybind11::arg("activation"));
}

}  // namespace pylibnn

PYLIBNN_REGISTER_OPS(pylibnn, Meta, pylibnn::MetaOps)

#define PYLIBNN_REJECT(key) PYLIBNN_REGISTER_OPS(pylibnn, key, pylibnn::OpLayer<pylibnn::UnsupportedBackend>)
PYLIBNN_REJECT(SparseCPU)
PYLIBNN_REJECT(SparseCUDA)
PYLIBNN_REJECT(SparseCsrCPU)
PYLIBNN_REJECT(SparseCsrCUDA)
PYLIBNN_REJECT(QuantizedCPU)
PYLIBNN_REJECT(QuantizedCUDA)
PYLIBNN_REJECT(NestedTensorCPU)
PYLIBNN_REJECT(NestedTensorCUDA)
