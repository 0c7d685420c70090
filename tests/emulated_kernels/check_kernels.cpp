// The CUDA kernels and the emulator checked without torch: a small program built by
// tests/test_cuda_emulation.py with the host compiler (optionally under ASan + UBSan)
// against csrc/ (or a copy of it with a planted bug).
//
//   check_kernels selftest   the emulator itself: warp collectives, barrier divergence,
//                            exit before a barrier, deadlock, launch limits, dynamic shared
//                            memory, poison, strict mode, atomics, fiber orders, and the
//                            PTX twins of csrc/cuda/ptx.h (mma.sync, ldmatrix, cp.async)
//   check_kernels kernels    gemm_launch.cuh and mlp_launch.h (instantiated in kernels.cpp)
//                            against float64 loops, every case at four fiber orders
//                            (bitwise equal) in strict mode, with canaries around every output
// Prints one line per case; exits 1 if any case failed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "activation.h"
#include "check_kernels.h"
#include "cuda/launch.h"
#include "cuda/gemm_select.h"
#include "cuda/ptx.h"
#include "ptx_checks.h"
#include "mlp_layout.h"

namespace emulation = pylibnn::emulation;
using namespace pylibnn;
using namespace pylibnn::cuda;

namespace {

int g_failures = 0;

void report(bool ok, const std::string& name, const std::string& detail = "") {
  std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
  if (!ok) ++g_failures;
}

// Runs `body`; an EmulationError is a failure of the case (with its message).
bool run_case(const std::string& name, const std::function<std::string()>& body) {
  try {
    const std::string problem = body();
    report(problem.empty(), name, problem);
    return problem.empty();
  } catch (const std::exception& e) {
    report(false, name, std::string("error: ") + e.what());
    return false;
  }
}

// Runs `body` expecting an EmulationError whose message contains every fragment.
void expect_error(const std::string& name, const std::vector<std::string>& fragments,
                  const std::function<void()>& body) {
  try {
    body();
    report(false, name, "no error raised");
  } catch (const emulation::EmulationError& e) {
    const std::string message = e.what();
    for (const std::string& fragment : fragments) {
      if (message.find(fragment) == std::string::npos) {
        report(false, name, "message lacks '" + fragment + "': " + message);
        return;
      }
    }
    report(true, name, message);
  }
}

// ---------------------------------------------------------------------------------------
// Emulator self-test kernels.

__global__ void warp_collectives_kernel(int* out) {
  const int lane = threadIdx.x % 32;
  const int t = threadIdx.x;
  out[t * 8 + 0] = __shfl_sync(0xffffffffu, t, (lane * 7) % 32);
  out[t * 8 + 1] = __shfl_up_sync(0xffffffffu, t, 3);
  out[t * 8 + 2] = __shfl_down_sync(0xffffffffu, t, 5, 16);
  out[t * 8 + 3] = __shfl_xor_sync(0xffffffffu, t, 9);
  out[t * 8 + 4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[t * 8 + 5] = __any_sync(0xffffffffu, t == 40);
  out[t * 8 + 6] = __all_sync(0xffffffffu, lane < 31);
  // A half-warp collective: lanes 16..31 do not take part.
  out[t * 8 + 7] = lane < 16 ? static_cast<int>(__shfl_xor_sync(0x0000ffffu, double(t), 1)) : -1;
}

std::string check_warp_collectives() {
  std::vector<int> out(64 * 8, 0);
  launch<warp_collectives_kernel>(LaunchConfig{dim3(1), dim3(64)}, out.data());
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32, base = t - lane;
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
    const int segment = lane / 16 * 16;
    const int expected[8] = {base + (lane * 7) % 32,
                             lane >= 3 ? t - 3 : t,
                             lane - segment + 5 < 16 ? t + 5 : t,
                             base + (lane ^ 9),
                             static_cast<int>(ballot),
                             base == 32 ? 1 : 0,
                             0,
                             lane < 16 ? base + (lane ^ 1) : -1};
    for (int k = 0; k < 8; ++k) {
      if (out[t * 8 + k] != expected[k]) {
        return "thread " + std::to_string(t) + " collective " + std::to_string(k) + ": got " +
               std::to_string(out[t * 8 + k]) + ", expected " + std::to_string(expected[k]);
      }
    }
  }
  return "";
}

__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void exit_before_barrier_kernel() {
  if (threadIdx.x == 5) return;
  __syncthreads();
}

__global__ void deadlock_kernel(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x < 16) v = __shfl_sync(0xffffffffu, v, 0);
  __syncthreads();
  out[threadIdx.x] = v;
}

__global__ void empty_kernel() {}

__global__ void big_static_shared_kernel(float* out) {
  PYLIBNN_SHARED(float, big, [13000]);  // 52 KB
  big[threadIdx.x] = 1.0f;
  out[0] = big[0];
}

__global__ void dynamic_shared_kernel(float* out, int n) {
  PYLIBNN_DYNAMIC_SHARED(float, buffer);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buffer[i] = float(i);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buffer[n - 1 - i];
}

// Reads shared memory that nobody wrote: the poison pattern.
__global__ void read_poison_kernel(uint32_t* out32, uint64_t* out64) {
  PYLIBNN_SHARED(float, f, [32]);
  PYLIBNN_SHARED(double, d, [32]);
  std::memcpy(&out32[threadIdx.x], &f[threadIdx.x], 4);
  std::memcpy(&out64[threadIdx.x], &d[threadIdx.x], 8);
}

