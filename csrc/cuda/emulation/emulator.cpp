// The CUDA execution model on the CPU (see emulator.h for the model and its limits).
//
// Structure:
//   * Context switch: a hand-written x86-64 switch of the callee-saved registers and the
//     stack pointer (tens of nanoseconds), or ucontext elsewhere (or with
//     PYLIBNN_EMULATION_UCONTEXT); AddressSanitizer is told about every stack switch.
//   * Worker: per OS thread, the fibers with their stacks (mmap'd, guard page below each,
//     grow-only across launches) and the shared-memory arena.
//   * run_block: resumes the runnable fibers in the selected order until none is runnable,
//     then releases a barrier, or reports divergence / deadlock. Warp collectives complete
//     when the last lane named in the mask arrives; that lane computes every lane's result.
//   * launch: validates the shape against CUDA's limits, then hands blocks to a persistent
//     pool (the calling thread included) through an atomic counter.
#include "cuda/emulation/emulator.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cfenv>
#include <condition_variable>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

#if !defined(__x86_64__) && !defined(PYLIBNN_EMULATION_UCONTEXT)
#define PYLIBNN_EMULATION_UCONTEXT 1
#endif
#if defined(PYLIBNN_EMULATION_UCONTEXT)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define PYLIBNN_EMULATION_ASAN 1
#endif

namespace pylibnn::emulation {

thread_local ThreadCoordinates current;

namespace {

// ---------------------------------------------------------------------------------------
// Limits of the CUDA execution model (compute capability 9.0).
constexpr uint64_t kMaxThreadsPerBlock = 1024;
constexpr uint64_t kMaxBlockX = 1024, kMaxBlockY = 1024, kMaxBlockZ = 64;
constexpr uint64_t kMaxGridX = 2147483647u, kMaxGridY = 65535, kMaxGridZ = 65535;
constexpr size_t kStaticSharedLimit = 48 * 1024;
constexpr size_t kDefaultDynamicSharedLimit = 48 * 1024;
constexpr size_t kMaxSharedPerBlock = 227 * 1024;
constexpr int kWarpSize = 32;

// Arena layout: the dynamic region first, then each static variable, with a red zone after
// each (poisoned under ASan) so that a read past one variable does not land in the next.
constexpr size_t kRedZone = 64;
constexpr size_t kArenaBytes = (kMaxSharedPerBlock + 64 * kRedZone + 4096 + 4095) / 4096 * 4096;  // whole pages

#if defined(PYLIBNN_EMULATION_ASAN)
constexpr size_t kStackBytes = 512 * 1024;  // ASan's red zones grow every frame
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif
// The top of a stack that a finished fiber's never-returning frames (fiber_main and the
// final switch) can occupy.
constexpr size_t kFinishedFramesBytes = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Settings.
std::atomic<int> g_order{static_cast<int>(FiberOrder::Forward)};
std::atomic<uint64_t> g_seed{0};
std::atomic<bool> g_strict{false};
std::atomic<int> g_worker_threads{0};  // 0: not decided yet

struct GlobalStatistics {
  std::atomic<uint64_t> launches{0}, blocks{0}, threads{0}, barriers{0}, warp_collectives{0}, fiber_switches{0};
} g_stats;

std::mutex g_attribute_mutex;
std::unordered_map<const void*, size_t> g_max_dynamic_shared;  // kernel -> raised limit

// ---------------------------------------------------------------------------------------
// Context switching.

enum class State : int { Ready, AtBarrier, AtWarp, Done, Failed };

struct Fiber {
#if defined(PYLIBNN_EMULATION_UCONTEXT)
  ucontext_t context;
#else
  void* sp = nullptr;  // saved stack pointer while not running
#endif
  char* stack_low = nullptr;  // lowest usable byte (above the guard page)
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
  State state = State::Ready;
  int linear = 0;  // linear thread index in the block
  uint3 thread{};
  // Where it waits (barrier or warp collective), for error messages.
  const char* file = nullptr;
  int line = 0;
  // The pending warp collective.
  WarpOp op = WarpOp::Sync;
  uint32_t mask = 0;
  uint64_t value = 0;
  int argument = 0;
  int width = kWarpSize;
  uint64_t result = 0;
  // Warp-wide exchanges (mma, ldmatrix): this lane's contribution, double-buffered by round
  // so that a lane entering the next exchange does not overwrite what others still read.
  unsigned char exchange[2][48];
  uint32_t exchange_round = 0;
  // cp.async: groups committed so far (a copy belongs to the group open when it was issued).
  int committed_copy_groups = 0;
};

struct PendingCopy {
  unsigned char* destination;
  unsigned char data[16];
  int bytes;
  int group;
};

}  // namespace
}  // namespace pylibnn::emulation

#if !defined(PYLIBNN_EMULATION_UCONTEXT)
// switch_context(void** save_sp, void* load_sp): pushes the callee-saved registers, saves the
// stack pointer, loads the other one and pops its registers; `ret` resumes the other side.
// fiber_start: the first return address of a new fiber; r12 holds its Fiber*, r13 the
// entry function, which never returns. The floating-point control state (MXCSR, x87 control
// word) is not switched: every fiber of an OS thread runs under the thread's, and the
// exception flags of all of them accumulate there (strict mode also collects them at each
// switch, since swapcontext restores them).
extern "C" void pylibnn_emulation_switch_context(void** save_sp, void* load_sp);
extern "C" void pylibnn_emulation_fiber_start();
asm(R"(
    .pushsection .text
    .p2align 4
    .globl pylibnn_emulation_switch_context
    .hidden pylibnn_emulation_switch_context
    .type pylibnn_emulation_switch_context, @function
pylibnn_emulation_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size pylibnn_emulation_switch_context, .-pylibnn_emulation_switch_context

    .p2align 4
    .globl pylibnn_emulation_fiber_start
    .hidden pylibnn_emulation_fiber_start
    .type pylibnn_emulation_fiber_start, @function
pylibnn_emulation_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size pylibnn_emulation_fiber_start, .-pylibnn_emulation_fiber_start
    .popsection
)");
#endif

