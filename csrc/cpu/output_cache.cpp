// The CPU output cache (output_cache.h): mmap'd blocks on free lists keyed by size. A block
// that comes back when the free blocks are at their limit evicts the oldest free ones: when
// the shapes change (a new batch size), the old sizes leave instead of the new ones.
#include "cpu/output_cache.h"

#include "cpu/gemm_scratch.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

namespace pylibnn::cpu {
namespace {

constexpr size_t kBlockGranule = 64 * 1024;

struct Block {
  void* data;
  size_t bytes;
};

int64_t limit_from_environment() {
  const char* value = std::getenv("PYLIBNN_CPU_OUTPUT_CACHE_MB");
  if (value == nullptr || *value == '\0') return int64_t(512) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(value, &end, 10);
  TORCH_CHECK(end != value && *end == '\0' && mb >= 0 && mb <= (std::numeric_limits<int64_t>::max() >> 20),
              "PYLIBNN_CPU_OUTPUT_CACHE_MB: expected a number of MiB >= 0, got '", value, "'");
  return static_cast<int64_t>(mb) << 20;
}

// Never destroyed: tensors may die after static destructors have run.
struct Cache {
  std::mutex mutex;
  std::map<uint64_t, Block> free_by_age;       // order returned -> block (oldest first)
  std::multimap<size_t, uint64_t> free_by_size;  // rounded size -> its entry in free_by_age
  uint64_t next_age = 0;
  int64_t free_bytes = 0, used_bytes = 0, hits = 0, maps = 0;
  int64_t limit_bytes = limit_from_environment();

  // A free block of exactly `bytes`, taken off the lists; nullptr when there is none.
  void* take(size_t bytes) {
    auto it = free_by_size.find(bytes);
    if (it == free_by_size.end()) return nullptr;
    void* data = free_by_age.at(it->second).data;
    free_by_age.erase(it->second);
    free_by_size.erase(it);
    free_bytes -= static_cast<int64_t>(bytes);
    return data;
  }
  // The oldest free block, taken off the lists (for the caller to unmap).
  Block take_oldest() {
    const auto oldest = free_by_age.begin();
    const Block block = oldest->second;
    auto [first, last] = free_by_size.equal_range(block.bytes);
    for (auto it = first; it != last; ++it)
      if (it->second == oldest->first) {
        free_by_size.erase(it);
        break;
      }
    free_by_age.erase(oldest);
    free_bytes -= static_cast<int64_t>(block.bytes);
    return block;
  }
  void put(const Block& block) {
    const uint64_t age = next_age++;
    free_by_age.emplace(age, block);
    try {
      free_by_size.emplace(block.bytes, age);
    } catch (...) {
      free_by_age.erase(age);
      throw;
    }
    free_bytes += static_cast<int64_t>(block.bytes);
  }
};

Cache& cache() {
  static Cache* instance = new Cache();
  return *instance;
}

void unmap_all(const std::vector<Block>& blocks) {
  for (const Block& block : blocks) munmap(block.data, block.bytes);
}

// The deleter of a cached output's DataPtr: its block goes back on the free list, after the
// oldest free blocks that must leave to keep the list within its limit; a block larger than
// the limit is unmapped. Never throws (it runs in ~DataPtr): a failed insert unmaps instead.
void return_block(void* context) {
  const std::unique_ptr<Block> block(static_cast<Block*>(context));
  const auto bytes = static_cast<int64_t>(block->bytes);
  Cache& c = cache();
  std::vector<Block> evicted;
  bool kept = false;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.used_bytes -= bytes;
    if (bytes <= c.limit_bytes) {
      try {
        evicted.reserve(8);
        while (c.free_bytes + bytes > c.limit_bytes) evicted.push_back(c.take_oldest());
        c.put(*block);
        kept = true;
      } catch (...) {
      }
    }
  }
  if (!kept) munmap(block->data, block->bytes);
  unmap_all(evicted);
}

class OutputAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    // Small requests (a storage resized down, or a tiny output) go to torch's CPU allocator.
    if (bytes < static_cast<size_t>(kOutputCacheMinBytes)) return c10::GetCPUAllocator()->allocate(bytes);
    const size_t rounded = (bytes + kBlockGranule - 1) / kBlockGranule * kBlockGranule;
    auto block = std::make_unique<Block>(Block{nullptr, rounded});  // before any memory is taken
    Cache& c = cache();
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      block->data = c.take(rounded);
      if (block->data != nullptr) {
        ++c.hits;
        c.used_bytes += static_cast<int64_t>(rounded);
      }
    }
    if (block->data == nullptr) {
      void* data = map_anonymous(rounded);
      if (data == nullptr) return c10::GetCPUAllocator()->allocate(bytes);
      block->data = data;
      std::lock_guard<std::mutex> lock(c.mutex);
      ++c.maps;
      c.used_bytes += static_cast<int64_t>(rounded);
    }
    void* data = block->data;
    return {data, block.release(), &return_block, c10::Device(c10::DeviceType::CPU)};
  }
  // Simple (context carries the block, the data pointer is the block's start) for the blocks
  // of this cache, and for torch's CPU allocator's own where a small request went there; so
  // copy-on-write clones (torch._lazy_clone) work on these tensors.
  bool is_simple_data_ptr(const c10::DataPtr& data_ptr) const override {
    return data_ptr.get_deleter() == &return_block || data_ptr.get() == data_ptr.get_context();
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

OutputAllocator& output_allocator() {
  static OutputAllocator* instance = new OutputAllocator();
  return *instance;
}

}  // namespace

at::Tensor empty_output(c10::SymIntArrayRef sym_sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  const c10::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(sym_sizes);
  int64_t bytes = static_cast<int64_t>(c10::elementSize(options.dtype().toScalarType()));
  for (const int64_t size : sizes) {
    // an impossible size: at::empty raises its own error for it
    if (size < 0 || __builtin_mul_overflow(bytes, size, &bytes)) return at::empty(sizes, options);
  }
  int64_t limit = 0;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    limit = c.limit_bytes;
  }
  if (bytes < kOutputCacheMinBytes || limit == 0 || options.pinned_memory()) return at::empty(sizes, options);
  return at::detail::empty_generic(sizes, &output_allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), std::nullopt);
}

OutputCacheStats output_cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return {c.free_bytes, static_cast<int64_t>(c.free_by_age.size()), c.used_bytes, c.limit_bytes, c.hits, c.maps};
}

void release_output_cache() {
  std::vector<Block> blocks;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    for (const auto& [age, block] : c.free_by_age) blocks.push_back(block);
    c.free_by_age.clear();
    c.free_by_size.clear();
    c.free_bytes = 0;
  }
  unmap_all(blocks);
}

void set_output_cache_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "pylibnn.set_cpu_output_cache_limit: expected bytes >= 0, got ", bytes);
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    c.limit_bytes = bytes;
  }
  // Free blocks beyond the new limit: simplest is to drop them all; the next outputs map anew.
  release_output_cache();
}

}  // namespace pylibnn::cpu
