// Definitions of the launchers declared in gemm_launch.h: the kernel of plan_gemm
// (gemm_select.h) with its grid, operand layouts, split-K workspace and reduction; the
// chunking of the column sums; one launch per kernel through launch.h. Included by
// gemm_cuda.cu (which instantiates them for float, double, bfloat16 and float16) and by the
// kernel tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/gemm_epilogue.cuh"
#include "cuda/gemm_kernels.cuh"
#include "cuda/gemm_launch.h"
#include "cuda/gemm_select.h"
#include "cuda/gemm_tensor_core.cuh"
#include "cuda/gemm_warptile.cuh"
#include "cuda/launch.h"

namespace pylibnn::cuda {

// The basic SIMT tile: 64 x 64 x 16 slabs, a 4 x 4 micro-tile per thread, 256 threads;
// 8.25 KiB (float) or 16.5 KiB (double) of shared memory per block.
using GemmTileShape = GemmTile<kSimtBasicTile.bm, kSimtBasicTile.bn, kSimtBasicTile.bk, 4, 4>;

// Warptiled SIMT: float 8 x 8 per lane (2 x 2 float4 sub-tiles, lanes 8 x 4: warps of 64 x 32,
// 8 warps); float64 4 x 4 per lane (2 x 2 double2, warps of 32 x 16, 8 warps) to stay
// clear of spills with 8-byte accumulators.
template <typename T>
using WarptileShape = std::conditional_t<std::is_same_v<T, double>,
                                         WarpTile<double, kWarptileDouble.bm, kWarptileDouble.bn, kWarptileDouble.bk, 2, 2, 8>,
                                         WarpTile<float, kWarptileFloat.bm, kWarptileFloat.bn, kWarptileFloat.bk, 2, 2, 8>>;

// Tensor cores: 4 warps of 64 x 64 (2 x 2), 4 stages. A warp's 4 x 8 mma tiles take 4 + 4
// ldmatrix.x4 per 32 mma (16-bit): 128 bytes of shared-memory reads per mma. With warps of
// 64 x 32 (8 per block, 126 registers, 16 warps per SM) it is 6 x4 per 16 mma, 192 bytes:
// with the cp.async stores, more than the 128 bytes per clock an SM's shared memory delivers
// at mma.sync's rate (about 0.6 m16n8k16 per clock per SM on an H100). The price: 128 float
// accumulators and 244-246 registers per lane, two blocks (8 warps) per SM.
// The thin-M tile (M <= kThinM): 8 warps of 32 x 32 (2 x 4 mma tiles, 2 + 2 ldmatrix.x4 per 8
// mma; 80-93 registers, up to 3 blocks per SM by shared memory): thin products are bound by
// reading W, so more warps in flight matter more than shared-memory traffic per mma.
template <typename T, bool Thin>
using TensorCoreShape = std::conditional_t<
    Thin,
    std::conditional_t<is_half_type<T>,
                       TensorCoreTile<kTensorCoreTile16Thin.bm, kTensorCoreTile16Thin.bn, kTensorCoreTile16Thin.bk, 32, 32, 4>,
                       TensorCoreTile<kTensorCoreTileTf32Thin.bm, kTensorCoreTileTf32Thin.bn, kTensorCoreTileTf32Thin.bk,
                                      32, 32, 4>>,
    std::conditional_t<is_half_type<T>,
                       TensorCoreTile<kTensorCoreTile16.bm, kTensorCoreTile16.bn, kTensorCoreTile16.bk, 64, 64, 4>,
                       TensorCoreTile<kTensorCoreTileTf32.bm, kTensorCoreTileTf32.bn, kTensorCoreTileTf32.bk, 64, 64, 4>>>;

template <typename T>
constexpr ElementKind element_kind() {
  if constexpr (std::is_same_v<T, bfloat16>) return ElementKind::BFloat16;
  if constexpr (std::is_same_v<T, float16>) return ElementKind::Float16;
  if constexpr (std::is_same_v<T, float>) return ElementKind::Float32;
  return ElementKind::Float64;
}

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

// The basic SIMT tile (gemm_tiled_kernel), with the row sums of A when asked.
template <typename T>
void gemm_basic(const View<T>& a, const View<T>& b, T* c, int64_t ldc, const T* bias, int64_t bias_stride,
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


// The grid of a plan: the larger tile count on x (limit 2^31 - 1), the smaller on y (65535),
// the K slices on z.
inline dim3 plan_grid(const GemmPlan& plan, int64_t M, int64_t N, bool& row_tiles_on_x) {
  const int64_t row_tiles = ceil_div(M, plan.tile.bm), col_tiles = ceil_div(N, plan.tile.bn);
  row_tiles_on_x = row_tiles >= col_tiles;
  const int64_t grid_x = std::max(row_tiles, col_tiles), grid_y = std::min(row_tiles, col_tiles);
  if (grid_x > kMaxGridX || grid_y > kMaxGridY || plan.splits > kMaxGridY) {
    fail_launch_plan("pylibnn: a GEMM of ", M, " x ", N, " needs a grid of ", grid_x, " x ", grid_y, " x ",
                     plan.splits, " blocks, over the CUDA limit of ", kMaxGridX, " x ", kMaxGridY, " x ", kMaxGridY);
  }
  return dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y), static_cast<unsigned>(plan.splits));
}