namespace pylibnn::emulation {
namespace {

void asan_start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#if defined(PYLIBNN_EMULATION_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

void asan_finish_switch(void* fake_stack_save, const void** bottom_old, size_t* size_old) {
#if defined(PYLIBNN_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
  (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

void poison(void* p, size_t bytes) {
#if defined(PYLIBNN_EMULATION_ASAN)
  ASAN_POISON_MEMORY_REGION(p, bytes);
#else
  (void)p, (void)bytes;
#endif
}

void unpoison(void* p, size_t bytes) {
#if defined(PYLIBNN_EMULATION_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(p, bytes);
#else
  (void)p, (void)bytes;
#endif
}

// What one launch shares with the workers that run its blocks.
struct LaunchState {
  const char* name;
  LaunchShape shape;
  KernelBody body;
  uint64_t threads_per_block;
  uint64_t total_blocks;
  size_t dynamic_limit;
  FiberOrder order;
  uint64_t seed;
  bool strict;
  fenv_t environment;  // the launching thread's floating-point environment, for the helpers
  std::atomic<uint64_t> next_block{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;

  void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!failed.load()) {
      error = message;
      failed.store(true);
    }
  }
};

std::string describe_block(const LaunchState& launch, const uint3& block) {
  std::ostringstream s;
  s << "kernel " << launch.name << ", block (" << block.x << ", " << block.y << ", " << block.z << ")";
  return s.str();
}

std::string describe_thread(const Fiber& f) {
  std::ostringstream s;
  s << "thread (" << f.thread.x << ", " << f.thread.y << ", " << f.thread.z << ")";
  return s.str();
}

std::string site(const char* file, int line) {
  std::ostringstream s;
  const char* name = file != nullptr ? file : "?";
  // csrc/cuda/gemm_kernels.cuh rather than the absolute path of the checkout.
  if (const char* csrc = std::strstr(name, "csrc/")) name = csrc;
  s << name << ":" << line;
  return s.str();
}

struct SharedSlot {
  const void* site;
  void* storage;
};

// Per OS thread: the fibers of the block it runs, their stacks, the shared arena.
struct Worker {
  std::vector<Fiber> fibers;
  char* stacks = nullptr;  // mmap'd: per fiber a guard page then kStackBytes
  size_t stack_slots = 0;
  size_t page = 4096;
#if defined(PYLIBNN_EMULATION_UCONTEXT)
  ucontext_t scheduler_context;
#else
  void* scheduler_sp = nullptr;
#endif
  void* scheduler_fake_stack = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  Fiber* running = nullptr;
  bool stacks_abandoned = true;  // a block failed (or none ran yet): fibers left frames at any depth
  LaunchState* launch = nullptr;
  uint3 block{};
  bool block_failed = false;
  bool raised_invalid = false;  // a fiber of the block raised FE_INVALID (strict mode)

  std::vector<std::vector<PendingCopy>> pending_copies;  // per fiber, in issue order
  std::vector<int> order;  // the resume order of the current round

  unsigned char* arena = nullptr;
  size_t arena_used = 0;  // bytes handed out, dynamic region included
  size_t static_bytes = 0;
  std::vector<SharedSlot> slots;

  uint64_t barriers = 0, warp_collectives = 0, switches = 0;

  Worker() {
    page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    arena = static_cast<unsigned char*>(std::aligned_alloc(4096, kArenaBytes));
    if (arena == nullptr) throw EmulationError("pylibnn CUDA emulation: cannot allocate the shared-memory arena");
  }
  ~Worker();

  void ensure_stacks(size_t count) {
    if (count <= stack_slots) return;
    if (stacks != nullptr) munmap(stacks, stack_slots * (kStackBytes + page));
    const size_t bytes = count * (kStackBytes + page);
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) {
      stacks = nullptr;
      stack_slots = 0;
      throw EmulationError("pylibnn CUDA emulation: cannot map " + std::to_string(count) + " fiber stacks");
    }
    stacks = static_cast<char*>(memory);
    stack_slots = count;
    stacks_abandoned = true;  // new memory: clear whatever shadow the addresses had
    // A guard page below each stack: an overflow faults instead of corrupting a neighbour.
    for (size_t i = 0; i < count; ++i) {
      if (mprotect(stacks + i * (kStackBytes + page), page, PROT_NONE) != 0) {
        throw EmulationError("pylibnn CUDA emulation: cannot protect the guard page of a fiber stack (too many "
                             "mappings? vm.max_map_count)");
      }
    }
  }

  void fail(const std::string& message) {
    block_failed = true;
    stacks_abandoned = true;
    launch->fail(describe_block(*launch, block) + ": " + message);
  }
};

thread_local Worker* tls_worker = nullptr;

Worker::~Worker() {
  if (stacks != nullptr) munmap(stacks, stack_slots * (kStackBytes + page));
  unpoison(arena, kArenaBytes);
  std::free(arena);
  if (tls_worker == this) tls_worker = nullptr;
}

Worker& this_worker() {
  if (tls_worker == nullptr) {
    // Owned by the thread: destroyed at thread exit.
    static thread_local Worker worker;
    tls_worker = &worker;
  }
  return *tls_worker;
}

extern "C" void fiber_main(Fiber* fiber);

void switch_to_scheduler(Worker& w, Fiber& f, bool exiting) {
  ++w.switches;
  // swapcontext restores the scheduler's floating-point status flags: collect the fiber's
  // invalid-operation flag first (strict mode), whichever switch is in use.
  if (w.launch->strict && std::fetestexcept(FE_INVALID)) w.raised_invalid = true;
  asan_start_switch(exiting ? nullptr : &f.asan_fake_stack, w.scheduler_stack_bottom, w.scheduler_stack_size);
#if defined(PYLIBNN_EMULATION_UCONTEXT)
  swapcontext(&f.context, &w.scheduler_context);
#else
  pylibnn_emulation_switch_context(&f.sp, w.scheduler_sp);
#endif
  asan_finish_switch(f.asan_fake_stack, &w.scheduler_stack_bottom, &w.scheduler_stack_size);
}

void resume(Worker& w, Fiber& f) {
  current.thread = f.thread;
  w.running = &f;
  ++w.switches;
  asan_start_switch(&w.scheduler_fake_stack, f.stack_low, f.stack_size);
#if defined(PYLIBNN_EMULATION_UCONTEXT)
  swapcontext(&w.scheduler_context, &f.context);
#else
  pylibnn_emulation_switch_context(&w.scheduler_sp, f.sp);
#endif
  asan_finish_switch(w.scheduler_fake_stack, nullptr, nullptr);
  w.running = nullptr;
}

extern "C" void fiber_main(Fiber* fiber) {
  Worker& w = *tls_worker;
  asan_finish_switch(nullptr, &w.scheduler_stack_bottom, &w.scheduler_stack_size);
  try {
    w.launch->body.invoke(w.launch->body.context);
    fiber->state = State::Done;
  } catch (const std::exception& e) {
    w.fail(describe_thread(*fiber) + ": " + e.what());
    fiber->state = State::Failed;
  } catch (...) {
    w.fail(describe_thread(*fiber) + ": unknown exception");
    fiber->state = State::Failed;
  }
  switch_to_scheduler(w, *fiber, /*exiting=*/true);
  __builtin_trap();  // a finished fiber is never resumed
}

#if defined(PYLIBNN_EMULATION_UCONTEXT)
void ucontext_entry(unsigned high, unsigned low) {
  fiber_main(reinterpret_cast<Fiber*>((static_cast<uintptr_t>(high) << 32) | low));
}
#endif

void prepare_fiber(Worker& w, Fiber& f, size_t slot) {
  f.stack_low = w.stacks + slot * (kStackBytes + w.page) + w.page;
  f.stack_size = kStackBytes;
  f.asan_fake_stack = nullptr;
  // The frames under which an earlier fiber finished never returned: clear their ASan red
  // zones. A finished fiber left only those few at the top; an abandoned one (a failed
  // block) may have left any depth.
  const size_t dirty = w.stacks_abandoned ? f.stack_size : std::min(f.stack_size, kFinishedFramesBytes);
  unpoison(f.stack_low + f.stack_size - dirty, dirty);
#if defined(PYLIBNN_EMULATION_UCONTEXT)
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack_low;
  f.context.uc_stack.ss_size = f.stack_size;
  f.context.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
  makecontext(&f.context, reinterpret_cast<void (*)()>(ucontext_entry), 2, static_cast<unsigned>(p >> 32),
              static_cast<unsigned>(p & 0xffffffffu));
#else
  // The frame switch_context pops: r15 r14 r13 r12 rbx rbp, then the return address
  // (fiber_start), which then runs with a 16-byte-aligned stack pointer.
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack_low + f.stack_size) & ~uintptr_t(15);
  top -= 16;
  void** frame = reinterpret_cast<void**>(top) - 7;
  frame[0] = nullptr;                                                  // r15
  frame[1] = nullptr;                                                  // r14
  frame[2] = reinterpret_cast<void*>(&fiber_main);                     // r13
  frame[3] = &f;                                                       // r12
  frame[4] = nullptr;                                                  // rbx
  frame[5] = nullptr;                                                  // rbp
  frame[6] = reinterpret_cast<void*>(&pylibnn_emulation_fiber_start);  // return address
  f.sp = frame;
#endif
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The order in which round `round` of block `block_linear` resumes its fibers.
void make_order(std::vector<int>& order, FiberOrder policy, uint64_t seed, uint64_t block_linear, uint64_t round) {
  const int n = static_cast<int>(order.size());
  for (int i = 0; i < n; ++i) order[i] = policy == FiberOrder::Reverse ? n - 1 - i : i;
  if (policy != FiberOrder::Shuffle) return;
  uint64_t state = seed ^ (block_linear * 0x632be59bd9b4e019ull) ^ (round * 0x8cb92ba72f3d8dd7ull);
  for (int i = n - 1; i > 0; --i) std::swap(order[i], order[static_cast<int>(splitmix64(state) % (i + 1))]);
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync: return "__syncwarp";
    case WarpOp::Shuffle: return "__shfl_sync";
    case WarpOp::ShuffleUp: return "__shfl_up_sync";
    case WarpOp::ShuffleDown: return "__shfl_down_sync";
    case WarpOp::ShuffleXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::Exchange: return "a warp-wide instruction (mma.sync / ldmatrix)";
  }
  return "?";
}

// Fails the block from inside a fiber: the scheduler abandons it at the switch.
[[noreturn]] void fail_in_fiber(Worker& w, Fiber& f, const std::string& message) {
  w.fail(describe_thread(f) + ": " + message);
  f.state = State::Failed;
  switch_to_scheduler(w, f, /*exiting=*/true);
  __builtin_trap();
}

// The source lane of `lane` for a shuffle, or -1 for "its own value".
int shuffle_source(WarpOp op, int lane, int argument, int width) {
  const int segment = lane / width * width;
  argument &= kWarpSize - 1;  // the instructions use the low 5 bits of the lane / delta / mask
  switch (op) {
    case WarpOp::Shuffle: return segment + (argument & (width - 1));
    case WarpOp::ShuffleUp: return lane - segment >= argument ? lane - argument : lane;
    case WarpOp::ShuffleDown: return lane - segment + argument < width ? lane + argument : lane;
    case WarpOp::ShuffleXor: {
      const int source = lane ^ argument;
      return source >= segment + width || source >= kWarpSize ? lane : source;
    }
    default: return lane;
  }
}

enum class Completion { Waiting, Completed, Failed };

std::string hex(uint32_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

// Completes the warp collective the lanes of `mask` (in the warp starting at warp_base) wait
// at, if every one of them that exists and has not exited is there (CUDA: "all non-exited
// threads named in mask"); each gets its result and becomes runnable. Failed (with *error)
// for lanes at different collectives, or a result read from a lane that does not take part.
Completion complete_collective(Worker& w, int warp_base, uint32_t mask, std::string* error) {
  const int n = static_cast<int>(w.fibers.size());
  uint32_t live = 0;
  for (int l = 0; l < kWarpSize; ++l) {
    if ((mask >> l & 1u) && warp_base + l < n && w.fibers[warp_base + l].state != State::Done) live |= 1u << l;
  }
  int first = -1;
  for (int l = 0; l < kWarpSize; ++l) {
    if (!(live >> l & 1u)) continue;
    if (w.fibers[warp_base + l].state != State::AtWarp) return Completion::Waiting;
    if (first < 0) first = l;
  }
  if (first < 0) return Completion::Waiting;
  const Fiber& reference = w.fibers[warp_base + first];
  // Messages are built only on failure: collectives sit in kernels' inner loops.
  const auto where = [&] { return std::string(op_name(reference.op)) + " at " + site(reference.file, reference.line); };
  if (reference.op == WarpOp::Exchange && live != 0xffffffffu) {
    *error = where() + ": needs all 32 lanes of the warp (mask " + hex(live) + " of lanes present and not exited)";
    return Completion::Failed;
  }
  uint64_t votes = 0;
  for (int l = 0; l < kWarpSize; ++l) {
    if (!(live >> l & 1u)) continue;
    const Fiber& g = w.fibers[warp_base + l];
    const bool same_instruction =
        g.op != WarpOp::Exchange ||
        (g.argument == reference.argument && g.line == reference.line && std::strcmp(g.file, reference.file) == 0);
    if (g.op != reference.op || g.mask != reference.mask || g.width != reference.width || !same_instruction) {
      *error = where() + " with mask " + hex(reference.mask) + " (lane " + std::to_string(first) + ") meets lane " +
               std::to_string(l) + " at " + op_name(g.op) + " (" + site(g.file, g.line) + ") with mask " + hex(g.mask) +
               ": lanes at different collectives";
      return Completion::Failed;
    }
    if (g.value != 0) votes |= 1ull << l;
  }
  for (int l = 0; l < kWarpSize; ++l) {
    if (!(live >> l & 1u)) continue;
    Fiber& g = w.fibers[warp_base + l];
    switch (reference.op) {
      case WarpOp::Sync: g.result = 0; break;
      case WarpOp::Ballot: g.result = votes; break;
      case WarpOp::Any: g.result = votes != 0; break;
      case WarpOp::All: g.result = votes == live; break;
      case WarpOp::Exchange: g.result = 0; break;
      default: {
        const int source = shuffle_source(reference.op, l, g.argument, g.width);
        if (!(live >> source & 1u)) {
          *error = where() + ": lane " + std::to_string(l) + " reads lane " + std::to_string(source) +
                   ", which is not in the mask, has exited or does not exist";
          return Completion::Failed;
        }
        g.result = w.fibers[warp_base + source].value;
      }
    }
  }
  for (int l = 0; l < kWarpSize; ++l) {
    if (live >> l & 1u) w.fibers[warp_base + l].state = State::Ready;
  }
  ++w.warp_collectives;
  return Completion::Completed;
}

// Between rounds, when no fiber is runnable: releases the barrier everyone waits at, or
// reports why the block cannot go on. Returns false when the block is finished or failed.
bool resolve_barrier(Worker& w) {
  const Fiber* at_barrier = nullptr;
  const Fiber* exited = nullptr;
  const Fiber* at_warp = nullptr;
  for (const Fiber& f : w.fibers) {
    if (f.state == State::AtBarrier && at_barrier == nullptr) at_barrier = &f;
    if (f.state == State::Done && exited == nullptr) exited = &f;
    if (f.state == State::AtWarp && at_warp == nullptr) at_warp = &f;
  }
  if (at_warp != nullptr) {
    // Lanes that exited after their warp-mates arrived may have completed a collective.
    for (const Fiber& f : w.fibers) {
      if (f.state != State::AtWarp) continue;
      std::string error;
      const Completion completion = complete_collective(w, f.linear - f.linear % kWarpSize, f.mask, &error);
      if (completion == Completion::Completed) return true;
      if (completion == Completion::Failed) {
        w.fail(describe_thread(f) + ": " + error);
        return false;
      }
    }
    // Its warp-mates named in the mask are at a barrier, or at another collective.
    const int warp_base = at_warp->linear - at_warp->linear % kWarpSize;
    std::ostringstream s;
    s << "deadlock: " << describe_thread(*at_warp) << " waits at a warp collective (" << site(at_warp->file, at_warp->line)
      << ") with mask 0x" << std::hex << at_warp->mask << std::dec;
    for (int lane = 0; lane < kWarpSize; ++lane) {
      if (!(at_warp->mask >> lane & 1u)) continue;
      if (warp_base + lane >= static_cast<int>(w.fibers.size())) break;
      const Fiber& g = w.fibers[warp_base + lane];
      if (g.state == State::AtBarrier) {
        s << "; lane " << lane << " waits at __syncthreads() (" << site(g.file, g.line) << ")";
        break;
      }
    }
    w.fail(s.str());
    return false;
  }
  if (at_barrier == nullptr) return false;  // every thread has finished
  if (exited != nullptr) {
    w.fail("barrier reached after some threads exited: " + describe_thread(*at_barrier) + " waits at __syncthreads() (" +
           site(at_barrier->file, at_barrier->line) + ") but " + describe_thread(*exited) + " has exited");
    return false;
  }
  for (const Fiber& f : w.fibers) {
    const bool same_file = f.file == at_barrier->file || std::strcmp(f.file, at_barrier->file) == 0;
    if (f.line != at_barrier->line || !same_file) {
      w.fail("threads wait at different __syncthreads(): " + describe_thread(*at_barrier) + " at " +
             site(at_barrier->file, at_barrier->line) + ", " + describe_thread(f) + " at " + site(f.file, f.line));
      return false;
    }
  }
  for (Fiber& f : w.fibers) f.state = State::Ready;
  ++w.barriers;
  return true;
}

void run_block(Worker& w, LaunchState& launch, uint64_t block_linear) {
  const dim3& grid = launch.shape.grid;
  const dim3& bdim = launch.shape.block;
  w.launch = &launch;
  w.block = uint3{static_cast<unsigned>(block_linear % grid.x),
                  static_cast<unsigned>(block_linear / grid.x % grid.y),
                  static_cast<unsigned>(block_linear / (uint64_t(grid.x) * grid.y))};
  w.block_failed = false;
  current.block = w.block;
  current.block_dim = bdim;
  current.grid_dim = grid;

  // Shared memory: everything poisoned for ASan; the dynamic region handed out at once.
  poison(w.arena, kArenaBytes);
  w.slots.clear();
  w.static_bytes = 0;
  const size_t dynamic = launch.shape.dynamic_shared_bytes;
  if (dynamic > 0) {
    unpoison(w.arena, dynamic);
    // 0x7FA5 per 16 bits: a NaN as float, bfloat16 and float16 (signaling for the first two).
    for (size_t i = 0; i + 1 < dynamic; i += 2) {
      w.arena[i] = 0xA5;
      w.arena[i + 1] = 0x7F;
    }
    if (dynamic % 2 != 0) w.arena[dynamic - 1] = 0xA5;
  }
  w.arena_used = (dynamic + kRedZone + 127) / 128 * 128;

  // Before the fibers' contexts are made: getcontext saves the status flags with them.
  w.raised_invalid = false;
  if (launch.strict) std::feclearexcept(FE_INVALID);

  const size_t n = launch.threads_per_block;
  w.ensure_stacks(n);
  w.fibers.resize(n);
  if (w.pending_copies.size() < n) w.pending_copies.resize(n);
  for (size_t i = 0; i < n; ++i) w.pending_copies[i].clear();  // copies never waited for are dropped
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f = Fiber();
    f.linear = static_cast<int>(i);
    f.thread = uint3{static_cast<unsigned>(i % bdim.x), static_cast<unsigned>(i / bdim.x % bdim.y),
                     static_cast<unsigned>(i / (uint64_t(bdim.x) * bdim.y))};
    prepare_fiber(w, f, i);
  }
  w.stacks_abandoned = false;

  std::vector<int>& order = w.order;
  order.resize(n);
  uint64_t round = 0;
  for (;;) {
    bool ran = false;
    if (launch.order == FiberOrder::WarpRunAhead) {
      for (size_t first = 0; first < n; first += kWarpSize) {
        const size_t end = std::min(n, first + kWarpSize);
        for (bool progressed = true; progressed;) {  // this warp until none of its lanes can run
          progressed = false;
          for (size_t i = first; i < end; ++i) {
            Fiber& f = w.fibers[i];
            if (f.state != State::Ready) continue;
            resume(w, f);
            ran = progressed = true;
            if (w.block_failed || launch.failed.load(std::memory_order_relaxed)) {
              w.stacks_abandoned = true;
              return;
            }
          }
        }
      }
      ++round;
    } else {
      make_order(order, launch.order, launch.seed, block_linear, round++);
      for (const int i : order) {
        Fiber& f = w.fibers[i];
        if (f.state != State::Ready) continue;
        resume(w, f);
        ran = true;
        if (w.block_failed || launch.failed.load(std::memory_order_relaxed)) {
          w.stacks_abandoned = true;  // this block's fibers stop where they are
          return;
        }
      }
    }
    if (ran) continue;
    if (!resolve_barrier(w)) break;
  }
  if (!w.block_failed && launch.strict && (w.raised_invalid || std::fetestexcept(FE_INVALID))) {
    w.fail("strict mode: the block raised the floating-point invalid-operation flag with finite inputs: it computed "
           "on the signaling-NaN poison of shared memory that was never written (or made a NaN from finite values)");
  }
}

// Never throws: a failure is recorded in the launch (the caller must always wait for helpers).
void run_blocks(LaunchState& launch) {
  Worker* worker = nullptr;
  try {
    worker = &this_worker();
  } catch (const std::exception& e) {
    launch.fail(std::string("kernel ") + launch.name + ": " + e.what());
    return;
  }
  Worker& w = *worker;
  for (;;) {
    if (launch.failed.load(std::memory_order_relaxed)) break;
    const uint64_t block = launch.next_block.fetch_add(1);
    if (block >= launch.total_blocks) break;
    try {
      run_block(w, launch, block);
    } catch (const std::exception& e) {
      launch.fail(std::string("kernel ") + launch.name + ": " + e.what());
    }
  }
  g_stats.barriers += w.barriers;
  g_stats.warp_collectives += w.warp_collectives;
  g_stats.fiber_switches += w.switches;
  w.barriers = w.warp_collectives = w.switches = 0;
  w.launch = nullptr;
}

// A persistent pool: the caller runs blocks too, helpers join for launches with more than
// one block. One launch at a time (launches from several host threads queue up).
class Pool {
 public:
  static Pool& instance() {
    // Never destroyed: helpers may outlive static destructors. A forked child has none of the
    // parent's helper threads (and maybe a mutex held by one): it starts a new pool.
    static const bool at_fork = (pthread_atfork(nullptr, nullptr, [] { pool_ = new Pool(); }), true);
    (void)at_fork;
    if (pool_ == nullptr) pool_ = new Pool();
    return *pool_;
  }

