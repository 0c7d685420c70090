// The CPU output cache (output_cache.h): mmap'd blocks on free lists keyed by size.
#include "cpu/output_cache.h"

#include <sys/mman.h>

#include <cstdlib>
#include <map>
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
  TORCH_CHECK(end != value && *end == '\0' && mb >= 0,
              "PYLIBNN_CPU_OUTPUT_CACHE_MB: expected a number of MiB >= 0, got '", value, "'");
  return static_cast<int64_t>(mb) << 20;
}

// Never destroyed: tensors may die after static destructors have run.
struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;  // rounded size -> block
  int64_t free_bytes = 0, used_bytes = 0, hits = 0, maps = 0;
  int64_t limit_bytes = limit_from_environment();
};

Cache& cache() {
  static Cache* instance = new Cache();
  return *instance;
}

void unmap_all(const std::vector<Block>& blocks) {
  for (const Block& block : blocks) munmap(block.data, block.bytes);
}

// The deleter of a cached output's DataPtr: its block goes back on the free list, or is
// unmapped when the free list is at its limit.
void return_block(void* context) {
  Block* block = static_cast<Block*>(context);
  Cache& c = cache();
  bool keep = false;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.used_bytes -= static_cast<int64_t>(block->bytes);
    keep = c.free_bytes + static_cast<int64_t>(block->bytes) <= c.limit_bytes;
    if (keep) {
      c.free_blocks.emplace(block->bytes, block->data);
      c.free_bytes += static_cast<int64_t>(block->bytes);
    }
  }
  if (!keep) munmap(block->data, block->bytes);
  delete block;
}

class OutputAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    // Small requests (a storage resized down, or a tiny output) go to torch's CPU allocator.
    if (bytes < static_cast<size_t>(kOutputCacheMinBytes)) return c10::GetCPUAllocator()->allocate(bytes);
    const size_t rounded = (bytes + kBlockGranule - 1) / kBlockGranule * kBlockGranule;
    Cache& c = cache();
    void* data = nullptr;
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      auto it = c.free_blocks.find(rounded);
      if (it != c.free_blocks.end()) {
        data = it->second;
        c.free_blocks.erase(it);
        c.free_bytes -= static_cast<int64_t>(rounded);
        ++c.hits;
      }
    }
    if (data == nullptr) {
      data = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (data == MAP_FAILED) return c10::GetCPUAllocator()->allocate(bytes);
      std::lock_guard<std::mutex> lock(c.mutex);
      ++c.maps;
    }
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      c.used_bytes += static_cast<int64_t>(rounded);
    }
    return {data, new Block{data, rounded}, &return_block, c10::Device(c10::DeviceType::CPU)};
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
  int64_t elements = 1;
  for (const int64_t size : sizes) elements *= size;
  const int64_t bytes = elements * static_cast<int64_t>(c10::elementSize(options.dtype().toScalarType()));
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
  return {c.free_bytes, static_cast<int64_t>(c.free_blocks.size()), c.used_bytes, c.limit_bytes, c.hits, c.maps};
}

void release_output_cache() {
  std::vector<Block> blocks;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    for (const auto& [bytes, data] : c.free_blocks) blocks.push_back({data, bytes});
    c.free_blocks.clear();
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
