// The one way pylibnn launches a CUDA kernel, for both builds:
//   launch<kernel<T, Tile>>(LaunchConfig{grid, block, dynamic_shared_bytes, stream}, args...);
// Under nvcc it is kernel<<<grid, block, dynamic_shared_bytes, stream>>>(args...) followed
// by the launch check; under a host compiler it runs the kernel on the emulator
// (csrc/cuda/emulation/), which validates the launch against CUDA's limits, runs every
// block to completion before returning, and throws on a failure (an invalid launch, a
// divergent barrier, a deadlock) naming the kernel.
// Host-side only, and free of ATen, so that the kernel tests can use it without torch.
#pragma once

#include <cstddef>

#include "cuda/device.h"

#if defined(__CUDACC__)
#include <atomic>

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>
#else
#include <string>
#endif

namespace pylibnn::cuda {

#if !defined(__CUDACC__)
// The emulator has no streams: every launch has completed when it returns.
using cudaStream_t = struct CUstream_st*;
#endif

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t dynamic_shared_bytes = 0;
  cudaStream_t stream = nullptr;
};

template <auto Kernel, typename... Args>
void launch(const LaunchConfig& config, const Args&... args) {
#if defined(__CUDACC__)
  Kernel<<<config.grid, config.block, config.dynamic_shared_bytes, config.stream>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#else
  // "gemm_tiled_kernel<float, GemmTile<64, 64, 16, 4, 4> >", from this instantiation's name.
  static const std::string name = emulation::kernel_name_from_signature(__PRETTY_FUNCTION__);
  const auto call = [&] { Kernel(args...); };  // each fiber copies the arguments, as a launch does
  using Call = decltype(call);
  emulation::launch(name.c_str(), reinterpret_cast<const void*>(Kernel),
                    {config.grid, config.block, config.dynamic_shared_bytes},
                    {[](const void* context) { (*static_cast<const Call*>(context))(); }, &call});
#endif
}

// Allows `kernel` more than 48 KiB of dynamic shared memory (cudaFuncSetAttribute), once per
// device and size: the attribute call costs about a microsecond, a thin GEMM ten.
template <auto Kernel>
void allow_dynamic_shared_memory(size_t bytes) {
#if defined(__CUDACC__)
  constexpr int kTrackedDevices = 64;
  static std::atomic<size_t> raised[kTrackedDevices] = {};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device < kTrackedDevices && raised[device].load(std::memory_order_relaxed) >= bytes) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  if (device < kTrackedDevices) raised[device].store(bytes, std::memory_order_relaxed);
#else
  emulation::set_max_dynamic_shared_memory(reinterpret_cast<const void*>(Kernel), bytes);
#endif
}

}  // namespace pylibnn::cuda