// Computes on shared memory that nobody wrote (in strict mode an error).
__global__ void compute_on_poison_kernel(float* out) {
  PYLIBNN_SHARED(float, f, [32]);
  if (threadIdx.x < 16) f[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = f[threadIdx.x] * 2.0f + 1.0f;
}

__global__ void atomics_kernel(int* count, float* sum, unsigned* maximum) {
  atomicAdd(count, 1);
  atomicAdd(sum, 1.0f);
  atomicMax(maximum, blockIdx.x * blockDim.x + threadIdx.x);
}

// A race: each thread reads its neighbour's slot with no barrier between write and read.
__global__ void racy_kernel(int* out) {
  PYLIBNN_SHARED(int, slot, [64]);
  slot[threadIdx.x] = 0;
  __syncthreads();
  slot[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
  out[threadIdx.x] = slot[(threadIdx.x + 1) % 64];
}

__global__ void ldmatrix_from_global_kernel(const uint16_t* global) {
  uint32_t r[1];
  ptx::ldmatrix_x1(r, global + 8 * (threadIdx.x % 8));
}

// Lanes that exited, and lanes past a partial warp, do not take part in a collective.
__global__ void exited_lanes_kernel(unsigned* out) {
  const int lane = threadIdx.x % 32;
  if (threadIdx.x < 32 && lane >= 16) return;
  __syncwarp();
  out[threadIdx.x] = __ballot_sync(0xffffffffu, 1) | (__shfl_down_sync(0xffffffffu, lane, 33, 16) << 24);
}

// Half the warp at ldmatrix, half at mma: both are warp-wide, so this is an error.
__global__ void mixed_warp_instructions_kernel() {
  PYLIBNN_SHARED_ALIGNED(16, uint16_t, tile, [32][8]);
  uint32_t r[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0}, d[4];
  if (threadIdx.x < 16) {
    ptx::ldmatrix_x4(r, &tile[threadIdx.x][0]);
  } else {
    ptx::mma_m16n8k16_bf16(d, r, b, c);
  }
}

__global__ void static_and_dynamic_shared_kernel(float* out) {
  PYLIBNN_SHARED(float, fixed, [8192]);  // 32 KiB
  PYLIBNN_DYNAMIC_SHARED(float, extra);  // 20 KiB at launch
  fixed[threadIdx.x] = extra[threadIdx.x] = 1.0f;
  out[threadIdx.x] = fixed[threadIdx.x] + extra[threadIdx.x];
}

// A cp.async whose wait is missing: the emulator never lands it, so the read sees the old data.
__global__ void cp_async_without_wait_kernel(const float* src, float* out) {
  PYLIBNN_SHARED_ALIGNED(16, float, buffer, [4]);
  buffer[threadIdx.x] = -1.0f;
  __syncthreads();
  if (threadIdx.x == 0) ptx::cp_async_16(&buffer[0], src);
  ptx::cp_async_commit();
  __syncthreads();
  out[threadIdx.x] = buffer[threadIdx.x];
}

void selftest() {
  {
    ptx_checks::EmulatedDevice device;
    for (const ptx_checks::CheckResult& check : ptx_checks::run_ptx_checks(device)) {
      report(check.problem.empty(), check.name, check.problem);
    }
  }
  run_case("exited lanes and lanes past a partial warp sit out; shuffle deltas use 5 bits", [] {
    std::vector<unsigned> out(48, 0);
    launch<exited_lanes_kernel>(LaunchConfig{dim3(1), dim3(48)}, out.data());
    for (int t = 0; t < 48; ++t) {
      if (t >= 16 && t < 32) continue;
      const int lane = t % 32;
      const unsigned ballot = 0xffffu;  // lanes 0..15 of either warp take part
      const unsigned shuffled = lane % 16 + 1 < 16 ? lane + 1 : lane;  // delta 33 acts as 1
      if (out[t] != (ballot | shuffled << 24)) return "thread " + std::to_string(t) + ": " + std::to_string(out[t]);
    }
    return std::string();
  });
  expect_error("ldmatrix and mma.sync in one warp", {"lanes at different collectives", "mixed_warp_instructions_kernel"},
               [] { launch<mixed_warp_instructions_kernel>(LaunchConfig{dim3(1), dim3(32)}); });
  expect_error("static + dynamic shared memory over 48 KiB without the attribute",
               {"without cudaFuncSetAttribute", "static_and_dynamic_shared_kernel"}, [] {
                 std::vector<float> out(32);
                 launch<static_and_dynamic_shared_kernel>(LaunchConfig{dim3(1), dim3(32), 20 * 1024}, out.data());
               });
  run_case("static + dynamic shared memory over 48 KiB after the attribute", [] {
    std::vector<float> out(32);
    allow_dynamic_shared_memory<static_and_dynamic_shared_kernel>(20 * 1024);
    launch<static_and_dynamic_shared_kernel>(LaunchConfig{dim3(1), dim3(32), 20 * 1024}, out.data());
    return out[5] == 2.0f ? std::string() : std::string("wrong sum");
  });
  run_case("cp.async without a wait leaves shared memory as it was", [] {
    std::vector<float> src = {1, 2, 3, 4}, out(4);
    launch<cp_async_without_wait_kernel>(LaunchConfig{dim3(1), dim3(4)}, src.data(), out.data());
    return out == std::vector<float>(4, -1.0f) ? std::string() : std::string("the copy landed without a wait");
  });
  expect_error("ldmatrix from global memory", {"not a 16-byte aligned shared-memory address"}, [] {
    std::vector<uint16_t> global(64);
    launch<ldmatrix_from_global_kernel>(LaunchConfig{dim3(1), dim3(32)}, global.data());
  });
  expect_error("mma.sync in a partial warp", {"needs all 32 lanes"}, [] {
    std::vector<float> m(256);
    launch<ptx_checks::mma_kernel<ptx_checks::MmaKind::BF16>>(LaunchConfig{dim3(1), dim3(16)}, m.data(), m.data(),
                                                                m.data(), m.data());
  });
  run_case("warp collectives (shfl, up, down/width 16, xor, ballot, any, all, half-warp mask)", check_warp_collectives);
  expect_error("divergent barriers", {"different __syncthreads", "divergent_barrier_kernel", "check_kernels.cpp:"},
               [] { launch<divergent_barrier_kernel>(LaunchConfig{dim3(1), dim3(32)}); });
  expect_error("barrier after an exit", {"after some threads exited", "exit_before_barrier_kernel", "thread (5, 0, 0)"},
               [] { launch<exit_before_barrier_kernel>(LaunchConfig{dim3(2), dim3(32)}); });
  expect_error("deadlock at a warp collective", {"deadlock", "__syncthreads", "deadlock_kernel"}, [] {
    std::vector<int> out(32);
    launch<deadlock_kernel>(LaunchConfig{dim3(1), dim3(32)}, out.data());
  });
  expect_error("1536 threads per block", {"1536 threads per block"},
               [] { launch<empty_kernel>(LaunchConfig{dim3(1), dim3(512, 3)}); });
  expect_error("block z over 64", {"blockDim over"}, [] { launch<empty_kernel>(LaunchConfig{dim3(1), dim3(1, 1, 65)}); });
  expect_error("gridDim.y over 65535", {"gridDim over"},
               [] { launch<empty_kernel>(LaunchConfig{dim3(1, 65536), dim3(1)}); });
  expect_error("an empty grid", {"a dimension is zero"}, [] { launch<empty_kernel>(LaunchConfig{dim3(0), dim3(1)}); });
  expect_error("static shared memory over 48 KiB", {"over CUDA's 48 KiB limit", "big"}, [] {
    std::vector<float> out(1);
    launch<big_static_shared_kernel>(LaunchConfig{dim3(1), dim3(32)}, out.data());
  });
  const int n = 16 * 1024;  // 64 KiB of floats
  std::vector<float> dynamic_out(n);
  expect_error("dynamic shared memory over 48 KiB without the attribute", {"cudaFuncSetAttribute"}, [&] {
    launch<dynamic_shared_kernel>(LaunchConfig{dim3(1), dim3(128), n * sizeof(float)}, dynamic_out.data(), n);
  });
  run_case("dynamic shared memory over 48 KiB after the attribute", [&] {
    allow_dynamic_shared_memory<dynamic_shared_kernel>(n * sizeof(float));
    launch<dynamic_shared_kernel>(LaunchConfig{dim3(2), dim3(128), n * sizeof(float)}, dynamic_out.data(), n);
    for (int i = 0; i < n; ++i) {
      if (dynamic_out[i] != float(n - 1 - i)) return "wrong value at " + std::to_string(i);
    }
    return std::string();
  });
  run_case("shared memory is poisoned (signaling NaN of the element type)", [] {
    std::vector<uint32_t> f(32);
    std::vector<uint64_t> d(32);
    launch<read_poison_kernel>(LaunchConfig{dim3(1), dim3(32)}, f.data(), d.data());
    for (int i = 0; i < 32; ++i) {
      if (f[i] != 0x7FA5A5A5u || d[i] != 0x7FF5A5A5A5A5A5A5ull) return "not the poison at " + std::to_string(i);
    }
    float as_float;
    std::memcpy(&as_float, &f[0], 4);
    return std::isnan(as_float) ? std::string() : std::string("float poison is not a NaN");
  });
  std::vector<float> poison_out(32);
  run_case("computing on poison, not strict: NaN results", [&] {
    emulation::set_strict(false);
    launch<compute_on_poison_kernel>(LaunchConfig{dim3(1), dim3(32)}, poison_out.data());
    return std::isnan(poison_out[20]) && poison_out[3] == 3.0f ? std::string() : std::string("expected NaN at 20");
  });
  expect_error("computing on poison, strict", {"strict mode", "compute_on_poison_kernel"}, [&] {
    emulation::set_strict(true);
    launch<compute_on_poison_kernel>(LaunchConfig{dim3(1), dim3(32)}, poison_out.data());
  });
  emulation::set_strict(false);
  run_case("atomics across blocks and OS threads", [] {
    int count = 0;
    float sum = 0;
    unsigned maximum = 0;
    launch<atomics_kernel>(LaunchConfig{dim3(64), dim3(96)}, &count, &sum, &maximum);
    if (count != 64 * 96 || sum != 64.0f * 96 || maximum != 64 * 96 - 1) return std::string("wrong totals");
    return std::string();
  });
  run_case("a race shows as a difference between fiber orders", [] {
    std::vector<int> forward(64), reverse(64);
    emulation::set_fiber_order(emulation::FiberOrder::Forward);
    launch<racy_kernel>(LaunchConfig{dim3(1), dim3(64)}, forward.data());
    emulation::set_fiber_order(emulation::FiberOrder::Reverse);
    launch<racy_kernel>(LaunchConfig{dim3(1), dim3(64)}, reverse.data());
    emulation::set_fiber_order(emulation::FiberOrder::Forward);
    return forward != reverse ? std::string() : std::string("both orders gave the same result");
  });
}

// ---------------------------------------------------------------------------------------
// The kernels against float64 loops.

uint64_t g_random = 0x2545f4914f6cdd1dull;
double uniform() {  // in [-1, 1)
  g_random = g_random * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<double>(g_random >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

// Element types as doubles and back: float, double, and the kernels' 16-bit types
// (gemm_numeric.h), which the tests round with the kernels' own conversion.
template <typename T>
double as_double(T v) {
  return static_cast<double>(static_cast<Accumulator<T>>(v));
}
template <typename T>
T from_double(double v) {
  return from_accumulator<T>(static_cast<Accumulator<T>>(v));
}
template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  if constexpr (std::is_same_v<T, double>) return "double";
  if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
  return "float16";
}

template <typename T>
T canary() {
  return from_double<T>(std::numeric_limits<double>::quiet_NaN());
}

// An output with kGuard canaries on either side, checked after the launch.
template <typename T>
struct Output {
  static constexpr size_t kGuard = 64;
  std::vector<T> storage;
  explicit Output(size_t n) : storage(n + 2 * kGuard) {
    for (T& v : storage) v = from_double<T>(-12345.0);
    for (size_t i = 0; i < kGuard; ++i) storage[i] = storage[storage.size() - 1 - i] = canary<T>();
  }
  T* data() { return storage.data() + kGuard; }
  const T* data() const { return storage.data() + kGuard; }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (!std::isnan(as_double(storage[i])) || !std::isnan(as_double(storage[storage.size() - 1 - i]))) return false;
    }
    return true;
  }
};

// Inputs live in exactly sized heap blocks, so that ASan sees a read past one.
template <typename T>
std::unique_ptr<T[]> random_input(size_t n) {
  std::unique_ptr<T[]> p(new T[n == 0 ? 1 : n]);
  for (size_t i = 0; i < n; ++i) p[i] = from_double<T>(uniform());
  return p;
}

// The machine epsilon of T (2^-7 for bfloat16, 2^-10 for float16).
template <typename T>
constexpr double unit_roundoff() {
  if constexpr (std::is_same_v<T, bfloat16>) return 0.0078125;
  if constexpr (std::is_same_v<T, float16>) return 0.0009765625;
  return std::numeric_limits<T>::epsilon();
}

// |got - expected| <= 4 eps_acc sqrt(depth) magnitude (the sum, in T's accumulator) +
// product_error magnitude (TF32's rounded operands: 2^-10 relative per product) + 8 eps_T
// |expected| (the activation's and the final rounding to T). 16-bit products are exact in
// float32, so bfloat16 / float16 results differ from the float64 reference by the float32
// sum's rounding and the one rounding to T.
template <typename T>
bool close(double got, double expected, double magnitude, int64_t depth, double product_error = 0.0) {
  const double bound = 4.0 * unit_roundoff<Accumulator<T>>() * std::sqrt(static_cast<double>(std::max<int64_t>(depth, 1))) *
                           magnitude + product_error * magnitude + 8.0 * unit_roundoff<T>() * std::fabs(expected);
  return std::fabs(got - expected) <= bound;
}

// Runs `launch_all` (which fills `outputs`) at four fiber orders in strict mode (forward,
// reverse, shuffled, warp run-ahead) and checks that the results are bitwise equal; returns
// the forward-order result's problem.
template <typename T>
std::string at_three_orders(const std::function<void()>& launch_all, const std::vector<const std::vector<T>*>& outputs) {
  std::vector<std::vector<T>> first;
  emulation::set_strict(true);
  const emulation::FiberOrder orders[] = {emulation::FiberOrder::Forward, emulation::FiberOrder::Reverse,
                                          emulation::FiberOrder::Shuffle, emulation::FiberOrder::WarpRunAhead};
  for (int o = 0; o < 4; ++o) {
    emulation::set_fiber_order(orders[o], 1234 + o);
    launch_all();
    for (size_t k = 0; k < outputs.size(); ++k) {
      if (o == 0) {
        first.push_back(*outputs[k]);
      } else if (std::memcmp(first[k].data(), outputs[k]->data(), first[k].size() * sizeof(T)) != 0) {
        emulation::set_fiber_order(emulation::FiberOrder::Forward);
        return "output " + std::to_string(k) + " differs between fiber orders (a race)";
      }
    }
  }
  emulation::set_fiber_order(emulation::FiberOrder::Forward);
  emulation::set_strict(false);
  // Leave the forward-order result in place for the numeric check.
  for (size_t k = 0; k < outputs.size(); ++k) std::memcpy(const_cast<T*>(outputs[k]->data()), first[k].data(),
                                                           first[k].size() * sizeof(T));
  return "";
}

enum class Layout { RowMajor, ColumnMajor, Padded, Broadcast };
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::RowMajor: return "row-major";
    case Layout::ColumnMajor: return "transposed";
    case Layout::Padded: return "padded";
    case Layout::Broadcast: return "stride-0 rows";
  }
  return "?";
}