// Split-K's workspace (splits x M x N accumulators), or nullptr without a split.
template <typename T>
Accumulator<T>* splitk_workspace(const GemmPlan& plan, int64_t M, int64_t N, const GemmContext& context) {
  if (plan.splits <= 1) return nullptr;
  if (context.scratch == nullptr) fail_launch_plan("pylibnn: split-K needs scratch memory (internal error)");
  return context.scratch->allocate_array<Accumulator<T>>(plan.splits * M * N);
}

template <typename T>
void splitk_reduce(const Accumulator<T>* partials, const GemmPlan& plan, int64_t M, int64_t N,
                   const GemmOutput<T>& out, cudaStream_t stream) {
  const int64_t blocks = std::min(ceil_div(M * N, kSplitKReduceThreads), kSplitKReduceMaxBlocks);
  launch<splitk_reduce_kernel<T>>(LaunchConfig{dim3(static_cast<unsigned>(blocks)), dim3(kSplitKReduceThreads), 0, stream},
                                  partials, plan.splits, M, N, out);
}

template <typename T>
void gemm_warptile(const View<T>& a, const View<T>& b, const GemmOutput<T>& out, const GemmPlan& plan,
                   const GemmContext& context, cudaStream_t stream) {
  using Tile = WarptileShape<T>;
  static_assert(Tile::BM == (std::is_same_v<T, double> ? kWarptileDouble : kWarptileFloat).bm, "one home for tiles");
  WarptileParams<T> p{};
  p.a = a.data;
  p.a_row_stride = a.row_stride;
  p.a_col_stride = a.col_stride;
  p.b = b.data;
  p.b_row_stride = b.row_stride;
  p.b_col_stride = b.col_stride;
  p.M = a.rows;
  p.N = b.cols;
  p.K = a.cols;
  p.k_slice = plan.k_slice;
  p.out = out;
  p.a_load_along_k = load_along_second(a.row_stride, a.col_stride);
  p.b_load_along_n = load_along_second(b.row_stride, b.col_stride);
  const dim3 grid = plan_grid(plan, p.M, p.N, p.row_tiles_on_x);
  p.partials = splitk_workspace<T>(plan, p.M, p.N, context);
  launch<gemm_warptile_kernel<T, Tile>>(LaunchConfig{grid, dim3(Tile::THREADS), 0, stream}, p);
  if (p.partials != nullptr) splitk_reduce<T>(p.partials, plan, p.M, p.N, out, stream);
}

// Whether the tensor-core kernel reads v in place with its second index contiguous: unit
// stride there, rows 16 bytes apart (a multiple of), a 16-byte aligned start. A single row
// or column needs no stride.
template <typename T>
bool tensor_core_readable(const View<T>& v) {
  constexpr int64_t VEC = 16 / sizeof(T);
  return (v.cols <= 1 || v.col_stride == 1) && (v.rows <= 1 || v.row_stride % VEC == 0) &&
         reinterpret_cast<uintptr_t>(v.data) % 16 == 0;
}

