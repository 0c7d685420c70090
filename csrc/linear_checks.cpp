// Shared argument validation for linear_forward / linear_backward (see linear_checks.h).
#include "linear_checks.h"

#include <c10/util/Exception.h>

namespace pylibnn {
namespace {

// The floating types the ops take: float32 and float64 natively, bfloat16 and float16
// computed in float32 (see linear_cpu.cpp / linear_cuda.cu).
bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf;
}

void check_tensor(const char* op, const char* name, const at::Tensor& t, int64_t expected_dim,
                  const char* expected_shape) {
  TORCH_CHECK(t.defined(), op, ": expected ", name, " to be a tensor, but got an undefined tensor");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, " with layout ", t.layout(),
              " is not supported; expected a dense (strided) tensor");
  TORCH_CHECK(!t.is_quantized(), op, ": quantized ", name, " is not supported");
  TORCH_CHECK(t.dim() == expected_dim, op, ": expected ", name, " to be ", expected_dim, "-D ",
              expected_shape, ", but got a ", t.dim(), "-D tensor of shape ", t.sizes());
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), op, ": expected ", name,
              " to have dtype float32, float64, bfloat16 or float16, but got ", t.scalar_type());
}

void check_same_dtype_and_device(const char* op, const at::Tensor& reference, const char* reference_name,
                                 const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == reference.scalar_type(), op, ": expected ", name, " to have the dtype of ",
              reference_name, " (", reference.scalar_type(), "), but got ", t.scalar_type());
  TORCH_CHECK(t.device() == reference.device(), op, ": expected ", name, " to be on the device of ",
              reference_name, " (", reference.device(), "), but got ", t.device());
}

}  // namespace

void check_linear_forward_args(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "pylibnn.linear_forward";
  check_tensor(op, "input", input, 2, "(M, K)");
  check_tensor(op, "weight", weight, 2, "(N, K)");
  check_same_dtype_and_device(op, input, "input", weight, "weight");
  TORCH_CHECK(input.size(1) == weight.size(1), op, ": expected input.size(1) to equal weight.size(1) (K = ",
              weight.size(1), "), but got input of shape ", input.sizes(), " and weight of shape ",
              weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_tensor(op, "bias", *bias, 1, "(N)");
    check_same_dtype_and_device(op, input, "input", *bias, "bias");
    TORCH_CHECK(bias->size(0) == weight.size(0), op, ": expected bias of shape [", weight.size(0),
                "] (N = weight.size(0)), but got ", bias->sizes());
  }
}

void check_linear_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight) {
  constexpr const char* op = "pylibnn.linear_backward";
  check_tensor(op, "grad_output", grad_output, 2, "(M, N)");
  check_tensor(op, "input", input, 2, "(M, K)");
  check_tensor(op, "weight", weight, 2, "(N, K)");
  check_same_dtype_and_device(op, grad_output, "grad_output", input, "input");
  check_same_dtype_and_device(op, grad_output, "grad_output", weight, "weight");
  TORCH_CHECK(input.size(1) == weight.size(1), op, ": expected input.size(1) to equal weight.size(1) (K = ",
              weight.size(1), "), but got input of shape ", input.sizes(), " and weight of shape ",
              weight.sizes());
  TORCH_CHECK(grad_output.size(0) == input.size(0) && grad_output.size(1) == weight.size(0), op,
              ": expected grad_output of shape [", input.size(0), ", ", weight.size(0),
              "] (M = input.size(0), N = weight.size(0)), but got ", grad_output.sizes());
}

}  // namespace pylibnn