// A (rows, cols) operand in the given layout: its storage and strides.
template <typename T>
struct Operand {
  std::unique_ptr<T[]> data;
  int64_t rows, cols, row_stride, col_stride;
  Operand(int64_t r, int64_t c, Layout layout) : rows(r), cols(c) {
    size_t n = 0;
    switch (layout) {
      case Layout::RowMajor: row_stride = c, col_stride = 1, n = r * c; break;
      case Layout::ColumnMajor: row_stride = 1, col_stride = r, n = r * c; break;
      case Layout::Padded: row_stride = c + 3, col_stride = 1, n = r > 0 ? (r - 1) * (c + 3) + c : 0; break;
      case Layout::Broadcast: row_stride = 0, col_stride = 1, n = r > 0 ? c : 0; break;
    }
    data = random_input<T>(n);
  }
  double at(int64_t i, int64_t j) const { return as_double(data[i * row_stride + j * col_stride]); }
  View<T> view() const { return {data.get(), rows, cols, row_stride, col_stride}; }
};

class VectorScratch final : public Scratch {
 public:
  void* allocate(size_t bytes) override {
    blocks_.emplace_back(new unsigned char[bytes == 0 ? 1 : bytes]);
    return blocks_.back().get();
  }

 private:
  std::vector<std::unique_ptr<unsigned char[]>> blocks_;
};

