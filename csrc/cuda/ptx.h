// Inline PTX for the tensor-core kernels, each instruction in a small __device__ wrapper with
// its emulated twin beside it (csrc/cuda/emulation/emulator.cpp implements the twins from the
// PTX ISA's description; scripts/gpu_check.sh compares the two on a GPU).
//
//   mma_m16n8k16_bf16 / _f16   D (16x8, f32) = A (16x16, row) B (16x8, col) + C
//   mma_m16n8k8_tf32           D (16x8, f32) = A (16x8, row)  B (8x8, col)  + C
//     Fragments per lane (groupID g = lane / 4, t = lane % 4), two 16-bit values per 32-bit
//     register with the lower column (or k) in the low half:
//       16-bit A: a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//       16-bit B: b0 (k = 2t..2t+1, n = g)  b1 (k = 2t+8.., n = g)
//       tf32   A: a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4);  B: b0 (k = t, g)  b1 (k = t+4, g)
//       C, D:     c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
//   ldmatrix_x{1,2,4}[_trans]  8x8 matrices of 16-bit values from shared memory: lanes
//     8i .. 8i+7 give the 16-byte aligned row addresses of matrix i; lane l receives row l/4,
//     columns 2(l%4)..+1 of each (transposed: column l/4, rows 2(l%4)..+1).
//   float_to_tf32              cvt.rna.tf32.f32: float32 rounded to tf32 (10 mantissa bits, to
//     nearest, ties away from zero), as the bits of a float32 whose low 13 bits are zero.
//   cp_async_{4,8,16}          global -> shared copies that complete at cp_async_wait<N>()
//     (all but the N most recently committed groups) or cp_async_wait_all(); source_bytes
//     below the copy size zero-fill the rest.
// Requires sm_80 or newer for the real instructions.
#pragma once

#include <cstdint>

#include "cuda/device.h"

namespace pylibnn::cuda::ptx {

#if defined(__CUDACC__)

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ uint32_t float_to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// .ca caches in L1 (4, 8 or 16 bytes); .cg bypasses it (16 bytes only): the 16-byte copies of
// operand tiles read each element once per block.
__device__ __forceinline__ void cp_async_4(void* shared, const void* global, int source_bytes = 4) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(source_bytes));
}
__device__ __forceinline__ void cp_async_8(void* shared, const void* global, int source_bytes = 8) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(source_bytes));
}
__device__ __forceinline__ void cp_async_16(void* shared, const void* global, int source_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(source_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::); }

#else  // the emulated twins

#define PYLIBNN_PTX_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()

inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                              PYLIBNN_PTX_SITE) {
  emulation::mma_sync(emulation::MmaInput::BF16, d, a, b, c, file, line);
}
inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                             PYLIBNN_PTX_SITE) {
  emulation::mma_sync(emulation::MmaInput::F16, d, a, b, c, file, line);
}
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                             PYLIBNN_PTX_SITE) {
  emulation::mma_sync(emulation::MmaInput::TF32, d, a, b, c, file, line);
}

inline uint32_t float_to_tf32(float f) { return emulation::float_to_tf32(f); }

inline void ldmatrix_x1(uint32_t (&r)[1], const void* row, PYLIBNN_PTX_SITE) {
  emulation::ldmatrix(1, false, r, row, file, line);
}
inline void ldmatrix_x2(uint32_t (&r)[2], const void* row, PYLIBNN_PTX_SITE) {
  emulation::ldmatrix(2, false, r, row, file, line);
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row, PYLIBNN_PTX_SITE) {
  emulation::ldmatrix(4, false, r, row, file, line);
}
inline void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row, PYLIBNN_PTX_SITE) {
  emulation::ldmatrix(1, true, r, row, file, line);
}
inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row, PYLIBNN_PTX_SITE) {
  emulation::ldmatrix(2, true, r, row, file, line);
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row, PYLIBNN_PTX_SITE) {
  emulation::ldmatrix(4, true, r, row, file, line);
}

inline void cp_async_4(void* shared, const void* global, int source_bytes = 4, PYLIBNN_PTX_SITE) {
  emulation::cp_async(shared, global, 4, source_bytes, file, line);
}
inline void cp_async_8(void* shared, const void* global, int source_bytes = 8, PYLIBNN_PTX_SITE) {
  emulation::cp_async(shared, global, 8, source_bytes, file, line);
}
inline void cp_async_16(void* shared, const void* global, int source_bytes = 16, PYLIBNN_PTX_SITE) {
  emulation::cp_async(shared, global, 16, source_bytes, file, line);
}
inline void cp_async_commit() { emulation::cp_async_commit_group(); }
template <int N>
void cp_async_wait() {
  emulation::cp_async_wait_group(N);
}
inline void cp_async_wait_all() { emulation::cp_async_wait_group(-1); }

#undef PYLIBNN_PTX_SITE

#endif

}  // namespace pylibnn::cuda::ptx
