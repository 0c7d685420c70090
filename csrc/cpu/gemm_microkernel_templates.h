// Micro-kernel templates shared by the SIMD translation units (avx512, avx2). Each of them
// defines vector traits V (Scalar, Vec, lanes, k_unroll, zero, load, load_first, broadcast, fmadd,
// add, store, store_first, transpose (lanes x lanes in registers), sum, and the arithmetic the activations use; float64 traits also exp, tanh and
// erf) and includes this file; everything here sits in an anonymous namespace,
// so each translation unit compiles its own copy with its own -m flags and nothing
// crosses between them at link time. See gemm_microkernels.h for what each kernel computes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "activation.h"

namespace pylibnn::cpu {
namespace {

// How many k steps ahead the k loop asks for B's lines (and for A's, when A is read in place),
// and the copying pack for its source lines. B is the operand that comes from L2 (a packed
// kc x NR panel, 64 KiB at kc = 512, is larger than L1) or from memory (B read in place, one
// row per k step); the hardware prefetchers alone left the 12 x 32 float32 kernel at 85-88%
// of its in-L1 speed. Measured on Emerald Rapids, one thread, against torch in the same
// process: 1024^3 / 2048^3 forward 0.85x -> 0.89-0.92x with 8 or 16 steps (4 and 24 gain
// less; prefetching a packed A gains nothing), the M = 64 x 4096^2 fwd+bwd (B in place)
// 0.75x -> 0.90x; grad_weight for 1024 x 128 -> 512 0.77x -> 0.84x with the copying pack's.
constexpr int64_t kPrefetchSteps = 16;

// The k loop of the broadcast and panel kernels: acc[i][v] = sum_p A(i, p) * B(p, vector v),
// A(i, p) = a[i * a_row_stride + p * a_col_stride]. MR * NV accumulators stay in registers;
// per k step NV vectors of B are loaded and each of the MR values of A is broadcast into NV
// FMAs. Always inlined, so constant strides (a packed panel's 1 and MR) fold into the
// addressing. A packed panel holds PanelRows values per k step (MR, or more for a kernel of
// fewer rows on the last panel: MicroKernel::short_run); any other a_col_stride is A in place.
//
// The loop runs V::k_unroll k steps per iteration (then the depth % k_unroll left one at a
// time): on Zen 3 (family 25 model 1) the one-step AVX2 loop spends 5 of its 26 instructions
// on the loop itself, and the 6 x 16 float32 kernel alone (a 48 x kc packed A block, B panels
// from L2, 15 interleaved rounds) ran at 73-92 GFLOP/s one step at a time, 83-94 four steps at
// a time (+2% to +15%, every kc of 256 / 384 / 512 and mc of 48 / 96). In the whole forward the
// gain is within that VM's noise: median ratio to torch over 9 alternating processes 0.96 ->
// 0.98 at 512^3, 1.03 -> 1.05 at 1024^3. The AVX-512 traits keep one step (their 12 x 32
// kernel measured 100-102% of the FMA probe on Zen 4 as it is).
template <typename V, int MR, int NV, bool kPrefetchA>
__attribute__((always_inline)) inline void multiply_accumulate_step(const typename V::Scalar* a, int64_t a_row_stride,
                                                                    int64_t a_col_stride, const typename V::Scalar* b,
                                                                    int64_t ldb, typename V::Vec (&acc)[MR][NV]) {
  constexpr int64_t b_row_bytes = NV * V::lanes * sizeof(typename V::Scalar);
  // Past B's end this names lines outside it: a prefetch never faults, and the address is
  // computed as an integer, not as an out-of-range pointer.
  const auto b_ahead = reinterpret_cast<uintptr_t>(b) + kPrefetchSteps * ldb * sizeof(typename V::Scalar);
#pragma GCC unroll 4
  for (int64_t offset = 0; offset < b_row_bytes; offset += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(b_ahead + offset), 0, 3);
  if constexpr (kPrefetchA) {  // A in place, MR values far from the last ones
    const auto a_ahead = reinterpret_cast<uintptr_t>(a) + kPrefetchSteps * a_col_stride * sizeof(typename V::Scalar);
    __builtin_prefetch(reinterpret_cast<const void*>(a_ahead), 0, 3);
    __builtin_prefetch(reinterpret_cast<const void*>(a_ahead + (MR - 1) * sizeof(typename V::Scalar)), 0, 3);
  }
  typename V::Vec bv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * V::lanes);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    const typename V::Vec ai = V::broadcast(a + i * a_row_stride);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(ai, bv[v], acc[i][v]);
  }
}

