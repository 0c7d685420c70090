"""The CPU GEMM engine (csrc/cpu/): its paths and the rules that choose them, the packing
kernels of every instruction set, the even split over threads, the persistent packing
memory, and the tuning profiles.

Every value is checked against float64 F.linear with the op database's bound (conftest /
tests/opdb.py; per element ERROR_FACTOR[dtype] * eps(dtype) * sqrt(depth) * the same sum over
absolute values, factor 2 for float32, 4 for float64); bfloat16 / float16 with one rounding
on top (assert_rounded_once). The paths are forced through the profile's parameters
(pylibnn._C.set_cpu_profile_parameter), so each test exercises the path it names whatever
profile this CPU gets; pylibnn._C.cpu_gemm_path says which path a product takes.
"""

import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pylibnn
from conftest import DTYPES, assert_close_to_reference, make_tensor, reference_linear, seed_for

_C = pylibnn._C
ops = torch.ops.pylibnn


@pytest.fixture
def profile():
    """Sets profile parameters for one test; the CPUID-chosen profile comes back afterwards."""
    yield _C.set_cpu_profile_parameter
    _C.set_cpu_profile("auto")


def check_linear(x, w, b, gy, what):
    """Forward and all three gradients of the ops against float64."""
    ref = reference_linear(x, w, b, gy)
    y = ops.linear_forward(x, w, b)
    gx, gw, gb = ops.linear_backward(gy, x, w, [True, True, b is not None])
    for name, value in (("output", y), ("grad_input", gx), ("grad_weight", gw)) + (
            (("grad_bias", gb),) if b is not None else ()):
        expected, bound = ref[name]
        assert_close_to_reference(value, expected, bound, x.dtype, f"{what}: {name}")


# The op database's rule for a sum of `depth` products (tests/opdb.py): ERROR_FACTOR[dtype] *
# eps(dtype) * sqrt(depth) * the same sum over absolute values.
ERROR_FACTOR = {torch.float32: 2.0, torch.float64: 4.0}


def sum_bound(magnitude, depth):
    return lambda dtype: ERROR_FACTOR[dtype] * torch.finfo(dtype).eps * max(depth, 1) ** 0.5 * magnitude


def random_case(M, K, N, dtype, bias=True):
    seed = seed_for(M, K, N)
    x = make_tensor((M, K), dtype, "cpu", seed)
    w = make_tensor((N, K), dtype, "cpu", seed + 1)
    b = make_tensor((N,), dtype, "cpu", seed + 2) if bias else None
    gy = make_tensor((M, N), dtype, "cpu", seed + 3)
    return x, w, b, gy


# --------------------------------------------------------------------------- path rules

def backward_paths(M, K, N):
    """The paths of linear_backward's two products for contiguous operands (linear_cpu.cpp:
    grad_input = dy @ W, grad_weight = dy^T @ x with row sums)."""
    grad_input = _C.cpu_gemm_path(M, K, N, 1, K, 1, False)
    grad_weight = _C.cpu_gemm_path(N, K, M, N, K, 1, True)
    return grad_input, grad_weight


def forward_path(M, K, N):
    return _C.cpu_gemm_path(M, N, K, 1, 1, K, False)


def w_rows_thrash_l1(K, element_bytes):
    # gemm_engine.cpp's choose_path: W's rows a multiple of 4 KiB apart share L1 sets; an L1
    # under 48 KiB (8-way) does not keep a W panel's rows, so the transposed path is refused
    l1d = int(_C.build_info()["cpu_profile"]["l1d_bytes"])
    return (K * element_bytes) % 4096 == 0 and 0 < l1d < 48 * 1024


