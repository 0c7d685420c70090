// linear_cuda.cu compiled by the host compiler: the linear ops' CUDA backend on the emulator.
#include "cuda/linear_cuda.cu"
