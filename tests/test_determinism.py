"""Determinism: under torch.use_deterministic_algorithms(True), repeated forward and
backward passes give bitwise identical results. The CPU engine splits work over threads
by a fixed rule and reduces grad_bias in a fixed order; the CUDA column sum uses no
atomics."""

import pytest
import torch

import pylibnn
from conftest import CUDA_BACKENDS, make_tensor

# Tiny (reference loop), thin (dot kernels), and packed multi-threaded shapes: (M, K, N).
SHAPES = [pytest.param((3, 4, 5), id="tiny"), pytest.param((64, 300, 40), id="thin"),
          pytest.param((257, 190, 130), id="packed")]


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


def _run(x, w, b):
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = pylibnn.linear(x, w, b)
    y.backward(torch.ones_like(y).cumsum(-1))
    return [y.detach(), x.grad, w.grad, b.grad]


def _test_repeatable(device, shape):
    M, K, N = shape
    x = make_tensor((M, K), torch.float32, device, 1)
    w = make_tensor((N, K), torch.float32, device, 2)
    b = make_tensor((N,), torch.float32, device, 3)
    first = _run(x, w, b)
    for _ in range(3):
        for a, e in zip(_run(x, w, b), first):
            assert torch.equal(a, e)


@pytest.mark.parametrize("shape", SHAPES)
def test_repeatable_cpu(deterministic, shape):
    _test_repeatable("cpu", shape)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_repeatable_cuda(device, deterministic, shape):
    _test_repeatable(device, shape)


def test_ops_run_in_deterministic_mode(deterministic):
    # The ops do not raise "does not have a deterministic implementation" under the flag.
    assert torch.are_deterministic_algorithms_enabled()
    x = make_tensor((3, 4), torch.float64, "cpu", 1, True)
    pylibnn.linear(x, make_tensor((5, 4), torch.float64, "cpu", 2)).sum().backward()
    assert x.grad is not None