  void run(LaunchState& launch) {
    std::lock_guard<std::mutex> launch_lock(launch_mutex_);
    const int helpers = static_cast<int>(std::min<uint64_t>(worker_threads() - 1, launch.total_blocks - 1));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int>(threads_.size()) < helpers) {
        threads_.emplace_back([this, index = static_cast<int>(threads_.size())] { helper_loop(index); });
      }
      job_ = &launch;
      active_helpers_ = helpers;
      unfinished_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    run_blocks(launch);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return unfinished_ == 0; });
    job_ = nullptr;
  }

 private:
  void helper_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      LaunchState* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index >= active_helpers_) continue;
        job = job_;
      }
      // Blocks run under the launching thread's floating-point environment.
      std::fesetenv(&job->environment);
      run_blocks(*job);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        --unfinished_;
      }
      done_.notify_all();
    }
  }

 private:
  static inline Pool* pool_ = nullptr;
  std::mutex launch_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  LaunchState* job_ = nullptr;
  int active_helpers_ = 0;
  int unfinished_ = 0;
  uint64_t generation_ = 0;
};

std::string dims(const dim3& d) {
  std::ostringstream s;
  s << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return s.str();
}

}  // namespace

void set_fiber_order(FiberOrder order, uint64_t seed) {
  g_order.store(static_cast<int>(order));
  g_seed.store(seed);
}
FiberOrder fiber_order() { return static_cast<FiberOrder>(g_order.load()); }
uint64_t fiber_order_seed() { return g_seed.load(); }
void set_strict(bool strict) { g_strict.store(strict); }
bool strict() { return g_strict.load(); }

