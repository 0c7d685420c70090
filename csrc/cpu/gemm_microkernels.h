// Register-blocked GEMM micro-kernels, one set per instruction set.
//
// Broadcast kernel: one MR x NR tile of C from an MR-row packed panel of A and kc rows of B:
//   c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum_p a_panel[p * MR + i] * b[p * ldb + j]
//                    + (bias ? bias[j] : 0)                  for i < MR, j < NR, p < kc
// a_panel is packed column by column (MR values per k step) and zero-padded by the packer,
// so the kernel never sees a partial tile. b is either a packed kc x NR panel (ldb = NR)
// or B itself when its rows are contiguous (ldb = its row stride) and NR columns exist.
//
// Dot kernel, for thin products whose operands are both contiguous along k (the forward
// x @ W^T with few rows of x): one rows x cols tile (rows <= MR, cols <= NR) of
//   c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum_p a[i * lda + p] * b[j * ldb + p]
//                    + (bias ? bias[j] : 0)
// read straight from the operands, vectorized along k, with no packing at all.
//
// Each set lives in its own translation unit compiled with its own -m flags
// (gemm_microkernel_{avx512,avx2,portable}.cpp). This header is the only one they share
// with the rest of the library, and it holds no inline code, so no function compiled with
// AVX-512 can be picked by the linker for a caller on a CPU without it.
#pragma once

#include <cstdint>

namespace pylibnn::cpu {

template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a_panel, const T* b, int64_t ldb, T* c, int64_t ldc,
                               bool accumulate, const T* bias);

template <typename T>
struct MicroKernel {
  int64_t mr;  // rows of the C tile (broadcast from A)
  int64_t nr;  // columns of the C tile (vector lanes of B)
  MicroKernelFn<T> run;
};

template <typename T>
using DotKernelFn = void (*)(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
                             int64_t rows, int64_t cols, bool accumulate, const T* bias);

template <typename T>
struct DotKernel {
  int64_t mr;  // rows of A (and C) per tile
  int64_t nr;  // rows of B^T (columns of C) per tile
  DotKernelFn<T> run;
};

struct MicroKernelSet {
  const char* isa;
  MicroKernel<float> f32;
  MicroKernel<double> f64;
  DotKernel<float> dot_f32;       // several rows of A per tile
  DotKernel<double> dot_f64;
  DotKernel<float> dot_row_f32;   // one row of A per tile, for M < dot.mr (e.g. a single input)
  DotKernel<double> dot_row_f64;
};

MicroKernelSet microkernels_portable();
MicroKernelSet microkernels_avx2();    // defined only when PYLIBNN_HAVE_AVX2
MicroKernelSet microkernels_avx512();  // defined only when PYLIBNN_HAVE_AVX512

}  // namespace pylibnn::cpu