// The k loop itself, with A's lines prefetched (kPrefetchA: A in place) or not: a branch of
// its own, since the compiler does not take a run-time test out of the unrolled loop.
template <typename V, int MR, int NV, bool kPrefetchA>
__attribute__((always_inline)) inline void multiply_accumulate_loop(int64_t depth, const typename V::Scalar* a,
                                                                    int64_t a_row_stride, int64_t a_col_stride,
                                                                    const typename V::Scalar* b, int64_t ldb,
                                                                    typename V::Vec (&acc)[MR][NV]) {
  int64_t p = 0;
  for (; p + V::k_unroll <= depth; p += V::k_unroll) {
#pragma GCC unroll 8
    for (int u = 0; u < V::k_unroll; ++u) {
      multiply_accumulate_step<V, MR, NV, kPrefetchA>(a, a_row_stride, a_col_stride, b, ldb, acc);
      a += a_col_stride;
      b += ldb;
    }
  }
  for (; p < depth; ++p) {
    multiply_accumulate_step<V, MR, NV, kPrefetchA>(a, a_row_stride, a_col_stride, b, ldb, acc);
    a += a_col_stride;
    b += ldb;
  }
}

template <typename V, int MR, int NV, int PanelRows = MR>
__attribute__((always_inline)) inline void multiply_accumulate_tile(int64_t depth, const typename V::Scalar* a,
                                                                    int64_t a_row_stride, int64_t a_col_stride,
                                                                    const typename V::Scalar* b, int64_t ldb,
                                                                    typename V::Vec (&acc)[MR][NV]) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  if (a_row_stride == 1 && a_col_stride != PanelRows)
    multiply_accumulate_loop<V, MR, NV, true>(depth, a, a_row_stride, a_col_stride, b, ldb, acc);
  else
    multiply_accumulate_loop<V, MR, NV, false>(depth, a, a_row_stride, a_col_stride, b, ldb, acc);
}

// One k step of multiply_accumulate_rows: A(i, p) at group[i / 3] + (i % 3) * lda + p.
template <typename V, int MR, int NV, int kGroups>
__attribute__((always_inline)) inline void multiply_accumulate_rows_step(const typename V::Scalar* const (&group)[kGroups],
                                                                         int64_t lda, int64_t p,
                                                                         const typename V::Scalar* b, int64_t ldb,
                                                                         typename V::Vec (&acc)[MR][NV]) {
  constexpr int64_t b_row_bytes = NV * V::lanes * sizeof(typename V::Scalar);
  const auto b_ahead = reinterpret_cast<uintptr_t>(b) + kPrefetchSteps * ldb * sizeof(typename V::Scalar);
#pragma GCC unroll 4
  for (int64_t offset = 0; offset < b_row_bytes; offset += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(b_ahead + offset), 0, 3);
  typename V::Vec bv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * V::lanes);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    const typename V::Vec ai = V::broadcast(group[i / 3] + (i % 3) * lda + p);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(ai, bv[v], acc[i][v]);
  }
}

// The k loop for a row-major A read in place, A(i, p) = a[i * lda + p]: multiply_accumulate_tile
// with the rows addressed from one pointer per 3 rows plus lda and 2 * lda (x86 addressing:
// base + index), all advanced together. Computing a + i * lda for 12 rows from one pointer
// spilled general registers in the k loop. V::k_unroll steps per iteration, as there.
template <typename V, int MR, int NV>
__attribute__((always_inline)) inline void multiply_accumulate_rows(int64_t depth, const typename V::Scalar* a,
                                                                    int64_t lda, const typename V::Scalar* b,
                                                                    int64_t ldb, typename V::Vec (&acc)[MR][NV]) {
  using Scalar = typename V::Scalar;
  constexpr int kGroups = (MR + 2) / 3;
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  const Scalar* group[kGroups];
#pragma GCC unroll 8
  for (int g = 0; g < kGroups; ++g) group[g] = a + 3 * g * lda;
  int64_t p = 0;
  for (; p + V::k_unroll <= depth; p += V::k_unroll) {
#pragma GCC unroll 8
    for (int u = 0; u < V::k_unroll; ++u) {
      multiply_accumulate_rows_step<V, MR, NV, kGroups>(group, lda, p + u, b, ldb, acc);
      b += ldb;
    }
  }
  for (; p < depth; ++p) {
    multiply_accumulate_rows_step<V, MR, NV, kGroups>(group, lda, p, b, ldb, acc);
    b += ldb;
  }
}

