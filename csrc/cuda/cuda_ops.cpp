// The op layer over the CUDA backend, for the CUDA key of `pylibnn` (CUDA builds only). A
// plain C++ file: the op layer's checks and allocation need no nvcc.
#include "cuda/cuda_backend.h"
#include "ops/op_layer.h"
#include "ops/op_list.h"

PYLIBNN_REGISTER_OPS(pylibnn, CUDA, pylibnn::OpLayer<pylibnn::cuda::CudaBackend>)