// The fallback for views the tensor cores cannot read in place (unaligned, padded rows that
// are not 16-byte multiples, non-unit inner strides, stride 0 in the wrong place): one strided
// copy into an aligned row-major buffer, O(rows x cols) next to the GEMM's O(M N K); then the
// same kernel. Chosen over a second (SIMT) algorithm so that every 16-bit product takes the
// tensor cores' float32-accumulated arithmetic.
template <typename T>
View<T> pack_rows(const View<T>& v, const GemmContext& context, cudaStream_t stream) {
  constexpr int64_t VEC = 16 / sizeof(T);
  if (context.scratch == nullptr) fail_launch_plan("pylibnn: packing an operand needs scratch memory (internal error)");
  const int64_t ld = ceil_div(std::max<int64_t>(v.cols, 1), VEC) * VEC;
  T* packed = context.scratch->allocate_array<T>(std::max<int64_t>(v.rows, 1) * ld);
  const int64_t total = v.rows * v.cols;
  if (total > 0) {
    const int64_t blocks = std::min(ceil_div(total, kElementwiseThreads), kElementwiseMaxBlocks);
    launch<pack_rows_kernel<T>>(LaunchConfig{dim3(static_cast<unsigned>(blocks)), dim3(kElementwiseThreads), 0, stream},
                                v.data, v.rows, v.cols, v.row_stride, v.col_stride, packed, ld);
  }
  return View<T>{packed, v.rows, v.cols, ld, 1};
}

template <typename T, bool Thin, bool A_K, bool B_K>
void launch_tensor_core(const TensorCoreParams<T>& p, dim3 grid, cudaStream_t stream) {
  using Tile = TensorCoreShape<T, Thin>;
  constexpr size_t bytes = tensor_core_shared_bytes<T, Tile, A_K, B_K>();
  allow_dynamic_shared_memory<gemm_tensor_core_kernel<T, Tile, A_K, B_K>>(bytes);
  launch<gemm_tensor_core_kernel<T, Tile, A_K, B_K>>(LaunchConfig{grid, dim3(Tile::THREADS), bytes, stream}, p);
}

// Operand layouts, in order of preference: A k-contiguous (x, dy) or m-contiguous (dy^T);
// B n-contiguous (W, x) or k-contiguous (W^T). The fourth combination (A m-, B k-contiguous)
// is not compiled: A is packed instead; so is an m-contiguous A of a thin-M plan (the thin
// tile serves forward and grad_input, whose A is k-contiguous; a thin A is cheap to copy).
template <typename T>
void gemm_tensor_core(const View<T>& a_in, const View<T>& b_in, const GemmOutput<T>& out, const GemmPlan& plan,
                      const GemmContext& context, cudaStream_t stream) {
  View<T> a = a_in, b = b_in;
  bool a_k = true, b_k = false;
  if (tensor_core_readable(a)) {
    a_k = true;
  } else if (tensor_core_readable(a.transposed())) {
    a_k = false;
  } else {
    a = pack_rows(a, context, stream);
  }
  if (tensor_core_readable(b)) {
    b_k = false;
  } else if (tensor_core_readable(b.transposed())) {
    b_k = true;
  } else {
    b = pack_rows(b, context, stream);
  }
  static_assert(kTensorCoreTile16Thin.bm == kTensorCoreTileTf32Thin.bm && kTensorCoreTile16Thin.bm < kTensorCoreTile16.bm &&
                    kTensorCoreTileTf32Thin.bm < kTensorCoreTileTf32.bm,
                "the plan's block height tells the thin tile apart");
  const bool thin = plan.tile.bm == kTensorCoreTile16Thin.bm;
  if (!a_k && (b_k || thin)) {
    a = pack_rows(a, context, stream);
    a_k = true;
  }
  TensorCoreParams<T> p{};
  p.a = a.data;
  p.lda = a_k ? a.row_stride : a.col_stride;
  p.b = b.data;
  p.ldb = b_k ? b.col_stride : b.row_stride;
  p.M = a.rows;
  p.N = b.cols;
  p.K = a.cols;
  p.k_slice = plan.k_slice;
  p.out = out;
  const dim3 grid = plan_grid(plan, p.M, p.N, p.row_tiles_on_x);
  p.partials = splitk_workspace<T>(plan, p.M, p.N, context);
  if (thin) {
    if (b_k) {
      launch_tensor_core<T, true, true, true>(p, grid, stream);
    } else {
      launch_tensor_core<T, true, true, false>(p, grid, stream);
    }
  } else if (a_k && b_k) {
    launch_tensor_core<T, false, true, true>(p, grid, stream);
  } else if (a_k) {
    launch_tensor_core<T, false, true, false>(p, grid, stream);
  } else {
    launch_tensor_core<T, false, false, false>(p, grid, stream);
  }
  if (p.partials != nullptr) splitk_reduce<T>(p.partials, plan, p.M, p.N, out, stream);
}

