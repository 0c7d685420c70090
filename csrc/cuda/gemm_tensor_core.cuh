// Tensor-core GEMM (sm_80+): C (M, N) = output stage (gemm_epilogue.cuh) of A (M, K) @ B (K, N),
// accumulated in float32, for bfloat16 / float16 (mma.sync m16n8k16) and float32 as TF32
// (mma.sync m16n8k8, operands rounded by cvt.rna.tf32). Raw pointers, any M, N, K (zero too).
//
// Operand layouts (template flags): each operand is read in place, with whichever of its two
// indices is contiguous:
//   A_K  true: A(i, k) = a[i * lda + k]   (x in forward, dy in grad_input)
//        false: A(i, k) = a[k * lda + i]  (dy^T in grad_weight)
//   B_K  true: B(k, j) = b[j * ldb + k]   (W^T in forward)
//        false: B(k, j) = b[k * ldb + j]  (W in grad_input, x in grad_weight)
// The fast path needs 16-byte aligned base pointers and leading dimensions that are multiples
// of 16 bytes (cp.async copies 16 bytes); gemm_launch.cuh packs other views first.
//
// Strategy:
//   * A block of Tile::THREADS computes a BM x BN tile of C; its warps form a
//     (BM / WM) x (BN / WN) grid, each warp owning a WM x WN warp tile as (WM / 16) x (WN / 8)
//     mma tiles of 16 x 8 in registers.
//   * K is walked in BK-wide slabs through a STAGES-deep ring of shared-memory buffers filled
//     by cp.async (16 bytes per copy, zero-filled outside the matrices): while the tensor cores
//     work on slab t, the copies of slabs t+1 .. t+STAGES-1 are in flight.
//   * Shared tiles keep the operand's global layout (rows along the non-contiguous index) and
//     are read into mma fragments with ldmatrix: plain for a k-contiguous tile, .trans for an
//     m- or n-contiguous one (16-bit types). TF32 uses ldmatrix for k-contiguous tiles (a
//     32-bit element is two b16 halves in the same place) and plain 32-bit loads otherwise.
//   * Rows are padded so that the 8 row addresses of an ldmatrix phase (and the 4 x 8 words of
//     a TF32 scalar load) fall in distinct banks; see the static_asserts.
//   * Split-K: blockIdx.z takes K range [z * k_slice, (z + 1) * k_slice); with partials set the
//     raw sums go to a float32 workspace that splitk_reduce_kernel sums in slice order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/device.h"
#include "cuda/gemm_epilogue.cuh"
#include "cuda/gemm_numeric.h"
#include "cuda/ptx.h"

namespace pylibnn::cuda {

template <typename T>
struct TensorCoreParams {
  const T* a;
  int64_t lda;
  const T* b;
  int64_t ldb;
  int64_t M;
  int64_t N;
  int64_t K;
  int64_t k_slice;          // a multiple of BK; K range of blockIdx.z
  float* partials;          // split-K: slice z's sums at partials[(z * M + i) * N + j]; else nullptr
  GemmOutput<T> out;
  bool row_tiles_on_x;      // blockIdx.x walks row tiles (else column tiles), as in GemmParams
};

// Block tile BM x BN x BK, warp tile WM x WN, STAGES shared buffers.
template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_>
struct TensorCoreTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
};

// The mma shape of an element type: k per instruction, and the instruction.
template <typename T>
struct MmaFor;
template <>
struct MmaFor<bfloat16> {
  static constexpr int K = 16;
  __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k16_bf16(d, a, b, d);
  }
};
template <>
struct MmaFor<float16> {
  static constexpr int K = 16;
  __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k16_f16(d, a, b, d);
  }
};
template <>
struct MmaFor<float> {
  static constexpr int K = 8;
  __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k8_tf32(d, a, b, d);
  }
};

