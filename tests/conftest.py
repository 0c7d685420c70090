"""Shared pieces of pylibnn's tests: device and CPU-path fixtures, deterministic tensor
factories, and the float64 reference of pylibnn.linear's (*, K) form.

Ground truth is ``torch.nn.functional.linear`` and its gradients in float64 on the CPU
(DESIGN.md, "Verification contract"). Every numeric comparison uses the op database's one
tolerance rule (tests/opdb.py), which bounds the error of each element by the size of the
terms that were summed to make it, not by the size of the result.
"""

import math

import pytest
import torch

import cuda_emulation
import opdb
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

# The tutorial comparison (issue): losses agree within 1e-5 relative at every epoch.
TUTORIAL_RTOL = 1e-5


def reference_linear(input, weight, bias, grad_output):
    """float64 F.linear on the CPU for a (*, K) input, with the op database's tolerance rule
    (tests/opdb.py): a dict name -> (reference, bound) for "output", "grad_input",
    "grad_weight" and "grad_bias" (the last only when ``bias`` is given), for
    ``assert_close_to_reference``."""
    K, N = input.size(-1), weight.size(0)
    M = math.prod(input.shape[:-1])
    spec = opdb.SampleSpec("linear", M, (K, N), bias=bias is not None)
    sample = opdb.Sample(spec, input.reshape(M, K), [weight], [bias], grad_output.reshape(M, N))
    expected = opdb.reference(opdb.OPS_BY_NAME["linear"], sample)
    shapes = {"output": grad_output.shape, "grad_input": input.shape}
    result = {}
    for name, key in (("output", "output"), ("grad_input", "grad_input"), ("grad_weight", "grad_weight[0]"),
                      ("grad_bias", "grad_bias[0]")):
        if key in expected:
            reference, bound = expected[key]
            shape = shapes.get(name, reference.shape)
            result[name] = (reference.reshape(shape), lambda dtype, bound=bound, shape=shape: bound(dtype).reshape(shape))
    return result


assert_close_to_reference = opdb.assert_close


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
