// Micro-kernel templates shared by the SIMD translation units (avx512, avx2). Each of them
// defines vector traits V (Scalar, Vec, lanes, zero, load, load_first, broadcast, fmadd,
// add, store, sum) and includes this file; everything here sits in an anonymous namespace,
// so each translation unit compiles its own copy with its own -m flags and nothing
// crosses between them at link time. See gemm_microkernels.h for what each kernel computes.
#pragma once

#include <cstdint>

namespace pylibnn::cpu {
namespace {

// Broadcast kernel: an MR x (NV * lanes) tile. MR * NV accumulators stay in registers; per
// k step NV vectors of B are loaded and each of the MR values of A is broadcast into NV FMAs.
template <typename V, int MR, int NV>
void broadcast_kernel(int64_t kc, const typename V::Scalar* a, const typename V::Scalar* b, int64_t ldb,
                      typename V::Scalar* c, int64_t ldc, bool accumulate, const typename V::Scalar* bias) {
  using Vec = typename V::Vec;
  // The C tile is read and written only after the k loop; ask for its lines now so that
  // the misses overlap with the FMAs instead of stalling the stores.
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NV * V::lanes - 1, 1, 3);
  }
  Vec acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  for (int64_t p = 0; p < kc; ++p) {
    Vec bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * V::lanes);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const Vec ai = V::broadcast(a + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(ai, bv[v], acc[i][v]);
    }
    a += MR;
    b += ldb;
  }
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

// Dot kernel: an MR x NR tile of dot products along k, both operands read in place.
// Rows past `rows` (columns past `cols`) re-read row 0 so every load stays inside the
// operands and the accumulators stay in registers; their results are not stored.
template <typename V, int MR, int NR>
void dot_kernel(int64_t kc, const typename V::Scalar* a, int64_t lda, const typename V::Scalar* b, int64_t ldb,
                typename V::Scalar* c, int64_t ldc, int64_t rows, int64_t cols, bool accumulate,
                const typename V::Scalar* bias) {
  using Scalar = typename V::Scalar;
  using Vec = typename V::Vec;
  const Scalar* a_row[MR];
  const Scalar* b_row[NR];
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
    for (int i = 0; i < MR; ++i) av[i] = V::load(a_row[i] + p);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const Vec bv = V::load(b_row[j] + p);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = V::fmadd(av[i], bv, acc[i][j]);
    }
  }
  if (p < kc) {  // the last kc % lanes values, loaded under a mask (zeros past the end)
    const int64_t tail = kc - p;
    Vec av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) av[i] = V::load_first(a_row[i] + p, tail);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const Vec bv = V::load_first(b_row[j] + p, tail);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = V::fmadd(av[i], bv, acc[i][j]);
    }
  }
  // Reduce with fixed trip counts (acc[][] stays in registers), then store what is in range.
  Scalar sums[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) sums[i][j] = V::sum(acc[i][j]);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const Scalar value = bias ? sums[i][j] + bias[j] : sums[i][j];
      Scalar* cij = c + i * ldc + j;
      *cij = accumulate ? *cij + value : value;
    }
}

}  // namespace
}  // namespace pylibnn::cpu
