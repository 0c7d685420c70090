// Memory for the CPU ops' large outputs (grad_weight, the forward's output, ...), kept mapped
// between calls.
//
// Why: glibc maps every allocation above 32 MiB afresh and unmaps it when it is freed (and
// trims smaller ones off the top of its heap), so each training step's new 4096 x 4096
// float32 grad_weight took 16385 minor page faults on first touch: about 38 ms here (2.3 us
// a fault in a VM), against 3 ms to write it. torch's own F.linear pays the same.
//
// How: an output of at least kOutputCacheMinBytes comes from an mmap'd block. When its
// tensor dies the block goes to a free list keyed by its size (rounded up to 64 KiB) instead
// of back to the kernel; the next output of that size takes it, with its pages still mapped.
// The tensor is an ordinary resizable CPU tensor (its storage's allocator is this cache).
// Bounded: free blocks are kept up to a limit (PYLIBNN_CPU_OUTPUT_CACHE_MB, default 512; 0
// turns the cache off); a block freed at the limit evicts (unmaps) the oldest free ones, so
// when the shapes change the new sizes replace the old. Blocks in use by live tensors are the
// caller's memory, as with any output. release_output_cache() unmaps the free ones
// (pylibnn._C.release_cpu_output_cache), output_cache_stats() reports.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/core/TensorOptions.h>

namespace pylibnn::cpu {

constexpr int64_t kOutputCacheMinBytes = 1 << 20;

// An uninitialized CPU tensor of these (concrete) sizes, contiguous, from the cache when it is
// at least kOutputCacheMinBytes and the cache is on; else from torch's CPU allocator.
at::Tensor empty_output(c10::SymIntArrayRef sizes, const at::TensorOptions& options);

struct OutputCacheStats {
  int64_t free_bytes;   // in free blocks, ready for the next output of their size
  int64_t free_blocks;
  int64_t used_bytes;   // in blocks held by live tensors
  int64_t limit_bytes;  // most free bytes kept
  int64_t hits;         // outputs served from a free block
  int64_t maps;         // blocks mapped afresh
};
OutputCacheStats output_cache_stats();

// Unmaps the free blocks (those of live tensors are unmapped when the tensors die).
void release_output_cache();

// Most free bytes kept from now on (0: every freed block is unmapped, and no output is cached).
void set_output_cache_limit(int64_t bytes);

}  // namespace pylibnn::cpu
