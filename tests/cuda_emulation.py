"""pylibnn's CUDA backend on the CPU, for the tests (no GPU needed).

``load()`` builds (once, incrementally, with ninja) the test-only extension
``pylibnn_emulated_cuda``: ``csrc/cuda/linear_cuda.cu`` and ``mlp_cuda.cu`` compiled by the
host compiler against the emulator of the CUDA execution model (``csrc/cuda/emulation/``).
Its ops have pylibnn's schemas and take CPU tensors.

``EmulatedCuda()`` is a dispatch mode that sends every ``torch.ops.pylibnn`` call made inside
it to those ops. It sits below autograd and autocast, so pylibnn's C++ autograd (any order)
and everything above it run unchanged, while each kernel call runs on the emulated CUDA
code. The first ``compared_calls`` calls inside a mode run twice, with the fibers of each
block resumed in two orders (reverse, then shuffled with a per-call seed); the two results
must be bitwise equal, or the kernel has a race, which fails the call. Later calls (the
long training loops and gradchecks) run once, alternating between the two orders. Calls
whose floating inputs are all finite run in strict mode: a block that raises the
invalid-operation flag (arithmetic on the signaling-NaN poison of never-written shared
memory) fails.

Environment:
    PYLIBNN_SANITIZE=1          build with ASan + UBSan (-fsanitize=bounds too) in its own
                                directory (scripts/sanitize.sh preloads libasan)
    PYLIBNN_EMULATION_THREADS   OS threads that run blocks (default: the CPU count, <= 8)
"""

import itertools
import os
import re
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    "csrc/cuda/emulation/emulator.cpp",
    "csrc/cuda/emulation/emulated_cuda_module.cpp",
    "csrc/cuda/emulation/emulated_linear_cuda.cpp",
    "csrc/cuda/emulation/emulated_mlp_cuda.cpp",
    "csrc/ops/op_checks.cpp",
]
SANITIZE = os.environ.get("PYLIBNN_SANITIZE", "") in ("1", "on", "true", "yes")
SANITIZE_FLAGS = ["-fsanitize=address,undefined,bounds", "-fno-sanitize=vptr", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer", "-g"]

_module = None
_unavailable = None


class EmulationUnavailable(RuntimeError):
    """This machine cannot build the emulated backend (no CUDA host headers): tests skip.
    A build that fails for any other reason is an error of the code, and raises as such."""


def cuda_include_dir():
    """A directory holding CUDA's host header vector_types.h (dim3, float4, ...), or None.

    The toolkit's, else the one the CUDA build of torch installs with its runtime wheel."""
    candidates = []
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            candidates.append(Path(os.environ[variable]) / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    for site in map(Path, sys.path):
        nvidia = site / "nvidia"
        if nvidia.is_dir():
            candidates += sorted(nvidia.glob("*/include"))
    for candidate in candidates:
        if (candidate / "vector_types.h").is_file() and (candidate / "crt" / "host_defines.h").is_file():
            return candidate
    return None


def cpu_has_fma():
    try:
        return re.search(r"^flags\s*:.*\bfma\b", Path("/proc/cpuinfo").read_text(), re.MULTILINE) is not None
    except OSError:
        return False


def load():
    """The built extension module. Raises EmulationUnavailable without CUDA's host headers,
    and the build's own error if the sources do not compile."""
    global _module, _unavailable
    if _module is not None:
        return _module
    if _unavailable is not None:
        raise EmulationUnavailable(_unavailable)
    include = cuda_include_dir()
    if include is None:
        _unavailable = ("the emulated CUDA tests need CUDA's host headers (vector_types.h and crt/host_defines.h "
                        "of a CUDA toolkit; set CUDA_HOME)")
        raise EmulationUnavailable(_unavailable)
    from torch.utils.cpp_extension import load as load_extension

    flags = ["-O1" if SANITIZE else "-O2", "-fvisibility=hidden", "-Wall", "-Wno-unknown-pragmas",
             "-DPYLIBNN_WITH_CUDA=0"]
    # nvcc contracts a * b + c into one FMA; the emulated kernels do the same where the host
    # has FMA, so their rounding is the GPU's kind (the test tolerance covers either).
    if cpu_has_fma():
        flags += ["-mfma", "-ffp-contract=fast"]
    flags += SANITIZE_FLAGS if SANITIZE else []
    build_dir = ROOT / "build" / ("emulated_cuda_sanitize" if SANITIZE else "emulated_cuda")
    build_dir.mkdir(parents=True, exist_ok=True)
    _module = load_extension(
        name="pylibnn_emulated_cuda",
        sources=[str(ROOT / s) for s in SOURCES],
        extra_include_paths=[str(ROOT / "csrc"), str(include)],
        extra_cflags=flags,
        extra_ldflags=SANITIZE_FLAGS if SANITIZE else [],
        build_directory=str(build_dir),
        verbose=os.environ.get("PYLIBNN_EMULATION_VERBOSE", "") == "1",
    )
    return _module


def _same_bits(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().contiguous().view(-1).view(torch.uint8),
                       b.detach().contiguous().view(-1).view(torch.uint8))


_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _real_cpu_data(tensors):
    """Whether every tensor argument holds real CPU data (not fake, meta or a subclass):
    tracing modes above this one (opcheck's FakeTensorMode) keep their own kernels."""
    return all(type(t) in _PLAIN_TENSOR_TYPES and t.device.type == "cpu" for t in tensors)


_CHECKED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _all_finite(tensors):
    # Only the dtypes the ops take: others (float8, integers) are rejected by the op's checks.
    return all(t.dtype not in _CHECKED_DTYPES or t.numel() == 0 or bool(torch.isfinite(t).all()) for t in tensors)


class RaceDetected(AssertionError):
    """An emulated op gave different bits for two fiber orders: the kernel has a race."""


class EmulatedCuda(TorchDispatchMode):
    """Routes pylibnn's ops to the emulated CUDA backend (see the module docstring)."""

    _seeds = itertools.count()

    def __init__(self, orders=("reverse", "shuffle"), compared_calls=8):
        super().__init__()
        self.module = load()
        self.orders = orders
        self.compared_calls = compared_calls
        self.calls = 0

    def __exit__(self, *exc):
        # Direct calls of the emulated ops after the mode get the defaults again.
        self.module.set_strict(False)
        self.module.set_fiber_order("forward", 0)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        namespace, _, name = func._schema.name.partition("::")
        if namespace != "pylibnn":
            return func(*args, **kwargs)
        tensors = [leaf for leaf in tree_flatten((args, kwargs))[0] if isinstance(leaf, torch.Tensor)]
        if not _real_cpu_data(tensors):
            return func(*args, **kwargs)
        emulated = getattr(torch.ops.pylibnn_emulated_cuda, name).default
        self.module.set_strict(_all_finite(tensors))
        seed = next(self._seeds)
        compared = self.calls < self.compared_calls
        orders = self.orders if compared else [self.orders[self.calls % len(self.orders)]]
        self.calls += 1
        results = []
        for order in orders:
            self.module.set_fiber_order(order, seed)
            results.append(emulated(*args, **kwargs))
        first, _ = tree_flatten(results[0])
        for other in results[1:]:
            for index, (a, b) in enumerate(zip(first, tree_flatten(other)[0])):
                if isinstance(a, torch.Tensor) and not _same_bits(a, b):
                    raise RaceDetected(
                        f"{func._schema.name}: output {index} differs between fiber orders {orders} "
                        f"(seed {seed}): a race in the CUDA kernel")
        return results[0]
