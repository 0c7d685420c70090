// What CUDA kernel source sees when it is compiled by a host compiler against the emulator
// (emulator.h): the execution-space keywords, threadIdx / blockIdx / blockDim / gridDim,
// __syncthreads, warp collectives, atomics and the device math helpers pylibnn's kernels
// use. Included through csrc/cuda/device.h, never directly by kernels.
//
// Shared memory cannot keep CUDA's spelling here (a __shared__ declaration would have to
// become a reference into the block's arena); kernels declare it with PYLIBNN_SHARED and
// PYLIBNN_DYNAMIC_SHARED from device.h.
#pragma once

#if defined(__CUDACC__)
#error "cuda_emulation.h is for host compilers; nvcc builds the real kernels"
#endif

// Defined before CUDA's host headers, which would otherwise turn them into GNU attributes
// the host compiler warns about (and keep an already defined __shared__ as it is).
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __restrict__ __restrict

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <vector_types.h>

#include "cuda/emulation/emulator.h"

// The fiber's coordinates, set by the scheduler before it resumes a fiber.
#define threadIdx (::pylibnn::emulation::current.thread)
#define blockIdx (::pylibnn::emulation::current.block)
#define blockDim (::pylibnn::emulation::current.block_dim)
#define gridDim (::pylibnn::emulation::current.grid_dim)

constexpr int warpSize = 32;

// The call site (file, line) rides along as default arguments, so barrier errors name it.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::pylibnn::emulation::sync_threads(file, line);
}

inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  ::pylibnn::emulation::warp_collective(::pylibnn::emulation::WarpOp::Sync, mask, 0, 0, warpSize, file, line);
}

namespace pylibnn::emulation {

template <typename T>
uint64_t to_slot(T value) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>,
                "warp shuffles move values of up to 8 bytes");
  uint64_t slot = 0;
  std::memcpy(&slot, &value, sizeof(T));
  return slot;
}

template <typename T>
T from_slot(uint64_t slot) {
  T value;
  std::memcpy(&value, &slot, sizeof(T));
  return value;
}

template <typename T>
T shuffle(WarpOp op, unsigned mask, T value, int argument, int width, const char* file, int line) {
  return from_slot<T>(warp_collective(op, mask, to_slot(value), argument, width, file, line));
}

// Poison of a shared variable: 2, 4 or 8 for an IEEE floating element type or a CUDA vector
// of them (signaling NaN), 0 for anything else (0xA5 bytes). Half-precision types are
// recognised without naming them: a 2-byte class with a floating conversion.
template <typename T>
constexpr int floating_bytes() {
  using E = std::remove_cv_t<std::remove_all_extents_t<T>>;
  if constexpr (std::is_floating_point_v<E>) {
    return static_cast<int>(sizeof(E));
  } else if constexpr (std::is_same_v<E, float2> || std::is_same_v<E, float3> || std::is_same_v<E, float4>) {
    return 4;
  } else if constexpr (std::is_same_v<E, double2>) {
    return 8;
  } else if constexpr (std::is_class_v<E> && sizeof(E) == 2 && std::is_convertible_v<E, float>) {
    return 2;
  } else {
    return 0;
  }
}

template <typename T, size_t Alignment = alignof(T)>
T* shared_array(const void* site, const char* name) {
  return static_cast<T*>(shared_variable(site, sizeof(T), Alignment, floating_bytes<T>(), name));
}

template <typename T>
T atomic_update(T* address, T value, T (*combine)(T, T)) {
  if constexpr (std::is_integral_v<T>) {
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(address, &old, combine(old, value), true, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
  } else {
    using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
    static_assert(sizeof(T) == sizeof(Bits), "atomics on 4- and 8-byte values");
    Bits* bits = reinterpret_cast<Bits*>(address);
    Bits old_bits = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
      const T old = from_slot<T>(old_bits);
      const Bits new_bits = static_cast<Bits>(to_slot(combine(old, value)));
      if (__atomic_compare_exchange_n(bits, &old_bits, new_bits, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
        return old;
      }
    }
  }
}

}  // namespace pylibnn::emulation

template <typename T>
T __shfl_sync(unsigned mask, T value, int src_lane, int width = warpSize, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return ::pylibnn::emulation::shuffle(::pylibnn::emulation::WarpOp::Shuffle, mask, value, src_lane, width, file,
                                       line);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  return ::pylibnn::emulation::shuffle(::pylibnn::emulation::WarpOp::ShuffleUp, mask, value,
                                       static_cast<int>(delta), width, file, line);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = warpSize,
                   const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::pylibnn::emulation::shuffle(::pylibnn::emulation::WarpOp::ShuffleDown, mask, value,
                                       static_cast<int>(delta), width, file, line);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  return ::pylibnn::emulation::shuffle(::pylibnn::emulation::WarpOp::ShuffleXor, mask, value, lane_mask, width,
                                       file, line);
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return static_cast<unsigned>(::pylibnn::emulation::warp_collective(
      ::pylibnn::emulation::WarpOp::Ballot, mask, predicate != 0, 0, warpSize, file, line));
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(::pylibnn::emulation::warp_collective(::pylibnn::emulation::WarpOp::Any, mask,
                                                                predicate != 0, 0, warpSize, file, line));
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(::pylibnn::emulation::warp_collective(::pylibnn::emulation::WarpOp::All, mask,
                                                                predicate != 0, 0, warpSize, file, line));
}

// Atomics: blocks run on several OS threads, so these are real atomic read-modify-writes.
template <typename T>
T atomicAdd(T* address, T value) {
  return ::pylibnn::emulation::atomic_update<T>(address, value, [](T a, T b) { return T(a + b); });
}
template <typename T>
T atomicMax(T* address, T value) {
  return ::pylibnn::emulation::atomic_update<T>(address, value, [](T a, T b) { return a < b ? b : a; });
}
template <typename T>
T atomicMin(T* address, T value) {
  return ::pylibnn::emulation::atomic_update<T>(address, value, [](T a, T b) { return b < a ? b : a; });
}
template <typename T>
T atomicExch(T* address, T value) {
  return ::pylibnn::emulation::atomic_update<T>(address, value, [](T, T b) { return b; });
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  static_assert(std::is_integral_v<T>, "atomicCAS on integers");
  __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;  // the old value either way
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// CUDA's device min / max accept mixed integer widths; these follow the usual conversions.
template <typename A, typename B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
