// CPU implementations of the pylibnn ops: check arguments, allocate, dispatch on dtype,
// and express each product of the dense layer as one call of the GEMM engine (gemm.h).
//   linear_forward   y  = x @ W^T + b                  x (M, K), W (N, K), b (N) -> y (M, N)
//   linear_backward  dx = dy @ W,  dW = dy^T @ x,  db = dy^T @ 1      dy (M, N)
//   linear_act_forward   z = x @ W^T + b, y = act(z): the activation is the GEMM's epilogue,
//                        applied per tile as the tile is stored (gemm.h)
//   linear_act_backward  dz = dy * act'(z), then linear_backward's products on dz. dz is
//                        computed once, in one vectorized pass, and read by both products:
//                        applying act' inside the packing of each product would evaluate the
//                        transcendentals (gelu, silu, tanh) twice and pack grad_weight's
//                        operand column by column.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/cpu_isa.h"
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

// The three products of the backward on an already checked float32 / float64 grad_output.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_products(const at::Tensor& grad_output, const at::Tensor& input,
                                                                 const at::Tensor& weight,
                                                                 std::array<bool, 3> output_mask) {
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_cpu(const at::Tensor& grad_output,
                                                                   const at::Tensor& input,
                                                                   const at::Tensor& weight,
                                                                   std::array<bool, 3> output_mask) {
  check_linear_backward_args(grad_output, input, weight);
  if (is_reduced_precision(grad_output.scalar_type())) {
    return backward_in_float32(linear_backward_cpu, grad_output, input, weight, output_mask);
  }
  return backward_products(grad_output, input, weight, output_mask);
}

std::tuple<at::Tensor, at::Tensor> linear_act_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                                          const std::optional<at::Tensor>& bias,
                                                          c10::string_view activation, bool save_preactivation) {
  check_linear_act_forward_args(input, weight, bias);
  const Activation act = activation_from_name("pylibnn.linear_act_forward", activation);
  if (is_reduced_precision(input.scalar_type())) {
    return act_forward_in_float32(linear_act_forward_cpu, input, weight, bias, activation, save_preactivation);
  }
  const int64_t M = input.size(0), N = weight.size(0);
  at::Tensor output = at::empty({M, N}, input.options());
  at::Tensor preactivation = at::empty(save_preactivation ? at::IntArrayRef{M, N} : at::IntArrayRef{0}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "linear_act_forward_cpu", [&] {
    GemmArgs<scalar_t> args{view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                            output.mutable_data_ptr<scalar_t>(), N};
    if (bias.has_value() && bias->defined()) {
      args.bias = bias->const_data_ptr<scalar_t>();
      args.bias_stride = bias->stride(0);
    }
    args.activation = act;
    if (save_preactivation) {
      args.preactivation = preactivation.mutable_data_ptr<scalar_t>();
      args.ld_preactivation = N;
    }
    gemm(args);
  });
  return {output, preactivation};
}

// grad_output * act'(preactivation), (M, N) contiguous, rows split over the threads.
at::Tensor activation_gradient(Activation act, const at::Tensor& grad_output, const at::Tensor& preactivation) {
  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor z = preactivation.contiguous();
  at::Tensor grad_z = at::empty(grad.sizes(), grad.options());
  const int64_t M = grad.size(0), N = grad.size(1);
  if (grad_z.numel() == 0) return grad_z;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "linear_act_backward_cpu", [&] {
    const ActivationKernels<scalar_t>& activation = activation_kernels<scalar_t>(fused_microkernels());
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    scalar_t* out = grad_z.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (32 * 1024) / std::max<int64_t>(N, 1));
    at::parallel_for(0, M, grain, [&](int64_t begin, int64_t end) {
      activation.gradient(act, g + begin * N, N, zp + begin * N, N, nullptr, 0, out + begin * N, N, end - begin, N);
    });
  });
  return grad_z;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_act_backward_cpu(const at::Tensor& grad_output,
                                                                       const at::Tensor& input,
                                                                       const at::Tensor& weight,
                                                                       const at::Tensor& preactivation,
                                                                       c10::string_view activation,
                                                                       std::array<bool, 3> output_mask) {
  check_linear_act_backward_args(grad_output, input, weight, preactivation);
  const Activation act = activation_from_name("pylibnn.linear_act_backward", activation);
  if (is_reduced_precision(grad_output.scalar_type())) {
    return act_backward_in_float32(linear_act_backward_cpu, grad_output, input, weight, preactivation, activation,
                                   output_mask);
  }
  const at::Tensor grad_z = act == Activation::None ? grad_output : activation_gradient(act, grad_output, preactivation);
  return backward_products(grad_z, input, weight, output_mask);
}

}  // namespace
}  // namespace pylibnn::cpu

TORCH_LIBRARY_IMPL(pylibnn, CPU, m) {
  m.impl("linear_forward", &pylibnn::cpu::linear_forward_cpu);
  m.impl("linear_backward", &pylibnn::cpu::linear_backward_cpu);
  m.impl("linear_act_forward", &pylibnn::cpu::linear_act_forward_cpu);
  m.impl("linear_act_backward", &pylibnn::cpu::linear_act_backward_cpu);
}
