// CPU implementations of the pylibnn ops: check arguments, allocate, dispatch on dtype,
// and express each product of the dense layer as one call of the GEMM engine (gemm.h).
//   linear_forward   y  = x @ W^T + b                  x (M, K), W (N, K), b (N) -> y (M, N)
//   linear_backward  dx = dy @ W,  dW = dy^T @ x,  db = dy^T @ 1      dy (M, N)
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/gemm.h"
#include "linear_checks.h"
#include "reduced_precision.h"

namespace pylibnn::cpu {
namespace {

template <typename T>
MatrixView<T> view_of(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

at::Tensor linear_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias) {
  check_linear_forward_args(input, weight, bias);
  if (is_reduced_precision(input.scalar_type())) return forward_in_float32(linear_forward_cpu, input, weight, bias);
  const bool has_bias = bias.has_value() && bias->defined();
  at::Tensor output = at::empty({input.size(0), weight.size(0)}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "linear_forward_cpu", [&] {
    GemmArgs<scalar_t> args{view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                            output.mutable_data_ptr<scalar_t>(), output.stride(0)};
    if (has_bias) {
      args.bias = bias->const_data_ptr<scalar_t>();
      args.bias_stride = bias->stride(0);
    }
    gemm(args);
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_cpu(const at::Tensor& grad_output,
                                                                   const at::Tensor& input,
                                                                   const at::Tensor& weight,
                                                                   std::array<bool, 3> output_mask) {
  check_linear_backward_args(grad_output, input, weight);
  if (is_reduced_precision(grad_output.scalar_type())) {
    return backward_in_float32(linear_backward_cpu, grad_output, input, weight, output_mask);
  }
  const int64_t K = input.size(1);
  // Plain variables, not structured bindings: the dispatch lambda below captures them.
  at::Tensor grad_input, grad_weight, grad_bias;
  std::tie(grad_input, grad_weight, grad_bias) = empty_linear_gradients(grad_output, input, weight, output_mask);

  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "linear_backward_cpu", [&] {
    const MatrixView<scalar_t> dy = view_of<scalar_t>(grad_output);
    if (output_mask[0]) {
      gemm(GemmArgs<scalar_t>{dy, view_of<scalar_t>(weight), grad_input.mutable_data_ptr<scalar_t>(), K});
    }
    scalar_t* db = output_mask[2] ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr;
    if (output_mask[1]) {
      GemmArgs<scalar_t> args{dy.transposed(), view_of<scalar_t>(input), grad_weight.mutable_data_ptr<scalar_t>(), K};
      args.a_row_sums = db;  // grad_bias from the same pass over grad_output
      gemm(args);
    } else if (db) {
      row_sums(dy.transposed(), db);
    }
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace pylibnn::cpu

TORCH_LIBRARY_IMPL(pylibnn, CPU, m) {
  m.impl("linear_forward", &pylibnn::cpu::linear_forward_cpu);
  m.impl("linear_backward", &pylibnn::cpu::linear_backward_cpu);
}
