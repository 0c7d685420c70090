// What check_kernels.cpp sees of the kernels: the launchers' declarations, with the fused
// MLP launchers marked as instantiated elsewhere (kernels.cpp), so that the kernel bodies
// are compiled only there.
#pragma once

#include "cuda/gemm_launch.h"
#include "cuda/mlp_launch.h"

namespace pylibnn::cuda {

#define PYLIBNN_DECLARE_FOR_TESTS(T)                                                                         \
  extern template void launch_mlp_forward_fused<T>(const FusedMlpParams<T>&, cudaStream_t);                  \
  extern template void launch_mlp_backward_fused<T>(FusedMlpParams<T>&, const FusedBackwardSplit&,           \
                                                    cudaStream_t);                                           \
  extern template void reduce_partials<T>(const T*, int64_t, int64_t, int64_t, int64_t, T*, cudaStream_t);
PYLIBNN_DECLARE_FOR_TESTS(float)
PYLIBNN_DECLARE_FOR_TESTS(double)
#undef PYLIBNN_DECLARE_FOR_TESTS

}  // namespace pylibnn::cuda
