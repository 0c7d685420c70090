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
// The launchers (gemm, column_sums, ...) are declared in gemm_launch.h and instantiated
// here for float and double, so mlp_cuda.cu reuses them without compiling the GEMM again.
//
// Only lean ATen/c10 headers here: torch/extension.h would cost minutes of nvcc time.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/gemm_kernels.cuh"
#include "cuda/gemm_launch.h"
#include "linear_checks.h"
#include "reduced_precision.h"

namespace pylibnn::cuda {
namespace {

// One tile shape for both dtypes: 64 x 64 x 16 slabs, a 4 x 4 micro-tile per thread,
// 256 threads; 8.25 KiB (float) or 16.5 KiB (double) of shared memory per block.
using Tile = GemmTile<64, 64, 16, 4, 4>;

// Rows each column-sum block adds up (at least; more when M would need over kMaxGridY chunks).
constexpr int64_t kColumnSumsRowsPerChunk = 256;

// Threads per block of the elementwise kernel, and a cap on its grid (it strides over the rest).
constexpr int kElementwiseThreads = 256;
constexpr int64_t kElementwiseMaxBlocks = 65536;

// Whether consecutive threads should step the second index of a (first, second) operand
// when loading it: the one along which memory is contiguous (or closest to it).
bool load_along_second(int64_t first_stride, int64_t second_stride) {
  if (second_stride == 1) return true;
  if (first_stride == 1) return false;
  return second_stride <= first_stride;
}

}  // namespace

template <typename T>
void gemm(const View<T>& a, const View<T>& b, T* c, int64_t ldc, const T* bias, int64_t bias_stride,
          T* a_row_sums, cudaStream_t stream, const GemmEpilogue<T>& epilogue) {
  GemmParams<T> p{};
  p.a = a.data;
  p.a_row_stride = a.row_stride;
  p.a_col_stride = a.col_stride;
  p.b = b.data;
  p.b_row_stride = b.row_stride;
  p.b_col_stride = b.col_stride;
  p.c = c;
  p.ldc = ldc;
  p.bias = bias;
  p.bias_stride = bias_stride;
  p.a_row_sums = a_row_sums;
  p.activation = epilogue.activation;
  p.preactivation = epilogue.preactivation;
  p.ld_preactivation = epilogue.ld_preactivation;
  p.derivative_z = epilogue.derivative_z;
  p.derivative_y = epilogue.derivative_y;
  p.ld_derivative = epilogue.ld_derivative;
  p.M = a.rows;
  p.N = b.cols;
  p.K = a.cols;
  p.a_load_along_k = load_along_second(a.row_stride, a.col_stride);
  p.b_load_along_n = load_along_second(b.row_stride, b.col_stride);
  if (p.M == 0 || p.N == 0) return;  // empty C (and row sums): nothing to launch

  const int64_t row_tiles = ceil_div(p.M, Tile::BM);
  const int64_t col_tiles = ceil_div(p.N, Tile::BN);
  p.row_tiles_on_x = row_tiles >= col_tiles;
  const int64_t grid_x = std::max(row_tiles, col_tiles);
  const int64_t grid_y = std::min(row_tiles, col_tiles);
  TORCH_CHECK(grid_x <= kMaxGridX && grid_y <= kMaxGridY, "pylibnn: a GEMM of ", p.M, " x ", p.N,
              " needs a grid of ", grid_x, " x ", grid_y, " blocks, over the CUDA limit of ", kMaxGridX,
              " x ", kMaxGridY);
  gemm_tiled_kernel<T, Tile><<<dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y)),
                               Tile::THREADS, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Each pass sums fixed chunks of rows into a (chunks, cols) workspace, which the next pass
