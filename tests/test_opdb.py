"""The generic per-op tests, driven by the op database (tests/opdb.py): every entry (linear,
linear_act, mlp: the six ops) x backend x dtype.

Backends: the CPU at every instruction set it supports (avx512, avx2, portable and the
naive reference path, forced with set_cpu_isa), the CUDA backend on the emulator
(tests/cuda_emulation.py), a real GPU when one is visible, and meta / fake tensors for
shapes and errors.

    values and gradients    forward and every gradient against the float64 reference
    backward op             the backward op called directly, every output_mask
    gradcheck               float64 gradcheck and gradgradcheck
    opcheck                 torch.library.opcheck on both ops
    compile                 torch.compile(fullgraph=True, dynamic=True), forward+backward
    nonfinite               NaN and +-Inf land where float64 torch puts them
    determinism             repeated calls (and thread counts) bitwise equal
    threads                 concurrent Python threads match the serial results
    hypothesis              random shapes, layouts, activations and dtypes
    meta                    output shapes and dtypes of both ops on meta tensors
    errors                  every error input: the expected exception type and message,
                            identical on cpu, meta, fake tensors and the CUDA backends
    64-bit                  (slow) sizes and reductions past 2^31
"""

import itertools
import os
import re
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import _disable_current_modes

import opdb
from conftest import BUILD_INFO, CUDA_USABLE, EMULATED_CUDA, GPU_CUDA
from opdb import OP_DB, assert_close, make_sample, reference
from pylibnn import ops

settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=1000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("PYLIBNN_HYPOTHESIS_PROFILE", "ci"))

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op:UserWarning")

CPU_ISAS = BUILD_INFO["cpu_isa"]["supported"]
CUDA_DEVICES = [GPU_CUDA, EMULATED_CUDA] if CUDA_USABLE else [EMULATED_CUDA]
# The computing backends: (device, CPU instruction set or None).
BACKENDS = [pytest.param(("cpu", isa), id=f"cpu-{isa}") for isa in CPU_ISAS] + [
    pytest.param(("cuda", None), id="cuda", marks=GPU_CUDA.marks),
    pytest.param(("cpu", None), id="emulated_cuda", marks=EMULATED_CUDA.marks),
][0 if CUDA_USABLE else 1:]
# One CPU path (the best) and the CUDA backends: for the tests whose subject is not the ISA.
MAIN_BACKENDS = [pytest.param(("cpu", "auto"), id="cpu")] + BACKENDS[len(CPU_ISAS):]
DTYPES = [pytest.param(d, id=str(d).removeprefix("torch.")) for d in OP_DB[0].dtypes]
ENTRY_IDS = [info.name for info in OP_DB]


@pytest.fixture
def backend(request):
    """The device to make tensors on, with the CPU path forced for the test (restored after)."""
    device, isa = request.param
    if isa is not None:
        request.addfinalizer(lambda: ops.set_cpu_isa("auto"))
        ops.set_cpu_isa(isa)
    return device


def _specs(attribute):
    return [pytest.param(info, spec, id=f"{info.name}-{spec.name}-{spec.activation}")
            for info in OP_DB for spec in getattr(info, attribute)]


