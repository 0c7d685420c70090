"""The CUDA emulator itself, and proof that the emulated tests can fail.

tests/emulated_kernels/ is a small C++ program, built here with the host compiler, that runs
the emulator's self-test and checks the CUDA kernels (gemm_launch.cuh, mlp_launch.h) against
float64 loops at four fiber orders in strict mode (tests/emulated_kernels/check_kernels.cpp).
The planted-bug tests copy csrc/, plant one bug in a kernel (a barrier removed, a bound off
by one, a read past a shared-memory row, one of the two findings of the emulator issue
undone), rebuild the kernels and require the check to fail: through wrong values, a race
between fiber orders, a canary, strict mode, or AddressSanitizer / UBSan where only a
sanitizer can see the bug. The op-level emulated tests are the `emulated_cuda` variants of
the other test files (tests/cuda_emulation.py).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cuda_emulation

ROOT = Path(__file__).resolve().parents[1]
CHECK_DIR = ROOT / "tests" / "emulated_kernels"
BUILD_ROOT = ROOT / "build" / "emulated_kernels"
CXX = os.environ.get("CXX", "c++")
VARIANTS = {
    "plain": ["-O1"],
    # The portable context switch (the default off x86-64).
    "ucontext": ["-O1", "-DPYLIBNN_EMULATION_UCONTEXT"],
    # -O0: the sanitizer build compiles faster and the checks run in seconds either way.
    "sanitize": ["-O0", "-fsanitize=address,undefined,bounds", "-fno-sanitize=vptr", "-fno-sanitize-recover=undefined",
                 "-fno-omit-frame-pointer"],
}
# Abandoned fibers (a failed block is never resumed) keep their allocations: no leak check.
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1"}

INCLUDE = cuda_emulation.cuda_include_dir()
pytestmark = [pytest.mark.emulated_cuda,
              pytest.mark.skipif(INCLUDE is None or shutil.which(CXX) is None,
                                 reason="needs a C++ compiler and CUDA's host headers (vector_types.h)")]


def _flags(variant, csrc):
    flags = ["-std=c++17", "-g0", "-Wall", "-Wno-unknown-pragmas", f"-I{csrc}", f"-I{CHECK_DIR}", f"-I{INCLUDE}"]
    if cuda_emulation.cpu_has_fma():
        flags += ["-mfma", "-ffp-contract=fast"]
    return flags + VARIANTS[variant]


def _compile(source, output, variant, csrc, sources_it_reads):
    """Compiles `source` to `output` unless it is newer than every file it reads."""
    if output.exists() and all(output.stat().st_mtime > p.stat().st_mtime for p in sources_it_reads):
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [CXX, *_flags(variant, csrc), "-c", str(source), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-4000:]}"


def _headers(csrc):
    return [*csrc.rglob("*.h"), *csrc.rglob("*.cuh"), *CHECK_DIR.glob("*.h")]


def build_check(variant, csrc=ROOT / "csrc", directory=None):
    """Links check_kernels for `variant`; the emulator and the test logic are compiled once
    per variant from the checkout, the kernels (kernels.cpp) from `csrc`."""
    base = BUILD_ROOT / variant
    headers = _headers(ROOT / "csrc")
    _compile(ROOT / "csrc/cuda/emulation/emulator.cpp", base / "emulator.o", variant, ROOT / "csrc",
             [ROOT / "csrc/cuda/emulation/emulator.cpp", *headers])
    _compile(CHECK_DIR / "check_kernels.cpp", base / "check_kernels.o", variant, ROOT / "csrc",
             [CHECK_DIR / "check_kernels.cpp", *headers])
    directory = directory or base
    kernels = directory / "kernels.o"
    _compile(CHECK_DIR / "kernels.cpp", kernels, variant, csrc, [CHECK_DIR / "kernels.cpp", *_headers(csrc)])
    program = directory / "check_kernels"
    command = [CXX, *VARIANTS[variant], str(base / "check_kernels.o"), str(kernels), str(base / "emulator.o"),
               "-o", str(program), "-lpthread"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-4000:]}"
    return program


def run_check(program, what):
    return subprocess.run([str(program), what], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **SANITIZER_ENV})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_emulator_selftest(variant):
    result = run_check(build_check(variant), "selftest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kernels_pass_emulated(variant):
    result = run_check(build_check(variant), "kernels")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "0 failed" in result.stdout and "FAIL" not in result.stdout


# (name, file under csrc/, the exact original text, the planted text, build variant, what
# must appear in the output). Each original must occur exactly once: a kernel edit that
# removes it makes its test fail loudly, so the mutation is updated with the kernel.
PLANTED_BUGS = [
    ("gemm write-after-read barrier removed", "cuda/gemm_kernels.cuh",
     "    __syncthreads();  // everyone is done with the slab before the next one overwrites it\n", "",
     "plain", "FAIL gemm"),
    ("gemm read-after-write barrier removed", "cuda/gemm_kernels.cuh",
     "    __syncthreads();  // the slab is complete before anyone reads it\n", "", "plain", "FAIL gemm"),
    ("gemm store bound off by one", "cuda/gemm_kernels.cuh",
     "      if (col >= p.N) continue;\n", "      if (col > p.N) continue;\n", "plain", "FAIL gemm"),
    ("gemm load bound off by one (only ASan sees it)", "cuda/gemm_kernels.cuh",
     "const bool inside = row0 + a_i0 + r * a_di < p.M &&", "const bool inside = row0 + a_i0 + r * a_di <= p.M &&",
     "sanitize", "AddressSanitizer"),
    ("column sums tree barrier removed", "cuda/gemm_kernels.cuh",
     "    if (ty < s) partial[ty][tx] += partial[ty + s][tx];\n    __syncthreads();\n",
     "    if (ty < s) partial[ty][tx] += partial[ty + s][tx];\n", "plain", "FAIL column_sums"),
    ("column sums read past a shared-memory row (only UBSan -fsanitize=bounds sees it)", "cuda/gemm_kernels.cuh",
     "partial[ty][tx] += partial[ty + s][tx];", "partial[ty][tx] += partial[ty][tx + s * (COLUMN_SUMS_COLS + 1)];",
     "sanitize", "runtime error: index"),
    ("mlp backward's last barrier removed", "cuda/mlp_kernels.cuh",
     "      // dz_{l-1} is complete, and every read of prev is done before the next layer (or\n"
     "      // tile) restages it.\n      __syncthreads();\n", "", "plain", "FAIL fused mlp"),
    ("mlp input bound off by one (only ASan sees it)", "cuda/mlp_kernels.cuh",
     "activations[r][k] = row < p.M ?", "activations[r][k] = row <= p.M ?", "sanitize", "AddressSanitizer"),
    ("finding: mlp forward stages only N weight columns (padding lanes read never-written shared memory)",
     "cuda/mlp_kernels.cuh", "for (int e = tid; e < kc * staged_n; e += kFusedThreads)",
     "for (int e = tid; e < kc * N; e += kFusedThreads)", "plain", "strict mode"),
    ("finding: mlp backward stages only K columns of a_{l-1} (padding lanes read never-written shared memory)",
     "cuda/mlp_kernels.cuh",
     "for (int e = tid; e < ROWS * staged_k; e += kFusedThreads) {\n        const int r = e / staged_k, k = e % staged_k;",
     "for (int e = tid; e < ROWS * K; e += kFusedThreads) {\n        const int r = e / K, k = e % K;", "plain",
     "strict mode"),
    ("tensor-core cp.async wait removed (a slab is read before its copies land)", "cuda/gemm_tensor_core.cuh",
     "    ptx::cp_async_wait<STAGES - 2>();\n", "", "plain", "FAIL gemm<bfloat16>"),
    ("tensor-core ring barrier removed (only the warp run-ahead order sees it)", "cuda/gemm_tensor_core.cuh",
     "    // Slab `slab` is visible to every thread, and every thread is done reading the buffer the\n"
     "    // prefetch below overwrites (it held slab - 1).\n    __syncthreads();\n", "", "plain", "FAIL gemm<"),
    ("tensor-core m-contiguous A read without .trans", "cuda/gemm_tensor_core.cuh",
     "ptx::ldmatrix_x4_trans(a_frag[mi],", "ptx::ldmatrix_x4(a_frag[mi],", "plain", "FAIL gemm<float16>"),
    ("tensor-core copy reads a whole 16 bytes past K (only ASan sees it)", "cuda/gemm_tensor_core.cuh",
     "bytes = static_cast<int>(min(static_cast<int64_t>(G::VEC), inner_end - inner) * sizeof(T));",
     "bytes = 16;", "sanitize", "AddressSanitizer"),
    ("tensor-core store bound off by one", "cuda/gemm_tensor_core.cuh",
     "          if (col >= p.N) continue;\n", "          if (col > p.N) continue;\n", "plain", "FAIL gemm<"),
    ("warptile double-buffer barrier removed", "cuda/gemm_warptile.cuh",
     "    // next overwrites it.\n    __syncthreads();\n", "    // next overwrites it.\n", "plain", "FAIL gemm<"),
    ("warptile K slices overlap (each runs to K's end)", "cuda/gemm_warptile.cuh",
     "const int64_t k_end = min(p.K, k_begin + p.k_slice);", "const int64_t k_end = p.K;", "plain", "FAIL gemm<"),
    ("split-K reduction drops the last slice", "cuda/gemm_epilogue.cuh",
     "for (int64_t s = 1; s < splits; ++s)", "for (int64_t s = 1; s + 1 < splits; ++s)", "plain", "FAIL gemm<"),
    ("finding: gemm skips the row sums when C has no columns", "cuda/gemm_launch.cuh",
     "if (p.M == 0 || (p.N == 0 && a_row_sums == nullptr)) return;", "if (p.M == 0 || p.N == 0) return;",
     "plain", "row sum"),
]


@pytest.mark.parametrize("name,path,original,planted,variant,evidence", PLANTED_BUGS, ids=[b[0] for b in PLANTED_BUGS])
def test_planted_bug_is_caught(tmp_path, name, path, original, planted, variant, evidence):
    csrc = tmp_path / "csrc"
    shutil.copytree(ROOT / "csrc", csrc)
    target = csrc / path
    text = target.read_text()
    assert text.count(original) == 1, f"the planted bug's original text is not in {path} exactly once: update it"
    target.write_text(text.replace(original, planted))
    result = run_check(build_check(variant, csrc=csrc, directory=tmp_path), "kernels")
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the planted bug ({name}) went unnoticed:\n{output[-3000:]}"
    assert evidence in output, f"expected '{evidence}' in the output:\n{output[-3000:]}"


def test_each_emulated_op_call_runs_at_two_fiber_orders():
    import torch

    import pylibnn

    mode = cuda_emulation.EmulatedCuda()
    module = mode.module
    x, w = torch.randn(70, 20), torch.randn(30, 20)
    module.reset_statistics()
    with mode:
        y = pylibnn.linear(x, w)
        assert module.fiber_order() == "shuffle"  # the second of the two orders
    assert module.fiber_order() == "forward" and not module.strict()  # the defaults again after the mode
    stats = module.statistics()
    # One warptiled GEMM launch per order: ceil(70 / 128) row tiles x 1 column tile, 256 threads.
    assert stats["launches"] == 2 and stats["blocks"] == 2 and stats["threads"] == 2 * 256
    assert stats["barriers"] == 2 * 3  # one before the first 16-deep slab, one after each of two
    torch.testing.assert_close(y, x @ w.T)


@pytest.fixture
def float32_matmul_precision():
    """Restores torch's float32 matmul precision (and with it allow_tf32) after the test."""
    import torch

    saved = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(saved)