// Broadcast kernel: an MR x (NV * lanes) tile from MR rows of A, a[p * lda + i] (a packed
// panel: lda = PanelRows, MR or more), or with kARows a[i * lda + p] (row-major A in place).
template <typename V, int MR, int NV, int PanelRows = MR, bool kARows = false>
void broadcast_kernel(int64_t kc, const typename V::Scalar* a, int64_t lda, const typename V::Scalar* b,
                      int64_t ldb, typename V::Scalar* c, int64_t ldc, bool accumulate,
                      const typename V::Scalar* bias) {
  using Vec = typename V::Vec;
  // The C tile is read and written only after the k loop; ask for its lines now so that
  // the misses overlap with the FMAs instead of stalling the stores.
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NV * V::lanes - 1, 1, 3);
  }
  Vec acc[MR][NV];
  if constexpr (kARows) multiply_accumulate_rows<V, MR, NV>(kc, a, lda, b, ldb, acc);
  else multiply_accumulate_tile<V, MR, NV, PanelRows>(kc, a, 1, lda, b, ldb, acc);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    typename V::Scalar* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      Vec out = bias ? V::add(acc[i][v], V::load(bias + v * V::lanes)) : acc[i][v];
      if (accumulate) out = V::add(out, V::load(ci + v * V::lanes));
      V::store(ci + v * V::lanes, out);
    }
  }
}

// StoreTransposedFn: blocks of lanes x lanes of the tile, rows past `rows` zero, are
// transposed in registers; each column then goes to its row of C as one masked vector of up
// to `lanes` values (a 12 x 32 float32 tile: 2 transposes and 32 stores, where element by
// element it took 384 loads and stores, a fifth of a 64 x 128 -> 4096 call).
template <typename V>
void store_transposed(const typename V::Scalar* tile, int64_t ld_tile, int64_t rows, int64_t cols,
                      typename V::Scalar* c, int64_t ldc, bool accumulate, const typename V::Scalar* bias) {
  using Vec = typename V::Vec;
  constexpr int64_t L = V::lanes;
  for (int64_t r0 = 0; r0 < rows; r0 += L) {
    const int64_t n = std::min<int64_t>(L, rows - r0);
    const Vec bias_v = bias ? V::load_first(bias + r0, n) : V::zero();
    for (int64_t q0 = 0; q0 < cols; q0 += L) {
      const int64_t m = std::min<int64_t>(L, cols - q0);
      Vec block[L];
#pragma GCC unroll 16
      for (int64_t i = 0; i < L; ++i) block[i] = i < n ? V::load_first(tile + (r0 + i) * ld_tile + q0, m) : V::zero();
      V::transpose(block);
      for (int64_t q = 0; q < m; ++q) {
        typename V::Scalar* out = c + (q0 + q) * ldc + r0;
        Vec v = bias ? V::add(block[q], bias_v) : block[q];
        if (accumulate) v = V::add(v, V::load_first(out, n));
        V::store_first(out, v, n);
      }
    }
  }
}

// A vector of an operand (the first n lanes, zeros after them): of the vector's own type, or
// bfloat16 / float16 bits (ST = uint16_t) widened to float32 on the way (V::widen<kHalf>).
// Partial widened vectors go through a zeroed stack copy (masked 16-bit loads would need
// AVX512-BW).
template <typename V, bool kHalf>
typename V::Vec widen_first(const uint16_t* p, int64_t n) {
  uint16_t tmp[V::lanes] = {};
  for (int64_t k = 0; k < n; ++k) tmp[k] = p[k];
  return V::template widen<kHalf>(tmp);
}

template <typename V, typename ST, bool kHalf>
typename V::Vec load_vector(const ST* p) {
  if constexpr (std::is_same_v<ST, uint16_t>) return V::template widen<kHalf>(p);
  else return V::load(p);
}

template <typename V, typename ST, bool kHalf>
typename V::Vec load_first_lanes(const ST* p, int64_t n) {
  if constexpr (std::is_same_v<ST, uint16_t>) return widen_first<V, kHalf>(p, n);
  else return V::load_first(p, n);
}

