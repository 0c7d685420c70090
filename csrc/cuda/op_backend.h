// What the CUDA op glue (linear_cuda.cu, mlp_cuda.cu) needs from the build it is compiled
// in: the op's device made current with its current stream, scratch memory on that device,
// and views of tensors.
//   nvcc:      the real CUDA backend (registered for the CUDA key of `pylibnn` by cuda_ops.cpp).
//   host C++:  the emulated backend (csrc/cuda/emulation/), the same code over CPU tensors
//              (registered for the CPU key of the test-only `pylibnn_emulated_cuda` library,
//              whose schemas are pylibnn's: ops/op_list.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/Context.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#if defined(__CUDACC__)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "cuda/gemm_launch.h"

namespace pylibnn::cuda {

#if defined(__CUDACC__)
// The op's device is current for the op's lifetime; launches go to its current stream.
class OpDevice {
 public:
  explicit OpDevice(const at::Tensor& on) : guard_(on.device()) {}
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream(); }

 private:
  c10::cuda::CUDAGuard guard_;
};
#else
// The emulator has one device (host memory) and no streams.
class OpDevice {
 public:
  explicit OpDevice(const at::Tensor&) {}
  cudaStream_t stream() const { return nullptr; }
};
#endif

// Scratch backed by byte tensors of the op's device, released with the scratch.
class TensorScratch final : public Scratch {
 public:
  explicit TensorScratch(const at::TensorOptions& options) : options_(options.dtype(at::kByte)) {}
  void* allocate(size_t bytes) override {
    buffers_.push_back(at::empty({static_cast<int64_t>(bytes)}, options_));
    return buffers_.back().mutable_data_ptr();
  }

 private:
  at::TensorOptions options_;
  std::vector<at::Tensor> buffers_;
};

// A GEMM's context in an op: its scratch, and TF32 for float32 when torch allows it for
// matmuls now (torch.backends.cuda.matmul.allow_tf32, or torch.set_float32_matmul_precision
// other than "highest": at::Context::allowTF32CuBLAS reads both), read at every call.
template <typename T>
GemmContext gemm_context(Scratch& scratch) {
  return GemmContext{&scratch, std::is_same_v<T, float> && at::globalContext().allowTF32CuBLAS()};
}

// The kernels' element type of a tensor's scalar type: the 16-bit types of gemm_numeric.h
// for at::BFloat16 / at::Half (same bits), the type itself otherwise.
template <typename S>
struct KernelTypeOf {
  using type = S;
};
template <>
struct KernelTypeOf<c10::BFloat16> {
  using type = bfloat16;
};
template <>
struct KernelTypeOf<c10::Half> {
  using type = float16;
};
template <typename S>
using KernelType = typename KernelTypeOf<S>::type;

// A tensor's data as kernel elements T (the dtype checked by the dispatch that chose T).
template <typename T>
const T* data_of(const at::Tensor& t) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8, "a floating element type");
  return static_cast<const T*>(t.const_data_ptr());
}
template <typename T>
T* mutable_data_of(const at::Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

template <typename T>
View<T> view_of(const at::Tensor& t) {
  return {data_of<T>(t), t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

}  // namespace pylibnn::cuda
