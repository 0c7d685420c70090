// The CUDA execution model on the CPU, for running pylibnn's own CUDA kernels without a
// GPU (tests, CI). Host side of the emulator: launch, options, errors; the device side that
// kernel code sees (threadIdx, __syncthreads, warp collectives, shared memory) is
// cuda_emulation.h, built on the primitives declared here.
//
// Model:
//   * A launch runs its blocks on a small pool of OS threads (one block at a time per OS
//     thread). A block's CUDA threads are user-space fibers with their own stacks, switched
//     cooperatively: a fiber runs until __syncthreads(), a warp collective or its end.
//   * The order in which a block's runnable fibers are resumed is selectable (forward,
//     reverse, shuffled with a seed, or warp by warp as far as each can run). A race-free kernel gives the same bits in every
//     order; tests run two orders and compare.
//   * Barriers are checked: threads waiting at different __syncthreads() call sites, a
//     barrier reached after some threads exited, and a deadlock (a warp collective that
//     can never complete) are errors naming the kernel and the source lines.
//   * Shared memory lives in a per-OS-thread arena. Every shared variable is filled with a
//     signaling-NaN pattern (0xA5 bytes for non-floating types) when its block starts, and
//     under AddressSanitizer the bytes between variables and past the last one are poisoned.
//   * In strict mode, a block whose arithmetic raised the floating-point invalid flag is an
//     error: with finite inputs that flags a computation on the signaling-NaN poison, i.e.
//     a read of shared memory that was never written.
//   * Launch limits are CUDA's: at most 1024 threads per block (x, y <= 1024, z <= 64),
//     gridDim.x < 2^31, gridDim.y, z <= 65535, at most 48 KiB of static shared memory and
//     of dynamic shared memory unless the kernel's maximum was raised first (up to 227 KiB
//     in all, an sm_90 block's limit).
// What it cannot tell: speed, bank conflicts, coalescing, true concurrency between the
// threads of a warp (they never interleave inside a basic block), and device math (the
// host's libm and rounding; FMA contraction only as far as the host compiler contracts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <vector_types.h>

namespace pylibnn::emulation {

// Every failure the emulator detects (launch limits, barrier divergence, deadlock, warp
// collective misuse, strict-mode poison reads). The message names the kernel.
class EmulationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// WarpRunAhead: warp by warp, each warp's lanes resumed until none of them can run (they all
// wait at a barrier or have exited) before the next warp starts. The other orders advance the
// warps in near lockstep when their kernels use warp collectives (each collective waits for
// its lanes, so no warp gets a whole phase ahead); this one lets a warp get as far ahead as a
// missing __syncthreads allows, so a warp reads shared memory other warps have not written
// yet, or overwrites what they still read.
enum class FiberOrder : int { Forward = 0, Reverse = 1, Shuffle = 2, WarpRunAhead = 3 };

// Process-wide settings; they apply to the launches that start after the call.
void set_fiber_order(FiberOrder order, uint64_t seed = 0);
FiberOrder fiber_order();
uint64_t fiber_order_seed();
void set_strict(bool strict);
bool strict();
// OS threads that run blocks (default: PYLIBNN_EMULATION_THREADS, else the hardware's, at most 8).
void set_worker_threads(int threads);
int worker_threads();

// Counters since the process started (or the last reset), for tests and reports.
struct Statistics {
  uint64_t launches = 0;
  uint64_t blocks = 0;
  uint64_t threads = 0;
  uint64_t barriers = 0;         // block-wide barrier releases
  uint64_t warp_collectives = 0; // warp collective completions
  uint64_t fiber_switches = 0;
};
Statistics statistics();
void reset_statistics();

// The body every fiber of a launch runs: calls the kernel with the launch's arguments.
struct KernelBody {
  void (*invoke)(const void* context);
  const void* context;
};

struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t dynamic_shared_bytes;
};