// The sums of a dot tile: sums[i][j] = sum_p A(i, p) B^T(j, p) over kc k steps, MR x NR
// products along k with both operands read in place (rows of A at a + i * lda, rows of B^T at
// b + j * ldb), of V's own type or bfloat16 / float16 bits widened as loaded (ST = uint16_t).
// Rows past `rows` (columns past `cols`) re-read row 0 so every load stays inside the
// operands and the accumulators stay in registers; their sums are computed and not used.
template <typename V, int MR, int NR, typename ST = typename V::Scalar, bool kHalf = false>
__attribute__((always_inline)) inline void dot_tile_sums(int64_t kc, const ST* a, int64_t lda, const ST* b,
                                                         int64_t ldb, int64_t rows, int64_t cols,
                                                         typename V::Scalar (&sums)[MR][NR]) {
  using Vec = typename V::Vec;
  const ST* a_row[MR];
  const ST* b_row[NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) a_row[i] = a + (i < rows ? i : 0) * lda;
#pragma GCC unroll 8
  for (int j = 0; j < NR; ++j) b_row[j] = b + (j < cols ? j : 0) * ldb;
  Vec acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();

  int64_t p = 0;
  for (; p + V::lanes <= kc; p += V::lanes) {
    Vec av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) av[i] = load_vector<V, ST, kHalf>(a_row[i] + p);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const Vec bv = load_vector<V, ST, kHalf>(b_row[j] + p);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = V::fmadd(av[i], bv, acc[i][j]);
    }
  }
  if (p < kc) {  // the last kc % lanes values (zeros past the end)
    const int64_t tail = kc - p;
    Vec av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) av[i] = load_first_lanes<V, ST, kHalf>(a_row[i] + p, tail);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const Vec bv = load_first_lanes<V, ST, kHalf>(b_row[j] + p, tail);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = V::fmadd(av[i], bv, acc[i][j]);
    }
  }
  // Reduce with fixed trip counts (acc[][] stays in registers).
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) sums[i][j] = V::sum(acc[i][j]);
}

// Dot kernel (DotKernelFn): an MR x NR tile of C from dot_tile_sums, plus bias, stored or
// added to C where in range.
template <typename V, int MR, int NR>
void dot_kernel(int64_t kc, const typename V::Scalar* a, int64_t lda, const typename V::Scalar* b, int64_t ldb,
                typename V::Scalar* c, int64_t ldc, int64_t rows, int64_t cols, bool accumulate,
                const typename V::Scalar* bias) {
  using Scalar = typename V::Scalar;
  Scalar sums[MR][NR];
  dot_tile_sums<V, MR, NR>(kc, a, lda, b, ldb, rows, cols, sums);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const Scalar value = bias ? sums[i][j] + bias[j] : sums[i][j];
      Scalar* cij = c + i * ldc + j;
      *cij = accumulate ? *cij + value : value;
    }
}

// Widened dot kernel (Bf16DotKernelFn): c = A B^T for bfloat16 / float16 A and B^T, in
// float32, where the CPU has no native bfloat16 kernel (gemm_microkernels.h, WidenedDotKernel).
// Each element is widened once per tile as it is loaded: no float32 copy of W.
template <typename V, int MR, int NR, bool kHalf>
void dot_widened(int64_t depth, const uint16_t* a, int64_t lda, int64_t rows, const uint16_t* b, int64_t ldb,
                 int64_t cols, float* c, int64_t ldc) {
  float sums[MR][NR];
  dot_tile_sums<V, MR, NR, uint16_t, kHalf>(depth, a, lda, b, ldb, rows, cols, sums);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) c[i * ldc + j] = sums[i][j];
}

