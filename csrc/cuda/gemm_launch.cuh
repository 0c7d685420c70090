// Definitions of the launchers declared in gemm_launch.h: tile and grid choice, the chunking
// of the column sums, and one launch per kernel through launch.h. Included by linear_cuda.cu
// (which instantiates them for float and double) and by the kernel tests.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/gemm_kernels.cuh"
#include "cuda/gemm_launch.h"
#include "cuda/launch.h"

namespace pylibnn::cuda {

// One tile shape for both dtypes: 64 x 64 x 16 slabs, a 4 x 4 micro-tile per thread,
// 256 threads; 8.25 KiB (float) or 16.5 KiB (double) of shared memory per block.
using GemmTileShape = GemmTile<64, 64, 16, 4, 4>;

// Rows each column-sum block adds up (at least; more when M would need over kMaxGridY chunks).
constexpr int64_t kColumnSumsRowsPerChunk = 256;

// Threads per block of the elementwise kernel, and a cap on its grid (it strides over the rest).
constexpr int kElementwiseThreads = 256;
constexpr int64_t kElementwiseMaxBlocks = 65536;

// Whether consecutive threads should step the second index of a (first, second) operand
// when loading it: the one along which memory is contiguous (or closest to it).
inline bool load_along_second(int64_t first_stride, int64_t second_stride) {
  if (second_stride == 1) return true;
  if (first_stride == 1) return false;
  return second_stride <= first_stride;
}

template <typename T>
void gemm(const View<T>& a, const View<T>& b, T* c, int64_t ldc, const T* bias, int64_t bias_stride,
          T* a_row_sums, cudaStream_t stream, const GemmEpilogue<T>& epilogue) {
  using Tile = GemmTileShape;
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
  // Nothing to store: no rows, or no columns and no row sums. With row sums and N == 0, one
  // column tile of blocks still runs: it stores no C but sums the rows of A.
  if (p.M == 0 || (p.N == 0 && a_row_sums == nullptr)) return;

  const int64_t row_tiles = ceil_div(p.M, Tile::BM);
  const int64_t col_tiles = std::max<int64_t>(1, ceil_div(p.N, Tile::BN));
  p.row_tiles_on_x = row_tiles >= col_tiles;
  const int64_t grid_x = std::max(row_tiles, col_tiles);
  const int64_t grid_y = std::min(row_tiles, col_tiles);
  if (grid_x > kMaxGridX || grid_y > kMaxGridY) {
    fail_launch_plan("pylibnn: a GEMM of ", p.M, " x ", p.N, " needs a grid of ", grid_x, " x ", grid_y,
                     " blocks, over the CUDA limit of ", kMaxGridX, " x ", kMaxGridY);
  }
  launch<gemm_tiled_kernel<T, Tile>>(
      LaunchConfig{dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y)), dim3(Tile::THREADS), 0, stream},
      p);
}

// Each pass sums fixed chunks of rows into a (chunks, cols) scratch matrix, which the next
// pass reduces the same way, until one chunk is left. The split depends on the shape only,
// never on the device.
template <typename T>
void column_sums(View<T> m, T* out, Scratch& scratch, cudaStream_t stream) {
  if (m.cols == 0) return;
  const int64_t col_blocks = ceil_div(m.cols, COLUMN_SUMS_COLS);
  if (col_blocks > kMaxGridX) {
    fail_launch_plan("pylibnn: a column sum over ", m.cols, " columns needs more than ", kMaxGridX, " blocks");
  }
  for (;;) {
    const int64_t rows_per_chunk = std::max(kColumnSumsRowsPerChunk, ceil_div(m.rows, kMaxGridY));
    const int64_t chunks = std::max<int64_t>(1, ceil_div(m.rows, rows_per_chunk));  // rows == 0: one chunk of zeros
    T* dest = chunks > 1 ? scratch.allocate_array<T>(chunks * m.cols) : out;
    launch<column_sums_kernel<T>>(
        LaunchConfig{dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)),
                     dim3(COLUMN_SUMS_COLS, COLUMN_SUMS_ROW_GROUPS), 0, stream},
        m.data, m.rows, m.cols, m.row_stride, m.col_stride, rows_per_chunk, dest);
    if (chunks == 1) return;
    m = View<T>{dest, chunks, m.cols, m.cols, 1};
  }
}

template <typename T>
void weight_and_bias_gradients(const View<T>& dz, const View<T>& x, T* grad_weight, T* grad_bias, Scratch& scratch,
                               cudaStream_t stream) {
  // The dW GEMM (N x K tiles over M) sums the rows of dz^T as it goes (K == 0 included).
  const bool db_in_gemm = grad_weight != nullptr && grad_bias != nullptr;
  if (grad_weight != nullptr) {
    gemm<T>(dz.transposed(), x, grad_weight, x.cols, nullptr, 0, db_in_gemm ? grad_bias : nullptr, stream);
  }
  if (grad_bias != nullptr && !db_in_gemm) column_sums<T>(dz, grad_bias, scratch, stream);
}

template <typename T>
void activation_grad(const View<T>& grad_y, const View<T>& z, Activation activation, T* grad_z, int64_t ld_grad_z,
                     cudaStream_t stream) {
  const int64_t total = grad_y.rows * grad_y.cols;
  if (total == 0) return;
  const int64_t blocks = std::min(ceil_div(total, kElementwiseThreads), kElementwiseMaxBlocks);
  launch<activation_grad_kernel<T>>(LaunchConfig{dim3(static_cast<unsigned>(blocks)), dim3(kElementwiseThreads), 0, stream},
                                    grad_y.data, grad_y.row_stride, grad_y.col_stride, z.data, z.row_stride,
                                    z.col_stride, grad_y.rows, grad_y.cols, activation, grad_z, ld_grad_z);
}

}  // namespace pylibnn::cuda
