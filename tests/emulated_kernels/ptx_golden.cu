// The golden check of the emulated PTX layouts: the checks of ptx_checks.h run on a real GPU
// (this file built by nvcc) and on the emulator (the same file built by g++), and the raw
// outputs of the two runs must agree byte for byte. The emulator's fragment layouts are our
// reading of the PTX ISA; the GPU is the judge. scripts/gpu_check.sh runs it first:
//   nvcc -std=c++17 -arch=sm_90 -Icsrc -Itests/emulated_kernels ptx_golden.cu -o golden_gpu
//   g++ -x c++ -std=c++17 -Icsrc -Itests/emulated_kernels -I$CUDA/include ptx_golden.cu
//       csrc/cuda/emulation/emulator.cpp -lpthread -o golden_emulated
//   ./golden_gpu gpu.bin && ./golden_emulated emulated.bin --compare gpu.bin
// Each run prints PASS/FAIL per check (against the documented result); --compare adds
// MATCH/DIFFER per check against the other run's file. Exit status 1 on any FAIL or DIFFER.
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

#include "ptx_checks.h"

namespace {

using pylibnn::ptx_checks::CheckResult;

#if defined(__CUDACC__)
void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    std::exit(2);
  }
}

class CudaDevice {
 public:
  ~CudaDevice() {
    for (void* p : buffers_) cudaFree(p);
  }
  template <typename T>
  T* upload(const std::vector<T>& host) {
    T* p = allocate<T>(host.size());
    check_cuda(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
    return p;
  }
  template <typename T>
  T* allocate(size_t count) {
    void* p = nullptr;
    check_cuda(cudaMalloc(&p, count * sizeof(T) + 16), "cudaMalloc");
    check_cuda(cudaMemset(p, 0, count * sizeof(T) + 16), "cudaMemset");
    buffers_.push_back(p);
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> download(const T* p, size_t count) {
    std::vector<T> host(count);
    check_cuda(cudaMemcpy(host.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return host;
  }
  template <auto Kernel, typename... Args>
  void run(dim3 grid, dim3 block, const Args&... args) {
    Kernel<<<grid, block>>>(args...);
    check_cuda(cudaGetLastError(), "launch");
    check_cuda(cudaDeviceSynchronize(), "kernel");
  }

 private:
  std::vector<void*> buffers_;
};
using Device = CudaDevice;
const char* const kRun = "gpu";
#else
using Device = pylibnn::ptx_checks::EmulatedDevice;
const char* const kRun = "emulated";
#endif

// Records: name, then the byte count and the bytes.
void write_results(const char* path, const std::vector<CheckResult>& results) {
  std::ofstream out(path, std::ios::binary);
  for (const CheckResult& r : results) {
    const uint64_t size = r.raw.size();
    out << r.name << '\n';
    out.write(reinterpret_cast<const char*>(&size), sizeof size);
    out.write(reinterpret_cast<const char*>(r.raw.data()), static_cast<std::streamsize>(size));
  }
}

std::map<std::string, std::vector<unsigned char>> read_results(const char* path) {
  std::map<std::string, std::vector<unsigned char>> results;
  std::ifstream in(path, std::ios::binary);
  std::string name;
  while (std::getline(in, name)) {
    uint64_t size = 0;
    in.read(reinterpret_cast<char*>(&size), sizeof size);
    std::vector<unsigned char> raw(size);
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(size));
    results[name] = std::move(raw);
  }
  return results;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 4 && std::string(argv[2]) == "--compare")) {
    std::fprintf(stderr, "usage: %s OUT.bin [--compare OTHER.bin]\n", argv[0]);
    return 2;
  }
  Device device;
  const std::vector<CheckResult> results = pylibnn::ptx_checks::run_ptx_checks(device);
  write_results(argv[1], results);
  int failures = 0;
  for (const CheckResult& r : results) {
    std::printf("%s %s (%s)%s%s\n", r.problem.empty() ? "PASS" : "FAIL", r.name.c_str(), kRun,
                r.problem.empty() ? "" : ": ", r.problem.c_str());
    failures += !r.problem.empty();
  }
  if (argc == 4) {
    const auto other = read_results(argv[3]);
    for (const CheckResult& r : results) {
      const auto found = other.find(r.name);
      if (found == other.end()) {
        std::printf("DIFFER %s: missing from %s\n", r.name.c_str(), argv[3]);
        ++failures;
      } else if (found->second != r.raw) {
        size_t at = 0;
        while (at < r.raw.size() && at < found->second.size() && r.raw[at] == found->second[at]) ++at;
        std::printf("DIFFER %s: first different byte %zu of %zu\n", r.name.c_str(), at, r.raw.size());
        ++failures;
      } else {
        std::printf("MATCH %s%s\n", r.name.c_str(), r.raw.empty() ? " (not compared: timing-dependent)" : "");
      }
    }
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