// Packing kernel (gemm_microkernels.h: PackFn, and PackWidenFn with ST = uint16_t, the
// operand widened while it is packed). Needs V::transpose (an L x L block of vectors, L =
// lanes, in registers) and V::store_first (the first n lanes).
template <typename V, typename ST = typename V::Scalar, bool kHalf = false>
void pack_panel(const ST* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth,
                int64_t width, typename V::Scalar* out) {
  using Scalar = typename V::Scalar;
  using Vec = typename V::Vec;
  constexpr int64_t L = V::lanes;
  if (depth_stride == 1 && lines > 1) {
    // Each line is contiguous along depth: load L lines x L depth steps, transpose, and store
    // each depth step's L lines at once. Lines past `lines` are zero vectors.
    for (int64_t i0 = 0; i0 < width; i0 += L) {
      const int64_t n_lines = std::clamp<int64_t>(lines - i0, 0, L);
      const int64_t n_out = std::min<int64_t>(L, width - i0);
      for (int64_t p0 = 0; p0 < depth; p0 += L) {
        const int64_t n_depth = std::min<int64_t>(L, depth - p0);
        Vec v[L];
#pragma GCC unroll 16
        for (int64_t r = 0; r < L; ++r) {
          const ST* line = src + (i0 + r) * line_stride + p0;
          v[r] = r >= n_lines ? V::zero()
                              : (n_depth == L ? load_vector<V, ST, kHalf>(line)
                                              : load_first_lanes<V, ST, kHalf>(line, n_depth));
        }
        V::transpose(v);
        Scalar* dst = out + p0 * width + i0;
        if (n_out == L && n_depth == L) {
#pragma GCC unroll 16
          for (int64_t q = 0; q < L; ++q) V::store(dst + q * width, v[q]);
        } else {
          for (int64_t q = 0; q < n_depth; ++q) V::store_first(dst + q * width, v[q], n_out);
        }
      }
    }
  } else if (line_stride == 1) {
    // Each depth step is contiguous across lines: masked vector copies, zeros past `lines`.
    for (int64_t p = 0; p < depth; ++p) {
      const ST* step = src + p * depth_stride;
      Scalar* dst = out + p * width;
      // The first and last line of the step kPrefetchSteps ahead (an integer address: it may
      // lie past the operand, which a prefetch never faults on).
      const auto ahead = reinterpret_cast<uintptr_t>(step) + kPrefetchSteps * depth_stride * sizeof(ST);
      __builtin_prefetch(reinterpret_cast<const void*>(ahead), 0, 3);
      __builtin_prefetch(reinterpret_cast<const void*>(ahead + (lines - 1) * sizeof(ST)), 0, 3);
      for (int64_t i0 = 0; i0 < width; i0 += L) {
        const int64_t n_lines = std::clamp<int64_t>(lines - i0, 0, L);
        const Vec v = n_lines == L ? load_vector<V, ST, kHalf>(step + i0)
                                   : (n_lines > 0 ? load_first_lanes<V, ST, kHalf>(step + i0, n_lines) : V::zero());
        const int64_t n_out = std::min<int64_t>(L, width - i0);
        if (n_out == L) V::store(dst + i0, v);
        else V::store_first(dst + i0, v, n_out);
      }
    }
  } else {
    // Any other strides: each depth step's lines gathered, then stored as one vector.
    for (int64_t p = 0; p < depth; ++p) {
      for (int64_t i0 = 0; i0 < width; i0 += L) {
        const int64_t n_lines = std::clamp<int64_t>(lines - i0, 0, L);
        ST line[L];
        for (int64_t i = 0; i < n_lines; ++i) line[i] = src[(i0 + i) * line_stride + p * depth_stride];
        const Vec v = n_lines > 0 ? load_first_lanes<V, ST, kHalf>(line, n_lines) : V::zero();
        V::store_first(out + p * width + i0, v, std::min<int64_t>(L, width - i0));
      }
    }
  }
}

template <typename V, bool kHalf>
void pack_widened(const uint16_t* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth,
                  int64_t width, float* out) {
  pack_panel<V, uint16_t, kHalf>(src, line_stride, depth_stride, lines, depth, width, out);
}

// Row-streaming kernel (gemm_microkernels.h, StreamKernelFn, StreamWidenKernelFn): up to 4
// rows of C by NV vectors of columns in registers (4 zmm: 16 accumulators of 32; 2 ymm: 8 of
// 16), k in steps of 8 with C reloaded between steps. With write_once the last step's
// whole vectors go out by non-temporal stores (V::store_write_once), fenced before return so
// that other threads see them once the caller's parallel region ends.
template <typename V, int R, typename BT, bool kHalf>
void stream_rows(int64_t depth, const typename V::Scalar* a, int64_t a_row_stride, int64_t a_col_stride,
                 const BT* b, int64_t ldb, int64_t cols, typename V::Scalar* c, int64_t ldc,
                 const typename V::Scalar* bias, bool write_once) {
  using Scalar = typename V::Scalar;
  using Vec = typename V::Vec;
  constexpr int64_t L = V::lanes;
  constexpr int64_t kStep = 8;
  constexpr int NV = L >= 16 ? 4 : 2;
  for (int64_t p0 = 0; p0 < depth || p0 == 0; p0 += kStep) {
    const int64_t steps = std::min<int64_t>(kStep, depth - p0);
    const bool last_write = write_once && p0 + kStep >= depth;
    Scalar av[R][kStep];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int64_t q = 0; q < kStep; ++q) av[i][q] = q < steps ? a[i * a_row_stride + (p0 + q) * a_col_stride] : Scalar(0);
    const BT* bp = b + p0 * ldb;
    int64_t j = 0;
    for (; j + NV * L <= cols; j += NV * L) {
      Vec acc[R][NV];
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          acc[i][v] = p0 > 0 ? V::load(c + i * ldc + j + v * L) : (bias ? V::load(bias + j + v * L) : V::zero());
      for (int64_t q = 0; q < steps; ++q) {
        Vec bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = load_vector<V, BT, kHalf>(bp + q * ldb + j + v * L);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
          const Vec ai = V::set1(av[i][q]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(ai, bv[v], acc[i][v]);
        }
      }
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          Scalar* out = c + i * ldc + j + v * L;
          if (last_write) V::store_write_once(out, acc[i][v]);
          else V::store(out, acc[i][v]);
        }
    }
    for (; j < cols; j += L) {  // the last columns, one (possibly partial) vector at a time
      const int64_t n = std::min<int64_t>(L, cols - j);
      Vec acc[R];
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
        acc[i] = p0 > 0 ? V::load_first(c + i * ldc + j, n) : (bias ? V::load_first(bias + j, n) : V::zero());
      for (int64_t q = 0; q < steps; ++q) {
        const Vec bv = load_first_lanes<V, BT, kHalf>(bp + q * ldb + j, n);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) acc[i] = V::fmadd(V::set1(av[i][q]), bv, acc[i]);
      }
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) V::store_first(c + i * ldc + j, acc[i], n);
    }
    if (depth == 0) break;
  }
  if (write_once) _mm_sfence();
}