// reduces the same way, until one chunk is left. The split depends on the shape only,
// never on the device.
template <typename T>
void column_sums(View<T> m, T* out, const at::TensorOptions& options, cudaStream_t stream) {
  if (m.cols == 0) return;
  const int64_t col_blocks = ceil_div(m.cols, COLUMN_SUMS_COLS);
  TORCH_CHECK(col_blocks <= kMaxGridX, "pylibnn: a column sum over ", m.cols,
              " columns needs more than ", kMaxGridX, " blocks");
  // Holds the partial sums the next pass reads; replacing it after that pass is enqueued is
  // safe: the caching allocator reuses the memory only in stream order.
  at::Tensor workspace;
  for (;;) {
    const int64_t rows_per_chunk = std::max(kColumnSumsRowsPerChunk, ceil_div(m.rows, kMaxGridY));
    const int64_t chunks = std::max<int64_t>(1, ceil_div(m.rows, rows_per_chunk));  // rows == 0: one chunk of zeros
    at::Tensor partial;
    T* dest = out;
    if (chunks > 1) {
      partial = at::empty({chunks, m.cols}, options);
      dest = partial.mutable_data_ptr<T>();
    }
    column_sums_kernel<T><<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)),
                            dim3(COLUMN_SUMS_COLS, COLUMN_SUMS_ROW_GROUPS), 0, stream>>>(
        m.data, m.rows, m.cols, m.row_stride, m.col_stride, rows_per_chunk, dest);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (chunks == 1) return;
    m = View<T>{dest, chunks, m.cols, m.cols, 1};
    workspace = std::move(partial);
  }
}

template <typename T>
void weight_and_bias_gradients(const View<T>& dz, const View<T>& x, T* grad_weight, T* grad_bias,
                               const at::TensorOptions& options, cudaStream_t stream) {
  const int64_t N = dz.cols, K = x.cols;
  // The dW GEMM (N x K tiles over M) sums the rows of dz^T as it goes; it launches only
  // when dW is non-empty, so K == 0 leaves db to the column-sum kernel.
  const bool db_in_gemm = grad_weight != nullptr && grad_bias != nullptr && N > 0 && K > 0;
  if (grad_weight != nullptr) {
    gemm<T>(dz.transposed(), x, grad_weight, K, nullptr, 0, db_in_gemm ? grad_bias : nullptr, stream);
  }
  if (grad_bias != nullptr && !db_in_gemm) column_sums<T>(dz, grad_bias, options, stream);
}

