// CUDA implementations of the pylibnn ops: check arguments (the checks the CPU shares),
// allocate, dispatch on dtype (float32, float64), and launch the kernels of gemm_kernels.cuh
// on the current stream of the input's device.
//   linear_forward       y  = x @ W^T + b                      x (M, K), W (N, K), b (N) -> y (M, N)
//   linear_backward      dx = dy @ W,  dW = dy^T @ x,  db = dy^T @ 1          dy (M, N)
//   linear_act_forward   z  = x @ W^T + b,  y = act(z)  (z saved when asked): one GEMM whose
//                        epilogue stores both
//   linear_act_backward  dz = dy * act'(z) (one elementwise pass into a temporary (M, N),
//                        as dz feeds two products), then linear_backward's products on dz
// Each product is one launch of the tiled GEMM over strided views of the operands (no
// transposed or contiguous copies). db rides along the dW GEMM when that runs; otherwise a
// deterministic column-sum kernel computes it. Empty outputs launch nothing; K == 0 (or
// M == 0 for dW, db) still launches, to write the bias or zeros.
// bfloat16 / float16 run in float32 (reduced_precision.h); the fused ops round every
// output, preactivation included, to the input dtype.
// The launchers (gemm, column_sums, ...: gemm_launch.cuh) are instantiated here for float
// and double, so mlp_cuda.cu reuses them without compiling the GEMM again.
// The same file is the emulated CUDA backend when a host compiler builds it (op_backend.h).
//
// Only lean ATen/c10 headers here: torch/extension.h would cost minutes of nvcc time.
#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cuda/gemm_launch.cuh"
#include "cuda/op_backend.h"
#include "linear_checks.h"
#include "reduced_precision.h"