template <typename V, typename BT = typename V::Scalar, bool kHalf = false>
void stream_kernel(int64_t depth, const typename V::Scalar* a, int64_t a_row_stride, int64_t a_col_stride,
                   int64_t rows, const BT* b, int64_t ldb, int64_t cols, typename V::Scalar* c, int64_t ldc,
                   const typename V::Scalar* bias, bool write_once) {
  switch (rows) {
    case 1: return stream_rows<V, 1, BT, kHalf>(depth, a, a_row_stride, a_col_stride, b, ldb, cols, c, ldc, bias, write_once);
    case 2: return stream_rows<V, 2, BT, kHalf>(depth, a, a_row_stride, a_col_stride, b, ldb, cols, c, ldc, bias, write_once);
    case 3: return stream_rows<V, 3, BT, kHalf>(depth, a, a_row_stride, a_col_stride, b, ldb, cols, c, ldc, bias, write_once);
    default: return stream_rows<V, 4, BT, kHalf>(depth, a, a_row_stride, a_col_stride, b, ldb, cols, c, ldc, bias, write_once);
  }
}

// StreamWidenKernelFn: B as bfloat16 (kHalf false) or float16 bits, float32 A, C and bias.
template <typename V, bool kHalf>
void stream_widened(int64_t depth, const float* a, int64_t a_row_stride, int64_t a_col_stride, int64_t rows,
                    const uint16_t* b, int64_t ldb, int64_t cols, float* c, int64_t ldc, const float* bias) {
  stream_kernel<V, uint16_t, kHalf>(depth, a, a_row_stride, a_col_stride, rows, b, ldb, cols, c, ldc, bias, false);
}

}  // namespace
}  // namespace pylibnn::cpu