// One GEMM through gemm<T> under a kernel override (gemm_select.h) and a split-K override (0:
// the rule), against float64 loops. Row sums are asked of the basic SIMT tile only (the one
// kernel that computes them); TF32 (tf32 = true, float) is checked with its operand rounding.
template <typename T>
void check_gemm(int64_t M, int64_t N, int64_t K, Layout a_layout, Layout b_layout, Activation activation,
                bool backward_epilogue, GemmKernel kernel = GemmKernel::SimtBasic, int64_t splits = 0,
                bool tf32 = false) {
  char name[260];
  std::snprintf(name, sizeof name, "gemm<%s> %lld x %lld x %lld, A %s, B %s, activation %d%s, kernel %s%s, split-K %lld",
                type_name<T>(), (long long)M, (long long)N, (long long)K, layout_name(a_layout),
                layout_name(b_layout), static_cast<int>(activation), backward_epilogue ? " (backward epilogue)" : "",
                gemm_kernel_name(kernel), tf32 ? " (TF32 allowed)" : "", (long long)splits);
  run_case(name, [&]() -> std::string {
    const Operand<T> a(M, K, a_layout), b(K, N, b_layout);
    const std::unique_ptr<T[]> bias = random_input<T>(N);
    const std::unique_ptr<T[]> z = random_input<T>(M * N);
    const bool plain = activation == Activation::None && !backward_epilogue;
    const bool with_sums = plain && kernel == GemmKernel::SimtBasic;
    Output<T> c(M * N), pre(M * N), sums(M);
    std::vector<T> c_copy, pre_copy, sums_copy;
    const auto launch_all = [&] {
      GemmEpilogue<T> epilogue = backward_epilogue ? GemmEpilogue<T>::backward(activation, z.get(), nullptr, N)
                                                   : GemmEpilogue<T>::forward(activation, pre.data(), N);
      if (plain) epilogue = GemmEpilogue<T>();
      VectorScratch scratch;
      set_gemm_kernel_override(kernel);
      set_split_k_override(splits);
      gemm<T>(a.view(), b.view(), c.data(), N, backward_epilogue ? nullptr : bias.get(), 1,
              with_sums ? sums.data() : nullptr, nullptr, epilogue, GemmContext{&scratch, tf32});
      set_gemm_kernel_override(GemmKernel::Auto);
      set_split_k_override(0);
    };
    std::string problem = at_three_orders<T>(launch_all, {&c.storage, &pre.storage, &sums.storage});
    if (!problem.empty()) return problem;
    if (!c.guards_intact() || !pre.guards_intact() || !sums.guards_intact()) return "a store outside an output";
    const double product_error = tf32 ? 0.0009765625 : 0.0;
    for (int64_t i = 0; i < M; ++i) {
      double row_sum = 0, row_magnitude = 0;
      for (int64_t k = 0; k < K; ++k) row_sum += a.at(i, k), row_magnitude += std::fabs(a.at(i, k));
      if (with_sums && !close<T>(as_double(sums.data()[i]), row_sum, row_magnitude, K)) {
        return "row sum " + std::to_string(i) + ": got " + std::to_string(as_double(sums.data()[i])) + ", expected " +
               std::to_string(row_sum);
      }
      for (int64_t j = 0; j < N; ++j) {
        double v = backward_epilogue ? 0.0 : as_double(bias[j]);
        double magnitude = std::fabs(v);
        for (int64_t k = 0; k < K; ++k) v += a.at(i, k) * b.at(k, j), magnitude += std::fabs(a.at(i, k) * b.at(k, j));
        double expected = v;
        if (backward_epilogue) {
          const double zij = as_double(z[i * N + j]);
          const double derivative = activation_gradient(activation, 1.0, zij);
          expected = v * derivative;
          magnitude *= std::fabs(derivative);
        } else if (activation != Activation::None) {
          if (!close<T>(as_double(pre.data()[i * N + j]), v, magnitude, K, product_error)) {
            return "preactivation wrong at " + std::to_string(i);
          }
          expected = apply_activation(activation, v);
          magnitude *= 1.2;  // sup |act'| of the activations used here
        }
        const double got = as_double(c.data()[i * N + j]);
        if (!close<T>(got, expected, magnitude, K, product_error)) {
          return "C(" + std::to_string(i) + ", " + std::to_string(j) + "): got " + std::to_string(got) +
                 ", expected " + std::to_string(expected);
        }
      }
    }
    return "";
  });
}