// Shared-memory geometry of one operand's tile: ROWS x COLS elements stored with leading
// dimension LD (COLS along the operand's contiguous index).
template <typename T, int OUTER, int BK, bool K_CONTIGUOUS>
struct SharedTile {
  static constexpr int VEC = 16 / static_cast<int>(sizeof(T));  // elements per cp.async
  static constexpr int ROWS = K_CONTIGUOUS ? OUTER : BK;
  static constexpr int COLS = K_CONTIGUOUS ? BK : OUTER;
  // 16 bytes of padding, except for TF32's m/n-contiguous tiles, read by 32-bit loads
  // (rows k = t, t + 4 of a lane quad, 8 consecutive words each): 32 bytes make the row step
  // 8 words modulo 32, so the 4 rows x 8 words are 32 distinct banks.
  static constexpr int PAD = (sizeof(T) == 4 && !K_CONTIGUOUS) ? 2 * VEC : VEC;
  static constexpr int LD = COLS + PAD;
  static constexpr int ELEMENTS = ROWS * LD;
  static constexpr int ROW_WORDS = LD * static_cast<int>(sizeof(T)) / 4;
  static_assert(COLS % VEC == 0, "a tile row is whole 16-byte copies");
  static_assert((LD * sizeof(T)) % 16 == 0, "every row starts 16-byte aligned (cp.async, ldmatrix)");
  // ldmatrix reads 8 rows of 16 bytes (4 words) in one phase: distinct banks when the row
  // step is an odd multiple of 4 words modulo 32.
  static_assert(!(sizeof(T) == 2 || K_CONTIGUOUS) || ROW_WORDS % 8 == 4, "ldmatrix rows must not share banks");
  static_assert(!(sizeof(T) == 4 && !K_CONTIGUOUS) || ROW_WORDS % 32 == 8 || ROW_WORDS % 32 == 24,
                "TF32 scalar fragment loads must not share banks");
};

// One operand's slab into its buffer: tile element (r, c) is operand element (outer0 + r,
// inner0 + c) at base[outer * ld + inner], in 16-byte copies; copies outside [.., outer_end) x
// [.., inner_end) are zero-filled without a global read, and a copy that straddles inner_end
// reads only its valid bytes (source and destination stay 16-byte aligned).
template <typename T, typename G, int THREADS>
__device__ __forceinline__ void copy_tile_async(T* tile, const T* base, int64_t ld, int64_t outer0, int64_t outer_end,
                                                int64_t inner0, int64_t inner_end, int tid) {
  constexpr int COPIES = G::ROWS * G::COLS / G::VEC;
  static_assert(COPIES % THREADS == 0, "every thread issues the same number of copies");
#pragma unroll
  for (int i = 0; i < COPIES / THREADS; ++i) {
    const int c = tid + i * THREADS;
    const int r = c / (G::COLS / G::VEC), col = (c % (G::COLS / G::VEC)) * G::VEC;
    const int64_t outer = outer0 + r, inner = inner0 + col;
    int bytes = 0;
    const T* source = base;
    if (outer < outer_end && inner < inner_end) {
      bytes = static_cast<int>(min(static_cast<int64_t>(G::VEC), inner_end - inner) * sizeof(T));
      source = base + outer * ld + inner;
    }
    ptx::cp_async_16(tile + r * G::LD + col, source, bytes);
  }
}

template <typename T, typename Tile, bool A_K, bool B_K>
constexpr size_t tensor_core_shared_bytes() {
  using AT = SharedTile<T, Tile::BM, Tile::BK, A_K>;
  using BT = SharedTile<T, Tile::BN, Tile::BK, B_K>;
  return static_cast<size_t>(Tile::STAGES) * (AT::ELEMENTS + BT::ELEMENTS) * sizeof(T);
}

