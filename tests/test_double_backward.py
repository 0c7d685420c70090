"""Double backward: gradgradcheck in float64 through linear, LinearFunction and Linear (the
ops' own gradgradchecks, backward ops included, are in the op database: tests/test_opdb.py).

The linear_backward op has its own (C++) autograd, written with the same two ops, so a
backward run with create_graph=True is differentiable again, to any order."""

import pytest
import torch

import pylibnn
from conftest import CUDA_BACKENDS, make_tensor
from test_autograd import ENTRY_POINTS, REQUIRES_GRAD, _operands

# nn.Linear(0, N) warns that initializing its empty weight does nothing; the K=0 case builds one.
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op:UserWarning")

SHAPES = [pytest.param((4,), 3, id="1d"), pytest.param((3, 4), 5, id="2d"), pytest.param((2, 3, 4), 5, id="3d"),
          pytest.param((0, 4), 5, id="M=0"), pytest.param((3, 0), 5, id="K=0")]


def _test_gradgradcheck(device, entry, input_shape, N, requires_grad):
    x, w, b = _operands(device, input_shape, N, requires_grad)
    assert torch.autograd.gradgradcheck(ENTRY_POINTS[entry], (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("requires_grad", REQUIRES_GRAD)
@pytest.mark.parametrize("input_shape,N", SHAPES)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_gradgradcheck_cpu(entry, input_shape, N, requires_grad):
    _test_gradgradcheck("cpu", entry, input_shape, N, requires_grad)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("requires_grad", REQUIRES_GRAD)
@pytest.mark.parametrize("input_shape,N", SHAPES)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_gradgradcheck_cuda(device, entry, input_shape, N, requires_grad):
    _test_gradgradcheck(device, entry, input_shape, N, requires_grad)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_hessian_vector_product_matches_f_linear(entry):
    # A gradient penalty (the usual reason for double backward) on pylibnn equals the same
    # on F.linear, and the second backward runs on pylibnn's ops, not on a fallback.
    x = make_tensor((2, 3, 4), torch.float64, "cpu", 1, True)
    w = make_tensor((5, 4), torch.float64, "cpu", 2, True)
    b = make_tensor((5,), torch.float64, "cpu", 3, True)

    def penalty(fn):
        y = fn(x, w, b)
        gx, gw = torch.autograd.grad((y.tanh() ** 2).sum(), (x, w), create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum() + gw.pow(2).sum(), (x, w, b))

    ours = penalty(ENTRY_POINTS[entry])
    reference = penalty(torch.nn.functional.linear)
    for a, r in zip(ours, reference):
        torch.testing.assert_close(a, r)


def test_first_order_backward_records_nothing():
    # Without create_graph the backward op takes its fast path: no graph, no saved tensors.
    x = make_tensor((3, 4), torch.float64, "cpu", 1, True)
    w = make_tensor((5, 4), torch.float64, "cpu", 2, True)
    gx, gw = torch.autograd.grad(pylibnn.linear(x, w).sum(), (x, w))
    assert gx.grad_fn is None and gw.grad_fn is None
    gx, gw = torch.autograd.grad(pylibnn.linear(x, w).sum(), (x, w), create_graph=True)
    assert gx.grad_fn is not None and gw.grad_fn is not None