void set_worker_threads(int threads) {
  if (threads < 1) throw EmulationError("pylibnn CUDA emulation: worker threads must be at least 1");
  g_worker_threads.store(threads);
}

int worker_threads() {
  int threads = g_worker_threads.load();
  if (threads > 0) return threads;
  if (const char* env = std::getenv("PYLIBNN_EMULATION_THREADS")) threads = std::atoi(env);
  if (threads <= 0) threads = static_cast<int>(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  g_worker_threads.store(threads);
  return threads;
}

Statistics statistics() {
  Statistics s;
  s.launches = g_stats.launches;
  s.blocks = g_stats.blocks;
  s.threads = g_stats.threads;
  s.barriers = g_stats.barriers;
  s.warp_collectives = g_stats.warp_collectives;
  s.fiber_switches = g_stats.fiber_switches;
  return s;
}

void reset_statistics() {
  g_stats.launches = g_stats.blocks = g_stats.threads = 0;
  g_stats.barriers = g_stats.warp_collectives = g_stats.fiber_switches = 0;
}

void set_max_dynamic_shared_memory(const void* kernel, size_t bytes) {
  if (bytes > kMaxSharedPerBlock) {
    throw EmulationError("pylibnn CUDA emulation: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, " +
                         std::to_string(bytes) + "): over the " + std::to_string(kMaxSharedPerBlock) +
                         "-byte limit of a block");
  }
  std::lock_guard<std::mutex> lock(g_attribute_mutex);
  g_max_dynamic_shared[kernel] = bytes;
}

std::string kernel_name_from_signature(const char* signature) {
  std::string text(signature);
  const std::string key = "Kernel = ";
  size_t begin = text.find(key);
  if (begin == std::string::npos) return text;
  begin += key.size();
  int depth = 0;
  size_t end = begin;
  for (; end < text.size(); ++end) {
    const char c = text[end];
    if (c == '<' || c == '(') ++depth;
    if (c == '>' || c == ')') --depth;
    if (depth == 0 && (c == ';' || c == ']')) break;
  }
  std::string name = text.substr(begin, end - begin);
  if (!name.empty() && name[0] == '&') name.erase(0, 1);
  for (const std::string prefix : {"pylibnn::cuda::", "pylibnn::"}) {
    for (size_t at = name.find(prefix); at != std::string::npos; at = name.find(prefix)) name.erase(at, prefix.size());
  }
  return name;
}

void launch(const char* name, const void* kernel, const LaunchShape& shape, KernelBody body) {
  const dim3& g = shape.grid;
  const dim3& b = shape.block;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  const auto invalid = [&](const std::string& why) {
    throw EmulationError(std::string("pylibnn CUDA emulation: invalid launch of kernel ") + name + " (grid " + dims(g) +
                         ", block " + dims(b) + ", " + std::to_string(shape.dynamic_shared_bytes) +
                         " bytes of dynamic shared memory): " + why);
  };
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) invalid("a dimension is zero");
  if (b.x > kMaxBlockX || b.y > kMaxBlockY || b.z > kMaxBlockZ) {
    invalid("blockDim over CUDA's limits (1024, 1024, 64)");
  }
  if (threads > kMaxThreadsPerBlock) invalid(std::to_string(threads) + " threads per block, over CUDA's 1024");
  if (g.x > kMaxGridX || g.y > kMaxGridY || g.z > kMaxGridZ) {
    invalid("gridDim over CUDA's limits (2^31 - 1, 65535, 65535)");
  }
  size_t dynamic_limit = kDefaultDynamicSharedLimit;
  {
    std::lock_guard<std::mutex> lock(g_attribute_mutex);
    const auto raised = g_max_dynamic_shared.find(kernel);
    if (raised != g_max_dynamic_shared.end()) dynamic_limit = raised->second;
  }
  if (shape.dynamic_shared_bytes > dynamic_limit) {
    invalid("dynamic shared memory over the kernel's limit of " + std::to_string(dynamic_limit) +
            " bytes (raise it first with cudaFuncSetAttribute(MaxDynamicSharedMemorySize))");
  }

  LaunchState state;
  state.name = name;
  state.shape = shape;
  state.body = body;
  state.threads_per_block = threads;
  state.total_blocks = uint64_t(g.x) * g.y * g.z;
  state.dynamic_limit = dynamic_limit;
  state.order = fiber_order();
  state.seed = fiber_order_seed();
  state.strict = strict();
  std::fegetenv(&state.environment);
  Pool::instance().run(state);
  ++g_stats.launches;
  g_stats.blocks += state.total_blocks;
  g_stats.threads += state.total_blocks * threads;
  if (state.failed.load()) throw EmulationError("pylibnn CUDA emulation: " + state.error);
}

