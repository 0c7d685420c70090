// The pylibnn ops for tensors the kernels do not read (sparse, quantized, nested): the
// dispatcher sends such tensors here instead of to the CPU / CUDA kernels. Without these
// registrations the caller would get the dispatcher's "Could not run 'pylibnn::...' with
// arguments from the 'SparseCPU' backend", which names neither the argument nor what is
// expected; here the shared checks raise their NotImplementedError ("... is not supported").
#include <torch/library.h>

#include "linear_checks.h"

namespace pylibnn {
namespace {

at::Tensor linear_forward_unsupported(const at::Tensor& input, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias) {
  check_linear_forward_args(input, weight, bias);
  TORCH_CHECK_NOT_IMPLEMENTED(false, "pylibnn.linear_forward: tensors of this kind (dispatch keys ",
                              input.key_set(), ") are not supported; expected dense (strided) tensors");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_unsupported(const at::Tensor& grad_output,
                                                                           const at::Tensor& input,
                                                                           const at::Tensor& weight,
                                                                           std::array<bool, 3>) {
  check_linear_backward_args(grad_output, input, weight);
  TORCH_CHECK_NOT_IMPLEMENTED(false, "pylibnn.linear_backward: tensors of this kind (dispatch keys ",
                              grad_output.key_set(), ") are not supported; expected dense (strided) tensors");
}

}  // namespace
}  // namespace pylibnn

#define PYLIBNN_REJECT(key)                                              \
  TORCH_LIBRARY_IMPL(pylibnn, key, m) {                                  \
    m.impl("linear_forward", &pylibnn::linear_forward_unsupported);      \
    m.impl("linear_backward", &pylibnn::linear_backward_unsupported);    \
  }

PYLIBNN_REJECT(SparseCPU)
PYLIBNN_REJECT(SparseCUDA)
PYLIBNN_REJECT(SparseCsrCPU)
PYLIBNN_REJECT(SparseCsrCUDA)
PYLIBNN_REJECT(QuantizedCPU)
PYLIBNN_REJECT(QuantizedCUDA)
PYLIBNN_REJECT(NestedTensorCPU)
PYLIBNN_REJECT(NestedTensorCUDA)
