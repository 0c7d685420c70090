// Register-blocked GEMM micro-kernels, one set per instruction set.
//
// A micro-kernel computes one MR x NR tile of C from packed panels:
//   c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum_p a_panel[p * MR + i] * b_panel[p * NR + j]
//                    + (bias ? bias[j] : 0)                  for i < MR, j < NR, p < kc
// a_panel is an MR-row micro-panel of A packed column by column (MR values per k step),
// b_panel a kc x NR micro-panel of B packed row by row; both are zero-padded by the packer,
// so the kernel never sees a partial tile. The engine (gemm_engine.cpp) owns everything else.
//
// Each set lives in its own translation unit compiled with its own -m flags
// (gemm_microkernel_{avx512,avx2,portable}.cpp). This header is the only one they share
// with the rest of the library, and it holds no inline code, so no function compiled with
// AVX-512 can be picked by the linker for a caller on a CPU without it.
#pragma once

#include <cstdint>

namespace pylibnn::cpu {

template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t ldc,
                               bool accumulate, const T* bias);

template <typename T>
struct MicroKernel {
  int64_t mr;  // rows of the C tile (broadcast from A)
  int64_t nr;  // columns of the C tile (vector lanes of B)
  MicroKernelFn<T> run;
};

struct MicroKernelSet {
  const char* isa;
  MicroKernel<float> f32;
  MicroKernel<double> f64;
};

MicroKernelSet microkernels_portable();
MicroKernelSet microkernels_avx2();    // defined only when PYLIBNN_HAVE_AVX2
MicroKernelSet microkernels_avx512();  // defined only when PYLIBNN_HAVE_AVX512

}  // namespace pylibnn::cpu