namespace pylibnn::cuda {

#define PYLIBNN_INSTANTIATE_LAUNCHERS(T)                                                                         \
  template void gemm<T>(const View<T>&, const View<T>&, T*, int64_t, const T*, int64_t, T*, cudaStream_t,       \
                        const GemmEpilogue<T>&, const GemmContext&);                                             \
  template void column_sums<T>(View<T>, T*, Scratch&, cudaStream_t);                                             \
  template void weight_and_bias_gradients<T>(const View<T>&, const View<T>&, T*, T*, Scratch&, cudaStream_t,     \
                                             bool);                                                              \
  template void activation_grad<T>(const View<T>&, const View<T>&, Activation, T*, int64_t, cudaStream_t);
PYLIBNN_INSTANTIATE_LAUNCHERS(float)
PYLIBNN_INSTANTIATE_LAUNCHERS(double)
PYLIBNN_INSTANTIATE_LAUNCHERS(bfloat16)
PYLIBNN_INSTANTIATE_LAUNCHERS(float16)
#undef PYLIBNN_INSTANTIATE_LAUNCHERS

namespace {

at::Tensor linear_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias) {
  check_linear_forward_args(input, weight, bias);
  if (is_reduced_precision(input.scalar_type())) return forward_in_float32(linear_forward_cuda, input, weight, bias);
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const bool has_bias = bias.has_value() && bias->defined();
  const int64_t M = input.size(0), N = weight.size(0);
  at::Tensor output = at::empty({M, N}, input.options());
  TensorScratch scratch(input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "linear_forward_cuda", [&] {
    gemm<scalar_t>(view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                   output.mutable_data_ptr<scalar_t>(), N, has_bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                   has_bias ? bias->stride(0) : 0, nullptr, stream, GemmEpilogue<scalar_t>(),
                   gemm_context<scalar_t>(scratch));
  });
  return output;
}

// The products of linear_backward from the gradient dz of the pre-activation, into the
// tensors of empty_linear_gradients (unrequested ones are (0,) and untouched).
template <typename T>
void linear_backward_products(const View<T>& dz, const at::Tensor& input, const at::Tensor& weight,
                              std::array<bool, 3> output_mask, at::Tensor& grad_input, at::Tensor& grad_weight,
                              at::Tensor& grad_bias, Scratch& scratch, cudaStream_t stream) {
  const int64_t K = input.size(1);
  const GemmContext context = gemm_context<T>(scratch);
  if (output_mask[0]) {
    gemm<T>(dz, view_of<T>(weight), grad_input.mutable_data_ptr<T>(), K, nullptr, 0, nullptr, stream,
            GemmEpilogue<T>(), context);
  }
  weight_and_bias_gradients<T>(dz, view_of<T>(input), output_mask[1] ? grad_weight.mutable_data_ptr<T>() : nullptr,
                               output_mask[2] ? grad_bias.mutable_data_ptr<T>() : nullptr, scratch, stream,
                               context.allow_tf32);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_cuda(const at::Tensor& grad_output,
                                                                    const at::Tensor& input,
                                                                    const at::Tensor& weight,
                                                                    std::array<bool, 3> output_mask) {
  check_linear_backward_args(grad_output, input, weight);
  if (is_reduced_precision(grad_output.scalar_type())) {
    return backward_in_float32(linear_backward_cuda, grad_output, input, weight, output_mask);
  }
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  // Plain variables, not structured bindings: the dispatch lambda below captures them.
  at::Tensor grad_input, grad_weight, grad_bias;
  std::tie(grad_input, grad_weight, grad_bias) = empty_linear_gradients(grad_output, input, weight, output_mask);
  TensorScratch scratch(grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "linear_backward_cuda", [&] {
    linear_backward_products<scalar_t>(view_of<scalar_t>(grad_output), input, weight, output_mask, grad_input,
                                       grad_weight, grad_bias, scratch, stream);
  });
  return {grad_input, grad_weight, grad_bias};
}

std::tuple<at::Tensor, at::Tensor> linear_act_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias,
                                                           c10::string_view activation_name, bool save_preactivation) {
  check_linear_act_forward_args(input, weight, bias);
  const Activation activation = activation_from_name("pylibnn.linear_act_forward", activation_name);
  const at::ScalarType dtype = input.scalar_type();
  if (is_reduced_precision(dtype)) {
    return act_forward_in_float32(linear_act_forward_cuda, input, weight, bias, activation_name, save_preactivation);
  }
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const bool has_bias = bias.has_value() && bias->defined();
  const int64_t M = input.size(0), N = weight.size(0);
  at::Tensor output = at::empty({M, N}, input.options());
  at::Tensor preactivation = save_preactivation ? at::empty({M, N}, input.options()) : at::empty({0}, input.options());
  TensorScratch scratch(input.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "linear_act_forward_cuda", [&] {
    const auto epilogue = GemmEpilogue<scalar_t>::forward(
        activation, save_preactivation ? preactivation.mutable_data_ptr<scalar_t>() : nullptr, N);
    gemm<scalar_t>(view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                   output.mutable_data_ptr<scalar_t>(), N, has_bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                   has_bias ? bias->stride(0) : 0, nullptr, stream, epilogue, gemm_context<scalar_t>(scratch));
  });
  return {output, preactivation};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_act_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& preactivation, c10::string_view activation_name, std::array<bool, 3> output_mask) {
  check_linear_act_backward_args(grad_output, input, weight, preactivation);
  const Activation activation = activation_from_name("pylibnn.linear_act_backward", activation_name);
  const at::ScalarType dtype = grad_output.scalar_type();
  if (is_reduced_precision(dtype)) {
    return act_backward_in_float32(linear_act_backward_cuda, grad_output, input, weight, preactivation,
                                   activation_name, output_mask);
  }
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const int64_t M = grad_output.size(0), N = grad_output.size(1);
  at::Tensor grad_input, grad_weight, grad_bias;
  std::tie(grad_input, grad_weight, grad_bias) = empty_linear_gradients(grad_output, input, weight, output_mask);
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) return {grad_input, grad_weight, grad_bias};
  // dz is read by up to three products; one elementwise pass makes it once.
  at::Tensor grad_z = at::empty({M, N}, grad_output.options());
  TensorScratch scratch(grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "linear_act_backward_cuda", [&] {
    activation_grad<scalar_t>(view_of<scalar_t>(grad_output), view_of<scalar_t>(preactivation), activation,
                              grad_z.mutable_data_ptr<scalar_t>(), N, stream);
    linear_backward_products<scalar_t>(view_of<scalar_t>(grad_z), input, weight, output_mask, grad_input,
                                       grad_weight, grad_bias, scratch, stream);
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace pylibnn::cuda

PYLIBNN_CUDA_BACKEND_IMPL(m) {
  m.impl("linear_forward", &pylibnn::cuda::linear_forward_cuda);
  m.impl("linear_backward", &pylibnn::cuda::linear_backward_cuda);
  m.impl("linear_act_forward", &pylibnn::cuda::linear_act_forward_cuda);
  m.impl("linear_act_backward", &pylibnn::cuda::linear_act_backward_cuda);
}
