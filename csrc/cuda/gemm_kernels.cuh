// CUDA kernels for the dense layer: pure compute, no allocation, no argument checks
// (csrc/cuda/linear_cuda.cu checks, allocates and launches them).
//
//   gemm_tiled_kernel    V (M, N) = A (M, K) @ B (K, N) [+ bias (N) on every row]
//                        [and a_row_sums (M) = A @ 1]; its epilogue stores C = act(V)
//                        [and preactivation = V] (forward), or C = V * act'(Z)
//                        (backward, Z read from memory)
//   column_sums_kernel   out (chunks, cols) = per-chunk column sums of m (rows, cols)
// (gemm_tiled_kernel is the basic SIMT tile: the override 'simt_basic' and the dW GEMM that
// sums db alongside use it; gemm_warptile.cuh and gemm_tensor_core.cuh are the default paths.)
//   activation_grad_kernel  grad_z (M, N) = grad_y * act'(z), elementwise
//
// A, B and the column-sum input are strided views (any strides, stride 0 included), so
// the three products of a layer read their operands in place, with no transposed copies:
//   forward       y  = x  @ W^T (+ b)     A = x,                 B = W viewed transposed
//   grad_input    dx = dy @ W             A = dy,                B = W
//   grad_weight   dW = dy^T @ x           A = dy viewed transposed, row sums of A = db
//
// GEMM strategy (the classic shared-memory + register-blocked scheme):
//   * A block of THREADS threads computes one BM x BN tile of C, stepping over K in slabs
//     of BK. Each slab of A (BM x BK) and of B (BK x BN) is staged in shared memory, so
//     every element fetched from global memory is reused BN (resp. BM) times.
//   * Each thread owns a TM x TN micro-tile of C in registers; per k it reads TM values
//     of A and TN values of B from shared memory and does TM * TN FMAs.
//   * The micro-tile is strided (rows ty + i * BM / TM, columns tx + j * BN / TN) rather
//     than contiguous: neighbouring threads then read neighbouring shared-memory words of
//     the B slab (no bank conflicts) and write neighbouring columns of C (coalesced).
//   * The next slab is fetched from global memory into registers while the current one
//     is multiplied (register prefetch), hiding global latency behind the FMAs.
//   * Edges: loads outside A or B are replaced by zeros, stores outside C are skipped;
//     nothing assumes M, N or K is a multiple of a tile size. K == 0 writes bias or zero.
//   * Global offsets are int64_t; only in-tile indices (< BM * BK) are int.
//
// Column sums are deterministic (no atomics): a fixed split of the rows into chunks, a
// fixed per-thread order inside a chunk, a fixed shared-memory tree, and the per-chunk
// partial sums reduced again by the same kernel. The result depends only on the shapes.
#pragma once

#include <cstdint>

#include "activation.h"
#include "cuda/device.h"
#include "cuda/gemm_numeric.h"