def test_path_rules_follow_the_profile(profile):
    profile("direct_max_madds", 4096)
    profile("stream_max_depth", 4)
    profile("gemv_max_rows", 4)
    profile("dot_max_rows", 192)
    profile("dot_min_depth", 128)
    profile("dot_thin_rows", 16)
    assert forward_path(4, 3, 3) == "direct"
    # batch 1..4: grad_weight is an outer product (depth = batch), grad_input a GEMV
    for batch in (1, 2, 4):
        assert backward_paths(batch, 4096, 4096) == ("gemv", "outer")
    assert backward_paths(5, 4096, 4096) == ("blocked", "blocked")
    # the forward of a thin batch reads x and W in place (dot) once K is deep enough
    assert forward_path(1, 4096, 4096) == "dot"
    assert forward_path(192, 128, 512) == "dot"
    assert forward_path(193, 128, 512) == "blocked"
    assert forward_path(64, 64, 64) == "blocked"
    assert forward_path(16, 64, 1024) == "dot" and forward_path(17, 64, 1024) == "blocked"
    # float64 rows count double (their slice of x takes twice the cache)
    assert _C.cpu_gemm_path(96, 512, 128, 1, 1, 128, False, 8) == "dot"
    assert _C.cpu_gemm_path(97, 512, 128, 1, 1, 128, False, 8) == "blocked"
    # past the dot path's rows the transposed path takes the forward, where x's panels are
    # at least 7/8 full, K is deep enough and the product is not small
    profile("transposed_max_rows", 256)
    profile("transposed_min_depth", 512)
    profile("small_max_madds", 1 << 20)
    nr = {"avx512": 32, "avx2": 16}.get(_C.build_info()["cpu_isa"]["selected"], 8)  # float32 x panel rows
    # K = 4000: W's rows are not 4 KiB apart (see the L1 rule below)
    assert forward_path(8 * nr, 4000, 4096) == "transposed"
    assert forward_path(7 * nr + 4, 4000, 4096) == "transposed"  # last x panel 1/2 full, 7/8 of all
    assert forward_path(5 * nr + 1, 4000, 4096) == "dot"         # padding over 1/8: back to dot
    assert forward_path(257, 4000, 4096) == "blocked"
    assert forward_path(8 * nr, 511, 4096) != "transposed"
    assert forward_path(64, 512, 32) == "dot"                    # a small product
    assert backward_paths(64, 4000, 4096) == ("blocked", "blocked")
    # W's rows 4 KiB apart (K = 4096 float32) would evict each other from an L1 under 48 KiB
    assert (forward_path(8 * nr, 4096, 4096) == "transposed") == (not w_rows_thrash_l1(4096, 4))
    profile("transposed_max_rows", 0)
    assert forward_path(8 * nr, 4000, 4096) == ("blocked" if 8 * nr > 192 else "dot")
    # the thresholds are the profile's
    profile("dot_min_depth", 64)
    assert forward_path(64, 64, 64) == "dot"
    profile("stream_max_depth", 0)
    profile("gemv_max_rows", 0)
    assert backward_paths(1, 4096, 4096) == ("blocked", "blocked")
    # B's rows must be contiguous for the streaming paths
    assert _C.cpu_gemm_path(300, 200, 1, 300, 200, 200, True) == "blocked"


def test_reference_isa_reports_reference():
    pylibnn.ops.set_cpu_isa("reference")
    try:
        assert forward_path(64, 64, 64) == "reference"
    finally:
        pylibnn.ops.set_cpu_isa("auto")


# --------------------------------------------------------------------------- each path, each ISA

# (M, K, N) of the layer and the parameters that send its products down one path.
# the dot rule is pinned too: it takes the cases the L1 rule keeps off the transposed path
TRANSPOSED = {"transposed_max_rows": 256, "transposed_min_depth": 1, "small_max_madds": 0,
              "dot_max_rows": 192, "dot_min_depth": 128}

PATH_CASES = [
    # outer (grad_weight, depth = batch 1..4) and gemv (grad_input, 1..4 rows): columns not
    # a multiple of any vector, several GEMV column blocks (gemv_cols = 64)
    ("outer+gemv", (1, 300, 517), {"gemv_cols": 64}),
    ("outer+gemv", (3, 129, 70), {}),
    ("outer+gemv", (4, 1000, 33), {"gemv_cols": 64}),
    # outer with depth > 8 (C reloaded between steps of 8 along k)
    ("outer-deep", (13, 77, 300), {"stream_max_depth": 16}),
    # outer with C written by non-temporal stores (rows of 336 elements: whole lines, and a
    # partial last vector in plain stores), depth 1, 8 and 13 (only the last step streams)
    ("outer-write-once", (1, 336, 517), {"write_once_min_bytes": 0}),
    ("outer-write-once", (8, 336, 70), {"write_once_min_bytes": 0}),
    ("outer-write-once", (13, 320, 33), {"write_once_min_bytes": 0, "stream_max_depth": 16}),
    # blocked, one thread region (small), split along M (M >= N) and along N (M < N)
    ("small", (64, 64, 64), {"small_max_madds": 1 << 40, "dot_max_rows": 0}),
    ("small", (100, 70, 50), {"small_max_madds": 1 << 40, "dot_max_rows": 0}),
    ("small", (30, 90, 200), {"small_max_madds": 1 << 40, "dot_max_rows": 0}),
    # small with x's full 12-row panels read in place and a last panel of 8 rows (the 8-row
    # kernel writing C itself), of 11 rows (the 12-row kernel, through a tile) and of 7 alone
    # (no panel in place); 28 x 512: float64 rows 4 KiB apart are packed instead
    ("small-rows", (44, 77, 40), {"small_max_madds": 1 << 40, "dot_max_rows": 0}),
    ("small-rows", (35, 64, 96), {"small_max_madds": 1 << 40, "dot_max_rows": 0}),
    ("small-rows", (7, 40, 33), {"small_max_madds": 1 << 40, "dot_max_rows": 0, "gemv_max_rows": 0}),
    ("small-rows", (28, 512, 48), {"small_max_madds": 1 << 40, "dot_max_rows": 0}),
    # blocked with shared B packing, tiny blocks: many kc / mc / nc blocks, uneven panels
    ("blocked", (200, 300, 150), {"small_max_madds": 0, "kc": 24, "mc": 24, "nc": 64, "dot_max_rows": 0}),
    ("blocked-thin", (5, 300, 150), {"small_max_madds": 0, "dot_max_rows": 0, "gemv_max_rows": 0,
                                     "stream_max_depth": 0}),
    ("blocked", (97, 1030, 45), {"small_max_madds": 0, "kc": 512, "dot_max_rows": 0}),
    # dot with every row count (1 row kernel and the tile kernel)
    ("dot", (1, 700, 37), {"dot_min_depth": 1}),
    ("dot", (9, 257, 70), {"dot_min_depth": 1}),
    # transposed (the forward's C^T = W x^T, W's rows in place): two kc steps and a last W
    # panel of 4 rows (a short kernel on a packed slice); a padded x panel (28 of 32 float32
    # rows) and a last W panel of 10 (the 12-row kernel on a packed slice); several x panels
    # and chunks of W panels; 32 x 33000: super blocks of k (C accumulated across them, the
    # bias added after the last); W rows 4 KiB apart (float32 K = 1024)
    ("transposed", (64, 600, 100), TRANSPOSED),
    ("transposed", (28, 300, 70), TRANSPOSED),
    ("transposed", (112, 200, 500), TRANSPOSED),
    ("transposed", (32, 33000, 20), TRANSPOSED),
    ("transposed", (32, 1024, 36), TRANSPOSED),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path,shape,params", PATH_CASES, ids=[f"{p}-{m}x{k}x{n}" for p, (m, k, n), _ in PATH_CASES])
def test_paths_match_float64(cpu_isa, profile, path, shape, params, dtype):
    for name, value in params.items():
        profile(name, value)
    M, K, N = shape
    if path == "transposed" and cpu_isa != "reference":
        element_bytes = torch.finfo(dtype).bits // 8
        # the engine keeps W's rows 4 KiB apart off the transposed path on an L1 under 48 KiB
        # (Zen 4); the case then checks the path it takes instead
        expected = "transposed" if not w_rows_thrash_l1(K, element_bytes) else "dot"
        assert _C.cpu_gemm_path(M, N, K, 1, 1, K, False, element_bytes) == expected
    check_linear(*random_case(M, K, N, dtype), f"{path} isa={cpu_isa} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sliced", "contiguous"])
