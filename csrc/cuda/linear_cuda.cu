// The CUDA backend's single-layer ops (cuda_backend.h; checks and allocation are the op
// layer's, ops/op_layer.h): dispatch on dtype (float32, float64, bfloat16, float16) and run
// gemm<T> (gemm_launch.h; the kernel chosen by gemm_select.h) on the current stream of the
// input's device.
//   linear_forward   z  = x @ W^T + b,  y = act(z)  (z saved when asked): one GEMM whose
//                    epilogue stores both     x (M, K), W (N, K), b (N) -> y (M, N)
//   linear_backward  dz = dy * act'(z) (one elementwise pass into a temporary (M, N), as dz
//                    feeds two products; dz = dy without activation), then
//                    dx = dz @ W,  dW = dz^T @ x,  db = dz^T @ 1
// Each product is one gemm<T> over strided views of the operands (no transposed copies on the
// fast paths); db is a deterministic column-sum pass over dz (or rides along the basic SIMT dW
// GEMM under that override). Empty outputs launch nothing; K == 0 (or M == 0 for dW, db)
// still launches, to write the bias or zeros.
// bfloat16 / float16 run natively on the tensor cores (float32 accumulation, each output,
// preactivation included, rounded once; dz rounded to the dtype, as torch's autograd of
// act(F.linear) rounds its gradient); float32 takes TF32 when torch allows it (gemm_context).
// The launchers (gemm, column_sums, ...: gemm_launch.cuh) are instantiated here for the four
// types, so mlp_cuda.cu reuses them without compiling the GEMMs again.
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

void CudaBackend::linear_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                 Activation activation, const at::Tensor& output, const at::Tensor& preactivation) {
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const int64_t N = weight.size(0);
  TensorScratch scratch(input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "linear_forward_cuda", [&] {
    using T = KernelType<scalar_t>;
    const auto epilogue =
        GemmEpilogue<T>::forward(activation, preactivation.defined() ? mutable_data_of<T>(preactivation) : nullptr, N);
    gemm<T>(view_of<T>(input), view_of<T>(weight).transposed(), mutable_data_of<T>(output), N,
            bias.defined() ? data_of<T>(bias) : nullptr, bias.defined() ? bias.stride(0) : 0, nullptr, stream, epilogue,
            gemm_context<T>(scratch));
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_output.scalar_type(), "linear_backward_cuda", [&] {
    using T = KernelType<scalar_t>;
    if (activation != Activation::None) {
      activation_grad<T>(view_of<T>(grad_output), view_of<T>(preactivation), activation, mutable_data_of<T>(grad_z), N,
                         stream);
    }
    const View<T> dz = view_of<T>(grad_z);
    const GemmContext context = gemm_context<T>(scratch);
    if (grad_input.defined()) {
      gemm<T>(dz, view_of<T>(weight), mutable_data_of<T>(grad_input), K, nullptr, 0, nullptr, stream,
              GemmEpilogue<T>(), context);
    }
    weight_and_bias_gradients<T>(dz, view_of<T>(input), grad_weight.defined() ? mutable_data_of<T>(grad_weight) : nullptr,
                                 grad_bias.defined() ? mutable_data_of<T>(grad_bias) : nullptr, scratch, stream,
                                 context.allow_tf32);
  });
}

}  // namespace pylibnn::cuda