// ---- Device side ----

void sync_threads(const char* file, int line) {
  Worker& w = *tls_worker;
  Fiber& f = *w.running;
  f.state = State::AtBarrier;
  f.file = file;
  f.line = line;
  switch_to_scheduler(w, f, /*exiting=*/false);
}

uint64_t warp_collective(WarpOp op, uint32_t mask, uint64_t value, int argument, int width, const char* file,
                         int line) {
  Worker& w = *tls_worker;
  Fiber& f = *w.running;
  const int lane = f.linear % kWarpSize;
  const auto where = [&] { return std::string(op_name(op)) + " at " + site(file, line); };
  if (!(mask >> lane & 1u)) fail_in_fiber(w, f, where() + ": the mask excludes the calling lane " + std::to_string(lane));
  if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0) {
    fail_in_fiber(w, f, where() + ": width " + std::to_string(width) + " is not a power of two in [1, 32]");
  }
  f.state = State::AtWarp;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.argument = argument;
  f.width = width;
  f.file = file;
  f.line = line;
  std::string error;
  if (complete_collective(w, f.linear - lane, mask, &error) == Completion::Failed) fail_in_fiber(w, f, error);
  switch_to_scheduler(w, f, /*exiting=*/false);
  return f.result;
}

void* shared_variable(const void* site_key, size_t bytes, size_t alignment, int floating_bytes, const char* name) {
  Worker& w = *tls_worker;
  for (const SharedSlot& slot : w.slots) {
    if (slot.site == site_key) return slot.storage;
  }
  const size_t align = std::max<size_t>(alignment, 16);
  const size_t offset = (w.arena_used + align - 1) / align * align;
  w.static_bytes += bytes;
  if (w.static_bytes > kStaticSharedLimit) {
    fail_in_fiber(w, *w.running, std::string("static shared memory of ") + std::to_string(w.static_bytes) +
                                     " bytes (with '" + name + "'), over CUDA's 48 KiB limit");
  }
  // Without a raised limit, static and dynamic shared memory share 48 KiB; with one, the
  // block's 227 KiB.
  const size_t dynamic = w.launch->shape.dynamic_shared_bytes;
  const bool raised = w.launch->dynamic_limit != kDefaultDynamicSharedLimit;
  if (!raised && w.static_bytes + dynamic > kDefaultDynamicSharedLimit) {
    fail_in_fiber(w, *w.running, std::string("static (") + std::to_string(w.static_bytes) + " bytes, with '" + name +
                                     "') and dynamic (" + std::to_string(dynamic) +
                                     " bytes) shared memory over 48 KiB without cudaFuncSetAttribute");
  }
  if (offset + bytes + kRedZone > kArenaBytes ||
      (raised && w.static_bytes + w.launch->dynamic_limit > kMaxSharedPerBlock)) {
    fail_in_fiber(w, *w.running, std::string("shared memory (with '") + name + "') over the " +
                                     std::to_string(kMaxSharedPerBlock) + "-byte limit of a block");
  }
  unsigned char* storage = w.arena + offset;
  unpoison(storage, bytes);
  // Signaling NaN of the element type (floating), else 0xA5 bytes: a value no kernel writes.
  if (floating_bytes == 4) {
    const uint32_t pattern = 0x7FA5A5A5u;
    for (size_t i = 0; i + 4 <= bytes; i += 4) std::memcpy(storage + i, &pattern, 4);
  } else if (floating_bytes == 8) {
    const uint64_t pattern = 0x7FF5A5A5A5A5A5A5ull;
    for (size_t i = 0; i + 8 <= bytes; i += 8) std::memcpy(storage + i, &pattern, 8);
  } else if (floating_bytes == 2) {
    const uint16_t pattern = 0x7FA5u;
    for (size_t i = 0; i + 2 <= bytes; i += 2) std::memcpy(storage + i, &pattern, 2);
  } else {
    std::memset(storage, 0xA5, bytes);
  }
  w.arena_used = offset + bytes + kRedZone;
  w.slots.push_back({site_key, storage});
  return storage;
}