template <typename T, typename Tile, bool A_K, bool B_K>
__global__ void __launch_bounds__(Tile::THREADS) gemm_tensor_core_kernel(const TensorCoreParams<T> p) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, WM = Tile::WM, WN = Tile::WN;
  constexpr int STAGES = Tile::STAGES, THREADS = Tile::THREADS;
  constexpr int MMA_K = MmaFor<T>::K;
  constexpr int MI = WM / 16, NI = WN / 8;  // mma tiles per warp
  using AT = SharedTile<T, BM, BK, A_K>;
  using BT = SharedTile<T, BN, BK, B_K>;
  constexpr int VEC = AT::VEC;
  static_assert(BM % WM == 0 && BN % WN == 0, "warp tiles divide the block tile");
  static_assert(WM % 16 == 0 && WN % 16 == 0, "a warp tile is whole 16 x 16 pairs of mma tiles (ldmatrix.x4)");
  static_assert(BK % MMA_K == 0 && BK % VEC == 0, "a slab is whole mma steps and whole copies");
  static_assert(STAGES >= 2, "at least one slab in flight while one is read");

  PYLIBNN_DYNAMIC_SHARED(T, shared);
  T* const a_tiles = shared;
  T* const b_tiles = shared + STAGES * AT::ELEMENTS;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm0 = (warp % Tile::WARPS_M) * WM, wn0 = (warp / Tile::WARPS_M) * WN;
  const int64_t row0 = static_cast<int64_t>(p.row_tiles_on_x ? blockIdx.x : blockIdx.y) * BM;
  const int64_t col0 = static_cast<int64_t>(p.row_tiles_on_x ? blockIdx.y : blockIdx.x) * BN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * p.k_slice;
  const int64_t k_end = min(p.K, k_begin + p.k_slice);
  const int64_t slabs = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;

  auto load_slab = [&](int slot, int64_t k0) {
    T* const a_tile = a_tiles + slot * AT::ELEMENTS;
    T* const b_tile = b_tiles + slot * BT::ELEMENTS;
    if constexpr (A_K) {
      copy_tile_async<T, AT, THREADS>(a_tile, p.a, p.lda, row0, p.M, k0, k_end, tid);
    } else {
      copy_tile_async<T, AT, THREADS>(a_tile, p.a, p.lda, k0, k_end, row0, p.M, tid);
    }
    if constexpr (B_K) {
      copy_tile_async<T, BT, THREADS>(b_tile, p.b, p.ldb, col0, p.N, k0, k_end, tid);
    } else {
      copy_tile_async<T, BT, THREADS>(b_tile, p.b, p.ldb, k0, k_end, col0, p.N, tid);
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;
    }
  }

  // Fill the pipeline. Every stage commits a group, empty past the last slab, so that
  // cp_async_wait<STAGES - 2> always means "slab t has landed".
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < slabs) load_slab(s, k_begin + static_cast<int64_t>(s) * BK);
    ptx::cp_async_commit();
  }

  const int g = lane / 4, t = lane % 4;     // mma fragment coordinates
  const int lr = lane % 8, lq = lane / 8;   // ldmatrix: row within a matrix, matrix index
  for (int64_t slab = 0; slab < slabs; ++slab) {
    ptx::cp_async_wait<STAGES - 2>();
    // Slab `slab` is visible to every thread, and every thread is done reading the buffer the
    // prefetch below overwrites (it held slab - 1).
    __syncthreads();
    const int64_t next = slab + STAGES - 1;
    if (next < slabs) load_slab(static_cast<int>(next % STAGES), k_begin + next * BK);
    ptx::cp_async_commit();

    const T* const a_tile = a_tiles + (slab % STAGES) * AT::ELEMENTS;
    const T* const b_tile = b_tiles + (slab % STAGES) * BT::ELEMENTS;
#pragma unroll
    for (int kk = 0; kk < BK; kk += MMA_K) {
      uint32_t a_frag[MI][4], b_frag[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        const int m = wm0 + mi * 16;
        if constexpr (sizeof(T) == 2) {
          if constexpr (A_K) {  // matrices (m 0-7 | 8-15) x (k 0-7 | 8-15): a0, a1, a2, a3
            ptx::ldmatrix_x4(a_frag[mi], a_tile + (m + lane % 16) * AT::LD + kk + (lane / 16) * 8);
          } else {  // rows k, columns m: .trans gives the same fragments
            ptx::ldmatrix_x4_trans(a_frag[mi], a_tile + (kk + lr + (lq / 2) * 8) * AT::LD + m + (lq % 2) * 8);
          }
        } else {
          if constexpr (A_K) {  // 32-bit elements: an 8 x 8 b16 matrix is 8 rows x 4 floats
            ptx::ldmatrix_x4(a_frag[mi], a_tile + (m + lane % 16) * AT::LD + kk + (lane / 16) * 4);
          } else {
            a_frag[mi][0] = float_bits(a_tile[(kk + t) * AT::LD + m + g]);
            a_frag[mi][1] = float_bits(a_tile[(kk + t) * AT::LD + m + g + 8]);
            a_frag[mi][2] = float_bits(a_tile[(kk + t + 4) * AT::LD + m + g]);
            a_frag[mi][3] = float_bits(a_tile[(kk + t + 4) * AT::LD + m + g + 8]);
          }
#pragma unroll
          for (int r = 0; r < 4; ++r) a_frag[mi][r] = ptx::float_to_tf32(bits_float(a_frag[mi][r]));
        }
      }
#pragma unroll
      for (int np = 0; np < NI / 2; ++np) {  // two n8 tiles per ldmatrix.x4
        const int n = wn0 + np * 16;
        uint32_t r4[4];
        if constexpr (sizeof(T) == 2) {
          if constexpr (B_K) {  // rows n, columns k: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ...)
            ptx::ldmatrix_x4(r4, b_tile + (n + lr + (lq / 2) * 8) * BT::LD + kk + (lq % 2) * 8);
          } else {
            ptx::ldmatrix_x4_trans(r4, b_tile + (kk + lr + (lq % 2) * 8) * BT::LD + n + (lq / 2) * 8);
          }
        } else {
          if constexpr (B_K) {
            ptx::ldmatrix_x4(r4, b_tile + (n + lr + (lq / 2) * 8) * BT::LD + kk + (lq % 2) * 4);
          } else {
            r4[0] = float_bits(b_tile[(kk + t) * BT::LD + n + g]);
            r4[1] = float_bits(b_tile[(kk + t + 4) * BT::LD + n + g]);
            r4[2] = float_bits(b_tile[(kk + t) * BT::LD + n + 8 + g]);
            r4[3] = float_bits(b_tile[(kk + t + 4) * BT::LD + n + 8 + g]);
          }
#pragma unroll
          for (int r = 0; r < 4; ++r) r4[r] = ptx::float_to_tf32(bits_float(r4[r]));
        }
        b_frag[2 * np][0] = r4[0];
        b_frag[2 * np][1] = r4[1];
        b_frag[2 * np + 1][0] = r4[2];
        b_frag[2 * np + 1][1] = r4[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) MmaFor<T>::run(acc[mi][ni], a_frag[mi], b_frag[ni]);
      }
    }
  }
  // No copy is in flight past the last slab (the trailing groups are empty), and the
  // epilogue reads registers only: no barrier needed before it.

  // c0, c1: (g, 2t), (g, 2t + 1); c2, c3: the same at row g + 8.
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = row0 + wm0 + mi * 16 + g + h * 8;
      if (row >= p.M) continue;
#pragma unroll
      for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t col = col0 + wn0 + ni * 8 + 2 * t + e;
          if (col >= p.N) continue;
          const float v = acc[mi][ni][2 * h + e];
          if (p.partials != nullptr) {
            p.partials[(static_cast<int64_t>(blockIdx.z) * p.M + row) * p.N + col] = v;
          } else {
            store_output(p.out, row, col, v);
          }
        }
      }
    }
  }
}

// dst (rows, cols), row-major with leading dimension ld = src's elements; the tensor-core
// path's fallback for views it cannot read in place (see gemm_launch.cuh).
template <typename T>
__global__ void __launch_bounds__(256) pack_rows_kernel(const T* src, int64_t rows, int64_t cols, int64_t row_stride,
                                                        int64_t col_stride, T* dst, int64_t ld) {
  const int64_t total = rows * cols;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total; index += step) {
    const int64_t i = index / cols, j = index % cols;
    dst[i * ld + j] = src[i * row_stride + j * col_stride];
  }
}

}  // namespace pylibnn::cuda
