// Persistent, grow-only, per-thread packing memory (see gemm_scratch.h).
#include "cpu/gemm_scratch.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <c10/util/Exception.h>

namespace pylibnn::cpu {
namespace {

// Growth in steps of 64 KiB (and at least 1.25x), so a sequence of slowly growing shapes
// does not remap on every call.
constexpr size_t kGranule = 64 * 1024;

struct Region {
  void* data = nullptr;
  size_t bytes = 0;
};

std::atomic<int64_t> g_mapped{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_maps{0};

void unmap(Region& region) {
  if (region.data == nullptr) return;
  munmap(region.data, region.bytes);
  g_mapped.fetch_sub(static_cast<int64_t>(region.bytes));
  region = Region{};
}

struct ThreadScratch;

// Every live thread's slots, for release_scratch() and the statistics.
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::vector<ThreadScratch*>& registry() {
  static std::vector<ThreadScratch*> threads;
  return threads;
}
// Held shared by each running GEMM, exclusively by release_scratch().
std::shared_mutex& use_mutex() {
  static std::shared_mutex m;
  return m;
}

struct ThreadScratch {
  Region regions[static_cast<int>(ScratchSlot::Count)];
  ThreadScratch() {
    std::lock_guard<std::mutex> lock(registry_mutex());
    registry().push_back(this);
  }
  ~ThreadScratch() {
    std::lock_guard<std::mutex> lock(registry_mutex());
    for (Region& region : regions) unmap(region);
    auto& threads = registry();
    threads.erase(std::remove(threads.begin(), threads.end(), this), threads.end());
  }
};

ThreadScratch& this_thread() {
  thread_local ThreadScratch slots;
  return slots;
}

}  // namespace

// Huge pages: a 4096 x 4096 float32 grad_weight spans 16384 4 KiB pages, more than the
// second-level TLB holds (2048 entries), and the kernels walk C and the packed panels at
// once. Measured on Emerald Rapids, one thread, in-process against the same code without the
// advice (ratios of medians, > 1: faster with it), 27 A/B runs on 1024^3 .. 4096 x 4096 x
// 1024, float32 and float64, forward and fwd+bwd: 0.85-1.30, median 1.02 (the same case
// gave 1.17 and 0.96 in two runs: this VM's noise is as large as the effect). Kept for the
// TLB argument and the cheaper first touch (one fault per 2 MiB).
void* map_anonymous(size_t bytes) {
  constexpr size_t kHugePage = 2 * 1024 * 1024;
  void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) return nullptr;
#ifdef MADV_HUGEPAGE
  if (bytes >= kHugePage) madvise(data, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  return data;
}

void* scratch(ScratchSlot slot, size_t bytes) {
  Region& region = this_thread().regions[static_cast<int>(slot)];
  if (region.bytes >= bytes) return region.data;
  const size_t grown = std::max(bytes, region.bytes + region.bytes / 4);
  const size_t size = (grown + kGranule - 1) / kGranule * kGranule;
  void* data = map_anonymous(size);
  TORCH_CHECK(data != nullptr, "pylibnn: cannot map ", size, " bytes of GEMM packing memory: ",
              std::strerror(errno));
  {
    // The old region goes before the new one is published; nothing of it is still in use
    // (a slot serves one block at a time).
    std::lock_guard<std::mutex> lock(registry_mutex());
    unmap(region);
    region.data = data;
    region.bytes = size;
  }
  const int64_t mapped = g_mapped.fetch_add(static_cast<int64_t>(size)) + static_cast<int64_t>(size);
  int64_t peak = g_peak.load();
  while (mapped > peak && !g_peak.compare_exchange_weak(peak, mapped)) {
  }
  g_maps.fetch_add(1);
  return data;
}

ScratchUse::ScratchUse() { use_mutex().lock_shared(); }
ScratchUse::~ScratchUse() { use_mutex().unlock_shared(); }

ScratchStats scratch_stats() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  int64_t regions = 0;
  for (ThreadScratch* t : registry())
    for (const Region& region : t->regions) regions += region.data != nullptr;
  return {g_mapped.load(), g_peak.load(), regions, g_maps.load()};
}

void release_scratch() {
  std::unique_lock<std::shared_mutex> exclusive(use_mutex(), std::try_to_lock);
  TORCH_CHECK(exclusive.owns_lock(),
              "pylibnn.release_cpu_scratch: a CPU GEMM is running in another thread; call it when none is");
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (ThreadScratch* t : registry())
    for (Region& region : t->regions) unmap(region);
}

}  // namespace pylibnn::cpu