namespace pylibnn::cpu {
namespace {

// float32 exp and tanh, for the activations: SLEEF's (what torch's own tanh calls) spend
// about 170 cycles on a 16-lane tanh, more than a 64-deep dot product per element, so a
// tanh network's time went to its activations. These take ~25 operations per vector at
// under 3 ulps (checked against float64 over the whole range by the tests).
//
// exp(x) = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 (two-part ln 2, so r is exact to a
// few ulps), |r| <= ln(2)/2, e^r by its Taylor polynomial to r^7 (truncation < 5e-9).
// Like expf: +inf above 88.72 (FLT_MAX's log), 0 below -87.3 (where the result would be
// subnormal), NaN for NaN.
template <typename V>
typename V::Vec fast_exp(typename V::Vec x) {
  using Vec = typename V::Vec;
  const Vec clamped = V::max(V::set1(-87.3f), V::min(V::set1(88.7f), x));  // NaN stays NaN (second operand)
  const Vec n = V::round(V::mul(clamped, V::set1(1.44269504088896341f)));
  Vec r = V::fmadd(n, V::set1(-0.693145751953125f), clamped);  // ln 2, high part: n * hi is exact
  r = V::fmadd(n, V::set1(-1.42860682030941723212e-6f), r);    // ln 2, low part
  Vec p = V::set1(1.0f / 5040);
  p = V::fmadd(p, r, V::set1(1.0f / 720));
  p = V::fmadd(p, r, V::set1(1.0f / 120));
  p = V::fmadd(p, r, V::set1(1.0f / 24));
  p = V::fmadd(p, r, V::set1(1.0f / 6));
  p = V::fmadd(p, r, V::set1(0.5f));
  p = V::fmadd(p, r, V::set1(1.0f));
  p = V::fmadd(p, r, V::set1(1.0f));
  const Vec result = V::scale_by_power_of_2(p, n);
  // The comparisons are false for NaN, which keeps the NaN result.
  const Vec capped = V::select_less(V::set1(88.72283935546875f), x, V::set1(INFINITY), result);
  return V::select_less(x, V::set1(-87.3f), V::zero(), capped);
}

// tanh(x): for |x| < 0.4 its odd Taylor series to x^15 (next term < 1e-9 relative); above,
// sign(x) (1 - 2 / (exp(2|x|) + 1)), where the cancellation costs at most 1.6x the
// quotient's error (at 0.4). 2|x| is capped at 20, where the quotient is 4e-9 and the
// result rounds to +-1 as tanh does for |x| > 9.01. NaN stays NaN: min() returns its second
// operand, 2|x|, when that is NaN.
template <typename V>
typename V::Vec fast_tanh(typename V::Vec x) {
  using Vec = typename V::Vec;
  const Vec ax = V::abs(x);
  const Vec e = fast_exp<V>(V::min(V::set1(20.0f), V::add(ax, ax)));
  const Vec large = V::sub(V::set1(1.0f), V::div(V::set1(2.0f), V::add(e, V::set1(1.0f))));
  const Vec x2 = V::mul(x, x);
  Vec p = V::set1(-929569.0f / 638512875);
  p = V::fmadd(p, x2, V::set1(21844.0f / 6081075));
  p = V::fmadd(p, x2, V::set1(-1382.0f / 155925));
  p = V::fmadd(p, x2, V::set1(62.0f / 2835));
  p = V::fmadd(p, x2, V::set1(-17.0f / 315));
  p = V::fmadd(p, x2, V::set1(2.0f / 15));
  p = V::fmadd(p, x2, V::set1(-1.0f / 3));
  const Vec small = V::fmadd(V::mul(p, x2), x, x);
  return V::select_less(ax, V::set1(0.4f), small, V::copysign(large, x));
}

// erf(x) = sign(x) (1 - t P(t) exp(-x^2)), t = 1 / (1 + p |x|): Abramowitz and Stegun 7.1.26,
// absolute error below 1.5e-7, the approximation torch's own vectorized float32 erf uses.
// Absolute, not relative: right for gelu, which needs 1 + erf (to 2 ulps of 1 plus eps |z|
// in the tests), not erf near 0. NaN stays NaN (|NaN| passes through every step).
template <typename V>
typename V::Vec fast_erf(typename V::Vec x) {
  using Vec = typename V::Vec;
  const Vec ax = V::abs(x);
  const Vec t = V::div(V::set1(1.0f), V::fmadd(V::set1(0.3275911f), ax, V::set1(1.0f)));
  Vec p = V::set1(1.061405429f);
  p = V::fmadd(p, t, V::set1(-1.453152027f));
  p = V::fmadd(p, t, V::set1(1.421413741f));
  p = V::fmadd(p, t, V::set1(-0.284496736f));
  p = V::fmadd(p, t, V::set1(0.254829592f));
  const Vec tail = V::mul(V::mul(p, t), fast_exp<V>(V::sub(V::zero(), V::mul(ax, ax))));
  return V::copysign(V::sub(V::set1(1.0f), tail), x);
}

// exp, tanh and erf as the activations use them: the fast float32 ones above, SLEEF's for
// float64.
template <typename V>
typename V::Vec vector_exp(typename V::Vec x) {
  if constexpr (std::is_same_v<typename V::Scalar, float>) return fast_exp<V>(x);
  else return V::exp(x);
}

template <typename V>
typename V::Vec vector_tanh(typename V::Vec x) {
  if constexpr (std::is_same_v<typename V::Scalar, float>) return fast_tanh<V>(x);
  else return V::tanh(x);
}

template <typename V>
typename V::Vec vector_erf(typename V::Vec x) {
  if constexpr (std::is_same_v<typename V::Scalar, float>) return fast_erf<V>(x);
  else return V::erf(x);
}

// The arithmetic of activation.h's formulas on the vectors of V: exp, tanh and erf are the
// fast float32 ones above (SLEEF's for float64), sigmoid is 1 / (1 + exp(-z)).
template <typename V>
struct VectorMath {
  using Vec = typename V::Vec;
  static Vec c(double value) { return V::set1(typename V::Scalar(value)); }
  static Vec add(Vec a, Vec b) { return V::add(a, b); }
  static Vec sub(Vec a, Vec b) { return V::sub(a, b); }
  static Vec mul(Vec a, Vec b) { return V::mul(a, b); }
  static Vec div(Vec a, Vec b) { return V::div(a, b); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return V::fmadd(a, b, c); }
  static Vec exp(Vec x) { return vector_exp<V>(x); }
  static Vec tanh(Vec x) { return vector_tanh<V>(x); }
  static Vec erf(Vec x) { return vector_erf<V>(x); }
  static Vec sigmoid(Vec x) { return V::div(V::set1(1), V::add(V::set1(1), vector_exp<V>(V::sub(V::zero(), x)))); }
  static Vec zero_where_not_positive(Vec z, Vec v) { return V::zero_where_not_positive(z, v); }
};

// Stores an MR x NV tile of accumulators to c, and act(tile) to y when y is given. The
// activation is chosen once per tile, not per vector.
template <typename V, int MR, int NV, typename Act>
void store_activated_tile(typename V::Vec (&acc)[MR][NV], typename V::Scalar* c, int64_t ldc, typename V::Scalar* y,
                          int64_t ldy, const Act& act) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      V::store(c + i * ldc + v * V::lanes, acc[i][v]);
      V::store(y + i * ldy + v * V::lanes, act(acc[i][v]));
    }
}