def _tensor_core_instructions(module):
    # mma.sync and ldmatrix are the only warp collectives of the GEMM kernels.
    return module.statistics()["warp_collectives"]


def test_float32_takes_tf32_tensor_cores_only_when_torch_allows(float32_matmul_precision):
    import torch

    import pylibnn

    mode = cuda_emulation.EmulatedCuda()
    module = mode.module
    x, w, b = torch.randn(70, 40), torch.randn(30, 40), torch.randn(30)
    reference = torch.nn.functional.linear(x.double(), w.double(), b.double())
    magnitude = torch.nn.functional.linear(x.double().abs(), w.double().abs(), b.double().abs())
    for precision, tf32 in (("highest", False), ("high", True), ("medium", True)):
        torch.set_float32_matmul_precision(precision)
        assert torch.backends.cuda.matmul.allow_tf32 == tf32
        module.reset_statistics()
        with mode:
            y = pylibnn.linear(x, w, b)
        assert (_tensor_core_instructions(module) > 0) == tf32, precision
        error = (y.double() - reference).abs()
        if tf32:
            # Operands rounded to 10 mantissa bits: <= 2^-10 relative per product, then float32 sums.
            assert (error <= 2.0**-10 * magnitude + 1e-5 * magnitude).all(), precision
            assert (error > 1e-6 * magnitude).any(), "TF32 results should not be float32-exact"
        else:
            assert (error <= 2 * 2.0**-23 * 40**0.5 * magnitude).all()