def test_transposed_path_strides_and_epilogue(cpu_isa, profile, kind, dtype):
    # The transposed path with rows of x and W further apart than K (slices of wider
    # tensors) or contiguous, and the fused epilogue (preactivation kept, then GELU) applied
    # to the chunks of C^T it stores.
    for name, value in TRANSPOSED.items():
        profile(name, value)
    M, K, N = 60, 130, 150
    if kind == "sliced":
        x = make_tensor((M, K + 7), dtype, "cpu", 21)[:, 3:K + 3]
        w = make_tensor((N, K + 5), dtype, "cpu", 22)[:, :K]
    else:
        x = make_tensor((M, K), dtype, "cpu", 21)
        w = make_tensor((N, K), dtype, "cpu", 22)
    b = make_tensor((N,), dtype, "cpu", 23)
    expected_path = "reference" if cpu_isa == "reference" else "transposed"
    assert _C.cpu_gemm_path(M, N, K, 1, 1, w.stride(0), False, x.element_size()) == expected_path
    exact = x.double() @ w.double().t() + b.double()
    bound = sum_bound(x.double().abs() @ w.double().abs().t() + b.double().abs(), K)
    y = ops.linear_forward(x, w, b)
    assert_close_to_reference(y, exact, bound, dtype, f"transposed {kind} isa={cpu_isa}: output")
    z, pre = ops.linear_act_forward(x, w, b, "gelu", True)
    assert_close_to_reference(pre, exact, bound, dtype, f"transposed {kind}: preactivation")
    torch.testing.assert_close(z, torch.nn.functional.gelu(pre), msg=f"transposed {kind}: gelu of the preactivation")


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_grad_weight_reads_row_major_grad_output_in_place(cpu_isa, profile, dtype):
    # grad_output stored transposed makes grad_output^T, grad_weight's A, row-major: a small
    # product reads its full 12-row panels in place and sums grad_bias from A itself; 44 rows
    # leave a last panel of 8 for the short kernel.
    profile("small_max_madds", 1 << 40)
    profile("dot_max_rows", 0)
    x, w, b, gy = random_case(40, 30, 44, dtype)
    check_linear(x, w, b, gy.t().contiguous().t(), f"row-major grad_output^T isa={cpu_isa}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [1, 3, 5, 8, 15, 16, 17, 31, 33, 130])
def test_packing_depth_tails(cpu_isa, profile, K, dtype):
    # The forward packs x and W (both contiguous along k) through the in-register
    # transposes: every remainder of 16 / 8 / 4 along k, rows past MR and columns past NR.
    profile("dot_max_rows", 0)
    profile("stream_max_depth", 0)
    profile("small_max_madds", 0)
    M, N = 29, 45
    check_linear(*random_case(M, K, N, dtype), f"pack isa={cpu_isa} K={K}")


def strided_operands(kind, dtype):
    M, K, N = 37, 90, 70
    x, w, b, gy = random_case(M, K, N, dtype)
    if kind == "transposed":
        x = x.t().contiguous().t()
        w = w.t().contiguous().t()
    elif kind == "sliced":
        x = make_tensor((M + 3, 2 * K + 5), dtype, "cpu", 11)[3:, 5::2]
        w = make_tensor((N, 3 * K), dtype, "cpu", 12)[:, ::3]
    elif kind == "expanded":
        x = make_tensor((1, K), dtype, "cpu", 13).expand(M, K)
        w = make_tensor((N, 1), dtype, "cpu", 14).expand(N, K)
    return x, w, b, gy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["transposed", "sliced", "expanded"])
