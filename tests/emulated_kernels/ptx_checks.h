// Checks of the PTX wrappers of csrc/cuda/ptx.h (mma.sync, ldmatrix, cp.async, cvt.rna.tf32), written once
// for two runs: on the emulator (check_kernels.cpp's self-test) and on a real GPU
// (ptx_golden.cu, built by scripts/gpu_check.sh with nvcc and with g++, whose raw outputs
// must agree byte for byte). Each check builds fragments by the PTX ISA's layout formulas,
// written out again here, and compares with a plain matrix product; inputs are small
// integers, so every result is exact on both.
//
// A Device provides upload / allocate / download of buffers and run<Kernel>(grid, block, args).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "activation.h"  // PYLIBNN_HOST_DEVICE
#include "cuda/device.h"
#include "cuda/ptx.h"
#if !defined(__CUDACC__)
#include "cuda/launch.h"
#endif

namespace pylibnn::ptx_checks {

PYLIBNN_HOST_DEVICE inline uint32_t bits_of(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return bits;
#endif
}
PYLIBNN_HOST_DEVICE inline uint16_t to_bf16(float v) { return static_cast<uint16_t>(bits_of(v) >> 16); }  // exact here
PYLIBNN_HOST_DEVICE inline uint16_t to_f16(float v) {  // exact for integers |v| < 2048
  if (v == 0.0f) return 0;
  const uint16_t sign = v < 0 ? 0x8000 : 0;
  float m = v < 0 ? -v : v;
  int e = 0;
  while (m >= 2.0f) m /= 2.0f, ++e;
  while (m < 1.0f) m *= 2.0f, --e;
  return static_cast<uint16_t>(sign | ((e + 15) << 10) | static_cast<uint16_t>((m - 1.0f) * 1024.0f));
}
PYLIBNN_HOST_DEVICE inline uint32_t pack(uint32_t low, uint32_t high) { return (low & 0xffffu) | (high & 0xffffu) << 16; }

enum class MmaKind { BF16, F16, TF32 };

// One warp: fragments of A (16 x K, row-major), B (K x 8, row-major) and C (16 x 8), one
// mma, D stored by the documented formula.
template <MmaKind Kind>
__global__ void mma_kernel(const float* A, const float* B, const float* C, float* D) {
  constexpr int K = Kind == MmaKind::TF32 ? 8 : 16;
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  uint32_t a[4], b[2];
  if constexpr (Kind == MmaKind::TF32) {
    a[0] = bits_of(A[g * K + t]), a[1] = bits_of(A[(g + 8) * K + t]);
    a[2] = bits_of(A[g * K + t + 4]), a[3] = bits_of(A[(g + 8) * K + t + 4]);
    b[0] = bits_of(B[t * 8 + g]), b[1] = bits_of(B[(t + 4) * 8 + g]);
  } else {
    const auto h = [](float v) -> uint32_t { return Kind == MmaKind::BF16 ? to_bf16(v) : to_f16(v); };
    a[0] = pack(h(A[g * K + 2 * t]), h(A[g * K + 2 * t + 1]));
    a[1] = pack(h(A[(g + 8) * K + 2 * t]), h(A[(g + 8) * K + 2 * t + 1]));
    a[2] = pack(h(A[g * K + 2 * t + 8]), h(A[g * K + 2 * t + 9]));
    a[3] = pack(h(A[(g + 8) * K + 2 * t + 8]), h(A[(g + 8) * K + 2 * t + 9]));
    b[0] = pack(h(B[(2 * t) * 8 + g]), h(B[(2 * t + 1) * 8 + g]));
    b[1] = pack(h(B[(2 * t + 8) * 8 + g]), h(B[(2 * t + 9) * 8 + g]));
  }
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  if constexpr (Kind == MmaKind::BF16) cuda::ptx::mma_m16n8k16_bf16(d, a, b, c);
  if constexpr (Kind == MmaKind::F16) cuda::ptx::mma_m16n8k16_f16(d, a, b, c);
  if constexpr (Kind == MmaKind::TF32) cuda::ptx::mma_m16n8k8_tf32(d, a, b, c);
  D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// Matrix i of four 8x8 (16-bit) holds 64 i + 8 r + c at row r, column c; lane l gives the
// address of row l % 8 of matrix (l / 8) % Matrices.
template <int Matrices, bool Transpose>
__global__ void ldmatrix_kernel(uint32_t* out) {
  PYLIBNN_SHARED_ALIGNED(16, uint16_t, tiles, [4][8][8]);
  for (int e = threadIdx.x; e < 256; e += 32) tiles[e / 64][e / 8 % 8][e % 8] = static_cast<uint16_t>(e);
  __syncthreads();
  const int lane = threadIdx.x;
  const void* row = &tiles[(lane / 8) % Matrices][lane % 8][0];
  uint32_t r[Matrices];
  if constexpr (Matrices == 1) Transpose ? cuda::ptx::ldmatrix_x1_trans(r, row) : cuda::ptx::ldmatrix_x1(r, row);
  if constexpr (Matrices == 2) Transpose ? cuda::ptx::ldmatrix_x2_trans(r, row) : cuda::ptx::ldmatrix_x2(r, row);
  if constexpr (Matrices == 4) Transpose ? cuda::ptx::ldmatrix_x4_trans(r, row) : cuda::ptx::ldmatrix_x4(r, row);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = i < Matrices ? r[i] : 0u;
}

// D (16 x 8) = X (16 x 16, row-major bf16) W^T, W (8 x 16, row-major): A by ldmatrix_x4 of X,
// B (= W^T, "col") by ldmatrix_x2 of W, as a tensor-core GEMM loads them.
__global__ void ldmatrix_mma_kernel(const uint16_t* X, const uint16_t* W, float* D) {
  PYLIBNN_SHARED_ALIGNED(16, uint16_t, xs, [16][16]);
  PYLIBNN_SHARED_ALIGNED(16, uint16_t, ws, [8][16]);
  for (int e = threadIdx.x; e < 256; e += 32) xs[e / 16][e % 16] = X[e];
  for (int e = threadIdx.x; e < 128; e += 32) ws[e / 16][e % 16] = W[e];
  __syncthreads();
  const int lane = threadIdx.x;
  uint32_t a[4], b[2];
  cuda::ptx::ldmatrix_x4(a, &xs[lane % 16][lane / 16 * 8]);
  cuda::ptx::ldmatrix_x2(b, &ws[lane % 8][(lane / 8) % 2 * 8]);
  const float c[4] = {0, 0, 0, 0};
  float d[4];
  cuda::ptx::mma_m16n8k16_bf16(d, a, b, c);
  const int g = lane / 4, t = lane % 4;
  D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// Group 0 copies src[0..64), group 1 src[64..128) (threads 8..15 with source size 8: their
// upper halves zero-filled); snapshots of shared memory after the barrier that follows the
// issue, after wait_group<1> (group 0 landed) and after wait_all.
__global__ void cp_async_kernel(const float* src, float* snapshots) {
  PYLIBNN_SHARED_ALIGNED(16, float, buffer, [128]);
  const int t = threadIdx.x;  // 16 threads, 4 floats each per group
  for (int i = t; i < 128; i += 16) buffer[i] = -1.0f;
  __syncthreads();
  cuda::ptx::cp_async_16(&buffer[4 * t], &src[4 * t]);
  cuda::ptx::cp_async_commit();
  cuda::ptx::cp_async_16(&buffer[64 + 4 * t], &src[64 + 4 * t], t < 8 ? 16 : 8);
  cuda::ptx::cp_async_commit();
  __syncthreads();  // a barrier does not complete asynchronous copies
  for (int i = t; i < 128; i += 16) snapshots[i] = buffer[i];
  __syncthreads();  // every snapshot is taken before anyone's wait lands its copies
  cuda::ptx::cp_async_wait<1>();
  __syncthreads();
  for (int i = t; i < 128; i += 16) snapshots[128 + i] = buffer[i];
  __syncthreads();
  cuda::ptx::cp_async_wait_all();
  __syncthreads();
  for (int i = t; i < 128; i += 16) snapshots[256 + i] = buffer[i];
}

// cvt.rna.tf32.f32 of each input, as raw bits.
__global__ void tf32_kernel(const float* in, uint32_t* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = cuda::ptx::float_to_tf32(in[i]);
}

struct CheckResult {
  std::string name;
  std::string problem;            // empty: as documented
  std::vector<unsigned char> raw;  // the kernel's output, for comparing two runs
};

template <typename T>
std::vector<unsigned char> raw_bytes(const std::vector<T>& v) {
  std::vector<unsigned char> raw(v.size() * sizeof(T));
  std::memcpy(raw.data(), v.data(), raw.size());
  return raw;
}

template <MmaKind Kind, typename Device>
CheckResult check_mma(Device& device, const char* name) {
  constexpr int K = Kind == MmaKind::TF32 ? 8 : 16;
  std::vector<float> A(16 * K), B(K * 8), C(16 * 8);
  for (size_t i = 0; i < A.size(); ++i) A[i] = static_cast<float>(static_cast<int>(i * 7 % 9) - 4);
  for (size_t i = 0; i < B.size(); ++i) B[i] = static_cast<float>(static_cast<int>(i * 5 % 7) - 3);
  for (size_t i = 0; i < C.size(); ++i) C[i] = static_cast<float>(static_cast<int>(i % 5)) * 0.5f;
  float* D = device.template allocate<float>(16 * 8);
  device.template run<mma_kernel<Kind>>(dim3(1), dim3(32), device.upload(A), device.upload(B), device.upload(C), D);
  const std::vector<float> out = device.download(D, 16 * 8);
  CheckResult result{name, "", raw_bytes(out)};
  for (int m = 0; m < 16 && result.problem.empty(); ++m) {
    for (int n = 0; n < 8; ++n) {
      float expected = C[m * 8 + n];
      for (int k = 0; k < K; ++k) expected += A[m * K + k] * B[k * 8 + n];
      if (out[m * 8 + n] != expected) {
        result.problem = "D(" + std::to_string(m) + ", " + std::to_string(n) + ") = " + std::to_string(out[m * 8 + n]) +
                         ", expected " + std::to_string(expected);
        break;
      }
    }
  }
  return result;
}

template <int Matrices, bool Transpose, typename Device>
CheckResult check_ldmatrix(Device& device, const char* name) {
  uint32_t* out_d = device.template allocate<uint32_t>(32 * 4);
  device.template run<ldmatrix_kernel<Matrices, Transpose>>(dim3(1), dim3(32), out_d);
  const std::vector<uint32_t> out = device.download(out_d, 32 * 4);
  CheckResult result{name, "", raw_bytes(out)};
  for (int lane = 0; lane < 32 && result.problem.empty(); ++lane) {
    for (int i = 0; i < Matrices; ++i) {
      const int r = lane / 4, c = 2 * (lane % 4);
      const uint32_t expected = Transpose ? pack(64 * i + 8 * c + r, 64 * i + 8 * (c + 1) + r)
                                          : pack(64 * i + 8 * r + c, 64 * i + 8 * r + c + 1);
      if (out[lane * 4 + i] != expected) {
        result.problem = "lane " + std::to_string(lane) + ", matrix " + std::to_string(i);
        break;
      }
    }
  }
  return result;
}

template <typename Device>
CheckResult check_ldmatrix_feeds_mma(Device& device, const char* name) {
  std::vector<uint16_t> X(256), W(128);
  std::vector<float> xf(256), wf(128);
  for (int i = 0; i < 256; ++i) xf[i] = static_cast<float>(i * 3 % 11 - 5), X[i] = to_bf16(xf[i]);
  for (int i = 0; i < 128; ++i) wf[i] = static_cast<float>(i * 7 % 5 - 2), W[i] = to_bf16(wf[i]);
  float* D = device.template allocate<float>(128);
  device.template run<ldmatrix_mma_kernel>(dim3(1), dim3(32), device.upload(X), device.upload(W), D);
  const std::vector<float> out = device.download(D, 128);
  CheckResult result{name, "", raw_bytes(out)};
  for (int m = 0; m < 16 && result.problem.empty(); ++m) {
    for (int n = 0; n < 8; ++n) {
      float expected = 0;
      for (int k = 0; k < 16; ++k) expected += xf[m * 16 + k] * wf[n * 16 + k];
      if (out[m * 8 + n] != expected) {
        result.problem = "D(" + std::to_string(m) + ", " + std::to_string(n) + ") wrong";
        break;
      }
    }
  }
  return result;
}

template <typename Device>
CheckResult check_cp_async(Device& device, const char* name) {
  std::vector<float> src(128);
  for (int i = 0; i < 128; ++i) src[i] = static_cast<float>(i + 1);
  float* snapshots_d = device.template allocate<float>(3 * 128);
  device.template run<cp_async_kernel>(dim3(1), dim3(16), device.upload(src), snapshots_d);
  const std::vector<float> snapshots = device.download(snapshots_d, 3 * 128);
  // Only what the ISA guarantees is checked: the copies have landed after the waits. Before
  // a wait, a GPU may or may not have completed a copy; the emulator never has (so a missing
  // wait reads old data there), which is why the raw output is not compared for this check.
  CheckResult result{name, "", {}};
  for (int i = 0; i < 128 && result.problem.empty(); ++i) {
    const bool zero_filled = i >= 64 && (i - 64) / 4 >= 8 && (i - 64) % 4 >= 2;
    const float landed = zero_filled ? 0.0f : src[i];
    if (i < 64 && snapshots[128 + i] != landed) result.problem = "wait_group<1> did not land group 0 at " + std::to_string(i);
    if (snapshots[256 + i] != landed) result.problem = "wait_all did not land everything at " + std::to_string(i);
  }
  return result;
}

// Rounding to TF32: ties (the 13 dropped bits exactly 0x1000) go away from zero, either sign,
// a carry into the exponent, rounding up to infinity, infinities, zeros, subnormals.
template <typename Device>
CheckResult check_tf32(Device& device, const char* name) {
  const uint32_t patterns[] = {0x3f800000u, 0x3f801000u, 0x3f800fffu, 0x3f801001u, 0xbf801000u, 0x3f803000u,
                               0x3fffffffu, 0x3ffff000u, 0x7f7ff000u, 0xff7fffffu, 0x7f800000u, 0xff800000u,
                               0x00000000u, 0x80000000u, 0x00001000u, 0x00000fffu, 0x00401000u, 0x4049ffffu};
  const int n = static_cast<int>(sizeof(patterns) / sizeof(patterns[0]));
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) std::memcpy(&in[i], &patterns[i], 4);
  uint32_t* out_d = device.template allocate<uint32_t>(n);
  device.template run<tf32_kernel>(dim3(1), dim3(32), device.upload(in), out_d, n);
  const std::vector<uint32_t> out = device.download(out_d, n);
  CheckResult result{name, "", raw_bytes(out)};
  for (int i = 0; i < n && result.problem.empty(); ++i) {
    const uint32_t u = patterns[i];
    const bool special = (u & 0x7f800000u) == 0x7f800000u;
    const uint32_t expected = special ? u & 0xffffe000u : (u + 0x1000u) & 0xffffe000u;
    if (out[i] != expected) result.problem = "input " + std::to_string(i) + " rounded wrong";
  }
  return result;
}

template <typename Device>
std::vector<CheckResult> run_ptx_checks(Device& device) {
  return {check_mma<MmaKind::BF16>(device, "mma.sync m16n8k16 bf16"),
          check_mma<MmaKind::F16>(device, "mma.sync m16n8k16 f16"),
          check_mma<MmaKind::TF32>(device, "mma.sync m16n8k8 tf32"),
          check_ldmatrix<1, false>(device, "ldmatrix x1"),
          check_ldmatrix<2, false>(device, "ldmatrix x2"),
          check_ldmatrix<4, false>(device, "ldmatrix x4"),
          check_ldmatrix<1, true>(device, "ldmatrix x1.trans"),
          check_ldmatrix<2, true>(device, "ldmatrix x2.trans"),
          check_ldmatrix<4, true>(device, "ldmatrix x4.trans"),
          check_ldmatrix_feeds_mma(device, "ldmatrix feeds mma (A row-major, B = W^T)"),
          check_cp_async(device, "cp.async lands at wait_group / wait_all, zero-fill"),
          check_tf32(device, "cvt.rna.tf32.f32 (ties away from zero, carries, infinities)")};
}

#if !defined(__CUDACC__)
// Buffers in host memory, kernels on the emulator.
class EmulatedDevice {
 public:
  template <typename T>
  T* upload(const std::vector<T>& host) {
    T* p = allocate<T>(host.size());
    std::memcpy(p, host.data(), host.size() * sizeof(T));
    return p;
  }
  template <typename T>
  T* allocate(size_t count) {
    buffers_.emplace_back(count * sizeof(T) + 16);
    return reinterpret_cast<T*>(buffers_.back().data());
  }
  template <typename T>
  std::vector<T> download(const T* p, size_t count) {
    return std::vector<T>(p, p + count);
  }
  template <auto Kernel, typename... Args>
  void run(dim3 grid, dim3 block, const Args&... args) {
    cuda::launch<Kernel>(cuda::LaunchConfig{grid, block}, args...);
  }

 private:
  std::vector<std::vector<unsigned char>> buffers_;
};
#endif

}  // namespace pylibnn::ptx_checks