namespace pylibnn::cuda {

// The operands of one GEMM launch. Element (i, k) of A is a[i * a_row_stride + k * a_col_stride],
// element (k, j) of B is b[k * b_row_stride + j * b_col_stride]; C is row-major with leading
// dimension ldc.
template <typename T>
struct GemmParams {
  const T* a;
  int64_t a_row_stride;
  int64_t a_col_stride;
  const T* b;
  int64_t b_row_stride;
  int64_t b_col_stride;
  T* c;
  int64_t ldc;
  const T* bias;        // (N) added to every row of C, or nullptr
  int64_t bias_stride;
  T* a_row_sums;        // (M) receives sum_k A(i, k), or nullptr
  // Epilogue, at each (i, j) of V = A @ B (+ bias):
  //   forward  (derivative_z == nullptr): preactivation[i * ld_preactivation + j] = V (when
  //            preactivation is non-null) and C = act(V);
  //   backward (derivative_z != nullptr): C = V * act'(z, y) with z = derivative_z[i * ld_derivative + j],
  //            y = derivative_y[same] (or act(z) when derivative_y is null): V is the gradient
  //            of a layer's output y = act(z), C the gradient of its pre-activation z.
  // Activation::None with null pointers is the plain GEMM.
  Activation activation;
  T* preactivation;
  int64_t ld_preactivation;
  const T* derivative_z;
  const T* derivative_y;
  int64_t ld_derivative;
  int64_t M;
  int64_t N;
  int64_t K;
  // Which index the consecutive threads of a slab load walk along: the one with the smaller
  // stride, so that the loads coalesce whatever the operand's layout (transposed or not).
  bool a_load_along_k;
  bool b_load_along_n;
  // True: blockIdx.x walks the row tiles and blockIdx.y the column tiles; false: the other
  // way round. The host puts the larger tile count on x, whose limit is 2^31 - 1 (y: 65535).
  bool row_tiles_on_x;
};

// Tile shape of the GEMM kernel; THREADS follows from it.
template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct GemmTile {
  static constexpr int BM = BM_;
  static constexpr int BN = BN_;
  static constexpr int BK = BK_;
  static constexpr int TM = TM_;
  static constexpr int TN = TN_;
  static constexpr int THREADS = (BM / TM) * (BN / TN);
  // Shared-memory row padding: with rows of BM + 2 words, the k-major slab stores (16
  // consecutive k, then the next row) of a row-major operand land in distinct banks.
  static constexpr int PAD = 2;
};

template <typename T, typename Tile>
__global__ void __launch_bounds__(Tile::THREADS) gemm_tiled_kernel(const GemmParams<T> p) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  constexpr int THREADS = Tile::THREADS;
  constexpr int A_LOADS = BM * BK / THREADS;  // slab elements each thread fetches
  constexpr int B_LOADS = BK * BN / THREADS;
  static_assert(BM % TM == 0 && BN % TN == 0, "the micro-tile must divide the block tile");
  static_assert((BM * BK) % THREADS == 0 && (BK * BN) % THREADS == 0,
                "every thread must fetch the same number of slab elements");
  static_assert(THREADS % BM == 0 && THREADS % BN == 0 && THREADS % BK == 0,
                "the slab fetch walks whole rows and columns of the slab per step");
  static_assert(THREADS >= BM, "one thread per tile row sums the rows of A");