template <typename T>
void check_column_sums(int64_t rows, int64_t cols, Layout layout) {
  const std::string name = std::string("column_sums<") + type_name<T>() + "> " +
                           std::to_string(rows) + " x " + std::to_string(cols) + ", " + layout_name(layout);
  run_case(name, [&]() -> std::string {
    const Operand<T> m(rows, cols, layout);
    Output<T> out(cols);
    std::string problem = at_three_orders<T>(
        [&] {
          VectorScratch scratch;
          column_sums<T>(m.view(), out.data(), scratch, nullptr);
        },
        {&out.storage});
    if (!problem.empty()) return problem;
    if (!out.guards_intact()) return "a store outside the output";
    for (int64_t j = 0; j < cols; ++j) {
      double sum = 0, magnitude = 0;
      for (int64_t i = 0; i < rows; ++i) sum += m.at(i, j), magnitude += std::fabs(m.at(i, j));
      if (!close<T>(as_double(out.data()[j]), sum, magnitude, rows)) return "column " + std::to_string(j) + " wrong";
    }
    return "";
  });
}

// The fused MLP kernels: forward (output and hidden) and backward (grad_input, dW, db),
// against float64 loops.
template <typename T>
void check_fused_mlp(int64_t M, const std::vector<int64_t>& sizes, Activation activation) {
  std::string name = std::string("fused mlp<") + (sizeof(T) == 4 ? "float" : "double") + "> M " + std::to_string(M) + ",";
  for (int64_t s : sizes) name += " " + std::to_string(s);
  name += ", activation " + std::to_string(static_cast<int>(activation));
  run_case(name, [&]() -> std::string {
    const int L = static_cast<int>(sizes.size()) - 1;
    std::vector<int64_t> widths(sizes.begin() + 1, sizes.end());
    const MlpHiddenLayout layout(M, widths, activation != Activation::None);
    const Operand<T> input(M, sizes[0], Layout::Padded);
    std::vector<std::unique_ptr<T[]>> weights, biases;
    for (int l = 0; l < L; ++l) {
      weights.push_back(random_input<T>(sizes[l + 1] * sizes[l]));
      biases.push_back(random_input<T>(sizes[l + 1]));
    }
    const std::unique_ptr<T[]> grad_output = random_input<T>(M * sizes[L]);
    std::vector<bool> has_bias(L, true);
    bool has_bias_flags[kFusedMaxLayers];
    for (int l = 0; l < L; ++l) has_bias_flags[l] = true;

    FusedMlpParams<T> p{};
    p.num_layers = L;
    p.activation = activation;
    p.M = M;
    p.hidden_rows = layout.rows;
    p.hidden_ld = layout.cols;
    p.input = input.data.get();
    p.input_row_stride = input.row_stride;
    p.input_col_stride = input.col_stride;
    for (int l = 0; l < L; ++l) {
      FusedLayer<T>& layer = p.layers[l];
      layer.weight = weights[l].get();
      layer.bias = biases[l].get();
      layer.bias_stride = 1;
      layer.n = static_cast<int>(sizes[l + 1]);
      layer.k = static_cast<int>(sizes[l]);
      layer.padded_n = static_cast<int>(padded_width(layer.n));
      layer.z_offset = l + 1 < L ? layout.z_offset[l] : 0;
      layer.y_offset = l + 1 < L ? layout.y_offset[l] : 0;
    }
    Output<T> output(M * sizes[L]), hidden(layout.rows * layout.cols), grad_input(M * sizes[0]);
    const int64_t stride = lay_out_partials(p, has_bias_flags);
    const FusedBackwardSplit split = split_fused_backward(M, FusedMlpTile<T>::BACKWARD_ROWS, stride);
    std::vector<Output<T>> grad_weights, grad_biases;
    for (int l = 0; l < L; ++l) grad_weights.emplace_back(sizes[l + 1] * sizes[l]), grad_biases.emplace_back(sizes[l + 1]);
    std::vector<const std::vector<T>*> outputs = {&output.storage, &hidden.storage, &grad_input.storage};
    for (int l = 0; l < L; ++l) outputs.push_back(&grad_weights[l].storage), outputs.push_back(&grad_biases[l].storage);
    std::unique_ptr<T[]> partials(new T[std::max<int64_t>(1, split.blocks * stride)]);

    std::string problem = at_three_orders<T>(
        [&] {
          FusedMlpParams<T> forward = p;
          forward.output = output.data();
          forward.hidden = hidden.data();
          launch_mlp_forward_fused(forward, nullptr);
          FusedMlpParams<T> backward = p;
          backward.grad_output = grad_output.get();
          backward.grad_output_row_stride = sizes[L];
          backward.grad_output_col_stride = 1;
          backward.saved_hidden = hidden.data();
          backward.grad_input = grad_input.data();
          backward.partials = partials.get();
          backward.partials_stride = stride;
          launch_mlp_backward_fused(backward, split, nullptr);
          for (int l = 0; l < L; ++l) {
            reduce_partials<T>(partials.get(), split.blocks, stride, p.layers[l].grad_weight_offset,
                               sizes[l + 1] * sizes[l], grad_weights[l].data(), nullptr);
            reduce_partials<T>(partials.get(), split.blocks, stride, p.layers[l].grad_bias_offset, sizes[l + 1],
                               grad_biases[l].data(), nullptr);
          }
        },
        outputs);
    if (!problem.empty()) return problem;
    if (!output.guards_intact() || !hidden.guards_intact() || !grad_input.guards_intact()) {
      return "a store outside an output";
    }
    for (int l = 0; l < L; ++l) {
      if (!grad_weights[l].guards_intact() || !grad_biases[l].guards_intact()) return "a store outside a gradient";
    }

    // float64 reference: a[l] (M, N_l) = act(z[l]), z[l] = a[l-1] W_l^T + b_l.
    std::vector<std::vector<double>> z(L), a(L + 1);
    a[0].resize(M * sizes[0]);
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t k = 0; k < sizes[0]; ++k) a[0][i * sizes[0] + k] = input.at(i, k);
    }
    for (int l = 0; l < L; ++l) {
      const int64_t N = sizes[l + 1], K = sizes[l];
      z[l].assign(M * N, 0.0);
      a[l + 1].assign(M * N, 0.0);
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t n = 0; n < N; ++n) {
          double v = static_cast<double>(biases[l][n]);
          for (int64_t k = 0; k < K; ++k) v += a[l][i * K + k] * static_cast<double>(weights[l][n * K + k]);
          z[l][i * N + n] = v;
          a[l + 1][i * N + n] = l + 1 < L ? apply_activation(activation, v) : v;
        }
      }
    }
    // Loose bound for the chained layers: errors pass through up to 3 products.
    const auto near = [](double got, double expected) {
      return std::fabs(got - expected) <= 256.0 * unit_roundoff<T>() * (1.0 + std::fabs(expected));
    };
    for (int64_t e = 0; e < M * sizes[L]; ++e) {
      if (!near(output.data()[e], a[L][e])) return "output wrong at " + std::to_string(e);
    }
    for (int64_t i = 0; i < layout.rows; ++i) {
      for (int l = 0; l + 1 < L; ++l) {
        for (int64_t n = 0; n < padded_width(sizes[l + 1]); ++n) {
          const bool inside = i < M && n < sizes[l + 1];
          const double zv = hidden.data()[i * layout.cols + layout.z_offset[l] + n];
          const double yv = hidden.data()[i * layout.cols + layout.y_offset[l] + n];
          if (!inside && (zv != 0.0 || yv != 0.0)) return "hidden padding is not zero";
          if (inside && (!near(zv, z[l][i * sizes[l + 1] + n]) || !near(yv, a[l + 1][i * sizes[l + 1] + n]))) {
            return "hidden wrong at row " + std::to_string(i) + " layer " + std::to_string(l);
          }
        }
      }
    }
    // Backward: dz[L-1] = grad_output; dW_l = dz_l^T a_l; db_l = sum dz_l; da = dz_l W_l.
    std::vector<double> dz(M * sizes[L]);
    for (int64_t e = 0; e < M * sizes[L]; ++e) dz[e] = static_cast<double>(grad_output[e]);
    for (int l = L - 1; l >= 0; --l) {
      const int64_t N = sizes[l + 1], K = sizes[l];
      for (int64_t n = 0; n < N; ++n) {
        double db = 0;
        for (int64_t i = 0; i < M; ++i) db += dz[i * N + n];
        if (!near(grad_biases[l].data()[n], db)) return "grad_bias " + std::to_string(l) + " wrong";
        for (int64_t k = 0; k < K; ++k) {
          double dw = 0;
          for (int64_t i = 0; i < M; ++i) dw += dz[i * N + n] * a[l][i * K + k];
          if (!near(grad_weights[l].data()[n * K + k], dw)) return "grad_weight " + std::to_string(l) + " wrong";
        }
      }
      std::vector<double> da(M * K, 0.0);
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t k = 0; k < K; ++k) {
          double v = 0;
          for (int64_t n = 0; n < N; ++n) v += dz[i * N + n] * static_cast<double>(weights[l][n * K + k]);
          da[i * K + k] = l > 0 ? activation_gradient(activation, v, z[l - 1][i * K + k], &a[l][i * K + k]) : v;
        }
      }
      dz.swap(da);
    }
    for (int64_t e = 0; e < M * sizes[0]; ++e) {
      if (!near(grad_input.data()[e], dz[e])) return "grad_input wrong at " + std::to_string(e);
    }
    return "";
  });
}

