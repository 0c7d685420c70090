// Device-side portability for pylibnn's CUDA kernels: the same kernel source compiles with
// nvcc (the real kernels) and with a host compiler against the emulator of the CUDA
// execution model (csrc/cuda/emulation/), which runs them on the CPU in the tests.
//
// Kernels use CUDA's own spelling (threadIdx, __syncthreads, __shfl_*_sync, atomics, min /
// max) except for shared memory, which they declare with
//   PYLIBNN_SHARED(T, name, [rows][cols]);   // __shared__ T name[rows][cols];
//   PYLIBNN_SHARED_ALIGNED(16, T, name, [rows][cols]);  // __shared__ __align__(16) T ...
//   PYLIBNN_DYNAMIC_SHARED(T, name);         // extern __shared__ T name[]; (as a T*)
// In the emulated build a shared variable is a reference into the block's arena, poisoned
// (NaN for floating types) when the block starts.
#pragma once

#if defined(__CUDACC__)

#define PYLIBNN_SHARED(type, name, dims) __shared__ type name dims
#define PYLIBNN_SHARED_ALIGNED(alignment, type, name, dims) __shared__ __align__(alignment) type name dims
#define PYLIBNN_DYNAMIC_SHARED(type, name)                          \
  extern __shared__ __align__(16) unsigned char name##_bytes_[];    \
  type* const name = reinterpret_cast<type*>(name##_bytes_)

#else

#include "cuda/emulation/cuda_emulation.h"

// The address of a function-local static is the variable's identity: one per declaration
// and per template instantiation of the kernel.
#define PYLIBNN_SHARED(type, name, dims) PYLIBNN_SHARED_ALIGNED(alignof(type), type, name, dims)
#define PYLIBNN_SHARED_ALIGNED(alignment, type, name, dims) \
  static char name##_site_ = 0;                             \
  type(&name) dims = *::pylibnn::emulation::shared_array<type dims, alignment>(&name##_site_, #name)
#define PYLIBNN_DYNAMIC_SHARED(type, name) \
  type* const name = static_cast<type*>(::pylibnn::emulation::dynamic_shared_memory())

#endif
