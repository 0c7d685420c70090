// The CUDA backend's single-layer ops (cuda_backend.h; checks and allocation are the op
// layer's, ops/op_layer.h): dispatch on dtype (float32, float64) and launch the kernels of
// gemm_kernels.cuh on the current stream of the input's device.
//   linear_forward   z  = x @ W^T + b,  y = act(z)  (z saved when asked): one GEMM whose
//                    epilogue stores both     x (M, K), W (N, K), b (N) -> y (M, N)
//   linear_backward  dz = dy * act'(z) (one elementwise pass into a temporary (M, N), as dz
//                    feeds two products; dz = dy without activation), then
//                    dx = dz @ W,  dW = dz^T @ x,  db = dz^T @ 1
// Each product is one launch of the tiled GEMM over strided views of the operands (no
// transposed or contiguous copies). db rides along the dW GEMM when that runs; otherwise a
// deterministic column-sum kernel computes it. Empty outputs launch nothing; K == 0 (or
// M == 0 for dW, db) still launches, to write the bias or zeros.
// bfloat16 / float16 run in float32 (widened and rounded by the op layer).
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

#include "cuda/cuda_backend.h"
#include "cuda/gemm_launch.cuh"
#include "cuda/op_backend.h"

namespace pylibnn::cuda {

#define PYLIBNN_INSTANTIATE_LAUNCHERS(T)                                                                         \
  template void gemm<T>(const View<T>&, const View<T>&, T*, int64_t, const T*, int64_t, T*, cudaStream_t,       \
                        const GemmEpilogue<T>&);                                                                 \
  template void column_sums<T>(View<T>, T*, Scratch&, cudaStream_t);                                             \
  template void weight_and_bias_gradients<T>(const View<T>&, const View<T>&, T*, T*, Scratch&, cudaStream_t);    \
  template void activation_grad<T>(const View<T>&, const View<T>&, Activation, T*, int64_t, cudaStream_t);
PYLIBNN_INSTANTIATE_LAUNCHERS(float)
PYLIBNN_INSTANTIATE_LAUNCHERS(double)
#undef PYLIBNN_INSTANTIATE_LAUNCHERS

void CudaBackend::linear_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                 Activation activation, const at::Tensor& output, const at::Tensor& preactivation) {
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const int64_t N = weight.size(0);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "linear_forward_cuda", [&] {
    const auto epilogue = GemmEpilogue<scalar_t>::forward(
        activation, preactivation.defined() ? preactivation.mutable_data_ptr<scalar_t>() : nullptr, N);
    gemm<scalar_t>(view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                   output.mutable_data_ptr<scalar_t>(), N, bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                   bias.defined() ? bias.stride(0) : 0, nullptr, stream, epilogue);
  });
}

void CudaBackend::linear_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                  const at::Tensor& preactivation, Activation activation,
                                  const at::Tensor& grad_input, const at::Tensor& grad_weight,
                                  const at::Tensor& grad_bias) {
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const int64_t M = grad_output.size(0), N = grad_output.size(1), K = input.size(1);
  TensorScratch scratch(grad_output.options());
  // dz is read by up to three products; one elementwise pass makes it once.
  const at::Tensor grad_z = activation == Activation::None ? grad_output : at::empty({M, N}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "linear_backward_cuda", [&] {
    if (activation != Activation::None) {
      activation_grad<scalar_t>(view_of<scalar_t>(grad_output), view_of<scalar_t>(preactivation), activation,
                                grad_z.mutable_data_ptr<scalar_t>(), N, stream);
    }
    const View<scalar_t> dz = view_of<scalar_t>(grad_z);
    if (grad_input.defined()) {
      gemm<scalar_t>(dz, view_of<scalar_t>(weight), grad_input.mutable_data_ptr<scalar_t>(), K, nullptr, 0, nullptr,
                     stream);
    }
    weight_and_bias_gradients<scalar_t>(dz, view_of<scalar_t>(input),
                                        grad_weight.defined() ? grad_weight.mutable_data_ptr<scalar_t>() : nullptr,
                                        grad_bias.defined() ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr,
                                        scratch, stream);
  });
}

}  // namespace pylibnn::cuda
