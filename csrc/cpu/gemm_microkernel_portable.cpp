// Portable micro-kernels: plain C++ for any CPU (the compiler vectorizes with the
// baseline instruction set, SSE2 on x86-64). 4 x 8 tile for both dtypes.
#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

template <typename T, int MR, int NR>
void microkernel(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, bool accumulate, const T* bias) {
  T acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    for (int j = 0; j < NR; ++j) {
      T out = acc[i][j] + (bias ? bias[j] : T(0));
      ci[j] = accumulate ? ci[j] + out : out;
    }
  }
}

}  // namespace

MicroKernelSet microkernels_portable() {
  return MicroKernelSet{
      "portable",
      MicroKernel<float>{4, 8, &microkernel<float, 4, 8>},
      MicroKernel<double>{4, 8, &microkernel<double, 4, 8>},
  };
}

}  // namespace pylibnn::cpu
