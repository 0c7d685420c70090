// Persistent packing memory of the CPU GEMM engine.
//
// Every thread that runs GEMM work owns a few scratch slots (packed B, padded bias, packed
// A, an edge panel). A slot is an anonymous mmap region that only grows (to a multiple of
// 64 KiB) and is reused by every later call, so a steady stream of same-shaped calls maps
// no new pages and takes no page faults. Memory from malloc would not do: glibc trims the
// top of its heap after each free and the next call faults the pages back in (measured:
// 240-528 minor faults per 512^3 call, about 2 us each in a VM), and a grow-only block
// inside the heap only moves those faults onto torch's own output tensors.
//
// Bounded: the slots hold blocks of the engine's blocking (kc x nc of B, mc x kc of A,
// kc x NR), never whole operands; the padded bias is N elements. A slot is released when its
// thread exits, or for all threads at once by release_scratch() (pylibnn._C.release_cpu_scratch),
// which refuses while a GEMM is running.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pylibnn::cpu {

enum class ScratchSlot : int {
  PackedB = 0,  // the calling thread: the kc x nc block of B shared by all tasks
  Bias = 1,     // the calling thread: the bias padded to whole tiles
  PackedA = 2,  // each worker: its mc x kc block of A
  Edge = 3,     // each worker: a partial B panel read in place, or a private B chunk
  RowSums = 4,  // the calling thread: float32 row sums of a reduced-precision product
  Count = 5,
};

// At least `bytes` bytes, 64-byte aligned, valid until this thread's next call for the same
// slot or release_scratch(). Raises (TORCH_CHECK) when the kernel refuses the mapping.
void* scratch(ScratchSlot slot, size_t bytes);

template <typename T>
T* scratch_for(ScratchSlot slot, int64_t count) {
  return static_cast<T*>(scratch(slot, static_cast<size_t>(count < 1 ? 1 : count) * sizeof(T)));
}

// Marks a GEMM as running for its lifetime, so release_scratch() cannot unmap memory in use.
class ScratchUse {
 public:
  ScratchUse();
  ~ScratchUse();
  ScratchUse(const ScratchUse&) = delete;
  ScratchUse& operator=(const ScratchUse&) = delete;
};

struct ScratchStats {
  int64_t mapped_bytes;   // now mapped, all threads
  int64_t peak_bytes;     // most ever mapped at once
  int64_t regions;        // slots with memory now
  int64_t maps;           // mmap calls so far (growth events)
};
ScratchStats scratch_stats();

// Unmaps every thread's scratch. Raises when a GEMM is running.
void release_scratch();

// Fresh zeroed anonymous memory for the scratch and for the output cache (output_cache.h),
// nullptr where the kernel refuses it; free it with munmap. From 2 MiB on it asks for
// transparent huge pages (madvise; the system's THP policy decides).
void* map_anonymous(size_t bytes);

}  // namespace pylibnn::cpu