@pytest.mark.parametrize("small", [False, True], ids=["shared-B", "small"])
def test_packing_strided_operands(cpu_isa, profile, kind, small, dtype):
    profile("dot_max_rows", 0)
    profile("small_max_madds", (1 << 40) if small else 0)
    check_linear(*strided_operands(kind, dtype), f"strided {kind} isa={cpu_isa}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_even_split_bitwise_across_thread_counts(cpu_isa, profile, dtype):
    # 512 rows in 43 panels of 12 over 6 row blocks (7 or 8 panels each), tasks picked up
    # dynamically: the thread count and the order of pick-up never change the bits.
    profile("dot_max_rows", 0)
    x, w, b, gy = random_case(512, 300, 260, dtype)
    saved = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append((ops.linear_forward(x, w, b), *ops.linear_backward(gy, x, w, [True, True, True])))
    finally:
        torch.set_num_threads(saved)
    for run in results[1:]:
        for name, first, again in zip(("output", "grad_input", "grad_weight", "grad_bias"), results[0], run):
            assert torch.equal(first, again), f"{name} differs between thread counts"


# --------------------------------------------------------------------------- packing memory

def run_layer(x, w, b, gy):
    ops.linear_forward(x, w, b)
    ops.linear_backward(gy, x, w, [True, True, True])


def test_scratch_is_reused_without_page_faults():
    # Repeated calls of one shape map nothing new and fault no pages in: the packing memory
    # persists. The fault count is the whole process's (torch's output tensors, OpenMP
    # threads) over 20 calls of forward + backward at 512^3, which took 240-528 faults per
    # call when the packing buffers were malloc'd per call; a page or two per call is left
    # for torch's allocator. The threads pick up tasks dynamically, so a worker that the
    # scheduler held off through the warm-up (two test processes share these cores) maps its
    # scratch the first time it works: that, once per thread, is allowed, and its pages;
    # a region mapped again (grown) is not.
    x, w, b, gy = random_case(512, 512, 512, torch.float32)
    for _ in range(3):
        run_layer(x, w, b, gy)
    before = _C.cpu_scratch_stats()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    calls = 20
    for _ in range(calls):
        run_layer(x, w, b, gy)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    after = _C.cpu_scratch_stats()
    first_maps = after["regions"] - before["regions"]
    assert after["maps"] - before["maps"] == first_maps, ("packing memory was mapped again in steady state",
                                                          before, after)
    assert first_maps <= torch.get_num_threads() - 1, (before, after)  # 512^3: a worker maps PackedA only
    new_pages = (after["mapped_bytes"] - before["mapped_bytes"]) // 4096
    assert faults <= 2 * calls + new_pages, f"{faults} minor page faults over {calls} calls"


def test_scratch_is_bounded_and_released():
    x, w, b, gy = random_case(700, 600, 500, torch.float32)
    run_layer(x, w, b, gy)
    stats = _C.cpu_scratch_stats()
    assert stats["mapped_bytes"] > 0 and stats["regions"] > 0
    # Bounded by the blocking, not by the operands: a layer 4x as large in every dimension
    # maps at most the kc x nc B block, the A blocks and the bias more.
    prof = _C.cpu_profile()
    kc, mc, nc = int(prof["kc"]), int(prof["mc"]), int(prof["nc"])
    bound = 8 * (kc * (nc + 64) + torch.get_num_threads() * (2 * mc * kc + kc * 64 * 8) + 4 * 4096) + (1 << 20)
    big = random_case(1400, 1200, 1000, torch.float32)
    run_layer(*big)
    assert _C.cpu_scratch_stats()["mapped_bytes"] <= max(bound, stats["mapped_bytes"] * 4)
    _C.release_cpu_scratch()
    assert _C.cpu_scratch_stats()["mapped_bytes"] == 0
    check_linear(x, w, b, gy, "after release_cpu_scratch")
    assert _C.cpu_scratch_stats()["mapped_bytes"] > 0
    assert "cpu_scratch" in pylibnn.build_info()


# --------------------------------------------------------------------------- profiles

def test_build_info_reports_the_profile():
    info = pylibnn.build_info()["cpu_profile"]
    for key in ("name", "origin", "measured", "vendor", "family", "model", "l1d_bytes", "l2_bytes", "kc", "mc", "nc",
                "dot_min_depth", "stream_max_depth", "gemv_max_rows"):
        assert key in info, key
    assert info["name"] in _C.cpu_profile_names()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and info["vendor"] in ("GenuineIntel", "AuthenticAMD"):
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        assert int(info["family"]) == int(fields["cpu family"])
        assert int(info["model"]) == int(fields["model"])


def test_profiles_can_be_forced_and_restored(profile):
    for name in _C.cpu_profile_names():
        _C.set_cpu_profile(name)
        assert _C.cpu_profile()["name"] == name
        check_linear(*random_case(70, 300, 90, torch.float32), f"profile {name}")
    _C.set_cpu_profile("auto")
    assert _C.cpu_profile()["origin"].startswith(("CPUID match", "derived from caches"))


def test_profile_errors_are_clear(profile):
    with pytest.raises(RuntimeError, match="unknown CPU profile 'bogus'.*zen4"):
        _C.set_cpu_profile("bogus")
    with pytest.raises(RuntimeError, match="unknown CPU profile parameter 'kq'.*kc"):
        _C.set_cpu_profile_parameter("kq", 1)
    with pytest.raises(RuntimeError, match="kc must be >= 1"):
        _C.set_cpu_profile_parameter("kc", 0)
    with pytest.raises(RuntimeError, match="gemv_max_rows must be <= 4"):
        _C.set_cpu_profile_parameter("gemv_max_rows", 5)


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_profile_environment_overrides():
    code = "import pylibnn; p = pylibnn._C.cpu_profile(); print(p['name'], p['kc'], p['dot_min_depth'], p['origin'])"
    out = run_python(code, PYLIBNN_CPU_PROFILE="zen4", PYLIBNN_CPU_KC="128", PYLIBNN_CPU_DOT_MIN_DEPTH="32")
    assert out.returncode == 0, out.stderr
    name, kc, depth, origin = out.stdout.split(maxsplit=3)
    assert (name, kc, depth) == ("zen4", "128", "32")
    assert "PYLIBNN_CPU_PROFILE=zen4" in origin and "PYLIBNN_CPU_KC=128" in origin
    bad = run_python(code, PYLIBNN_CPU_PROFILE="bogus")
    assert bad.returncode != 0 and "unknown CPU profile 'bogus'" in bad.stderr
    bad = run_python(code, PYLIBNN_CPU_KC="12x")
    assert bad.returncode != 0 and "PYLIBNN_CPU_KC='12x' is not an integer" in bad.stderr


# --------------------------------------------------------------------------- reduced precision

# Unit roundoff of one rounding to the dtype (half an ulp, relative), and the smallest
# absolute step where float16 goes subnormal.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
SUBNORMAL_STEP = {torch.bfloat16: 0.0, torch.float16: 2.0 ** -25}
REDUCED = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="f16")]


