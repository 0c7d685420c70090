"""Shared pieces of pylibnn's tests: the float64 reference, the tolerance rule, device and
CPU-path fixtures, and deterministic tensor factories.

Ground truth is ``torch.nn.functional.linear`` and its gradients in float64 on the CPU
(DESIGN.md, "Verification contract"). Every numeric comparison goes through
``assert_close_to_reference``, which bounds the error of each element by the size of the
terms that were summed to make it, not by the size of the result.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import cuda_emulation
import pylibnn
from pylibnn import ops

BUILD_INFO = pylibnn.build_info()
CUDA_USABLE = bool(BUILD_INFO["cuda"]) and torch.cuda.is_available()
CUDA_SKIP_REASON = (
    "needs a visible CUDA GPU and a pylibnn build with CUDA kernels "
    f"(torch.cuda.is_available()={torch.cuda.is_available()}, build_info()['cuda']={BUILD_INFO['cuda']})"
)

# The mark for tests that need a real GPU, and the device lists for tests that take the
# device as a parameter. The CUDA backend runs twice over: on a visible GPU ("cuda"), and
# always on the CPU through the emulator of the CUDA execution model ("emulated_cuda": CPU
# tensors, each pylibnn op routed to the same CUDA source compiled for the emulator, at two
# fiber orders; see tests/cuda_emulation.py). Emulated tests carry the emulated_cuda mark:
# `pytest -m "emulated_cuda and not slow"` runs only them. Tolerances are the same rule as
# for the CPU and the GPU (assert_close_to_reference): it holds for any summation order
# and with or without FMA contraction, so it covers nvcc's contraction and the host's math.
# Without a GPU the real-GPU variant of a CUDA test is not generated: its emulated twin runs
# in its place (tests that need a real GPU keep requires_cuda and are skipped).
requires_cuda = pytest.mark.skipif(not CUDA_USABLE, reason=CUDA_SKIP_REASON)
GPU_CUDA = pytest.param("cuda", id="cuda", marks=requires_cuda)
EMULATED_CUDA = pytest.param("cpu", id="emulated_cuda",
                             marks=[pytest.mark.emulated_cuda, pytest.mark.emulated_cuda_backend])
CUDA_BACKENDS = [GPU_CUDA, EMULATED_CUDA] if CUDA_USABLE else [EMULATED_CUDA]
DEVICES = [pytest.param("cpu", id="cpu"), *CUDA_BACKENDS]
# torch.compile and torch.export trace the fake kernels rather than a backend, and dynamo does
# not trace under the emulator's dispatch mode: their tests run on the real devices only.
TRACEABLE_DEVICES = [pytest.param("cpu", id="cpu"), GPU_CUDA]
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]

# ---------------------------------------------------------------------------------------
# Tolerances.
#
# An element that is a sum of `depth` products (plus a bias) is checked with
#     |actual - reference| <= ERROR_FACTOR[dtype] * eps(dtype) * sqrt(max(depth, 1)) * magnitude
# where `magnitude` is the same sum computed over absolute values (|x| |W|^T + |b| and the
# like) in float64. This is the probabilistic rounding-error bound for a dot product
# (error grows like sqrt(depth) * u * sum|terms| for any summation order, blocked, split or
# FMA-contracted), so it is tight for every M, K, N in the matrix instead of being set by the
# largest: a fixed atol that passes K = 300 would let K = 1 be wrong in its last 6 bits.
# An element whose terms are all zero (K = 0 without bias, M = 0 gradients) must be exactly 0.
#
# float32: the float64 reference is exact to float32's eyes; for depth <= ~13 the worst-case
#   first-order bound (depth + 1) * eps / 2 lies under 2 * sqrt(depth) * eps, and beyond that
#   rounding errors are random-signed. The largest ratio error / (eps sqrt(depth) magnitude)
#   seen over the whole suite (shape matrix, edge shapes, every CPU path, strided views) is
#   0.9-1.0; factor 2 leaves 2x margin.
# float64: the float64 reference rounds as much as the result does, so the two errors add.
#   The largest ratio seen is 1.57, on stride-0 (expanded) operands whose terms are all
#   equal, so the rounding errors add up coherently; factor 4 leaves 2.5x margin (about
#   1e-15 relative to the magnitude: ~1e-12 absolute for K = 300 with unit-normal data).
# What this still catches: a dropped or repeated term, a wrong bias, a wrong stride, a
# float16/bfloat16/TF32 accumulator (all at least 1e3 times over the bound).
EPS = {torch.float32: torch.finfo(torch.float32).eps, torch.float64: torch.finfo(torch.float64).eps}
ERROR_FACTOR = {torch.float32: 2.0, torch.float64: 4.0}

# The tutorial comparison (issue): losses agree within 1e-5 relative at every epoch.
TUTORIAL_RTOL = 1e-5


def assert_close_to_reference(actual, reference, magnitude, depth, dtype, what):
    """Checks ``actual`` against the float64 ``reference`` with the bound described above."""
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == reference.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(reference.shape)}"
    actual64 = actual.detach().to("cpu", torch.float64)
    assert torch.isfinite(actual64).all(), f"{what}: non-finite values"
    error = (actual64 - reference).abs()
    bound = ERROR_FACTOR[dtype] * EPS[dtype] * math.sqrt(max(depth, 1)) * magnitude
    bad = error > bound
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {error.numel()} elements outside the bound; first at {index}: "
            f"got {actual64[index].item()!r}, expected {reference[index].item()!r}, "
            f"error {error[index].item():.3e} > bound {bound[index].item():.3e} "
            f"(largest error/bound {(error / bound.clamp_min(1e-300)).max().item():.3g})")


def reference_linear(input, weight, bias, grad_output):
    """float64 F.linear on the CPU: output and the three gradients, each with its magnitude.

    Returns a dict name -> (reference, magnitude, depth) for "output", "grad_input",
    "grad_weight" and "grad_bias" (the last only when ``bias`` is given); input (*, K).
    """
    x = input.detach().to("cpu", torch.float64).requires_grad_()
    w = weight.detach().to("cpu", torch.float64).requires_grad_()
    b = None if bias is None else bias.detach().to("cpu", torch.float64).requires_grad_()
    gy = grad_output.detach().to("cpu", torch.float64)
    y = F.linear(x, w, b)
    inputs = (x, w) if b is None else (x, w, b)
    # allow_unused: with K == 0 or M == 0 autograd may see no path to some input.
    grads = torch.autograd.grad(y, inputs, gy, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
    M, K, N = math.prod(x.shape[:-1]), x.size(-1), w.size(0)
    with torch.no_grad():
        x2, gy2 = x.reshape(M, K).abs(), gy.reshape(M, N).abs()
        result = {
            "output": (y.detach(), F.linear(x.abs(), w.abs(), None if b is None else b.abs()), K),
            "grad_input": (grads[0], (gy2 @ w.abs()).reshape(x.shape), N),
            "grad_weight": (grads[1], gy2.t() @ x2, M),
        }
        if b is not None:
            result["grad_bias"] = (grads[2], gy2.sum(0), M)
    return result


def make_tensor(shape, dtype, device, seed, requires_grad=False):
    """Unit-normal values from a seeded CPU generator (identical on every device)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    return t.requires_grad_(requires_grad)


def seed_for(*numbers):
    """A stable seed per test case, so a failure reproduces from its parameters alone."""
    return hash(tuple(int(n) for n in numbers)) % (2**31)  # int tuples hash the same in every run


@pytest.fixture(params=BUILD_INFO["cpu_isa"]["supported"], ids=lambda name: f"isa={name}")
def cpu_isa(request):
    """Forces one CPU GEMM path for the test; restores 'auto' afterwards, pass or fail."""
    request.addfinalizer(lambda: ops.set_cpu_isa("auto"))
    ops.set_cpu_isa(request.param)
    assert ops.get_cpu_isa() == request.param
    return request.param


@pytest.fixture(autouse=True)
def _emulated_cuda_backend(request):
    """Runs a test on the EMULATED_CUDA device inside the dispatch mode that routes pylibnn's
    ops to the emulated CUDA backend (built on first use; skipped, saying why, on a machine
    without CUDA's host headers; a build error fails the test)."""
    if request.node.get_closest_marker("emulated_cuda_backend") is None:
        yield
        return
    try:
        mode = cuda_emulation.EmulatedCuda()
    except cuda_emulation.EmulationUnavailable as error:
        pytest.skip(str(error))
    with mode:
        yield