def test_gemm_override_and_split_k_reach_the_ops():
    import torch

    import pylibnn

    mode = cuda_emulation.EmulatedCuda()
    module = mode.module
    x, w = torch.randn(9, 600, dtype=torch.float64), torch.randn(20, 600, dtype=torch.float64)
    reference = x @ w.T
    try:
        results = {}
        for kernel, splits in (("auto", 0), ("simt_basic", 0), ("simt_warptile", 1), ("simt_warptile", 3)):
            module.set_gemm_kernel(kernel)
            module.set_split_k(splits)
            assert module.gemm_kernel() == kernel and module.split_k() == splits
            module.reset_statistics()
            with mode:
                results[(kernel, splits)] = pylibnn.linear(x, w)
            # split-K adds the reduction launch (per fiber order: two orders)
            expected_launches = 2 * (2 if splits == 3 or (kernel == "auto" and splits == 0) else 1)
            assert module.statistics()["launches"] == expected_launches, (kernel, splits)
            torch.testing.assert_close(results[(kernel, splits)], reference, rtol=1e-12, atol=1e-12)
        with pytest.raises(Exception, match="not float64"):
            module.set_gemm_kernel("tensor_core")
            with mode:
                pylibnn.linear(x, w)
    finally:
        module.set_gemm_kernel("auto")
        module.set_split_k(0)