template <typename T>
void activation_grad(const View<T>& grad_y, const View<T>& z, Activation activation, T* grad_z, int64_t ld_grad_z,
                     cudaStream_t stream) {
  const int64_t total = grad_y.rows * grad_y.cols;
  if (total == 0) return;
  const int64_t blocks = std::min(ceil_div(total, kElementwiseThreads), kElementwiseMaxBlocks);
  activation_grad_kernel<T><<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, stream>>>(
      grad_y.data, grad_y.row_stride, grad_y.col_stride, z.data, z.row_stride, z.col_stride, grad_y.rows,
      grad_y.cols, activation, grad_z, ld_grad_z);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define PYLIBNN_INSTANTIATE_LAUNCHERS(T)                                                                      \
  template void gemm<T>(const View<T>&, const View<T>&, T*, int64_t, const T*, int64_t, T*, cudaStream_t,    \
                        const GemmEpilogue<T>&);                                                              \
  template void column_sums<T>(View<T>, T*, const at::TensorOptions&, cudaStream_t);                          \
  template void weight_and_bias_gradients<T>(const View<T>&, const View<T>&, T*, T*, const at::TensorOptions&, \
                                             cudaStream_t);                                                   \
  template void activation_grad<T>(const View<T>&, const View<T>&, Activation, T*, int64_t, cudaStream_t);
PYLIBNN_INSTANTIATE_LAUNCHERS(float)
PYLIBNN_INSTANTIATE_LAUNCHERS(double)
#undef PYLIBNN_INSTANTIATE_LAUNCHERS

namespace {

at::Tensor linear_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias) {
  check_linear_forward_args(input, weight, bias);
  if (is_reduced_precision(input.scalar_type())) return forward_in_float32(linear_forward_cuda, input, weight, bias);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool has_bias = bias.has_value() && bias->defined();
  const int64_t M = input.size(0), N = weight.size(0);
  at::Tensor output = at::empty({M, N}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "linear_forward_cuda", [&] {
    gemm<scalar_t>(view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                   output.mutable_data_ptr<scalar_t>(), N, has_bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                   has_bias ? bias->stride(0) : 0, nullptr, stream);
  });
  return output;
}

// The products of linear_backward from the gradient dz of the pre-activation, into the
// tensors of empty_linear_gradients (unrequested ones are (0,) and untouched).
template <typename T>
void linear_backward_products(const View<T>& dz, const at::Tensor& input, const at::Tensor& weight,
                              std::array<bool, 3> output_mask, at::Tensor& grad_input, at::Tensor& grad_weight,
                              at::Tensor& grad_bias, const at::TensorOptions& options, cudaStream_t stream) {
  const int64_t K = input.size(1);
  if (output_mask[0]) {
    gemm<T>(dz, view_of<T>(weight), grad_input.mutable_data_ptr<T>(), K, nullptr, 0, nullptr, stream);
  }
  weight_and_bias_gradients<T>(dz, view_of<T>(input), output_mask[1] ? grad_weight.mutable_data_ptr<T>() : nullptr,
                               output_mask[2] ? grad_bias.mutable_data_ptr<T>() : nullptr, options, stream);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_cuda(const at::Tensor& grad_output,
                                                                    const at::Tensor& input,
                                                                    const at::Tensor& weight,
                                                                    std::array<bool, 3> output_mask) {
  check_linear_backward_args(grad_output, input, weight);
  if (is_reduced_precision(grad_output.scalar_type())) {
    return backward_in_float32(linear_backward_cuda, grad_output, input, weight, output_mask);
  }
  const c10::cuda::CUDAGuard device_guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Plain variables, not structured bindings: the dispatch lambda below captures them.
  at::Tensor grad_input, grad_weight, grad_bias;
  std::tie(grad_input, grad_weight, grad_bias) = empty_linear_gradients(grad_output, input, weight, output_mask);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "linear_backward_cuda", [&] {
    linear_backward_products<scalar_t>(view_of<scalar_t>(grad_output), input, weight, output_mask, grad_input,
                                       grad_weight, grad_bias, grad_output.options(), stream);
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
  const c10::cuda::CUDAGuard device_guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool has_bias = bias.has_value() && bias->defined();
  const int64_t M = input.size(0), N = weight.size(0);
  at::Tensor output = at::empty({M, N}, input.options());
  at::Tensor preactivation = save_preactivation ? at::empty({M, N}, input.options()) : at::empty({0}, input.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "linear_act_forward_cuda", [&] {
    const auto epilogue = GemmEpilogue<scalar_t>::forward(
        activation, save_preactivation ? preactivation.mutable_data_ptr<scalar_t>() : nullptr, N);
    gemm<scalar_t>(view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                   output.mutable_data_ptr<scalar_t>(), N, has_bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                   has_bias ? bias->stride(0) : 0, nullptr, stream, epilogue);
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
  const c10::cuda::CUDAGuard device_guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t M = grad_output.size(0), N = grad_output.size(1);
  at::Tensor grad_input, grad_weight, grad_bias;
  std::tie(grad_input, grad_weight, grad_bias) = empty_linear_gradients(grad_output, input, weight, output_mask);
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) return {grad_input, grad_weight, grad_bias};
  // dz is read by up to three products; one elementwise pass makes it once.
  at::Tensor grad_z = at::empty({M, N}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "linear_act_backward_cuda", [&] {
    activation_grad<scalar_t>(view_of<scalar_t>(grad_output), view_of<scalar_t>(preactivation), activation,
                              grad_z.mutable_data_ptr<scalar_t>(), N, stream);
    linear_backward_products<scalar_t>(view_of<scalar_t>(grad_z), input, weight, output_mask, grad_input,
                                       grad_weight, grad_bias, grad_output.options(), stream);
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace pylibnn::cuda

TORCH_LIBRARY_IMPL(pylibnn, CUDA, m) {
  m.impl("linear_forward", &pylibnn::cuda::linear_forward_cuda);
  m.impl("linear_backward", &pylibnn::cuda::linear_backward_cuda);
  m.impl("linear_act_forward", &pylibnn::cuda::linear_act_forward_cuda);
  m.impl("linear_act_backward", &pylibnn::cuda::linear_act_backward_cuda);
}