template <typename T>
void kernels_for() {
  const int64_t shapes[][3] = {{1, 1, 1}, {64, 64, 16}, {65, 63, 17}, {130, 70, 33}, {3, 200, 1},
                               {100, 5, 150}, {7, 9, 0}, {0, 5, 5}, {9, 0, 4}};
  for (const auto& s : shapes) {
    check_gemm<T>(s[0], s[1], s[2], Layout::RowMajor, Layout::ColumnMajor, Activation::None, false);
  }
  // The default path (warptiled SIMT) over the same edges, forced split-K, and the epilogues.
  const int64_t warptile_shapes[][3] = {{1, 1, 1}, {130, 70, 33}, {3, 200, 1}, {7, 9, 0}, {0, 5, 5}, {9, 0, 4}};
  for (const auto& s : warptile_shapes) {
    check_gemm<T>(s[0], s[1], s[2], Layout::RowMajor, Layout::ColumnMajor, Activation::None, false, GemmKernel::Auto);
  }
  check_gemm<T>(70, 66, 40, Layout::ColumnMajor, Layout::RowMajor, Activation::None, false, GemmKernel::Auto);
  check_gemm<T>(70, 66, 40, Layout::Broadcast, Layout::Padded, Activation::None, false, GemmKernel::Auto);
  check_gemm<T>(67, 71, 35, Layout::RowMajor, Layout::ColumnMajor, Activation::GELU, false, GemmKernel::Auto, 3);
  check_gemm<T>(20, 30, 100, Layout::RowMajor, Layout::RowMajor, Activation::Tanh, true, GemmKernel::Auto, 2);
  if constexpr (std::is_same_v<T, float>) {
    // TF32 on the tensor cores: every operand layout the kernel reads in place, packing, split-K.
    check_gemm<T>(70, 66, 40, Layout::RowMajor, Layout::ColumnMajor, Activation::None, false, GemmKernel::Auto, 0, true);
    check_gemm<T>(70, 66, 40, Layout::RowMajor, Layout::RowMajor, Activation::GELU, false, GemmKernel::Auto, 0, true);
    check_gemm<T>(72, 66, 40, Layout::ColumnMajor, Layout::RowMajor, Activation::None, false, GemmKernel::Auto, 0, true);
    check_gemm<T>(70, 66, 40, Layout::ColumnMajor, Layout::RowMajor, Activation::None, false, GemmKernel::Auto, 0, true);
    check_gemm<T>(33, 20, 37, Layout::Padded, Layout::Broadcast, Activation::Tanh, true, GemmKernel::TensorCore, 2, true);
    check_gemm<T>(40, 136, 32, Layout::RowMajor, Layout::ColumnMajor, Activation::None, false, GemmKernel::Auto, 0, true);
    check_gemm<T>(40, 136, 32, Layout::RowMajor, Layout::RowMajor, Activation::ReLU, false, GemmKernel::Auto, 0, true);
  }
  check_gemm<T>(70, 66, 40, Layout::ColumnMajor, Layout::RowMajor, Activation::None, false);
  check_gemm<T>(70, 66, 40, Layout::Padded, Layout::Padded, Activation::None, false);
  check_gemm<T>(70, 66, 40, Layout::Broadcast, Layout::RowMajor, Activation::None, false);
  check_gemm<T>(67, 71, 35, Layout::RowMajor, Layout::ColumnMajor, Activation::GELU, false);
  check_gemm<T>(67, 71, 35, Layout::RowMajor, Layout::RowMajor, Activation::Tanh, true);
  for (const int64_t rows : {0, 1, 300, 700}) check_column_sums<T>(rows, 45, Layout::RowMajor);
  check_column_sums<T>(300, 33, Layout::ColumnMajor);
  check_fused_mlp<T>(37, {5, 33, 17, 3}, Activation::Tanh);
  check_fused_mlp<T>(70, {20, 40, 40, 9}, Activation::ReLU);
  check_fused_mlp<T>(9, {3, 1, 2}, Activation::None);
  check_fused_mlp<T>(33, {128, 100, 128}, Activation::GELU);
  check_fused_mlp<T>(0, {4, 6, 2}, Activation::Tanh);
}

}  // namespace