def test_every_launch_goes_through_the_launch_helper():
    # A raw <<<...>>> launch would run on the GPU only, never emulated.
    for path in (ROOT / "csrc").rglob("*"):
        if path.suffix in (".cu", ".cuh", ".h", ".cpp") and path.name != "launch.h":
            assert "<<<" not in path.read_text(), f"{path.relative_to(ROOT)} launches a kernel with <<<...>>>"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


def test_kernel_selection_rule():
    module = cuda_emulation.load()
    plan = module.gemm_plan
    # 16-bit types: tensor cores, the thin tile up to M = 64, split-K below 128 tiles.
    assert plan("bfloat16", 4096, 4096, 4096) == {"kernel": "tensor_core", "tile": (128, 128, 32), "splits": 1,
                                                  "k_slice": 4096}
    assert plan("float16", 16, 4096, 4096) == {"kernel": "tensor_core", "tile": (64, 128, 32), "splits": 4,
                                               "k_slice": 1024}
    assert plan("bfloat16", 65, 4096, 4096)["tile"] == (128, 128, 32)
    # float32: exact SIMT unless TF32 is allowed; float64: its own SIMT shape.
    assert plan("float32", 4096, 4096, 4096)["kernel"] == "simt_warptile"
    assert plan("float32", 4096, 4096, 4096, True)["kernel"] == "tensor_core"
    assert plan("float64", 512, 512, 512)["tile"] == (64, 64, 16)
    # Split-K: ceil(128 / tiles) slices, at least 256 of K each, at most 16, whole BK slabs.
    p = plan("float32", 1, 4096, 4096)
    assert p["splits"] == 4 and p["k_slice"] == 1024
    p = plan("float32", 64, 256, 100000)
    assert p["splits"] == 16 and p["k_slice"] % 16 == 0 and p["splits"] * p["k_slice"] >= 100000
    assert plan("float32", 64, 4096, 300)["splits"] == 1  # K too short to split
    assert plan("bfloat16", 2048, 2048, 8192)["splits"] == 1  # 256 tiles: a full wave already
    # The override reaches the plan; a dtype it cannot take is an error.
    try:
        module.set_gemm_kernel("simt_basic")
        assert plan("float32", 100, 100, 100)["kernel"] == "simt_basic"
        assert plan("bfloat16", 100, 100, 100)["kernel"] == "tensor_core"  # 16-bit types have no SIMT kernel
        module.set_split_k(3)
        module.set_gemm_kernel("simt_warptile")
        assert plan("float32", 100, 100, 1000)["splits"] == 3
    finally:
        module.set_gemm_kernel("auto")
        module.set_split_k(0)
