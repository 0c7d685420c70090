// Warptiled SIMT GEMM, the exact float32 and float64 path: C (M, N) = output stage
// (gemm_epilogue.cuh) of A (M, K) @ B (K, N) over strided views (any strides, stride 0 too),
// any M, N, K (zero included), accumulated in T.
//
// Strategy (siboehm's warptiling step, with pylibnn's strided loads and epilogue):
//   * A block computes a BM x BN tile; its warps form a grid of WM x WN warp tiles; in a warp,
//     the 32 lanes form LANES_M x LANES_N and each lane owns an (M_SUBS x V) x (N_SUBS x V)
//     register tile made of M_SUBS x N_SUBS sub-tiles of V x V, V = 16 bytes / sizeof(T)
//     (float: 8 x 8 per lane, float64: 4 x 4).
//   * K is walked in BK-deep slabs held k-major in shared memory (As[k][i], Bs[k][j]); per k a
//     lane reads M_SUBS + N_SUBS 16-byte vectors (float4 / double2) and does TM * TN FMAs:
//     float: 4 vector loads per 64 FMAs (the 4 x 4 tile it replaces: 8 scalar loads per 16).
//     A warp's vector loads touch LANES_M (resp. LANES_N) distinct 16-byte words: one
//     shared-memory wavefront each, no bank conflicts.
//   * Double buffering: two shared buffers; the next slab is fetched from global memory into
//     registers during the FMAs on the current one and stored into the other buffer, so one
//     barrier per slab suffices (see the loop).
//   * Global loads walk each operand along its contiguous index (coalesced for row- and
//     column-major views alike); outside the matrices they are zeros, stores are bounds-checked.
//   * Split-K as in gemm_tensor_core.cuh: blockIdx.z's K slice, raw sums to `partials`.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/device.h"
#include "cuda/gemm_epilogue.cuh"
#include "cuda/gemm_numeric.h"

namespace pylibnn::cuda {

template <typename T>
struct WarptileParams {
  const T* a;
  int64_t a_row_stride;
  int64_t a_col_stride;
  const T* b;
  int64_t b_row_stride;
  int64_t b_col_stride;
  int64_t M;
  int64_t N;
  int64_t K;
  int64_t k_slice;  // a multiple of BK; K range of blockIdx.z
  T* partials;      // split-K: slice z's sums at partials[(z * M + i) * N + j]; else nullptr
  GemmOutput<T> out;
  bool a_load_along_k;  // consecutive threads walk the operand's contiguous index (GemmParams)
  bool b_load_along_n;
  bool row_tiles_on_x;
};

template <typename T, int BM_, int BN_, int BK_, int M_SUBS_, int N_SUBS_, int LANES_M_>
struct WarpTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, M_SUBS = M_SUBS_, N_SUBS = N_SUBS_;
  static constexpr int V = 16 / static_cast<int>(sizeof(T));  // elements per vector load
  static constexpr int LANES_M = LANES_M_, LANES_N = 32 / LANES_M_;
  static constexpr int TM = M_SUBS * V, TN = N_SUBS * V;  // per-lane register tile
  static constexpr int WM = LANES_M * TM, WN = LANES_N * TN;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  // Rows stay 16-byte aligned (vector loads) and one vector longer: a slab store along k
  // (row-major A) then spreads over two rows' banks instead of one.
  static constexpr int PAD = V;
  static_assert(32 % LANES_M == 0, "the lanes of a warp form a LANES_M x LANES_N grid");
  static_assert(BM % WM == 0 && BN % WN == 0, "warp tiles divide the block tile");
  static_assert((BM * BK) % THREADS == 0 && (BK * BN) % THREADS == 0,
                "every thread fetches the same number of slab elements");
  static_assert(THREADS % BM == 0 && THREADS % BN == 0 && THREADS % BK == 0,
                "a slab fetch step covers whole rows and columns of the slab");
};

// V consecutive elements of shared memory (16-byte aligned) in one vector load.
template <typename T, int V>
__device__ __forceinline__ void load_vector(T (&out)[V], const T* p) {
  static_assert(V * sizeof(T) == 16, "16-byte vectors");
#if defined(__CUDACC__)
  using Vector = std::conditional_t<sizeof(T) == 4, float4, double2>;
  const Vector v = *reinterpret_cast<const Vector*>(p);
  std::memcpy(out, &v, 16);
#else
  std::memcpy(out, p, 16);
#endif
}