// The kernels' float -> bfloat16 / float16 rounding (gemm_numeric.h) against independent
// references: bfloat16 by picking the nearer of the two neighbours in double (ties to the even
// one), float16 by the host compiler's _Float16 conversion where it has one; float32 inputs
// stepped through every exponent (normals, subnormals, overflow, infinities, NaN), and back.
void check_conversions() {
  run_case("bfloat16 / float16 rounding of float32 (nearest even, overflow, subnormals, NaN)", []() -> std::string {
    for (uint64_t step = 0; step < (uint64_t(1) << 32); step += 997) {
      const uint32_t u = static_cast<uint32_t>(step);
      float f;
      std::memcpy(&f, &u, 4);
      const bfloat16 b = from_accumulator<bfloat16>(f);
      if (std::isnan(f)) {
        if (!std::isnan(static_cast<float>(b))) return "bfloat16 of a NaN is not a NaN";
      } else {
        const uint16_t low = static_cast<uint16_t>(u >> 16), high = static_cast<uint16_t>(low + 1);
        // Past the largest finite value the grid's next point is 2^128 (rounded to infinity).
        const bool overflows = (high & 0x7fffu) == 0x7f80u;
        const double below = static_cast<float>(bfloat16{low});
        const double above = overflows ? std::copysign(std::ldexp(1.0, 128), f) : static_cast<float>(bfloat16{high});
        const double d_below = std::fabs(static_cast<double>(f) - below), d_above = std::fabs(above - static_cast<double>(f));
        const uint16_t expected = (u & 0xffffu) == 0 ? low
                                  : d_below < d_above ? low
                                  : d_above < d_below ? high
                                  : (low & 1u) ? high : low;
        if (b.bits != expected) return "bfloat16 of bits " + std::to_string(u) + " wrong";
      }
#if defined(__FLT16_MAX__)
      const float16 h = from_accumulator<float16>(f);
      const _Float16 reference = static_cast<_Float16>(f);
      uint16_t reference_bits;
      std::memcpy(&reference_bits, &reference, 2);
      if (std::isnan(f) ? !std::isnan(static_cast<float>(h)) : h.bits != reference_bits) {
        return "float16 of bits " + std::to_string(u) + " wrong";
      }
      if (!std::isnan(f) && static_cast<float>(h) != static_cast<float>(reference)) return "float16 -> float wrong";
#endif
    }
    return "";
  });
}