void* dynamic_shared_memory() { return tls_worker->arena; }

namespace {

bool in_shared_memory(const Worker& w, const void* p, size_t bytes) {
  const auto* q = static_cast<const unsigned char*>(p);
  return q >= w.arena && q + bytes <= w.arena + kArenaBytes;
}

// Every lane of the calling warp contributes `bytes` (<= 48); on return each lane reads every
// lane's contribution (Exchanged::lane) until it next yields.
struct Exchanged {
  const Worker* w;
  int warp_base;
  uint32_t slot;
  const unsigned char* lane(int l) const { return w->fibers[warp_base + l].exchange[slot]; }
};

// `instruction` identifies the instruction (and its variant): lanes must all execute the same one.
Exchanged warp_exchange(const void* mine, size_t bytes, const char* what, int instruction, const char* file,
                        int line) {
  Worker& w = *tls_worker;
  Fiber& f = *w.running;
  const int warp_base = f.linear - f.linear % kWarpSize;
  if (warp_base + kWarpSize > static_cast<int>(w.fibers.size())) {
    fail_in_fiber(w, f, std::string(what) + " at " + site(file, line) + ": needs all 32 lanes of the warp, the block has " +
                            std::to_string(w.fibers.size()) + " threads");
  }
  const uint32_t slot = f.exchange_round & 1u;
  std::memcpy(f.exchange[slot], mine, bytes);
  warp_collective(WarpOp::Exchange, 0xffffffffu, 0, instruction, kWarpSize, file, line);
  ++f.exchange_round;
  return Exchanged{&w, warp_base, slot};
}

float bf16_to_float(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, 4);
  return value;
}