def assert_rounded_once(actual, exact, magnitude, depth, dtype, what):
    """bfloat16 / float16 results of float32 arithmetic rounded once: the rounding (half an ulp
    of the exact value) plus conftest's float32 bound for the sum (2 eps32 sqrt(depth) |terms|).
    Partial sums kept in the reduced dtype (a rounding per kc block or per term) exceed it by
    orders of magnitude."""
    assert actual.dtype == dtype, what
    error = (actual.double() - exact).abs()
    bound = (UNIT_ROUNDOFF[dtype] * exact.abs() + SUBNORMAL_STEP[dtype]
             + 2 * torch.finfo(torch.float32).eps * max(depth, 1) ** 0.5 * magnitude)
    bad = error > bound
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {error.numel()} outside the bound; largest error/bound "
                           f"{(error / bound.clamp_min(1e-300)).max().item():.3g}")


WIDENED_CASES = [
    (3, 5, 4, "plain"),          # direct (float32 reference loop)
    (37, 300, 70, "plain"),      # blocked, one nc block
    (29, 2000, 300, "plain"),    # kc = K = 2000: the B block narrows to several nc blocks
    (1, 4096, 64, "plain"),      # one row
    (40, 90, 33, "a_transposed"),
    (40, 90, 33, "b_transposed"),
    (40, 90, 33, "sliced"),
    # x W^T with W's rows contiguous along k: the dot path for thin x (widened as loaded, or
    # the native bfloat16 dot kernel), with partial row groups, k tails and partial strips
    (1, 4096, 64, "b_transposed"),
    (5, 1037, 45, "b_transposed"),
    (16, 200, 30, "b_transposed"),
    (3, 700, 9, "row_padded"),
]


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("M,K,N,layout", WIDENED_CASES, ids=[f"{m}x{k}x{n}-{l}" for m, k, n, l in WIDENED_CASES])
def test_widened_gemm_rounds_once(cpu_isa, M, K, N, layout, dtype):
    check_gemm_rounds_once(M, K, N, layout, dtype, f"isa={cpu_isa}")


def check_gemm_rounds_once(M, K, N, layout, dtype, what):
    seed = seed_for(M, K, N)
    a = make_tensor((M, K), dtype, "cpu", seed)
    b = make_tensor((K, N), dtype, "cpu", seed + 1)
    bias = make_tensor((N,), dtype, "cpu", seed + 2)
    if layout == "a_transposed":
        a = a.t().contiguous().t()
    elif layout == "b_transposed":
        b = b.t().contiguous().t()
    elif layout == "sliced":
        a = make_tensor((M, 2 * K), dtype, "cpu", seed + 3)[:, ::2]
        b = make_tensor((K + 4, 3 * N), dtype, "cpu", seed + 4)[4:, ::3]
    elif layout == "expanded":  # stride 0 along k in A, along n in B
        a = make_tensor((M, 1), dtype, "cpu", seed + 3).expand(M, K)
        b = make_tensor((1, N), dtype, "cpu", seed + 4).expand(K, N)
    elif layout == "broadcast_rows":  # rows of A (and columns of B) repeated: stride 0 across them
        a = make_tensor((1, K), dtype, "cpu", seed + 3).expand(M, K)
        b = make_tensor((1, K), dtype, "cpu", seed + 4).expand(N, K).t()
    elif layout == "row_padded":  # rows of A further apart than K, at an odd offset
        a = make_tensor((M, K + 7), dtype, "cpu", seed + 3)[:, 3:K + 3]
        b = b.t().contiguous().t()
    a64, b64, bias64 = a.double(), b.double(), bias.double()
    exact = a64 @ b64 + bias64
    magnitude = a64.abs() @ b64.abs() + bias64.abs()
    c, sums = _C.cpu_gemm(a, b, bias, True)
    assert_rounded_once(c, exact, magnitude, K, dtype, f"C {what}")
    assert_rounded_once(sums, a64.sum(1), a64.abs().sum(1), K, dtype, f"row sums {what}")
    # Without row sums A may be read in place (the row sums are taken from packed panels)
    c, _ = _C.cpu_gemm(a, b, bias)
    assert_rounded_once(c, exact, magnitude, K, dtype, f"C without row sums {what}")


