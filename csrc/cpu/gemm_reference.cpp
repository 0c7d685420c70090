// Reference GEMM: the naive triple loop over strided views, one output at a time.
// Slow on purpose and obviously right; tests select it (set_cpu_isa("reference")) to
// check the engine and the op plumbing separately.
#include "cpu/gemm.h"

namespace pylibnn::cpu {

template <typename T>
void gemm_reference(const GemmArgs<T>& args) {
  const int64_t M = args.a.rows, K = args.a.cols, N = args.b.cols;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      T sum = 0;
      for (int64_t p = 0; p < K; ++p) sum += args.a(i, p) * args.b(p, j);
      if (args.bias) sum += args.bias[j * args.bias_stride];
      args.c[i * args.ldc + j] = sum;
    }
  }
  if (args.a_row_sums) {
    for (int64_t i = 0; i < M; ++i) {
      T sum = 0;
      for (int64_t p = 0; p < K; ++p) sum += args.a(i, p);
      args.a_row_sums[i] = sum;
    }
  }
}

template void gemm_reference<float>(const GemmArgs<float>&);
template void gemm_reference<double>(const GemmArgs<double>&);

}  // namespace pylibnn::cpu