float f16_to_float(uint16_t bits) {
  const int sign = bits >> 15, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // subnormal (or zero)
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  }
  return sign ? -magnitude : magnitude;
}

float tf32_to_float(uint32_t bits) {
  const uint32_t kept = bits & 0xffffe000u;  // the 10-bit mantissa of tf32; the low 13 bits are ignored
  float value;
  std::memcpy(&value, &kept, 4);
  return value;
}

}  // namespace

void mma_sync(MmaInput input, float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file,
              int line) {
  struct Fragments {
    uint32_t a[4];
    uint32_t b[2];
    float c[4];
  } mine;
  static_assert(sizeof(Fragments) <= sizeof(Fiber::exchange[0]), "the exchange slot holds the fragments");
  std::memcpy(mine.a, a, sizeof mine.a);
  std::memcpy(mine.b, b, sizeof mine.b);
  std::memcpy(mine.c, c, sizeof mine.c);
  const Exchanged all = warp_exchange(&mine, sizeof mine, "mma.sync", 100 + static_cast<int>(input), file, line);
  const int K = input == MmaInput::TF32 ? 8 : 16;
  float A[16][16], B[16][8], C[16][8];
  const auto half = [&](uint32_t reg, int which) {
    const uint16_t bits = static_cast<uint16_t>(which == 0 ? reg & 0xffffu : reg >> 16);  // element 0 in the low half
    return input == MmaInput::BF16 ? bf16_to_float(bits) : f16_to_float(bits);
  };
  for (int l = 0; l < kWarpSize; ++l) {
    Fragments fr;
    std::memcpy(&fr, all.lane(l), sizeof fr);
    const int g = l >> 2, t = l & 3;  // groupID, threadID_in_group
    if (input == MmaInput::TF32) {
      A[g][t] = tf32_to_float(fr.a[0]);
      A[g + 8][t] = tf32_to_float(fr.a[1]);
      A[g][t + 4] = tf32_to_float(fr.a[2]);
      A[g + 8][t + 4] = tf32_to_float(fr.a[3]);
      B[t][g] = tf32_to_float(fr.b[0]);
      B[t + 4][g] = tf32_to_float(fr.b[1]);
    } else {
      for (int e = 0; e < 2; ++e) {
        A[g][2 * t + e] = half(fr.a[0], e);
        A[g + 8][2 * t + e] = half(fr.a[1], e);
        A[g][2 * t + 8 + e] = half(fr.a[2], e);
        A[g + 8][2 * t + 8 + e] = half(fr.a[3], e);
        B[2 * t + e][g] = half(fr.b[0], e);
        B[2 * t + 8 + e][g] = half(fr.b[1], e);
      }
    }
    C[g][2 * t] = fr.c[0];
    C[g][2 * t + 1] = fr.c[1];
    C[g + 8][2 * t] = fr.c[2];
    C[g + 8][2 * t + 1] = fr.c[3];
  }
  const int lane = tls_worker->running->linear % kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int rows[4] = {g, g, g + 8, g + 8};
  const int cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int r = 0; r < 4; ++r) {
    float sum = C[rows[r]][cols[r]];
    for (int k = 0; k < K; ++k) sum += A[rows[r]][k] * B[k][cols[r]];
    d[r] = sum;
  }
}

