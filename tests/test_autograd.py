"""Autograd: gradcheck in float64 through linear, LinearFunction and Linear, and what
LinearFunction keeps for its backward (only what ctx.needs_input_grad asks for)."""

import itertools

import pytest
import torch

import pylibnn
from conftest import CUDA_BACKENDS, make_tensor

# (input shape, N). The last one has 3 * 40 * 50 = 6000 multiply-adds: the packed engine.
GRADCHECK_CASES = [
    pytest.param((4,), 3, id="1d"),
    pytest.param((3, 4), 5, id="2d"),
    pytest.param((2, 3, 4), 5, id="3d"),
    pytest.param((3, 40), 50, id="2d-packed"),
]
# Which of (input, weight, bias) require grad; bias None in the last one.
REQUIRES_GRAD = [
    pytest.param((True, True, True), id="all"),
    pytest.param((True, False, False), id="input"),
    pytest.param((False, True, False), id="weight"),
    pytest.param((False, False, True), id="bias"),
    pytest.param((True, True, None), id="nobias"),
]


def _operands(device, input_shape, N, requires_grad):
    K = input_shape[-1]
    x = make_tensor(input_shape, torch.float64, device, 1, requires_grad[0])
    w = make_tensor((N, K), torch.float64, device, 2, requires_grad[1])
    b = None if requires_grad[2] is None else make_tensor((N,), torch.float64, device, 3, requires_grad[2])
    return x, w, b


def _module_call(x, w, b):
    layer = pylibnn.Linear(w.size(1), w.size(0), bias=b is not None, device=w.device, dtype=w.dtype)
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    return torch.func.functional_call(layer, params, (x,))


ENTRY_POINTS = {
    "linear": pylibnn.linear,
    "LinearFunction": lambda x, w, b: pylibnn.LinearFunction.apply(x, w, b),
    "Linear": _module_call,
}


def _test_gradcheck(device, entry, input_shape, N, requires_grad):
    x, w, b = _operands(device, input_shape, N, requires_grad)
    fn = ENTRY_POINTS[entry]
    fast = input_shape[-1] * N > 1000  # full Jacobians of the packed case cost seconds
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)


@pytest.mark.parametrize("requires_grad", REQUIRES_GRAD)
@pytest.mark.parametrize("input_shape,N", GRADCHECK_CASES)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_gradcheck_cpu(entry, input_shape, N, requires_grad):
    _test_gradcheck("cpu", entry, input_shape, N, requires_grad)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("requires_grad", REQUIRES_GRAD)
@pytest.mark.parametrize("input_shape,N", GRADCHECK_CASES)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_gradcheck_cuda(device, entry, input_shape, N, requires_grad):
    _test_gradcheck(device, entry, input_shape, N, requires_grad)


# ---------------------------------------------------------------------------------------
# Saved tensors. Both autograd paths (LinearFunction in Python, the op's C++ autograd behind
# pylibnn.linear) save the weight for grad_input, the input for grad_weight, neither for
# grad_bias; a saved_tensors_hooks pack hook sees every tensor saved by either.

SAVE_CASES = list(itertools.product([False, True], repeat=3))
SAVE_ENTRY_POINTS = {"linear": pylibnn.linear, "LinearFunction": pylibnn.LinearFunction.apply}


def _test_saves_only_what_is_needed(device, requires_grad, entry="LinearFunction"):
    x = make_tensor((2, 3, 17), torch.float32, device, 1, requires_grad[0])
    w = make_tensor((5, 17), torch.float32, device, 2, requires_grad[1])
    b = make_tensor((5,), torch.float32, device, 3, requires_grad[2])
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = SAVE_ENTRY_POINTS[entry](x, w, b)

    def is_view_of(t, source):
        return t.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()

    expected = []
    if requires_grad[0]:
        expected.append("weight")   # grad_input = grad_output @ weight
    if requires_grad[1]:
        expected.append("input")    # grad_weight = grad_output^T @ input
    names = sorted("weight" if is_view_of(t, w) else "input" if is_view_of(t, x) else "other" for t in saved)
    assert names == sorted(expected), f"requires_grad={requires_grad}: saved {names}, expected {sorted(expected)}"

    if any(requires_grad):
        # With only part of the operands saved, the backward still gives the right gradients.
        y.sum().backward()
        for t, needed in zip((x, w, b), requires_grad):
            assert (t.grad is not None) == needed
        if requires_grad[0]:
            torch.testing.assert_close(x.grad, w.sum(0).expand_as(x))
        if requires_grad[1]:
            torch.testing.assert_close(w.grad, x.reshape(-1, 17).sum(0).expand_as(w))
        if requires_grad[2]:
            torch.testing.assert_close(b.grad, torch.full_like(b, 6.0))
    else:
        assert y.grad_fn is None


@pytest.mark.parametrize("requires_grad", SAVE_CASES,
                         ids=["-".join(n for n, r in zip(("input", "weight", "bias"), rg) if r) or "none"
                              for rg in SAVE_CASES])
@pytest.mark.parametrize("entry", list(SAVE_ENTRY_POINTS))
def test_saves_only_what_is_needed_cpu(requires_grad, entry):
    _test_saves_only_what_is_needed("cpu", requires_grad, entry)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("requires_grad", SAVE_CASES,
                         ids=["-".join(n for n, r in zip(("input", "weight", "bias"), rg) if r) or "none"
                              for rg in SAVE_CASES])
@pytest.mark.parametrize("entry", list(SAVE_ENTRY_POINTS))
def test_saves_only_what_is_needed_cuda(device, requires_grad, entry):
    _test_saves_only_what_is_needed(device, requires_grad, entry)


def test_saved_tensors_on_grad_fn():
    # The same through LinearFunction's node itself: only the weight is kept when only the
    # input needs grad. (The C++ node behind pylibnn.linear does not expose saved_tensors;
    # the hook test above covers it.)
    x = make_tensor((3, 4), torch.float32, "cpu", 1, True)
    w = make_tensor((5, 4), torch.float32, "cpu", 2)
    y = pylibnn.LinearFunction.apply(x, w)
    kept = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert len(kept) == 1 and torch.equal(kept[0], w)


def test_no_grad_saves_nothing():
    x = make_tensor((3, 4), torch.float32, "cpu", 1, True)
    w = make_tensor((5, 4), torch.float32, "cpu", 2, True)
    saved = []
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = pylibnn.linear(x, w)
    assert y.grad_fn is None and not y.requires_grad and saved == []
