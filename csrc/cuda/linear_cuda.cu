// CUDA implementations of the pylibnn ops: check arguments (the checks the CPU shares),
// allocate, dispatch on dtype (float32, float64), and launch the kernels of gemm_kernels.cuh
// on the current stream of the input's device.
//   linear_forward   y  = x @ W^T + b                          x (M, K), W (N, K), b (N) -> y (M, N)
//   linear_backward  dx = dy @ W,  dW = dy^T @ x,  db = dy^T @ 1          dy (M, N)
// Each product is one launch of the tiled GEMM over strided views of the operands (no
// transposed or contiguous copies). db rides along the dW GEMM when that runs; otherwise a
// deterministic column-sum kernel computes it. Empty outputs launch nothing; K == 0 (or
// M == 0 for dW, db) still launches, to write the bias or zeros.
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
#include "linear_checks.h"
#include "reduced_precision.h"

namespace pylibnn::cuda {
namespace {

// One tile shape for both dtypes: 64 x 64 x 16 slabs, a 4 x 4 micro-tile per thread,
// 256 threads; 8.25 KiB (float) or 16.5 KiB (double) of shared memory per block.
using Tile = GemmTile<64, 64, 16, 4, 4>;

// Grid limits of CUDA: x up to 2^31 - 1 blocks, y up to 65535.
constexpr int64_t kMaxGridX = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxGridY = 65535;

// Rows each column-sum block adds up (at least; more when M would need over kMaxGridY chunks).
constexpr int64_t kColumnSumsRowsPerChunk = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Element (i, j) is data[i * row_stride + j * col_stride] (like the CPU's MatrixView).
template <typename T>
struct View {
  const T* data;
  int64_t rows;
  int64_t cols;
  int64_t row_stride;
  int64_t col_stride;

  View transposed() const { return {data, cols, rows, col_stride, row_stride}; }
};

template <typename T>
View<T> view_of(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

// Whether consecutive threads should step the second index of a (first, second) operand
// when loading it: the one along which memory is contiguous (or closest to it).
bool load_along_second(int64_t first_stride, int64_t second_stride) {
  if (second_stride == 1) return true;
  if (first_stride == 1) return false;
  return second_stride <= first_stride;
}

// C (a.rows, b.cols) = a @ b [+ bias] [, a_row_sums = a @ 1]; C row-major with leading dim ldc.
template <typename T>
void gemm(const View<T>& a, const View<T>& b, T* c, int64_t ldc, const T* bias, int64_t bias_stride,
          T* a_row_sums, cudaStream_t stream) {
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

// out (m.cols) = sum over the rows of m, deterministically: each pass sums fixed chunks of
// rows into a (chunks, cols) workspace, which the next pass reduces the same way, until one
// chunk is left. The split depends on the shape only, never on the device.
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
  const int64_t K = input.size(1), N = weight.size(0);
  const auto options = grad_output.options();
  // Plain variables, not structured bindings: the dispatch lambda below captures them.
  at::Tensor grad_input, grad_weight, grad_bias;
  std::tie(grad_input, grad_weight, grad_bias) = empty_linear_gradients(grad_output, input, weight, output_mask);

  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "linear_backward_cuda", [&] {
    const View<scalar_t> dy = view_of<scalar_t>(grad_output);
    if (output_mask[0]) {
      gemm<scalar_t>(dy, view_of<scalar_t>(weight), grad_input.mutable_data_ptr<scalar_t>(), K, nullptr, 0,
                     nullptr, stream);
    }
    scalar_t* db = output_mask[2] ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr;
    // The dW GEMM (N x K tiles over M) sums the rows of dy^T as it goes; it launches only
    // when dW is non-empty, so K == 0 leaves db to the column-sum kernel.
    const bool db_in_gemm = output_mask[1] && N > 0 && K > 0;
    if (output_mask[1]) {
      gemm<scalar_t>(dy.transposed(), view_of<scalar_t>(input), grad_weight.mutable_data_ptr<scalar_t>(), K,
                     nullptr, 0, db_in_gemm ? db : nullptr, stream);
    }
    if (db && !db_in_gemm) column_sums<scalar_t>(dy, db, options, stream);
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace pylibnn::cuda

TORCH_LIBRARY_IMPL(pylibnn, CUDA, m) {
  m.impl("linear_forward", &pylibnn::cuda::linear_forward_cuda);
  m.impl("linear_backward", &pylibnn::cuda::linear_backward_cuda);
}