template <typename T>
void gemm(const View<T>& a, const View<T>& b, T* c, int64_t ldc, const T* bias, int64_t bias_stride,
          T* a_row_sums, cudaStream_t stream, const GemmEpilogue<T>& epilogue, const GemmContext& context) {
  const int64_t M = a.rows, N = b.cols, K = a.cols;
  GemmPlan plan = plan_gemm(element_kind<T>(), M, N, K, context.allow_tf32, a_row_sums != nullptr);
  if (context.scratch == nullptr && plan.splits > 1) {
    plan.splits = 1;
    plan.k_slice = K;
  }
  if constexpr (!is_half_type<T>) {
    if (plan.kernel == GemmKernel::SimtBasic) {
      gemm_basic<T>(a, b, c, ldc, bias, bias_stride, a_row_sums, stream, epilogue);
      return;
    }
  }
  if (M == 0 || N == 0) return;
  const GemmOutput<T> out{c, ldc, bias, bias_stride, epilogue.activation, epilogue.preactivation,
                          epilogue.ld_preactivation, epilogue.derivative_z, epilogue.derivative_y,
                          epilogue.ld_derivative};
  if constexpr (!std::is_same_v<T, double>) {
    if (plan.kernel == GemmKernel::TensorCore) {
      gemm_tensor_core<T>(a, b, out, plan, context, stream);
      return;
    }
  }
  if constexpr (!is_half_type<T>) gemm_warptile<T>(a, b, out, plan, context, stream);
}

// Each pass sums fixed chunks of rows into a (chunks, cols) scratch matrix, which the next
// pass reduces the same way, until one chunk is left. The split depends on the shape only,
// never on the device.
template <typename T>
void column_sums(View<T> m, T* out, Scratch& scratch, cudaStream_t stream) {
  using Acc = Accumulator<T>;
  if (m.cols == 0) return;
  const int64_t col_blocks = ceil_div(m.cols, COLUMN_SUMS_COLS);
  if (col_blocks > kMaxGridX) {
    fail_launch_plan("pylibnn: a column sum over ", m.cols, " columns needs more than ", kMaxGridX, " blocks");
  }
  // The first pass reads m (T); later passes read the previous pass's chunk sums, kept in Acc.
  // A pass with one chunk writes out, rounded to T.
  const auto pass = [&](const auto* data, int64_t rows, int64_t row_stride, int64_t col_stride) -> Acc* {
    using In = std::remove_const_t<std::remove_pointer_t<decltype(data)>>;
    const int64_t rows_per_chunk = std::max(kColumnSumsRowsPerChunk, ceil_div(rows, kMaxGridY));
    const int64_t chunks = std::max<int64_t>(1, ceil_div(rows, rows_per_chunk));  // rows == 0: one chunk of zeros
    const LaunchConfig config{dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)),
                              dim3(COLUMN_SUMS_COLS, COLUMN_SUMS_ROW_GROUPS), 0, stream};
    if (chunks == 1) {
      launch<column_sums_kernel<In, T>>(config, data, rows, m.cols, row_stride, col_stride, rows_per_chunk, out);
      return nullptr;
    }
    Acc* dest = scratch.allocate_array<Acc>(chunks * m.cols);
    launch<column_sums_kernel<In, Acc>>(config, data, rows, m.cols, row_stride, col_stride, rows_per_chunk, dest);
    m.rows = chunks;
    return dest;
  };
  const Acc* partial = pass(m.data, m.rows, m.row_stride, m.col_stride);
  while (partial != nullptr) partial = pass(partial, m.rows, m.cols, 1);
}

template <typename T>
void weight_and_bias_gradients(const View<T>& dz, const View<T>& x, T* grad_weight, T* grad_bias, Scratch& scratch,
                               cudaStream_t stream, bool allow_tf32) {
  // The basic SIMT tile's dW GEMM (N x K tiles over M) sums the rows of dz^T as it goes (K == 0
  // included); the other kernels leave db to one column-sum pass over dz.
  const bool db_in_gemm = !is_half_type<T> && gemm_kernel_override() == GemmKernel::SimtBasic &&
                          grad_weight != nullptr && grad_bias != nullptr;
  if (grad_weight != nullptr) {
    gemm<T>(dz.transposed(), x, grad_weight, x.cols, nullptr, 0, db_in_gemm ? grad_bias : nullptr, stream,
            GemmEpilogue<T>(), GemmContext{&scratch, allow_tf32});
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