// Panel kernel (gemm_microkernels.h): MR x NV vectors of C, A read through both strides,
// optional activation epilogue into y.
template <typename V, int MR, int NV>
void panel_kernel(int64_t depth, const typename V::Scalar* a, int64_t a_row_stride, int64_t a_col_stride,
                  const typename V::Scalar* b, int64_t ldb, typename V::Scalar* c, int64_t ldc, bool accumulate,
                  const typename V::Scalar* bias, Activation act, typename V::Scalar* y, int64_t ldy) {
  using Vec = typename V::Vec;
  Vec acc[MR][NV];
  multiply_accumulate_tile<V, MR, NV>(depth, a, a_row_stride, a_col_stride, b, ldb, acc);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (bias) acc[i][v] = V::add(acc[i][v], V::load(bias + v * V::lanes));
      if (accumulate) acc[i][v] = V::add(acc[i][v], V::load(c + i * ldc + v * V::lanes));
    }
  if (y == nullptr) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) V::store(c + i * ldc + v * V::lanes, acc[i][v]);
  } else {
    with_activation(act, [&](auto formula) {
      using Formula = decltype(formula);
      store_activated_tile<V, MR, NV>(acc, c, ldc, y, ldy,
                                      [](Vec z) { return Formula::template value<VectorMath<V>>(z); });
    });
  }
}

// Applies f to every row of a rows x cols block, whole vectors first; the last cols % lanes
// columns go through a zero-padded stack copy, so no access leaves the block.
template <typename V, typename Fn>
void for_each_vector(int64_t rows, int64_t cols, Fn&& fn) {
  for (int64_t i = 0; i < rows; ++i) {
    int64_t j = 0;
    for (; j + V::lanes <= cols; j += V::lanes) fn(i, j, V::lanes);
    if (j < cols) fn(i, j, cols - j);
  }
}

template <typename V>
typename V::Vec load_part(const typename V::Scalar* p, int64_t n) {
  if (n == V::lanes) return V::load(p);
  alignas(64) typename V::Scalar tmp[V::lanes] = {};
  for (int64_t k = 0; k < n; ++k) tmp[k] = p[k];
  return V::load(tmp);
}

template <typename V>
void store_part(typename V::Scalar* p, typename V::Vec v, int64_t n) {
  if (n == V::lanes) return V::store(p, v);
  alignas(64) typename V::Scalar tmp[V::lanes];
  V::store(tmp, v);
  for (int64_t k = 0; k < n; ++k) p[k] = tmp[k];
}

template <typename V>
void activate_block(Activation act, const typename V::Scalar* z, int64_t ldz, typename V::Scalar* y, int64_t ldy,
                    int64_t rows, int64_t cols) {
  with_activation(act, [&](auto formula) {
    using Formula = decltype(formula);
    for_each_vector<V>(rows, cols, [&](int64_t i, int64_t j, int64_t n) {
      store_part<V>(y + i * ldy + j, Formula::template value<VectorMath<V>>(load_part<V>(z + i * ldz + j, n)), n);
    });
  });
}

template <typename V>
void activation_gradient_block(Activation act, const typename V::Scalar* grad, int64_t ldg,
                               const typename V::Scalar* z, int64_t ldz, const typename V::Scalar* y, int64_t ldy,
                               typename V::Scalar* out, int64_t ldo, int64_t rows, int64_t cols) {
  using Math = VectorMath<V>;
  with_activation(act, [&](auto formula) {
    using Formula = decltype(formula);
    for_each_vector<V>(rows, cols, [&](int64_t i, int64_t j, int64_t n) {
      const typename V::Vec zv = load_part<V>(z + i * ldz + j, n);
      typename V::Vec yv = zv;
      if constexpr (Formula::uses_output) {
        yv = y ? load_part<V>(y + i * ldy + j, n) : Formula::template value<Math>(zv);
      }
      store_part<V>(out + i * ldo + j,
                    Formula::template gradient<Math>(load_part<V>(grad + i * ldg + j, n), zv, yv), n);
    });
  });
}

}  // namespace
}  // namespace pylibnn::cpu
