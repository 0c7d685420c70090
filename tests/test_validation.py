"""Bad input gets a clear error, never a crash or a wrong result; odd-but-valid input gets
F.linear's result.

The Python entry points are covered here: pylibnn.linear (its 2-D fast path and its (*, K)
path), LinearFunction.apply and Linear, on cpu and meta tensors. The six ops' own error
inputs (cpu, meta, fake tensors and the CUDA backends alike) are in the op database
(tests/opdb.py, tests/test_opdb.py). Each rejected input must raise exactly the expected exception type, with a message
that names the op and the argument. The type rule (checked against F.linear itself):
where F.linear raises, pylibnn raises the same type (or NotImplementedError, a RuntimeError
subclass, when the input is one pylibnn does not support anyway); where F.linear accepts an
input that pylibnn does not support, pylibnn raises NotImplementedError saying "not supported".
"""



import pytest
import torch
import torch.nn.functional as F

import pylibnn
from pylibnn import ops
from conftest import requires_cuda, CUDA_USABLE
from opdb import nested, quantized, zeros as z  # the op database's factories


NS = NotImplementedError  # "is not supported"
RE = RuntimeError
TE = TypeError

# (id, input, weight, bias, expected type, pattern after the op name). Built lazily: some
# factories (nested, quantized) warn or need features at call time.
FORWARD_CASES = [
    ("0d-input", lambda: (torch.tensor(1.0), z(5, 1), None), RE, r"input.*at least 1 dimension"),
    ("0d-weight", lambda: (z(3, 4), torch.tensor(1.0), None), RE, r"weight.*2-D.*0-D"),
    ("1d-weight", lambda: (z(3, 4), z(4), None), NS, r"1-D weight.*not supported"),
    ("3d-weight", lambda: (z(3, 4), z(2, 5, 4), None), RE, r"weight.*2-D.*3-D.*\[2, 5, 4\]"),
    ("wrong-K", lambda: (z(3, 4), z(5, 6), None), RE, r"input.size\(1\).*K = 6.*\[3, 4\].*\[5, 6\]"),
    ("wrong-K-3d-input", lambda: (z(2, 3, 4), z(5, 6), None), RE, r"K = 6"),
    ("wrong-K-1d-input", lambda: (z(4), z(5, 6), None), RE, r"K = 6"),
    ("wrong-K-empty", lambda: (z(0, 4), z(5, 3), None), RE, r"K = 3"),
    ("bias-size", lambda: (z(3, 4), z(5, 4), z(4)), RE, r"bias of shape \[5\].*got \[4\]"),
    ("bias-2d-column", lambda: (z(3, 4), z(5, 4), z(5, 1)), RE, r"bias of shape \[5\].*\[5, 1\]"),
    ("bias-2d-row", lambda: (z(3, 4), z(5, 4), z(1, 5)), NS, r"bias of shape \[1, 5\].*not supported"),
    ("bias-0d", lambda: (z(3, 4), z(5, 4), torch.tensor(1.0)), NS, r"bias.*not supported"),
    ("bias-size-1", lambda: (z(3, 4), z(5, 4), z(1)), NS, r"bias of shape \[1\].*not supported"),
    ("int64", lambda: (z(3, 4, dtype=torch.int64), z(5, 4, dtype=torch.int64), None), NS, r"input of dtype Long.*not supported"),
    ("int32", lambda: (z(3, 4, dtype=torch.int32), z(5, 4, dtype=torch.int32), None), NS, r"input of dtype Int.*not supported"),
    ("uint8", lambda: (z(3, 4, dtype=torch.uint8), z(5, 4, dtype=torch.uint8), None), NS, r"input of dtype Byte"),
    ("bool", lambda: (z(3, 4, dtype=torch.bool), z(5, 4, dtype=torch.bool), None), NS, r"input of dtype Bool"),
    ("float16-bfloat16", lambda: (z(3, 4, dtype=torch.half), z(5, 4, dtype=torch.bfloat16), None), RE,
     r"weight to have the dtype of input \(Half\).*BFloat16"),
    ("float16-float32-bias", lambda: (z(3, 4, dtype=torch.half), z(5, 4, dtype=torch.half), z(5)), RE,
     r"bias to have the dtype of input \(Half\).*Float"),
    ("float8", lambda: (z(3, 4).to(torch.float8_e4m3fn), z(5, 4).to(torch.float8_e4m3fn), None), NS,
     r"input of dtype Float8_e4m3fn is not supported"),
    ("complex64", lambda: (z(3, 4, dtype=torch.cfloat), z(5, 4, dtype=torch.cfloat), None), NS, r"ComplexFloat.*not supported"),
    ("complex128", lambda: (z(3, 4, dtype=torch.cdouble), z(5, 4, dtype=torch.cdouble), None), NS, r"ComplexDouble.*not supported"),
    ("mixed-f64-f32", lambda: (z(3, 4, dtype=torch.double), z(5, 4), None), RE, r"weight to have the dtype of input \(Double\).*Float"),
    ("mixed-f32-f64", lambda: (z(3, 4), z(5, 4, dtype=torch.double), None), RE, r"weight.*dtype of input \(Float\).*Double"),
    ("mixed-bias-dtype", lambda: (z(3, 4), z(5, 4), z(5, dtype=torch.double)), RE, r"bias.*dtype of input"),
    ("int-weight", lambda: (z(3, 4), z(5, 4, dtype=torch.int64), None), NS, r"weight of dtype Long"),
    ("complex-bias", lambda: (z(3, 4), z(5, 4), z(5, dtype=torch.cfloat)), NS, r"bias of dtype ComplexFloat"),
    ("sparse-coo-input", lambda: (z(3, 4).to_sparse(), z(5, 4), None), NS, r"input with layout \S*[Ss]parse(_coo)?\b.*not supported"),
    ("sparse-coo-weight", lambda: (z(3, 4), z(5, 4).to_sparse(), None), NS, r"weight with layout \S*[Ss]parse(_coo)?\b.*not supported"),
    ("sparse-csr-weight", lambda: (z(3, 4), z(5, 4).to_sparse_csr(), None), NS, r"weight with layout \S*[Ss]parse_?[Cc]sr"),
    ("sparse-bias", lambda: (z(3, 4), z(5, 4), z(5).to_sparse()), NS, r"bias with layout \S*[Ss]parse"),
    ("quantized-input", lambda: (quantized(3, 4), z(5, 4), None), NS, r"quantized input.*not supported"),
    ("nested-input", lambda: (nested(), z(5, 4), None), NS, r"nested input.*not supported"),
    ("list-input", lambda: ([[1.0]], z(1, 1), None), TE, r"input to be a Tensor.*list"),
    ("list-weight", lambda: (z(1, 1), [[1.0]], None), TE, r"weight to be a Tensor.*list"),
    ("list-bias", lambda: (z(1, 1), z(1, 1), [0.0]), TE, r"bias to be a Tensor or None.*list"),
    ("meta-wrong-K", lambda: (z(3, 4, device="meta"), z(5, 3, device="meta"), None), RE, r"K = 3"),
    ("meta-int", lambda: (z(3, 4, device="meta", dtype=torch.int64), z(5, 4, device="meta", dtype=torch.int64), None),
     NS, r"input of dtype Long is not supported"),
    ("meta-bias-size", lambda: (z(3, 4, device="meta"), z(5, 4, device="meta"), z(4, device="meta")), RE, r"bias of shape \[5\]"),
    ("meta-and-cpu", lambda: (z(3, 4, device="meta"), z(5, 4), None), NS, r"mixing meta and cpu.*not supported"),
    ("cpu-and-meta-bias", lambda: (z(3, 4), z(5, 4), z(5, device="meta")), NS, r"mixing meta and cpu.*not supported"),
]