  // Slabs stored k-major (As[k][i], Bs[k][j]) so that the inner product loop reads a row
  // of each: one A value per micro-tile row, one B value per micro-tile column.
  PYLIBNN_SHARED(T, As, [BK][BM + Tile::PAD]);
  PYLIBNN_SHARED(T, Bs, [BK][BN + Tile::PAD]);

  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN);  // micro-tile column group
  const int ty = tid / (BN / TN);  // micro-tile row group
  const int64_t tile_row = p.row_tiles_on_x ? blockIdx.x : blockIdx.y;
  const int64_t tile_col = p.row_tiles_on_x ? blockIdx.y : blockIdx.x;
  const int64_t row0 = tile_row * BM;
  const int64_t col0 = tile_col * BN;

  // Which slab elements this thread fetches. Thread t takes elements t, t + THREADS, ...
  // of the slab in the order the operand is contiguous in: walking along k, element l is
  // (i, k) = (l / BK, l % BK); walking along i, it is (l % BM, l / BM). As THREADS is a
  // multiple of BK and of BM, the r-th fetch is the first one moved by r whole steps of
  // (a_di, a_dk): one base offset and one step per thread, instead of 2 * A_LOADS indices.
  const int a_i0 = p.a_load_along_k ? tid / BK : tid % BM;
  const int a_k0 = p.a_load_along_k ? tid % BK : tid / BM;
  const int a_di = p.a_load_along_k ? THREADS / BK : 0;
  const int a_dk = p.a_load_along_k ? 0 : THREADS / BM;
  const int b_k0 = p.b_load_along_n ? tid / BN : tid % BK;
  const int b_j0 = p.b_load_along_n ? tid % BN : tid / BK;
  const int b_dk = p.b_load_along_n ? THREADS / BN : 0;
  const int b_dj = p.b_load_along_n ? 0 : THREADS / BK;
  // Global offsets of the first fetch at k0 = 0, of one step r -> r + 1, and of one slab.
  const int64_t a_offset = (row0 + a_i0) * p.a_row_stride + a_k0 * p.a_col_stride;
  const int64_t a_step = a_di * p.a_row_stride + a_dk * p.a_col_stride;
  const int64_t b_offset = b_k0 * p.b_row_stride + (col0 + b_j0) * p.b_col_stride;
  const int64_t b_step = b_dk * p.b_row_stride + b_dj * p.b_col_stride;

  // Fetches the slab starting at k0 into registers; zeros outside the matrices (memory is
  // read only for elements inside them).
  T a_next[A_LOADS], b_next[B_LOADS];
  auto fetch_slab = [&](int64_t k0) {
#pragma unroll
    for (int r = 0; r < A_LOADS; ++r) {
      const bool inside = row0 + a_i0 + r * a_di < p.M && k0 + a_k0 + r * a_dk < p.K;
      a_next[r] = inside ? p.a[a_offset + r * a_step + k0 * p.a_col_stride] : T(0);
    }
#pragma unroll
    for (int r = 0; r < B_LOADS; ++r) {
      const bool inside = k0 + b_k0 + r * b_dk < p.K && col0 + b_j0 + r * b_dj < p.N;
      b_next[r] = inside ? p.b[b_offset + r * b_step + k0 * p.b_row_stride] : T(0);
    }
  };

  // Only the blocks of the first column tile sum the rows of A: each sees all of K for
  // its rows exactly once, and one thread per row adds the slab's values in k order.
  const bool sums_rows = p.a_row_sums != nullptr && tile_col == 0;
  T row_sum = T(0);

  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  }

  fetch_slab(0);
  for (int64_t k0 = 0; k0 < p.K; k0 += BK) {
#pragma unroll
    for (int r = 0; r < A_LOADS; ++r) As[a_k0 + r * a_dk][a_i0 + r * a_di] = a_next[r];
#pragma unroll
    for (int r = 0; r < B_LOADS; ++r) Bs[b_k0 + r * b_dk][b_j0 + r * b_dj] = b_next[r];
    __syncthreads();  // the slab is complete before anyone reads it

    // Issued now, consumed at the top of the next iteration: the global loads overlap
    // the FMAs below.
    if (k0 + BK < p.K) fetch_slab(k0 + BK);

#pragma unroll
    for (int k = 0; k < BK; ++k) {
      T a_frag[TM], b_frag[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a_frag[i] = As[k][ty + i * (BM / TM)];
#pragma unroll
      for (int j = 0; j < TN; ++j) b_frag[j] = Bs[k][tx + j * (BN / TN)];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a_frag[i] * b_frag[j];
      }
    }
    if (sums_rows && tid < BM) {
#pragma unroll
      for (int k = 0; k < BK; ++k) row_sum += As[k][tid];  // zero-filled beyond K
    }
    __syncthreads();  // everyone is done with the slab before the next one overwrites it
  }

  // Epilogue: bias, activation (see GemmParams), bounds-checked stores. The activation
  // branches are uniform over the launch.
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t row = row0 + ty + i * (BM / TM);
    if (row >= p.M) continue;
    T* c_row = p.c + row * p.ldc;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t col = col0 + tx + j * (BN / TN);
      if (col >= p.N) continue;
      T v = p.bias ? acc[i][j] + p.bias[col * p.bias_stride] : acc[i][j];
      if (p.derivative_z != nullptr) {
        const int64_t at = row * p.ld_derivative + col;
        const T z = p.derivative_z[at];
        v = activation_gradient(p.activation, v, z, p.derivative_y != nullptr ? &p.derivative_y[at] : nullptr);
      } else {
        if (p.preactivation != nullptr) p.preactivation[row * p.ld_preactivation + col] = v;
        v = apply_activation(p.activation, v);
      }
      c_row[col] = v;
    }
  }
  if (sums_rows && tid < BM && row0 + tid < p.M) p.a_row_sums[row0 + tid] = row_sum;
}