# --------------------------------------------------------------------------- bfloat16 kernels

BF16_KERNELS = pylibnn.build_info()["cpu_isa"]["bf16_supported"]


@pytest.fixture
def restore_bf16_kernel():
    yield
    _C.set_cpu_bf16_kernel("auto")
    pylibnn.ops.set_cpu_isa("auto")


def cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    line = next((l for l in cpuinfo.read_text().splitlines() if l.startswith("flags")), "flags :")
    return set(line.split(":", 1)[1].split())


def test_bf16_kernel_choice_is_reported_and_forced(restore_bf16_kernel):
    info = pylibnn.build_info()["cpu_isa"]
    supported = info["bf16_supported"]
    assert supported[-1] == "widened"
    assert info["bf16_selected"] == supported[0] == _C.get_cpu_bf16_kernel()  # auto: the best
    flags = cpu_flags()
    if "avx512" in info["supported"] and {"avx512_bf16", "avx512bw"} <= flags:
        assert "avx512bf16" in supported
        if {"amx_bf16", "amx_tile"} <= flags:  # Linux grants the tile state (5.16 and later)
            assert supported[0] == "amx"
    for name in supported:
        _C.set_cpu_bf16_kernel(name)
        assert _C.get_cpu_bf16_kernel() == name
        assert _C.cpu_bf16_kernel_in_use() == (name if pylibnn.ops.get_cpu_isa() == "avx512" else "widened")
    for isa in _C.build_info()["cpu_isa"]["supported"]:
        if isa != "avx512":
            pylibnn.ops.set_cpu_isa(isa)
            assert _C.cpu_bf16_kernel_in_use() == "widened", isa


def test_bf16_kernel_errors_are_clear(restore_bf16_kernel):
    with pytest.raises(RuntimeError, match="unknown bfloat16 kernel 'bogus'.*widened"):
        _C.set_cpu_bf16_kernel("bogus")
    for name in ("amx", "avx512bf16"):
        if name not in BF16_KERNELS:
            with pytest.raises(RuntimeError, match=f"'{name}' is compiled in but this CPU"):
                _C.set_cpu_bf16_kernel(name)


def test_bf16_kernel_environment_override():
    code = "import pylibnn; print(pylibnn._C.get_cpu_bf16_kernel())"
    forced = run_python(code, PYLIBNN_CPU_BF16="widened")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.split() == ["widened"]
    bad = run_python(code, PYLIBNN_CPU_BF16="bogus")
    assert bad.returncode != 0 and "unknown bfloat16 kernel 'bogus'" in bad.stderr


BF16_KERNEL_CASES = WIDENED_CASES + [
    (64, 1024, 96, "plain"),        # whole AMX tiles, K a multiple of 32; 3 B panels: A in place
    (64, 1024, 160, "plain"),       # ... rows 2 KiB apart and 5 B panels: A packed
    (64, 1056, 160, "plain"),       # ... rows 2112 bytes apart: A in place
    (20, 1024, 140, "b_transposed"), # the swapped product below, W^T in place with rows 2 KiB apart
    (70, 33, 40, "plain"),          # K one past a k-block: padded to 64 (AMX) / 34 (pairs)
    (33, 2, 31, "b_transposed"),    # one pair
    (100, 129, 67, "a_transposed"), # pair-interleaving loads of A, rows past the tile
    (40, 90, 33, "expanded"),
    (20, 96, 70, "b_transposed"),   # M < N, B^T contiguous, K % 32 == 0: the swapped product C^T = B^T A^T
    (1, 4096, 64, "b_transposed"),  # ... for one row
    (45, 64, 77, "b_transposed"),   # ... with partial tiles both ways
    (45, 64, 77, "broadcast_rows"),  # the swapped product on W^T read in place with row stride 0
    (77, 64, 45, "broadcast_rows"),  # A read in place with row stride 0
    (70, 96, 50, "row_padded"),      # A read in place with its own row stride
]