ENTRY_POINTS = {
    "linear": lambda x, w, b: pylibnn.linear(x, w, b),
    "LinearFunction": lambda x, w, b: pylibnn.LinearFunction.apply(x, w, b),
}


def _params():
    params = []
    for case_id, make, expected, pattern in FORWARD_CASES:
        for entry in ENTRY_POINTS:
            params.append(pytest.param(entry, make, expected, pattern, id=f"{entry}-{case_id}"))
    return params


def _op_name(entry):
    return r"pylibnn\.linear(_forward)?: "


@pytest.mark.filterwarnings("ignore::UserWarning")  # nested, sparse CSR, quantized tensors warn on creation
@pytest.mark.parametrize("entry,make,expected,pattern", _params())
def test_forward_rejects(entry, make, expected, pattern):
    x, w, b = make()
    with pytest.raises(expected, match=_op_name(entry) + ".*" + pattern) as info:
        ENTRY_POINTS[entry](x, w, b)
    assert type(info.value) is expected, f"raised {type(info.value).__name__}, expected {expected.__name__}"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("make,expected", [pytest.param(m, e, id=i) for i, m, e, _ in FORWARD_CASES])
def test_exception_types_follow_f_linear(make, expected):
    """Where F.linear raises, so do we (same type or NotImplementedError, a subclass of
    RuntimeError, for inputs we do not support anyway); where it accepts, ours says 'not supported'."""
    x, w, b = make()
    try:
        F.linear(x, w, b)
    except Exception as error:  # noqa: BLE001 - the type is what is being compared
        torch_type = type(error)
        assert issubclass(expected, torch_type), f"F.linear raises {torch_type.__name__}, we raise {expected.__name__}"
    else:
        assert expected is NotImplementedError, f"F.linear accepts this input, we raise {expected.__name__}"


