"""torch.onnx.export of models holding pylibnn layers, with both of torch's exporters.

The exported graphs must use standard ONNX ops only (no pylibnn domain): Gemm or MatMul (+
Add) for the layers and the activation's ops (Relu, Gelu with its approximate attribute,
Sigmoid, Tanh, Sigmoid and Mul for SiLU); onnxruntime runs them.

Tolerance: onnxruntime's float32 outputs and pylibnn's are checked against the float64
twin (``pylibnn.unconvert`` of the model, in float64) with
    |actual - reference| <= 1e-5 * max|reference| + 1e-6,
about 80 float32 ulps of the output's scale: far above the rounding of these few-term sums
(depths <= 16) and activations, far below any wrong layer, missing bias or swapped
activation (all errors of order 1).
"""

import warnings

import pytest
import torch
from torch import nn

import pylibnn
from conftest import make_tensor

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install onnx; part of pylibnn's test extra)")
onnxruntime = pytest.importorskip("onnxruntime",
                                  reason="needs onnxruntime (pip install onnxruntime; part of pylibnn's test extra)")

RTOL, ATOL = 1e-5, 1e-6

# Each activation and the ONNX ops it must appear as.
ACTIVATION_OPS = {
    None: set(),
    "relu": {"Relu"},
    "gelu": {"Gelu"},
    "gelu_tanh": {"Gelu"},
    "silu": {"Sigmoid", "Mul"},
    "tanh": {"Tanh"},
    "sigmoid": {"Sigmoid"},
}
ACTIVATIONS = list(ACTIVATION_OPS)
assert set(ACTIVATIONS) == {None} | (set(pylibnn.ops.ACTIVATIONS) - {"none"}), "an activation without its ONNX ops here"

# Exporter settings: torch's default (today dynamo=True, which needs onnxscript), and the
# TorchScript exporter.
EXPORTERS = [pytest.param({}, id="default"), pytest.param({"dynamo": False}, id="dynamo=False")]


class Block(nn.Module):
    """A model as users write one: a converted layer stack with a fused MLP inside."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.mlp = pylibnn.MLP([16, 32, 16], activation="gelu")
        self.head = nn.Linear(16, 3, bias=False)

    def forward(self, x):
        return self.head(torch.tanh(self.embed(x) + self.mlp(self.embed(x))))


def _export(model, x, exporter, tmp_path):
    if exporter.get("dynamo", True):
        pytest.importorskip("onnxscript", reason="the default exporter (dynamo=True) needs onnxscript "
                                                 "(pip install onnxscript; part of pylibnn's test extra)")
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and version notes
        torch.onnx.export(model.eval(), (x,), str(path), **exporter)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    return path, graph


def _op_types(graph):
    return [node.op_type for node in graph.graph.node]


def _run(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    (output,) = session.run(None, {name: x.numpy()})
    return torch.from_numpy(output)


def _assert_close_to_float64(actual, reference, what):
    reference = reference.detach().double()
    bound = RTOL * reference.abs().max().item() + ATOL
    error = (actual.detach().double() - reference).abs().max().item()
    assert actual.shape == reference.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(reference.shape)}"
    assert error <= bound, f"{what}: largest error {error:.3e} > bound {bound:.3e}"


def _check(model, x, exporter, tmp_path):
    """Exports ``model``, checks the graph's domains, runs it; returns its op types."""
    path, graph = _export(model, x, exporter, tmp_path)
    domains = {node.domain for node in graph.graph.node} | {o.domain for o in graph.opset_import if o.domain}
    assert all(d in ("", "ai.onnx") for d in domains), f"non-standard ONNX domains: {domains}"
    reference = pylibnn.unconvert(model).double()(x.double())
    with torch.no_grad():
        ours = model(x)
    _assert_close_to_float64(ours, reference, "pylibnn")
    _assert_close_to_float64(_run(path, x), reference, "onnxruntime")
    return graph


def _gelu_approximation(graph):
    gelus = [node for node in graph.graph.node if node.op_type == "Gelu"]
    return [onnx.helper.get_attribute_value(a).decode() for node in gelus for a in node.attribute
            if a.name == "approximate"] or ["none"] * len(gelus)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear(exporter, activation, bias, tmp_path):
    torch.manual_seed(0)
    model = pylibnn.Linear(5, 4, bias=bias, activation=activation)
    graph = _check(model, make_tensor((3, 5), torch.float32, "cpu", 1), exporter, tmp_path)
    ops = set(_op_types(graph))
    assert "Gemm" in ops or "MatMul" in ops, _op_types(graph)
    assert ACTIVATION_OPS[activation] <= ops, _op_types(graph)
    assert not (ops & ({"Relu", "Gelu", "Tanh", "Sigmoid"} - ACTIVATION_OPS[activation])), _op_types(graph)
    if activation in ("gelu", "gelu_tanh"):
        assert _gelu_approximation(graph) == ["tanh" if activation == "gelu_tanh" else "none"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("activation", ["relu", "gelu", None], ids=str)
def test_mlp(exporter, activation, tmp_path):
    torch.manual_seed(0)
    model = pylibnn.MLP([5, 8, 8, 3], activation=activation)
    graph = _check(model, make_tensor((4, 5), torch.float32, "cpu", 2), exporter, tmp_path)
    ops = _op_types(graph)
    assert ops.count("Gemm") + ops.count("MatMul") == 3, ops
    for op in ACTIVATION_OPS[activation]:
        assert ops.count(op) == 2, ops  # between the layers, none after the last


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_converted_model_with_leading_dims(exporter, tmp_path):
    torch.manual_seed(0)
    model = pylibnn.convert(Block())
    x = make_tensor((2, 3, 6), torch.float32, "cpu", 3)  # (*, K) inputs: the layers flatten them
    graph = _check(model, x, exporter, tmp_path)
    assert "Gelu" in _op_types(graph)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_scripted_mlp_with_torchscript_exporter(tmp_path):
    # A scripted module keeps mlp_forward itself as one node (tracing runs the layers one by
    # one instead); the TorchScript exporter writes that node's layers too.
    torch.manual_seed(0)
    model = pylibnn.MLP([5, 8, 3], activation="tanh")
    scripted = torch.jit.script(model)
    assert "pylibnn::mlp_forward" in str(scripted.inlined_graph)
    x = make_tensor((4, 5), torch.float32, "cpu", 4)
    path, graph = _export(scripted, x, {"dynamo": False}, tmp_path)
    assert _op_types(graph).count("Tanh") == 1
    _assert_close_to_float64(_run(path, x), pylibnn.unconvert(model).double()(x.double()), "onnxruntime")


def test_export_leaves_eager_and_compile_on_pylibnn(tmp_path):
    # The ONNX translations are read by the exporters only: after an export, eager calls
    # and torch.export still run pylibnn's ops.
    model = pylibnn.Linear(5, 4, activation="gelu")
    x = make_tensor((3, 5), torch.float32, "cpu", 5)
    _export(model, x, {"dynamo": False}, tmp_path)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "pylibnn.linear_act_forward.default" in targets
    with torch.profiler.profile() as profile:
        model(x)
    assert "pylibnn::linear_act_forward" in {event.name for event in profile.events()}
