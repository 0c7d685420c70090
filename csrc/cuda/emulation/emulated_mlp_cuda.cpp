// mlp_cuda.cu compiled by the host compiler: the MLP ops' CUDA backend on the emulator.
#include "cuda/mlp_cuda.cu"
