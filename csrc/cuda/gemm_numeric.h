// Element types of the CUDA kernels and their accumulators, for both builds (nvcc and the
// emulator): bfloat16 and float16 are 16-bit storage types with the same bits as at::BFloat16 /
// at::Half (the op glue reinterprets the tensors' pointers), converted to and from float32 by
// the same integer code on the GPU and in the emulator, so the two round alike:
//   to_float: exact;  from_float: round to nearest even, overflow to infinity, NaN kept quiet.
// The conversions run once per output element (epilogues) and per bias / derivative read,
// never in a GEMM's inner loop (the tensor cores read the raw bits), so software costs nothing
// measurable and keeps one definition.
//   Accumulator<T>: float for bfloat16, float16 and float; double for double.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/device.h"

#if defined(__CUDACC__)
#define PYLIBNN_NUMERIC __host__ __device__ __forceinline__
#else
#define PYLIBNN_NUMERIC inline
#endif

namespace pylibnn::cuda {

PYLIBNN_NUMERIC uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
PYLIBNN_NUMERIC float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// The conversion operator lets the emulator poison shared arrays of these types with a
// signaling NaN (cuda_emulation.h recognises a 2-byte class convertible to float).
struct bfloat16 {
  uint16_t bits;
  PYLIBNN_NUMERIC operator float() const { return bits_float(static_cast<uint32_t>(bits) << 16); }
};

struct float16 {
  uint16_t bits;
  PYLIBNN_NUMERIC operator float() const {
    const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
    const uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
    if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
      const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
      return sign ? -magnitude : magnitude;
    }
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }
};

template <typename T>
struct AccumulatorOf {
  using type = float;
};
template <>
struct AccumulatorOf<double> {
  using type = double;
};
template <typename T>
using Accumulator = typename AccumulatorOf<T>::type;

template <typename T>
PYLIBNN_NUMERIC Accumulator<T> to_accumulator(T v) {
  return static_cast<Accumulator<T>>(v);
}

// Rounds an accumulator to the element type (once, in the epilogues).
template <typename T>
PYLIBNN_NUMERIC T from_accumulator(Accumulator<T> v) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    uint32_t u = float_bits(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return T{static_cast<uint16_t>((u >> 16) | 0x40u)};  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // ties to even
    return T{static_cast<uint16_t>(u >> 16)};
  } else if constexpr (std::is_same_v<T, float16>) {
    uint32_t u = float_bits(v);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return T{static_cast<uint16_t>(sign | 0x7c00u | (u > 0x7f800000u ? 0x200u : 0u))};
    if (u >= 0x477ff000u) return T{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520 rounds to infinity
    if (u < 0x38800000u) {
      // Below 2^-14: a subnormal float16, a multiple of 2^-24. Adding 0.5 (whose ulp is 2^-24)
      // makes the float adder round the value to that multiple, ties to even.
      const float rounded = bits_float(u) + 0.5f;
      return T{static_cast<uint16_t>(sign | (float_bits(rounded) - 0x3f000000u))};
    }
    const uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000fffu + odd;  // exponent rebias (127 -> 15) and rounding in one add
    return T{static_cast<uint16_t>(sign | (u >> 13))};
  } else {
    return static_cast<T>(v);
  }
}

// A 16-bit element type of the tensor-core kernels.
template <typename T>
constexpr bool is_half_type = std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>;

}  // namespace pylibnn::cuda

#undef PYLIBNN_NUMERIC