def _check_against_reference(info, sample, dtype, what=""):
    output = info.run(sample)
    leaves = sample.leaves()
    grads = torch.autograd.grad(output, leaves, sample.grad_output, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    expected = reference(info, sample)
    for name, actual in zip(["output"] + sample.gradient_names(), [output] + grads):
        assert_close(actual, *expected[name], dtype, f"{info.name} {sample.spec.name} {what}{name}")


# ---------------------------------------------------------------------------------------
# Values and gradients.

@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info,spec", _specs("sample_specs"))
def test_values_and_gradients(info, spec, dtype, backend):
    if dtype not in info.dtypes:
        pytest.skip(f"{info.name} does not take {dtype}")
    _check_against_reference(info, make_sample(spec, backend, dtype, requires_grad=True), dtype)


@pytest.mark.parametrize("backend", MAIN_BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("info,spec", _specs("matrix_specs"))
def test_shape_matrix(info, spec, dtype, backend):
    _check_against_reference(info, make_sample(spec, backend, dtype, requires_grad=True), dtype)


CPU_BACKENDS = BACKENDS[:len(CPU_ISAS)]


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("info,spec", _specs("edge_specs"))
def test_cpu_paths_edge_shapes(info, spec, dtype, backend):
    _check_against_reference(info, make_sample(spec, backend, dtype, requires_grad=True), dtype)


def _mask_params():
    params = []
    for info in OP_DB:
        masks = itertools.product([False, True], repeat=3) if info.name != "mlp" else [(True,), (False,)]
        for mask in masks:
            params.append(pytest.param(info, mask, id=f"{info.name}-{''.join('1' if m else '0' for m in mask)}"))
    return params


@pytest.mark.parametrize("backend", MAIN_BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("info,mask", _mask_params())
def test_backward_op_direct(info, mask, dtype, backend):
    """The backward op on what its forward saved: requested gradients right, the others
    empty (0,) tensors."""
    for spec in info.sample_specs[:6]:
        sample = make_sample(spec, backend, dtype)
        _, saved = info.run_saving(sample)
        grads = info.run_backward(sample, saved, mask)
        expected = reference(info, sample)
        for name, actual in zip(sample.gradient_names(), grads):
            if actual is not None:
                assert_close(actual, *expected[name], dtype, f"{info.name} {spec.name} {name} mask {mask}")
        if info.name != "mlp":
            raw = getattr(ops, info.backward_op)(
                sample.grad_output, sample.input, sample.weights[0],
                *((saved, sample.activation) if info.name == "linear_act" else ()), list(mask))
            for requested, g in zip(mask, raw):
                assert requested or tuple(g.shape) == (0,), f"unrequested gradient of shape {tuple(g.shape)}"


# ---------------------------------------------------------------------------------------
# gradcheck, gradgradcheck, opcheck.

def _differentiable_call(info, sample):
    """The op as a function of the sample's leaves, for gradcheck."""
    L = len(sample.weights)
    has_bias = [b is not None for b in sample.biases]

    def call(x, *params):
        weights = list(params[:L])
        rest = iter(params[L:])
        biases = [next(rest) if present else None for present in has_bias]
        return info.run(opdb.Sample(sample.spec, x, weights, biases, sample.grad_output))

    return call


@pytest.mark.parametrize("backend", MAIN_BACKENDS, indirect=True)
@pytest.mark.parametrize("info,spec", _specs("gradcheck_specs"))
def test_gradcheck_and_gradgradcheck(info, spec, backend):
    sample = make_sample(spec, backend, torch.float64, requires_grad=True)
    call = _differentiable_call(info, sample)
    leaves = sample.leaves()
    assert torch.autograd.gradcheck(call, leaves, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(call, leaves, eps=1e-6, atol=1e-7)


def _backward_op_function(info, sample, saved, mask):
    """The backward op as a differentiable function of (grad_output, input, weights..., and
    the saved preactivation for linear_act), returning the requested gradients."""
    op = getattr(ops, info.backward_op)
    act, has_bias = sample.activation, [b is not None for b in sample.biases]
    if info.name == "linear":
        return lambda gy, x, w: tuple(g for g, m in zip(op(gy, x, w, list(mask)), mask) if m)
    if info.name == "linear_act":
        return lambda gy, x, w, z: tuple(g for g, m in zip(op(gy, x, w, z, act, list(mask)), mask) if m)

    def mlp_backward(gy, x, *weights):
        grad_input, grad_weights, grad_biases = op(gy, x, list(weights), saved, act, has_bias, mask[0])
        return ((grad_input,) if mask[0] else ()) + tuple(grad_weights) + tuple(g for g in grad_biases if g.numel())
    return mlp_backward


@pytest.mark.parametrize("backend", MAIN_BACKENDS, indirect=True)
@pytest.mark.parametrize("info,mask", _mask_params())
def test_backward_op_gradcheck(info, mask, backend):
    """The backward op's own autograd (a create_graph backward runs it): gradcheck in every
    input, and gradgradcheck (the third derivative of the layer) for the single-layer ops."""
    if not any(mask):
        pytest.skip("nothing requested")
    spec = info.gradcheck_specs[0]
    sample = make_sample(spec, backend, torch.float64)
    with torch.no_grad():
        _, saved = info.run_saving(sample)
    inputs = [sample.grad_output, sample.input, *sample.weights] + ([saved] if info.name == "linear_act" else [])
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    function = _backward_op_function(info, sample, saved, mask)
    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-7)
    if info.name != "mlp":
        assert torch.autograd.gradgradcheck(function, inputs, eps=1e-6, atol=1e-7)


def _opcheck_args(info, sample, saved):
    x, ws, bs, act, gy = sample.input, sample.weights, sample.biases, sample.activation, sample.grad_output
    if info.name == "linear":
        return [("linear_forward", (x, ws[0], bs[0])), ("linear_backward", (gy, x, ws[0], [True, True, True])),
                ("linear_backward", (gy, x, ws[0], [False, True, False]))]
    if info.name == "linear_act":
        return [("linear_act_forward", (x, ws[0], bs[0], act, True)),
                ("linear_act_backward", (gy, x, ws[0], saved, act, [True, True, True]))]
    return [("mlp_forward", (x, ws, bs, act, True)),
            ("mlp_backward", (gy, x, ws, saved, act, [b is not None for b in bs], True))]


@pytest.mark.parametrize("backend", MAIN_BACKENDS, indirect=True)
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no-grad", "requires-grad"])
@pytest.mark.parametrize("info", OP_DB, ids=ENTRY_IDS)
def test_opcheck(info, requires_grad, backend):
    # schema, the C++ autograd registration, fake tensors, AOT dispatch static and dynamic.
    for spec in info.gradcheck_specs[:2]:
        sample = make_sample(spec, backend, torch.float64, requires_grad=requires_grad)
        with torch.no_grad():
            _, saved = info.run_saving(sample)
        for op_name, args in _opcheck_args(info, sample, saved):
            torch.library.opcheck(getattr(torch.ops.pylibnn, op_name).default, args)


# ---------------------------------------------------------------------------------------
# torch.compile: one graph for every batch size through the fake kernels.

TRACEABLE = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=GPU_CUDA.marks)]


@pytest.mark.parametrize("device", TRACEABLE)
@pytest.mark.parametrize("info", OP_DB, ids=ENTRY_IDS)
def test_compile_fullgraph_dynamic(info, device):
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    torch._dynamo.reset()
    spec = info.sample_specs[2]
    backend = AotEagerAndRecordGraphs()

    def forward(x, weights, biases):
        return info.call(x, weights, biases, spec.activation)

    compiled = torch.compile(forward, backend=backend, fullgraph=True, dynamic=True)
    for rows in (spec.M + 1, spec.M + 4, spec.M + 9):
        sample = make_sample(opdb.SampleSpec(spec.name, rows, spec.sizes, spec.activation, spec.bias), device,
                             torch.float32, requires_grad=True)
        results = []
        for function in (forward, compiled):
            output = function(sample.input, sample.weights, sample.biases)
            results.append([output] + list(torch.autograd.grad(output, sample.leaves(), sample.grad_output)))
        for a, e in zip(results[1], results[0]):
            torch.testing.assert_close(a, e, rtol=0, atol=0)
    assert len(backend.fw_graphs) == 1, f"{len(backend.fw_graphs)} forward graphs for three batch sizes"
    assert len(backend.bw_graphs) == 1, f"{len(backend.bw_graphs)} backward graphs for three batch sizes"


# ---------------------------------------------------------------------------------------
# NaN and +-Inf.

def _poison(t, positions):
    with torch.no_grad():
        for index, value in positions:
            if all(0 <= i < s for i, s in zip(index, t.shape)):
                t[index] = value
    return t


def _assert_same_nonfinite(actual, expected, what):
    actual = actual.detach().to("cpu", torch.float64)
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), (
        f"{what}: NaN at {torch.isnan(actual).nonzero().tolist()[:8]}, "
        f"expected {torch.isnan(expected).nonzero().tolist()[:8]}")
    for sign in (1, -1):
        got, want = actual == sign * float("inf"), expected == sign * float("inf")
        assert torch.equal(got, want), (f"{what}: {'+' if sign > 0 else '-'}Inf at {got.nonzero().tolist()[:8]}, "
                                        f"expected {want.nonzero().tolist()[:8]}")