// Block shape of column_sums_kernel: COLUMN_SUMS_COLS columns (one per lane, so the loads
// of a row-major matrix coalesce) times COLUMN_SUMS_ROW_GROUPS threads walking the rows.
constexpr int COLUMN_SUMS_COLS = 32;
constexpr int COLUMN_SUMS_ROW_GROUPS = 8;

// out[chunk * cols + j] = sum of m(i, j) over rows i in [chunk * rows_per_chunk,
// min(rows, (chunk + 1) * rows_per_chunk)), chunk = blockIdx.y. Thread (tx, ty) adds rows
// ty, ty + ROW_GROUPS, ... of its chunk in order; a fixed tree over ty combines them. Sums are
// kept in Accumulator<In> (float32 for the 16-bit types); Out is In or that accumulator (the
// chunk partials of a multi-pass sum), rounded once when stored.
// Launch: block (COLUMN_SUMS_COLS, COLUMN_SUMS_ROW_GROUPS),
//         grid (ceil(cols / COLUMN_SUMS_COLS), chunks).
template <typename In, typename Out>
__global__ void __launch_bounds__(COLUMN_SUMS_COLS * COLUMN_SUMS_ROW_GROUPS)
    column_sums_kernel(const In* m, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                       int64_t rows_per_chunk, Out* out) {
  using Acc = Accumulator<In>;
  static_assert((COLUMN_SUMS_ROW_GROUPS & (COLUMN_SUMS_ROW_GROUPS - 1)) == 0,
                "the halving tree needs a power of two");
  // +1 column: the tree reads partial[ty][tx] and partial[ty + s][tx] across the warp.
  PYLIBNN_SHARED(Acc, partial, [COLUMN_SUMS_ROW_GROUPS][COLUMN_SUMS_COLS + 1]);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * COLUMN_SUMS_COLS + tx;
  const int64_t chunk = blockIdx.y;
  const int64_t row_begin = chunk * rows_per_chunk;
  const int64_t row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;

  Acc sum = Acc(0);
  if (col < cols) {  // no early return: every thread must reach the barriers below
    const In* column = m + col * col_stride;
    for (int64_t row = row_begin + ty; row < row_end; row += COLUMN_SUMS_ROW_GROUPS) {
      sum += to_accumulator(column[row * row_stride]);
    }
  }
  partial[ty][tx] = sum;
  __syncthreads();
#pragma unroll
  for (int s = COLUMN_SUMS_ROW_GROUPS / 2; s > 0; s /= 2) {
    if (ty < s) partial[ty][tx] += partial[ty + s][tx];
    __syncthreads();
  }
  if (ty == 0 && col < cols) out[chunk * cols + col] = from_accumulator<Out>(partial[0][tx]);
}

// grad_z(i, j) = grad_y(i, j) * act'(z(i, j), act(z(i, j))) over an (M, N) grid: the
// gradient of a layer's pre-activation from that of its output, computed in Accumulator<T>. grad_y and z are strided;
// grad_z is row-major with leading dimension ld_grad_z (it may alias neither input).
// Each thread walks a grid-stride loop over the flattened row-major index; elementwise, so
// the result does not depend on the launch shape.
template <typename T>
__global__ void __launch_bounds__(256)
    activation_grad_kernel(const T* grad_y, int64_t grad_y_row_stride, int64_t grad_y_col_stride, const T* z,
                           int64_t z_row_stride, int64_t z_col_stride, int64_t M, int64_t N, Activation activation,
                           T* grad_z, int64_t ld_grad_z) {
  const int64_t total = M * N;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total; index += step) {
    const int64_t i = index / N, j = index % N;
    const Accumulator<T> zij = to_accumulator(z[i * z_row_stride + j * z_col_stride]);
    grad_z[i * ld_grad_z + j] = from_accumulator<T>(
        activation_gradient(activation, to_accumulator(grad_y[i * grad_y_row_stride + j * grad_y_col_stride]), zij));
  }
}

}  // namespace pylibnn::cuda