// Registers (ptxas, sm_90): float 205 per thread (64 accumulators, two sets of 16 fragment
// values as the unrolled k loop pipelines its shared loads, the slab prefetch): one block of 8
// warps per SM; capping it at 128 for two blocks spills 152 bytes (BK 16) or 76 (BK 8).
// float64 (4 x 4 per lane): 124, no spill, two blocks per SM.
template <typename T, typename Tile>
__global__ void __launch_bounds__(Tile::THREADS) gemm_warptile_kernel(const WarptileParams<T> p) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, V = Tile::V;
  constexpr int TM = Tile::TM, TN = Tile::TN, THREADS = Tile::THREADS;
  constexpr int A_LOADS = BM * BK / THREADS, B_LOADS = BK * BN / THREADS;

  PYLIBNN_SHARED_ALIGNED(16, T, As, [2][BK][BM + Tile::PAD]);
  PYLIBNN_SHARED_ALIGNED(16, T, Bs, [2][BK][BN + Tile::PAD]);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int lane_m = lane / Tile::LANES_N, lane_n = lane % Tile::LANES_N;
  const int wm0 = (warp % Tile::WARPS_M) * Tile::WM, wn0 = (warp / Tile::WARPS_M) * Tile::WN;
  const int64_t row0 = static_cast<int64_t>(p.row_tiles_on_x ? blockIdx.x : blockIdx.y) * BM;
  const int64_t col0 = static_cast<int64_t>(p.row_tiles_on_x ? blockIdx.y : blockIdx.x) * BN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * p.k_slice;
  const int64_t k_end = min(p.K, k_begin + p.k_slice);
  const int64_t slabs = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;

  // Which slab elements this thread fetches (as in gemm_tiled_kernel): one base and one step.
  const int a_i0 = p.a_load_along_k ? tid / BK : tid % BM;
  const int a_k0 = p.a_load_along_k ? tid % BK : tid / BM;
  const int a_di = p.a_load_along_k ? THREADS / BK : 0;
  const int a_dk = p.a_load_along_k ? 0 : THREADS / BM;
  const int b_k0 = p.b_load_along_n ? tid / BN : tid % BK;
  const int b_j0 = p.b_load_along_n ? tid % BN : tid / BK;
  const int b_dk = p.b_load_along_n ? THREADS / BN : 0;
  const int b_dj = p.b_load_along_n ? 0 : THREADS / BK;

  // Per-thread pointers and bounds, advanced one slab at a time: the r-th fetch of a slab is
  // r steps of (a_di, a_dk) from the first, so only one 64-bit step per operand stays live.
  const T* a_ptr = p.a + (row0 + a_i0) * p.a_row_stride + (k_begin + a_k0) * p.a_col_stride;
  const T* b_ptr = p.b + (k_begin + b_k0) * p.b_row_stride + (col0 + b_j0) * p.b_col_stride;
  const int64_t a_step = a_di * p.a_row_stride + a_dk * p.a_col_stride;
  const int64_t b_step = b_dk * p.b_row_stride + b_dj * p.b_col_stride;
  const int64_t a_rows_left = p.M - (row0 + a_i0), b_cols_left = p.N - (col0 + b_j0);
  int64_t a_k_left = k_end - (k_begin + a_k0), b_k_left = k_end - (k_begin + b_k0);

  T a_next[A_LOADS], b_next[B_LOADS];
  auto fetch_slab = [&]() {  // then steps the pointers and bounds to the next slab
#pragma unroll
    for (int r = 0; r < A_LOADS; ++r) {
      a_next[r] = r * a_di < a_rows_left && r * a_dk < a_k_left ? a_ptr[r * a_step] : T(0);
    }
#pragma unroll
    for (int r = 0; r < B_LOADS; ++r) {
      b_next[r] = r * b_dk < b_k_left && r * b_dj < b_cols_left ? b_ptr[r * b_step] : T(0);
    }
    a_ptr += BK * p.a_col_stride;
    b_ptr += BK * p.b_row_stride;
    a_k_left -= BK;
    b_k_left -= BK;
  };
  auto store_slab = [&](int buffer) {
#pragma unroll
    for (int r = 0; r < A_LOADS; ++r) As[buffer][a_k0 + r * a_dk][a_i0 + r * a_di] = a_next[r];
#pragma unroll
    for (int r = 0; r < B_LOADS; ++r) Bs[buffer][b_k0 + r * b_dk][b_j0 + r * b_dj] = b_next[r];
  };

  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  }

  if (slabs > 0) {  // uniform over the block
    fetch_slab();
    store_slab(0);
    __syncthreads();  // slab 0 is complete before anyone reads it
  }
  for (int64_t slab = 0; slab < slabs; ++slab) {
    const int buffer = static_cast<int>(slab & 1);
    const bool more = slab + 1 < slabs;
    if (more) fetch_slab();  // in flight during the FMAs below
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      T a_frag[TM], b_frag[TN];
#pragma unroll
      for (int s = 0; s < Tile::M_SUBS; ++s) {
        load_vector<T, V>(reinterpret_cast<T(&)[V]>(a_frag[s * V]),
                          &As[buffer][k][wm0 + s * Tile::LANES_M * V + lane_m * V]);
      }
#pragma unroll
      for (int s = 0; s < Tile::N_SUBS; ++s) {
        load_vector<T, V>(reinterpret_cast<T(&)[V]>(b_frag[s * V]),
                          &Bs[buffer][k][wn0 + s * Tile::LANES_N * V + lane_n * V]);
      }
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a_frag[i] * b_frag[j];
      }
    }
    // The other buffer was last read in the previous slab, before the barrier that ended it.
    if (more) store_slab(buffer ^ 1);
    // The next slab is complete, and everyone is done reading this one before the slab after
    // next overwrites it.
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t row = row0 + wm0 + (i / V) * Tile::LANES_M * V + lane_m * V + i % V;
    if (row >= p.M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t col = col0 + wn0 + (j / V) * Tile::LANES_N * V + lane_n * V + j % V;
      if (col >= p.N) continue;
      if (p.partials != nullptr) {
        p.partials[(static_cast<int64_t>(blockIdx.z) * p.M + row) * p.N + col] = acc[i][j];
      } else {
        store_output(p.out, row, col, acc[i][j]);
      }
    }
  }
}

}  // namespace pylibnn::cuda