uint32_t float_to_tf32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) {  // infinity stays; a NaN keeps a mantissa bit
    return (u & 0xffffe000u) | ((u & 0x007fffffu) != 0 ? 0x00400000u : 0u);
  }
  // Sign-magnitude: adding half of the kept ulp to the magnitude rounds ties away from zero
  // (a carry into the exponent is the correct rounding up, to infinity at the top).
  return (u + 0x1000u) & 0xffffe000u;
}

void ldmatrix(int matrices, bool transpose, uint32_t* registers, const void* row_address, const char* file,
              int line) {
  Worker& w = *tls_worker;
  const auto what = [&] { return std::string("ldmatrix.x") + std::to_string(matrices) + (transpose ? ".trans" : ""); };
  if (matrices != 1 && matrices != 2 && matrices != 4) fail_in_fiber(w, *w.running, what() + ": x1, x2 or x4");
  const uintptr_t mine = reinterpret_cast<uintptr_t>(row_address);
  const Exchanged all = warp_exchange(&mine, sizeof mine, "ldmatrix", 200 + 2 * matrices + (transpose ? 1 : 0), file,
                                      line);
  const int lane = w.running->linear % kWarpSize;
  const auto row = [&](int i, int r) {
    uintptr_t address;
    std::memcpy(&address, all.lane(8 * i + r), sizeof address);
    const void* p = reinterpret_cast<const void*>(address);
    if (address % 16 != 0 || !in_shared_memory(w, p, 16)) {
      fail_in_fiber(w, *w.running, what() + " at " + site(file, line) + ": lane " + std::to_string(8 * i + r) +
                                       "'s row address is not a 16-byte aligned shared-memory address");
    }
    return static_cast<const unsigned char*>(p);
  };
  for (int i = 0; i < matrices; ++i) {
    if (!transpose) {
      std::memcpy(&registers[i], row(i, lane / 4) + 4 * (lane % 4), 4);  // row lane/4, columns 2(lane%4) + {0,1}
    } else {
      uint16_t low, high;  // column lane/4 of rows 2(lane%4) and 2(lane%4)+1
      std::memcpy(&low, row(i, 2 * (lane % 4)) + 2 * (lane / 4), 2);
      std::memcpy(&high, row(i, 2 * (lane % 4) + 1) + 2 * (lane / 4), 2);
      registers[i] = static_cast<uint32_t>(low) | static_cast<uint32_t>(high) << 16;
    }
  }
}

void cp_async(void* shared, const void* global, int copy_bytes, int source_bytes, const char* file, int line) {
  Worker& w = *tls_worker;
  Fiber& f = *w.running;
  const auto where = [&] { return "cp.async at " + site(file, line); };
  if (copy_bytes != 4 && copy_bytes != 8 && copy_bytes != 16) {
    fail_in_fiber(w, f, where() + ": copies 4, 8 or 16 bytes, not " + std::to_string(copy_bytes));
  }
  if (source_bytes < 0 || source_bytes > copy_bytes) {
    fail_in_fiber(w, f, where() + ": source size " + std::to_string(source_bytes) + " outside [0, copy size]");
  }
  if (reinterpret_cast<uintptr_t>(shared) % copy_bytes != 0 || !in_shared_memory(w, shared, copy_bytes)) {
    fail_in_fiber(w, f, where() + ": the destination is not an aligned shared-memory address");
  }
  if (source_bytes > 0 && reinterpret_cast<uintptr_t>(global) % copy_bytes != 0) {
    fail_in_fiber(w, f, where() + ": the source is not aligned to the copy size");
  }
  PendingCopy copy{};
  copy.destination = static_cast<unsigned char*>(shared);
  copy.bytes = copy_bytes;
  copy.group = f.committed_copy_groups;
  if (source_bytes > 0) std::memcpy(copy.data, global, source_bytes);  // read at issue, as the hardware may
  w.pending_copies[f.linear].push_back(copy);
}

void cp_async_commit_group() { ++tls_worker->running->committed_copy_groups; }

void cp_async_wait_group(int pending) {
  Worker& w = *tls_worker;
  Fiber& f = *w.running;
  if (pending < 0) {  // wait_all: commit the open group, then wait for everything
    cp_async_commit_group();
    pending = 0;
  }
  std::vector<PendingCopy>& copies = w.pending_copies[f.linear];
  const int complete_below = f.committed_copy_groups - pending;
  size_t kept = 0;
  for (const PendingCopy& copy : copies) {
    if (copy.group < complete_below) {
      std::memcpy(copy.destination, copy.data, copy.bytes);
    } else {
      copies[kept++] = copy;
    }
  }
  copies.resize(kept);
}

}  // namespace pylibnn::emulation
