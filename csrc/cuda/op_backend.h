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
#include <vector>

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

template <typename T>
View<T> view_of(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

}  // namespace pylibnn::cuda
