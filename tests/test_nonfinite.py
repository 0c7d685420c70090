"""NaN and +-Inf propagate exactly as in F.linear: same positions, same signs, forward and
every gradient, on every CPU GEMM path (and CUDA where present).

Each operand gets a NaN, a +Inf and a -Inf at fixed positions; the set of terms summed into
each output element is the same in any summation order, so which elements come out NaN,
+Inf or -Inf does not depend on blocking, packing or threads: it must match F.linear in
float64 exactly. The finite elements are compared with the usual tolerance.
"""

import pytest
import torch
import torch.nn.functional as F

import pylibnn
from conftest import CUDA_BACKENDS, DTYPES, make_tensor

# Direct loop (<= 4096 multiply-adds), dot path (few rows, contiguous K >= 64), packed path.
SHAPES = [pytest.param((3, 5, 4), id="direct"), pytest.param((5, 100, 30), id="dot"),
          pytest.param((50, 70, 90), id="packed")]


def _poison(t, positions):
    t = t.clone()
    for index, value in positions:
        t[index] = value
    return t


def _assert_same_nonfinite(actual, expected, what):
    single = actual.dtype == torch.float32
    actual = actual.detach().to("cpu", torch.float64)
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), \
        f"{what}: NaN at {torch.isnan(actual).nonzero().tolist()[:8]}, expected {torch.isnan(expected).nonzero().tolist()[:8]}"
    for sign in (1, -1):
        got, want = actual == sign * float("inf"), expected == sign * float("inf")
        assert torch.equal(got, want), f"{what}: {'+' if sign > 0 else '-'}Inf at {got.nonzero().tolist()[:8]}, expected {want.nonzero().tolist()[:8]}"
    finite = torch.isfinite(expected)
    tol = dict(rtol=1e-4, atol=1e-4) if single else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(actual[finite], expected[finite], **tol)


def _test_nonfinite(device, dtype, shape, bias):
    M, K, N = shape
    nan, inf = float("nan"), float("inf")
    x = _poison(make_tensor((M, K), torch.float64, "cpu", 1), [((1, 2), nan), ((2, 0), inf), ((M - 1, K - 1), -inf)])
    w = _poison(make_tensor((N, K), torch.float64, "cpu", 2), [((0, 1), inf), ((N - 1, 3), nan)])
    b = _poison(make_tensor((N,), torch.float64, "cpu", 3), [((2,), -inf), ((1,), nan)]) if bias else None
    gy = _poison(make_tensor((M, N), torch.float64, "cpu", 4), [((0, 0), nan), ((M - 1, 1), inf)])

    ref = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    y_ref = F.linear(*ref)
    grads_ref = torch.autograd.grad(y_ref, ref, gy)

    ours = [t.to(device, dtype).requires_grad_() for t in (x, w, b) if t is not None]
    y = pylibnn.linear(*ours)
    _assert_same_nonfinite(y, y_ref.detach(), "output")
    grads = torch.autograd.grad(y, ours, gy.to(device, dtype))
    for name, g, r in zip(("grad_input", "grad_weight", "grad_bias"), grads, grads_ref):
        _assert_same_nonfinite(g, r, name)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_cpu(cpu_isa, dtype, shape, bias):
    _test_nonfinite("cpu", dtype, shape, bias)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", CUDA_BACKENDS)
def test_nonfinite_cuda(device, dtype, shape):
    _test_nonfinite(device, dtype, shape, True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_nan_weight_and_inf_bias(dtype):
    # Every element touched: the whole output is NaN; an Inf bias on a finite product is Inf.
    x = torch.randn(40, 70, dtype=dtype)
    w = torch.full((30, 70), float("nan"), dtype=dtype)
    assert torch.isnan(pylibnn.linear(x, w)).all()
    w = torch.randn(30, 70, dtype=dtype)
    b = torch.full((30,), float("inf"), dtype=dtype)
    assert (pylibnn.linear(x, w, b) == float("inf")).all()