def test_module_rejects():
    layer = pylibnn.Linear(4, 5)
    cases = [
        (z(3, 6), RE, r"pylibnn\.linear_forward: .*K = 4"),
        (z(2, 3, 6), RE, r"K = 4"),
        (torch.tensor(1.0), RE, r"pylibnn\.linear: .*at least 1 dimension"),
        (z(3, 4, dtype=torch.int64), NS, r"input of dtype Long is not supported"),
        (z(3, 4, dtype=torch.double), RE, r"weight to have the dtype of input \(Double\)"),
        (z(3, 4).to_sparse(), NS, r"input with layout \S*[Ss]parse(_coo)? is not supported"),
    ]
    for x, expected, pattern in cases:
        with pytest.raises(expected, match=pattern) as info:
            layer(x)
        assert type(info.value) is expected
    with pytest.raises(RE, match=r"weight to have the dtype of input \(Half\).*Float"):
        layer(z(3, 4, dtype=torch.half))
    with pytest.raises(NS, match=r"nested input is not supported"):
        layer(nested())


@pytest.mark.parametrize("mask", [[True, True], [True] * 4, []])
def test_backward_op_rejects_mask_length(mask):
    # The schema says bool[3]; the dispatcher rejects other lengths before the op runs
    # (its message gives both lengths but not the op's name).
    with pytest.raises(RuntimeError, match=rf"{len(mask)} elements.*size of 3|size 3"):
        ops.linear_backward(z(3, 5), z(3, 4), z(5, 4), mask)


@requires_cuda
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_cpu_cuda_mix_rejected(entry):
    for x, w, b, name in [(z(3, 4, device="cuda"), z(5, 4), None, "weight"), (z(3, 4), z(5, 4, device="cuda"), None, "weight"),
                          (z(3, 4, device="cuda"), z(5, 4, device="cuda"), z(5), "bias")]:
        with pytest.raises(RuntimeError, match=rf"pylibnn\.linear_forward: expected {name} to be on the device of input"):
            ENTRY_POINTS[entry](x, w, b)
    with pytest.raises(RuntimeError, match=r"pylibnn\.linear_backward: expected input to be on the device"):
        ops.linear_backward(z(3, 5, device="cuda"), z(3, 4), z(5, 4), [True] * 3)