NONFINITE_SPECS = {
    "linear": ["direct", "dot", "packed"],
    "linear_act": ["tiny", "dot", "packed"],
    "mlp": ["tanh-32", "relu-64", "gelu-wide", "sigmoid"],
}


def _nonfinite_params():
    return [pytest.param(info, spec, id=f"{info.name}-{spec.name}-{spec.activation}")
            for info in OP_DB for spec in info.sample_specs if spec.name in NONFINITE_SPECS[info.name]]


@pytest.mark.parametrize("pattern", ["points", "nan-weight", "inf-bias"])
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("info,spec", _nonfinite_params())
def test_nonfinite_propagation(info, spec, dtype, backend, pattern):
    """The positions of NaN, +Inf and -Inf in the output and in every gradient are float64
    torch's (which terms meet in an element does not depend on blocking, packing or threads),
    for: a NaN, +Inf and -Inf in the input, the first weight, the last bias and grad_output
    ("points"); a first weight all NaN (every element touched); a last bias all +Inf."""
    _check_nonfinite(info, spec, dtype, backend, pattern)


def _check_nonfinite(info, spec, dtype, device, pattern):
    nan, inf = float("nan"), float("inf")
    base = make_sample(spec, "cpu", torch.float64)
    M, K = base.input.shape
    if pattern == "points":
        _poison(base.input, [((1, 2), nan), ((2, 0), inf), ((M - 1, K - 1), -inf)])
        _poison(base.weights[0], [((0, 1), inf), ((base.weights[0].size(0) - 1, 3), nan)])
        if base.biases[-1] is not None:
            _poison(base.biases[-1], [((2,), -inf), ((1,), nan)])
        _poison(base.grad_output, [((0, 0), nan), ((M - 1, 1), inf)])
    elif pattern == "nan-weight":
        base.weights[0].fill_(nan)
    elif base.biases[-1] is not None:
        base.biases[-1].fill_(inf)

    def on(device, dtype, requires_grad):
        def move(t):
            return None if t is None else t.detach().to(device, dtype).requires_grad_(requires_grad)
        return opdb.Sample(spec, move(base.input), [move(w) for w in base.weights], [move(b) for b in base.biases],
                           base.grad_output.to(device, dtype))

    expected = reference(info, on("cpu", torch.float64, True))
    ours = on(device, dtype, True)
    output = info.run(ours)
    leaves = ours.leaves()
    grads = torch.autograd.grad(output, leaves, ours.grad_output, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    for name, actual in zip(["output"] + ours.gradient_names(), [output] + grads):
        _assert_same_nonfinite(actual, expected[name][0], f"{info.name} {spec.name} {name}")


# ---------------------------------------------------------------------------------------
# The CPU's bfloat16 kernels: AMX tiles, vdpbf16ps, and float32 on widened operands, each
# forced on the avx512 path (other paths always widen).

BF16_KERNELS = BUILD_INFO["cpu_isa"]["bf16_supported"]


@pytest.fixture
def bf16_kernel(request):
    def restore():
        ops.set_cpu_bf16_kernel("auto")
        ops.set_cpu_isa("auto")
    request.addfinalizer(restore)
    ops.set_cpu_isa("avx512")
    ops.set_cpu_bf16_kernel(request.param)
    assert ops._C.cpu_bf16_kernel_in_use() == request.param
    return request.param


def _bf16_params(attributes):
    # the single-layer entries: the fused MLP widens bfloat16 in its own backend
    return [pytest.param(info, spec, id=f"{info.name}-{spec.name}-{spec.activation}")
            for info in OP_DB if info.name != "mlp" for attribute in attributes for spec in getattr(info, attribute)]


needs_avx512 = pytest.mark.skipif("avx512" not in CPU_ISAS, reason="the native bfloat16 kernels run on the avx512 path")


@needs_avx512
@pytest.mark.parametrize("bf16_kernel", BF16_KERNELS, indirect=True)
@pytest.mark.parametrize("info,spec", _bf16_params(["sample_specs", "edge_specs"]))
def test_cpu_bf16_kernels(info, spec, bf16_kernel):
    sample = make_sample(spec, "cpu", torch.bfloat16, requires_grad=True)
    _check_against_reference(info, sample, torch.bfloat16, f"bf16 kernel {bf16_kernel} ")


@needs_avx512
@pytest.mark.parametrize("pattern", ["points", "nan-weight", "inf-bias"])
@pytest.mark.parametrize("bf16_kernel", BF16_KERNELS, indirect=True)
@pytest.mark.parametrize("info,spec", [p for p in _nonfinite_params() if p.values[0].name != "mlp"])
def test_cpu_bf16_kernels_nonfinite(info, spec, bf16_kernel, pattern):
    _check_nonfinite(info, spec, torch.bfloat16, "cpu", pattern)


# ---------------------------------------------------------------------------------------
# Determinism and threads.

def _run_all(info, sample):
    output = info.run(sample)
    grads = torch.autograd.grad(output, sample.leaves(), sample.grad_output, allow_unused=True)
    return [output.detach()] + [g for g in grads if g is not None]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("info", OP_DB, ids=ENTRY_IDS)
def test_deterministic(info, backend):
    """Bitwise equal results from repeated calls, under torch's deterministic mode, and on
    the CPU with 1, 2 and 3 threads: each output tile and each reduction is summed in a fixed
    order by one task, so the thread count changes the schedule, never the bits."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    try:
        for spec in info.sample_specs[:8] + info.thread_specs:
            sample = make_sample(spec, backend, torch.float32, requires_grad=True)
            for thread_count in (1, 2, 3, threads):
                torch.set_num_threads(thread_count)
                if thread_count == 1 or not info.thread_count_invariant:
                    first = _run_all(info, sample)
                for a, e in zip(_run_all(info, sample), first):
                    assert torch.equal(a, e), f"{spec.name}: differs with {thread_count} threads"
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("info", OP_DB, ids=ENTRY_IDS)
def test_concurrent_threads(info):
    """Six Python threads running every sample of the entry, ten rounds each, all at once:
    each result bitwise equal to the serial one (no shared scratch, no races)."""
    samples = [make_sample(spec, "cpu", torch.float32, requires_grad=True) for spec in info.sample_specs[:10]]
    serial = [_run_all(info, sample) for sample in samples]
    errors = []

    def worker(index):
        try:
            for round_ in range(10):
                i = (index + round_) % len(samples)
                for a, e in zip(_run_all(info, samples[i]), serial[i]):
                    assert torch.equal(a, e), f"thread {index}: {samples[i].spec.name} differs"
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors[0]


# ---------------------------------------------------------------------------------------
# Hypothesis: random shapes, layouts, activations and dtypes.

@st.composite
def _random_specs(draw, info):
    size = st.one_of(st.integers(0, 8), st.integers(9, 70))
    layers = 1 if info.name != "mlp" else draw(st.integers(1, 4))
    sizes = tuple(draw(size) for _ in range(layers + 1))
    activation = "none" if info.name == "linear" else draw(st.sampled_from(opdb.ACTIVATIONS))
    return opdb.SampleSpec(f"hypothesis-{draw(st.integers(0, 10**6))}", draw(size), sizes, activation,
                           draw(st.booleans()), draw(st.sampled_from(opdb.LAYOUTS)))


@pytest.mark.parametrize("backend", MAIN_BACKENDS, indirect=True)
@pytest.mark.parametrize("info", OP_DB, ids=ENTRY_IDS)
def test_hypothesis_matches_reference(info, backend, request):
    on_cpu = request.node.callspec.params["backend"][1] is not None  # not the emulated CUDA backend

    @given(spec=_random_specs(info), dtype=st.sampled_from(info.dtypes), isa=st.sampled_from(CPU_ISAS))
    def check(spec, dtype, isa):
        if on_cpu:
            ops.set_cpu_isa(isa)
        try:
            _check_against_reference(info, make_sample(spec, backend, dtype, requires_grad=True), dtype,
                                     f"{dtype} {isa} ")
        finally:
            ops.set_cpu_isa("auto")

    check()


# ---------------------------------------------------------------------------------------
# Meta tensors: shapes and dtypes.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info", OP_DB, ids=ENTRY_IDS)
def test_meta_shapes_match_cpu(info, dtype):
    for spec in info.sample_specs:
        cpu = make_sample(spec, "cpu", dtype)
        meta = make_sample(spec, "meta", dtype)
        for (name, cpu_args), (_, meta_args) in zip(_opcheck_args(info, cpu, info.run_saving(cpu)[1]),
                                                      _opcheck_args(info, meta, info.run_saving(meta)[1])):
            op = getattr(ops, name)
            flat_cpu = torch.utils._pytree.tree_leaves(op(*cpu_args))
            flat_meta = torch.utils._pytree.tree_leaves(op(*meta_args))
            assert [(t.shape, t.dtype) for t in flat_meta] == [(t.shape, t.dtype) for t in flat_cpu], \
                f"{name} {spec.name}"
            assert all(t.is_meta for t in flat_meta)


# ---------------------------------------------------------------------------------------
# Errors: every error input of every op, the same type and words on every backend.

def _error_params(meta_only=False):
    return [pytest.param(info, error, id=f"{info.name}-{error.op}-{error.name}")
            for info in OP_DB for error in info.error_inputs if error.meta or not meta_only]


def _raised(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test compares it
        return error
    return None


@pytest.mark.filterwarnings("ignore::UserWarning")  # nested, sparse CSR, quantized tensors warn on creation
@pytest.mark.parametrize("info,error", _error_params())
def test_error_inputs(info, error):
    """cpu: the expected type (exactly) and a message naming the op; meta and fake tensors:
    the same type and the same message."""
    op = getattr(ops, error.op)
    cpu_error = _raised(lambda: op(*error.make_args("cpu")))
    assert cpu_error is not None, f"{error.op} accepted {error.name}"
    assert type(cpu_error) is error.error, f"{type(cpu_error).__name__}: {cpu_error}"
    message = str(cpu_error).splitlines()[0]
    assert re.search(rf"pylibnn\.{error.op}: .*{error.match}", message), message
    if not error.meta:
        return
    meta_error = _raised(lambda: op(*error.make_args("meta")))
    assert type(meta_error) is type(cpu_error) and str(meta_error).splitlines()[0] == message.replace(
        "cpu", "meta"), f"meta: {type(meta_error).__name__}: {meta_error}"
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = torch.utils._pytree.tree_map_only(torch.Tensor, mode.from_tensor, error.make_args("cpu"))
        fake_error = _raised(lambda: op(*fake_args))
    assert type(fake_error) is type(cpu_error) and str(fake_error).splitlines()[0] == message, \
        f"fake: {type(fake_error).__name__}: {fake_error}"


@pytest.mark.parametrize("device", CUDA_DEVICES)
@pytest.mark.parametrize("info,error", _error_params(meta_only=True))
def test_error_inputs_cuda_backends(info, error, device):
    """The CUDA backend (and its emulated build) raises what the CPU raises."""
    op = getattr(ops, error.op)
    with _disable_current_modes():  # the CPU backend itself, outside the emulated one's dispatch mode
        cpu_error = _raised(lambda: op(*error.make_args("cpu")))
    cuda_error = _raised(lambda: op(*error.make_args(device)))
    assert type(cuda_error) is type(cpu_error), f"{type(cuda_error).__name__}: {cuda_error}"
    assert str(cuda_error).splitlines()[0] == str(cpu_error).splitlines()[0].replace("cpu", device.split(":")[0])


def test_activation_references_cover_the_ops():
    """Every activation the ops take has its torch reference here, and nothing else does."""
    assert tuple(opdb.ACTIVATION_REFERENCES) == tuple(ops.ACTIVATIONS)


# ---------------------------------------------------------------------------------------
# 64-bit sizes (slow): stride-0 operands make huge sizes cheap in memory, and small
# integer-valued data keeps the float results exact, so they are checked bitwise.

def _mem_available():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


@pytest.mark.slow
@pytest.mark.parametrize("device", TRACEABLE)
@pytest.mark.parametrize("info", [i for i in OP_DB if i.large_specs], ids=[i.name for i in OP_DB if i.large_specs])
def test_64bit_sizes(info, device):
    act = "relu" if info.name == "linear_act" else "none"
    forward = (lambda x, w, b: ops.linear_forward(x, w, b)) if info.name == "linear" else \
        (lambda x, w, b: ops.linear_act_forward(x, w, b, act, False)[0])
    # An (M, 4) float32 output with M * 4 > 2^31 (8 GiB): every row written, correctly.
    if _mem_available() >= 10 * 2**30:
        M = 2**29 + 3
        x_row = torch.tensor([[1.5, -2.0]], device=device)
        w = torch.tensor([[1.0, 2.0], [3.0, 0.5], [-1.0, 0.25], [0.0, 4.0]], device=device)
        b = torch.tensor([0.5, -1.0, 2.0, 3.0], device=device)
        expected = opdb.ACTIVATION_REFERENCES[act].torch_fn(torch.nn.functional.linear(x_row, w, b))
        y = forward(x_row.expand(M, 2), w, b)
        assert y.shape == (M, 4) and y.numel() > 2**31
        for start in range(0, M, 2**26):
            part = y[start:start + 2**26]
            assert torch.equal(part, expected.expand_as(part)), f"rows {start}.. wrong"
        del y
    # grad_weight and grad_bias sum over M > 2^31 rows: sums of small integers, exact in float64.
    M = 2**31 + 5
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64, device=device).expand(M, 2)
    gy = torch.tensor([[1.0, -1.0, 3.0]], dtype=torch.float64, device=device).expand(M, 3)
    w = torch.zeros(3, 2, dtype=torch.float64, device=device)
    if info.name == "linear":
        _, grad_weight, grad_bias = ops.linear_backward(gy, x, w, [False, True, True])
    else:
        # With an activation the op makes dz = dy * act'(z) once, a contiguous (M, N) temporary
        # (51 GB here): the reduction runs the op without one.
        z = torch.ones(1, 3, dtype=torch.float64, device=device).expand(M, 3)
        _, grad_weight, grad_bias = ops.linear_act_backward(gy, x, w, z, "none", [False, True, True])
    assert torch.equal(grad_weight.cpu(), M * torch.tensor([[1.0, 2.0], [-1.0, -2.0], [3.0, 6.0]], dtype=torch.float64))
    assert torch.equal(grad_bias.cpu(), M * torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64))
