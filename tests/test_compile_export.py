"""torch.compile and torch.export through pylibnn.Linear, pylibnn.linear and LinearFunction.

fullgraph=True makes any graph break an error; the recorded AOT graphs show that the
forward and the backward run pylibnn's ops (not a decomposition or an eager fallback).
Compiles cost seconds each on a small machine, so there are few of them, on tiny shapes;
dynamo is reset before each test."""

import pytest
import torch
from torch._dynamo.testing import AotEagerAndRecordGraphs

import pylibnn
from conftest import make_tensor, requires_cuda

# The recording backend returns unboxed functions; harmless on graphs this small.
pytestmark = pytest.mark.filterwarnings("ignore:Your compiler for AOTAutograd:UserWarning")


@pytest.fixture(autouse=True)
def reset_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class MLP(torch.nn.Module):
    def __init__(self, device):
        super().__init__()
        self.fc1 = pylibnn.Linear(8, 16, device=device)
        self.fc2 = pylibnn.Linear(16, 4, bias=False, device=device)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _ops_in(graphs):
    return {str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"}


def _grads(model, x):
    model.zero_grad()
    x = x.detach().requires_grad_()
    y = model(x)
    y.square().sum().backward()
    return y.detach(), [x.grad] + [p.grad.clone() for p in model.parameters()]


def _test_compile_module(device):
    torch.manual_seed(0)
    model = MLP(device)
    x = make_tensor((5, 3, 8), torch.float32, device, 1)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()

    # The default backend (inductor), forward and backward, equal to eager.
    compiled = torch.compile(model, fullgraph=True)
    y_eager, grads_eager = _grads(model, x)
    y_compiled, grads_compiled = _grads(compiled, x)
    torch.testing.assert_close(y_compiled, y_eager)
    for a, e in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(a, e)


def test_compile_module_cpu():
    _test_compile_module("cpu")


@requires_cuda
def test_compile_module_cuda():
    _test_compile_module("cuda")


ENTRY_POINTS = {"linear": pylibnn.linear, "LinearFunction": pylibnn.LinearFunction.apply}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_compile_function_runs_pylibnn_ops(entry):
    fn = ENTRY_POINTS[entry]

    def f(x, w, b):
        return torch.tanh(fn(x, w, b)).sum()

    x = make_tensor((2, 3, 4), torch.float64, "cpu", 1, True)
    w = make_tensor((5, 4), torch.float64, "cpu", 2, True)
    b = make_tensor((5,), torch.float64, "cpu", 3, True)
    backend = AotEagerAndRecordGraphs()
    compiled = torch.compile(f, backend=backend, fullgraph=True)
    grads_compiled = torch.autograd.grad(compiled(x, w, b), (x, w, b))
    grads_eager = torch.autograd.grad(f(x, w, b), (x, w, b))
    for a, e in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(a, e)
    assert "pylibnn.linear_forward.default" in _ops_in(backend.fw_graphs)
    assert "pylibnn.linear_backward.default" in _ops_in(backend.bw_graphs)
    assert not {"aten.mm.default", "aten.addmm.default"} & _ops_in(backend.fw_graphs + backend.bw_graphs)


def test_compile_dynamic_shapes():
    # One graph for every batch size: the fake kernels and the autograd work on SymInts.
    torch.manual_seed(0)
    model = MLP("cpu")
    backend = AotEagerAndRecordGraphs()
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=True)
    for rows in (3, 7, 11):
        x = make_tensor((rows, 8), torch.float32, "cpu", rows)
        y_eager, grads_eager = _grads(model, x)
        y_compiled, grads_compiled = _grads(compiled, x)
        torch.testing.assert_close(y_compiled, y_eager)
        for a, e in zip(grads_compiled, grads_eager):
            torch.testing.assert_close(a, e)
    assert len(backend.graphs) == 1


def _test_export(device):
    torch.manual_seed(0)
    model = MLP(device)
    x = make_tensor((6, 8), torch.float32, device, 1)
    batch = torch.export.Dim("batch")
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "pylibnn.linear_forward.default" in targets
    module = exported.module()
    for rows in (6, 9):
        x = make_tensor((rows, 8), torch.float32, device, rows)
        torch.testing.assert_close(module(x), model(x))


def test_export_cpu():
    _test_export("cpu")


@requires_cuda
def test_export_cuda():
    _test_export("cuda")