@pytest.mark.skipif(not CUDA_USABLE or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_cuda_devices_rejected():
    with pytest.raises(RuntimeError, match=r"pylibnn\.linear_forward: expected weight to be on the device of input \(cuda:0\).*cuda:1"):
        pylibnn.linear(z(3, 4, device="cuda:0"), z(5, 4, device="cuda:1"))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_still_correct_after_rejections():
    """Nothing a rejected call did leaks into the next one."""
    for _, make, expected, _ in FORWARD_CASES:
        with pytest.raises(expected):
            pylibnn.linear(*make())
    x, w, b = torch.randn(33, 70, dtype=torch.float64), torch.randn(20, 70, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    torch.testing.assert_close(pylibnn.linear(x, w, b), F.linear(x, w, b), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Odd but valid: these must give F.linear's result (forward and every gradient).

def _base(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _odd_cases():
    # (id, input, weight, bias); sizes straddle the direct (<= 4096 multiply-adds), dot
    # (few rows, long contiguous K) and packed paths of the CPU engine.
    big = _base(3, 90, 150, seed=1)
    yield "stride0-input", _base(1, 70, seed=2).expand(40, 70), _base(30, 70, seed=3), _base(30, seed=4)
    yield "stride0-weight", _base(40, 70, seed=5), _base(1, 70, seed=6).expand(30, 70), None
    yield "stride0-bias", _base(40, 70, seed=7), _base(30, 70, seed=8), _base(1, seed=9).expand(30)
    yield "all-stride0", _base(1, 1, seed=10).expand(50, 80), _base(1, 1, seed=11).expand(60, 80), _base(1, seed=12).expand(60)
    yield "storage-offset", big[1, 3:43, 7:77], big[2, 10:40, 20:90], big[0, 5, 10:40]
    yield "permuted-input", _base(70, 40, seed=13).t(), _base(30, 70, seed=14), _base(30, seed=15)
    yield "permuted-weight", _base(40, 70, seed=16), _base(70, 30, seed=17).t(), None
    yield "permuted-3d-input", _base(70, 5, 8, seed=18).permute(2, 1, 0), _base(30, 70, seed=19), _base(30, seed=20)
    yield "strided-everything", big[0, ::2, ::2], _base(60, 150, seed=21)[::2, ::2], _base(60, seed=22)[::2]
    yield "negative-free-step-slices", big[:, ::3, 1::2].reshape(-1, 75)[:, :75], _base(8, 75, seed=23), None
    yield "dot-path-3-rows", _base(3, 200, seed=24), _base(50, 200, seed=25), _base(50, seed=26)
    yield "empty-M", _base(0, 70, seed=27), _base(30, 70, seed=28), _base(30, seed=29)
    yield "empty-K", _base(40, 0, seed=30), _base(30, 0, seed=31), _base(30, seed=32)
    yield "empty-K-no-bias", _base(40, 0, seed=33), _base(30, 0, seed=34), None
    yield "empty-N", _base(40, 70, seed=35), _base(0, 70, seed=36), _base(0, seed=37)
    yield "empty-leading-dim", _base(2, 0, 3, 70, seed=38), _base(30, 70, seed=39), _base(30, seed=40)
    yield "1d-input", _base(70, seed=41), _base(30, 70, seed=42), _base(30, seed=43)
    yield "4d-input", _base(2, 3, 4, 70, seed=44), _base(30, 70, seed=45), None
    yield "one-by-one", _base(1, 1, seed=46), _base(1, 1, seed=47), _base(1, seed=48)


ODD = list(_odd_cases())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("entry", ["linear", "LinearFunction"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in ODD])
def test_odd_but_valid_inputs_match_f_linear(case, entry, dtype):
    _, x, w, b = case
    x, w = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    b = None if b is None else b.to(dtype).requires_grad_()
    # .to() keeps strides (and stride 0) where the dtype changes; where it does not, x is a
    # leaf view of its own: both are what a user may hand in.
    fn = pylibnn.linear if entry == "linear" else pylibnn.LinearFunction.apply
    y = fn(x, w, b)
    inputs = [t for t in (x, w, b) if t is not None]
    ref_inputs = [t.detach().double().clone().requires_grad_() for t in inputs]
    y_ref = F.linear(*ref_inputs) if b is not None else F.linear(ref_inputs[0], ref_inputs[1])
    assert y.shape == y_ref.shape and y.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(y.double(), y_ref.detach(), **tol)
    gy = _base(*y.shape, seed=99)
    grads = torch.autograd.grad(y, inputs, gy.to(dtype), allow_unused=True)
    ref_grads = torch.autograd.grad(y_ref, ref_inputs, gy, allow_unused=True)
    for name, g, r, t in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads, inputs):
        g = torch.zeros_like(t) if g is None else g
        r = torch.zeros_like(t, dtype=torch.float64) if r is None else r
        assert g.shape == t.shape, name
        torch.testing.assert_close(g.double(), r, **tol, msg=lambda m: f"{name}: {m}")