@pytest.mark.skipif("avx512" not in pylibnn.build_info()["cpu_isa"]["supported"], reason="no avx512 path")
@pytest.mark.parametrize("kernel", BF16_KERNELS)
@pytest.mark.parametrize("M,K,N,layout", BF16_KERNEL_CASES, ids=[f"{m}x{k}x{n}-{l}" for m, k, n, l in BF16_KERNEL_CASES])
def test_bf16_kernels_round_once(restore_bf16_kernel, kernel, M, K, N, layout):
    """Every bfloat16 kernel: float32 sums of exact products, each result rounded once."""
    pylibnn.ops.set_cpu_isa("avx512")
    _C.set_cpu_bf16_kernel(kernel)
    check_gemm_rounds_once(M, K, N, layout, torch.bfloat16, f"bf16 kernel {kernel}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_engine_gemm_entry_point(dtype):
    a = make_tensor((50, 70), dtype, "cpu", 1)
    b = make_tensor((70, 40), dtype, "cpu", 2)
    c, sums = _C.cpu_gemm(a, b)
    exact = a.double() @ b.double()
    assert_close_to_reference(c, exact, sum_bound(a.double().abs() @ b.double().abs(), 70), dtype, "cpu_gemm")
    assert sums.numel() == 0
    with pytest.raises(RuntimeError, match="a is .* but b is"):
        _C.cpu_gemm(a, b.t())
    with pytest.raises(RuntimeError, match="bias must be"):
        _C.cpu_gemm(a, b, torch.zeros(3, dtype=dtype))


def test_widened_packing_memory_is_bounded_by_the_blocking():
    # bfloat16 operands are widened block by block: the scratch holds the profile's blocks in
    # float32, never a float32 copy of an operand (here 2 x 32 MiB).
    _C.release_cpu_scratch()
    a = make_tensor((4096, 2048), torch.bfloat16, "cpu", 5)
    b = make_tensor((2048, 4096), torch.bfloat16, "cpu", 6)
    _C.cpu_gemm(a, b)
    prof = _C.cpu_profile()
    kc, mc, nc = int(prof["kc"]), int(prof["mc"]), int(prof["nc"])
    per_thread = 4 * (mc * kc + 64 * 2048) + (1 << 20)
    bound = 4 * (kc * nc + 32 * 2048) + torch.get_num_threads() * per_thread + (1 << 20)
    mapped = _C.cpu_scratch_stats()["mapped_bytes"]
    assert mapped <= bound, f"{mapped} bytes of packing memory, bound {bound}"
    assert mapped < 4 * 4096 * 2048, "as much packing memory as a float32 copy of an operand"


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("M,K,N", [(1, 300, 70), (37, 300, 70), (130, 64, 200)])
def test_reduced_precision_ops_round_once(M, K, N, dtype):
    # The CPU backend computes bfloat16 / float16 itself (CpuBackend::computes): the op
    # layer no longer widens; every output and gradient is one rounding of float32 sums.
    x, w, b, gy = (t.to(dtype) for t in random_case(M, K, N, torch.float64))
    x64, w64, b64, gy64 = (t.double() for t in (x, w, b, gy))
    y = ops.linear_forward(x, w, b)
    assert_rounded_once(y, x64 @ w64.t() + b64, x64.abs() @ w64.abs().t() + b64.abs(), K, dtype, "output")
    z, pre = ops.linear_act_forward(x, w, b, "relu", True)
    exact = x64 @ w64.t() + b64
    assert_rounded_once(pre, exact, x64.abs() @ w64.abs().t() + b64.abs(), K, dtype, "preactivation")
    assert_rounded_once(z, exact.clamp_min(0), x64.abs() @ w64.abs().t() + b64.abs(), K, dtype, "relu output")
    gx, gw, gb = ops.linear_backward(gy, x, w, [True, True, True])
    assert_rounded_once(gx, gy64 @ w64, gy64.abs() @ w64.abs(), N, dtype, "grad_input")
    assert_rounded_once(gw, gy64.t() @ x64, gy64.abs().t() @ x64.abs(), M, dtype, "grad_weight")
    assert_rounded_once(gb, gy64.sum(0), gy64.abs().sum(0), M, dtype, "grad_bias")
    _, _, gb_alone = ops.linear_backward(gy, x, w, [False, False, True])
    assert_rounded_once(gb_alone, gy64.sum(0), gy64.abs().sum(0), M, dtype, "grad_bias alone")


# --------------------------------------------------------------------------- output cache

def test_outputs_reuse_cached_memory_without_page_faults():
    # A 2048 x 2048 float32 grad_weight (16 MiB) per call: from a freshly mapped block it takes
    # 4097 page faults; from the output cache, none after the first call. The faults counted
    # are the whole process's over the backward products (their tiny temporaries included).
    x, w, b, gy = random_case(2, 2048, 2048, torch.float32)
    ops.linear_backward(gy, x, w, [True, True, True])
    stats = _C.cpu_output_cache_stats()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    calls = 10
    for _ in range(calls):
        grads = ops.linear_backward(gy, x, w, [True, True, True])
        del grads
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    after = _C.cpu_output_cache_stats()
    assert after["hits"] >= stats["hits"] + calls, (stats, after)
    assert after["maps"] == stats["maps"], "output blocks were mapped again in steady state"
    assert faults <= 4 * calls, f"{faults} minor page faults over {calls} calls"


def mapping_flags(address):
    """The VmFlags of the mapping of this process that holds `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(v, 16) for v in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps") or not os.path.exists("/sys/kernel/mm/transparent_hugepage"),
                    reason="needs Linux /proc/self/smaps and a kernel with transparent huge pages")
@pytest.mark.skipif(os.environ.get("PYLIBNN_CPU_OUTPUT_CACHE_MB") == "0", reason="the output cache is off")
def test_large_outputs_ask_for_huge_pages():
    # madvise(MADV_HUGEPAGE) from 2 MiB on (map_anonymous, which maps the packing scratch too):
    # smaps shows it as the "hg" flag, whatever the system's THP policy then does with it.
    # A 1 MiB output does not ask.
    x, w, b, gy = random_case(512, 256, 1536, torch.float32)  # 3 MiB output
    y = ops.linear_forward(x, w, b)
    assert "hg" in mapping_flags(y.data_ptr()), "a 3 MiB output block was mapped without the huge-page advice"
    small = ops.linear_forward(*random_case(256, 64, 1024, torch.float32)[:3])  # 1 MiB
    assert "hg" not in mapping_flags(small.data_ptr())


def test_cached_outputs_are_ordinary_tensors():
    x, w, b, gy = random_case(600, 512, 700, torch.float64)  # 600 x 700 x 8 bytes: 3.2 MiB, cached
    y = ops.linear_forward(x, w, b)
    torch.testing.assert_close(y, torch.addmm(b, x, w.t()), rtol=1e-12, atol=1e-12)
    assert y.is_contiguous() and y.device.type == "cpu"
    used = _C.cpu_output_cache_stats()["used_bytes"]
    assert used >= y.numel() * 8
    # resizable (its storage grows through the cache), savable, shareable
    z = y.clone()
    y.resize_(1200, 700)
    assert torch.equal(y[:600], z)
    buffer = io.BytesIO()
    torch.save(z, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer), z)
    shared = ops.linear_forward(x, w, b).share_memory_()
    assert shared.is_shared() and torch.equal(shared, z)
    # a dead output's block goes back on the free list, and release unmaps it
    del y, shared
    assert _C.cpu_output_cache_stats()["free_blocks"] >= 1
    _C.release_cpu_output_cache()
    assert _C.cpu_output_cache_stats()["free_bytes"] == 0
    assert "cpu_output_cache" in pylibnn.build_info()


def test_output_cache_limit():
    x, w, b, gy = random_case(600, 512, 700, torch.float32)
    limit = _C.cpu_output_cache_stats()["limit_bytes"]
    try:
        _C.set_cpu_output_cache_limit(0)
        maps = _C.cpu_output_cache_stats()["maps"]
        y = ops.linear_forward(x, w, b)
        assert _C.cpu_output_cache_stats()["maps"] == maps, "an output was cached with the cache off"
        check_linear(x, w, b, gy, "output cache off")
        del y
        assert _C.cpu_output_cache_stats()["free_bytes"] == 0
        with pytest.raises(RuntimeError, match="set_cpu_output_cache_limit: expected bytes >= 0, got -1"):
            _C.set_cpu_output_cache_limit(-1)
    finally:
        _C.set_cpu_output_cache_limit(limit)


def test_output_cache_environment():
    code = "import pylibnn; print(pylibnn._C.cpu_output_cache_stats()['limit_bytes'])"
    out = run_python(code, PYLIBNN_CPU_OUTPUT_CACHE_MB="3")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 3 << 20
    code = "import torch, pylibnn; x = torch.randn(1024, 512); torch.ops.pylibnn.linear_forward(x, torch.randn(512, 512), None)"
    out = run_python(code, PYLIBNN_CPU_OUTPUT_CACHE_MB="lots")
    assert out.returncode != 0
    assert "PYLIBNN_CPU_OUTPUT_CACHE_MB: expected a number of MiB >= 0, got 'lots'" in out.stderr


def test_output_cache_evicts_the_oldest_sizes():
    # With the free list at its limit, a returned block evicts the oldest free ones: after the
    # batch size changes, the new size is the one kept (and served again).
    limit = _C.cpu_output_cache_stats()["limit_bytes"]
    w, b = make_tensor((512, 512), torch.float32, "cpu", 1), None
    try:
        _C.set_cpu_output_cache_limit(3 << 20)  # room for one 2 MiB output block
        del_now = ops.linear_forward(make_tensor((1024, 512), torch.float32, "cpu", 2), w, b)  # 2 MiB
        del del_now
        x = make_tensor((1040, 512), torch.float32, "cpu", 3)  # a new batch size: 2.03 MiB
        del_now = ops.linear_forward(x, w, b)
        del del_now
        stats = _C.cpu_output_cache_stats()
        assert stats["free_blocks"] == 1 and stats["free_bytes"] == round_up_64k(1040 * 512 * 4), stats
        y = ops.linear_forward(x, w, b)
        assert _C.cpu_output_cache_stats()["hits"] == stats["hits"] + 1
        torch.testing.assert_close(torch._lazy_clone(y), y, rtol=0, atol=0)
    finally:
        _C.set_cpu_output_cache_limit(limit)


def round_up_64k(n):
    return (n + 65535) // 65536 * 65536