// Runs the kernel `name` (identified by `kernel`, its address) over the launch shape;
// returns when every block has finished. Throws EmulationError for an invalid launch or a
// failure inside it (the first one, if several blocks fail).
void launch(const char* name, const void* kernel, const LaunchShape& shape, KernelBody body);

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
void set_max_dynamic_shared_memory(const void* kernel, size_t bytes);

// The kernel's name from a function-signature string such as __PRETTY_FUNCTION__ of a
// template instantiated on it ("... [with auto Kernel = name<args>]" -> "name<args>").
std::string kernel_name_from_signature(const char* signature);

// ---- Device-side primitives (used through cuda_emulation.h) ----

struct ThreadCoordinates {
  uint3 thread;
  uint3 block;
  dim3 block_dim;
  dim3 grid_dim;
};
// The running fiber's coordinates; valid only inside a kernel.
extern thread_local ThreadCoordinates current;

void sync_threads(const char* file, int line);

enum class WarpOp : int { Sync, Shuffle, ShuffleUp, ShuffleDown, ShuffleXor, Ballot, Any, All, Exchange };
// A warp collective: every lane named in `mask` must call it (same op, same mask). For
// shuffles `value` is the lane's 8-byte slot and `argument` the lane / delta / xor mask; for
// votes `value` is the predicate. Returns the lane's result slot.
uint64_t warp_collective(WarpOp op, uint32_t mask, uint64_t value, int argument, int width, const char* file,
                         int line);

// Storage of a __shared__ variable of `bytes` bytes for the running block: the same address
// for every thread of the block (the first to arrive allocates it, keyed by `site`), filled
// with the poison pattern of its element type (`floating_bytes`: 2, 4 or 8 for a floating
// type, 0 otherwise).
void* shared_variable(const void* site, size_t bytes, size_t alignment, int floating_bytes, const char* name);
// The block's dynamic shared memory (the launch's dynamic_shared_bytes), poisoned like a
// shared variable of bytes.
void* dynamic_shared_memory();

// ---- Tensor-core and asynchronous-copy instructions (used through csrc/cuda/ptx.h) ----
// Each is what the PTX ISA documents; the GPU check compares them with the real instructions.

enum class MmaInput : int { BF16, F16, TF32 };
// mma.sync.aligned.{m16n8k16 (bf16, f16), m16n8k8 (tf32)}.row.col.f32: a warp-wide
// D (16 x 8) = A (16 x K) B (K x 8) + C, every lane passing its fragments (a: 4 registers,
// b: 2, c and d: 4 floats) in the PTX ISA's layout. Products are summed in float32 in k
// order onto C (tf32 inputs keep their top 19 bits).
void mma_sync(MmaInput input, float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file,
              int line);
// cvt.rna.tf32.f32: the float's bits rounded to 10 mantissa bits (to nearest, ties away from
// zero, the low 13 bits cleared); infinities and NaNs keep their class.
uint32_t float_to_tf32(float f);
// ldmatrix.sync.aligned.m8n8.x{matrices}[.trans].shared.b16: lanes 8i .. 8i+7 give the row
// addresses (16-byte aligned, in shared memory) of matrix i; each lane receives one 32-bit
// register per matrix.
void ldmatrix(int matrices, bool transpose, uint32_t* registers, const void* row_address, const char* file,
              int line);
// cp.async.{ca,cg}.shared.global [shared], [global], copy_bytes (4, 8 or 16), source_bytes (the
// rest zero-filled). The source is read now; the copy lands in shared memory only when a
// cp.async.wait_group / wait_all covers its group, so a missing wait reads what was there.
void cp_async(void* shared, const void* global, int copy_bytes, int source_bytes, const char* file, int line);
void cp_async_commit_group();
// Completes every committed group but the `pending` most recent (wait_all: -1, everything).
void cp_async_wait_group(int pending);

}  // namespace pylibnn::emulation