// bfloat16 / float16 on the tensor cores: the three products' layouts (x @ W^T: A row-major,
// B column-major; dy @ W: both row-major; dy^T @ x: A column-major, B row-major), views that
// are packed first (padded rows, stride 0, K not a multiple of 8), edges, split-K, epilogues.
template <typename T>
void tensor_core_kernels_for() {
  const GemmKernel tc = GemmKernel::Auto;
  check_gemm<T>(130, 136, 40, Layout::RowMajor, Layout::ColumnMajor, Activation::None, false, tc);
  check_gemm<T>(70, 66, 48, Layout::RowMajor, Layout::RowMajor, Activation::None, false, tc);
  // A transposed with M a multiple of 8 (and > kThinM): read in place through ldmatrix.trans.
  check_gemm<T>(72, 66, 48, Layout::ColumnMajor, Layout::RowMajor, Activation::None, false, tc);
  check_gemm<T>(70, 66, 48, Layout::ColumnMajor, Layout::RowMajor, Activation::None, false, tc);  // packed
  check_gemm<T>(70, 66, 48, Layout::RowMajor, Layout::ColumnMajor, Activation::GELU, false, tc);
  check_gemm<T>(67, 71, 35, Layout::Padded, Layout::Broadcast, Activation::Tanh, true, tc);
  check_gemm<T>(40, 24, 16, Layout::ColumnMajor, Layout::ColumnMajor, Activation::None, false, tc);
  check_gemm<T>(64, 136, 48, Layout::RowMajor, Layout::ColumnMajor, Activation::None, false, tc);  // thin tile, in place
  check_gemm<T>(64, 136, 48, Layout::RowMajor, Layout::RowMajor, Activation::None, false, tc);
  check_gemm<T>(65, 136, 48, Layout::RowMajor, Layout::RowMajor, Activation::None, false, tc);  // just past thin
  const int64_t edges[][3] = {{1, 1, 1}, {3, 200, 1}, {7, 9, 0}, {0, 5, 5}, {9, 0, 4}, {17, 9, 200}};
  for (const auto& s : edges) {
    check_gemm<T>(s[0], s[1], s[2], Layout::RowMajor, Layout::ColumnMajor, Activation::None, false, tc);
  }
  check_gemm<T>(20, 30, 100, Layout::RowMajor, Layout::RowMajor, Activation::None, false, tc, 3);
  check_gemm<T>(20, 30, 96, Layout::ColumnMajor, Layout::RowMajor, Activation::SiLU, false, tc, 2);
  for (const int64_t rows : {1, 300}) check_column_sums<T>(rows, 45, Layout::RowMajor);
}

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "";
  if (what == "selftest") {
    selftest();
  } else if (what == "kernels") {
    kernels_for<float>();
    kernels_for<double>();
    check_conversions();
    tensor_core_kernels_for<bfloat16>();
    tensor_core_kernels_for<float16>();
  } else {
    std::fprintf(stderr, "usage: %s selftest|kernels\n", argv[0]);
    return 2;
  }
  std::printf("%d failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
