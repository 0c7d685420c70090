// The kernels under test, instantiated in their own translation unit so that a planted-bug
// copy of csrc/ recompiles only this file (tests/test_cuda_emulation.py); check_kernels.cpp
// calls them through the declarations in check_kernels.h.
#include "check_kernels.h"

#include "cuda/gemm_launch.cuh"

namespace pylibnn::cuda {

#define PYLIBNN_INSTANTIATE_GEMM_FOR_TESTS(T)                                                                \
  template void gemm<T>(const View<T>&, const View<T>&, T*, int64_t, const T*, int64_t, T*, cudaStream_t,   \
                        const GemmEpilogue<T>&, const GemmContext&);                                         \
  template void column_sums<T>(View<T>, T*, Scratch&, cudaStream_t);                                         \
  template void weight_and_bias_gradients<T>(const View<T>&, const View<T>&, T*, T*, Scratch&, cudaStream_t, \
                                             bool);                                                          \
  template void activation_grad<T>(const View<T>&, const View<T>&, Activation, T*, int64_t, cudaStream_t);
PYLIBNN_INSTANTIATE_GEMM_FOR_TESTS(float)
PYLIBNN_INSTANTIATE_GEMM_FOR_TESTS(double)
PYLIBNN_INSTANTIATE_GEMM_FOR_TESTS(bfloat16)
PYLIBNN_INSTANTIATE_GEMM_FOR_TESTS(float16)
#undef PYLIBNN_INSTANTIATE_GEMM_FOR_TESTS

#define PYLIBNN_INSTANTIATE_FOR_TESTS(T)                                                                     \
  template void launch_mlp_forward_fused<T>(const FusedMlpParams<T>&, cudaStream_t);                         \
  template void launch_mlp_backward_fused<T>(FusedMlpParams<T>&, const FusedBackwardSplit&, cudaStream_t);   \
  template void reduce_partials<T>(const T*, int64_t, int64_t, int64_t, int64_t, T*, cudaStream_t);
PYLIBNN_INSTANTIATE_FOR_TESTS(float)
PYLIBNN_INSTANTIATE_FOR_TESTS(double)
#undef PYLIBNN_INSTANTIATE_FOR_TESTS

}  // namespace pylibnn::cuda
