"""torch.jit.script and torch.jit.trace of pylibnn.Linear (every activation), a converted model
and pylibnn.MLP: the scripted modules run pylibnn's ops, save and load (torch.jit.save /
torch.jit.load) and give the eager outputs.

Scripted and eager modules call the same ops on the same tensors, so their outputs are
compared bit for bit; the eager outputs themselves are checked against float64 elsewhere
(test_opdb, test_mlp). Gradients through a scripted module are compared with the
float64 twin (pylibnn.unconvert, in float64) within 1e-12 relative to the largest gradient:
float64 rounding of these few-term sums is about 1e-15.
"""

import io
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import pylibnn
from conftest import make_tensor

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning",
                                        "ignore:`torch.jit.trace` is deprecated:FutureWarning",
                                        "ignore:`torch.jit.save` is deprecated:FutureWarning",
                                        "ignore:`torch.jit.load` is deprecated:FutureWarning")

# None and every fused activation the kernels take.
ACTIVATIONS = [None] + [a for a in pylibnn.ops.ACTIVATIONS if a != "none"]


def _save_and_load(scripted):
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _pylibnn_ops_run(module, x):
    """The pylibnn ops that run when ``module`` is called on ``x`` (the profiler sees every op)."""
    with torch.no_grad(), torch.profiler.profile() as profile:
        module(x)
    return {event.name for event in profile.events() if event.name.startswith("pylibnn::")}


def _assert_same_outputs(eager, scripted, inputs):
    for x in inputs:
        with torch.no_grad():
            assert torch.equal(scripted(x), eager(x)), f"input of shape {tuple(x.shape)}"


# (*, K) shapes: 2-D, batched 3-D, 1-D and empty.
def _inputs(k, seed):
    return [make_tensor(shape, torch.float32, "cpu", seed + i) for i, shape in
            enumerate([(5, k), (2, 3, k), (k,), (0, k)])]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_script_linear(activation, bias):
    torch.manual_seed(0)
    layer = pylibnn.Linear(6, 4, bias=bias, activation=activation)
    scripted = torch.jit.script(layer)
    loaded = _save_and_load(scripted)
    expected_op = "pylibnn::linear_forward" if activation is None else "pylibnn::linear_act_forward"
    for module in (scripted, loaded):
        assert _pylibnn_ops_run(module, torch.randn(3, 6)) == {expected_op}
        _assert_same_outputs(layer, module, _inputs(6, 1))
    assert loaded.state_dict().keys() == layer.state_dict().keys()


@pytest.mark.parametrize("activation", ["relu", "gelu_tanh", None], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_script_mlp(activation, bias):
    torch.manual_seed(0)
    mlp = pylibnn.MLP([6, 9, 5, 3], activation=activation, bias=bias)
    scripted = torch.jit.script(mlp)
    loaded = _save_and_load(scripted)
    for module in (scripted, loaded):
        assert _pylibnn_ops_run(module, torch.randn(3, 6)) == {"pylibnn::mlp_forward"}
        _assert_same_outputs(mlp, module, _inputs(6, 10))
    assert list(loaded.state_dict()) == list(mlp.state_dict())


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 16))
        self.mlp = pylibnn.MLP([16, 8, 16], activation="silu")
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        h = self.encoder(x)
        return self.head(h + self.mlp(h))


def _float64_grads(model, x):
    twin = pylibnn.unconvert(model).double()
    twin(x.double()).square().sum().backward()
    return [p.grad for p in twin.parameters()]


def test_script_converted_model_trains_and_round_trips():
    torch.manual_seed(0)
    eager = pylibnn.convert(Model())
    assert isinstance(eager.encoder[0], pylibnn.Linear)
    scripted = torch.jit.script(eager)
    assert _pylibnn_ops_run(scripted, torch.randn(3, 6)) == {"pylibnn::linear_forward", "pylibnn::mlp_forward"}
    # Scripting leaves the eager model as it was.
    assert type(eager.encoder[0]) is pylibnn.Linear and type(eager.mlp) is pylibnn.MLP
    x = make_tensor((4, 6), torch.float32, "cpu", 20)
    _assert_same_outputs(eager, scripted, [x, make_tensor((2, 2, 6), torch.float32, "cpu", 21)])

    # Backward through the scripted module: pylibnn's autograd, against float64.
    scripted = scripted.double()
    scripted(x.double()).square().sum().backward()
    for (name, p), reference in zip(scripted.named_parameters(), _float64_grads(eager, x)):
        error = (p.grad - reference).abs().max().item()
        assert error <= 1e-12 * max(reference.abs().max().item(), 1.0), f"{name}: error {error:.3e}"

    loaded = _save_and_load(scripted)
    with torch.no_grad():
        assert torch.equal(loaded(x.double()), scripted(x.double()))


def test_loaded_in_a_fresh_process(tmp_path):
    # A saved module needs pylibnn imported (it registers the ops), nothing else.
    torch.manual_seed(0)
    model = pylibnn.MLP([3, 4, 2], activation="gelu")
    x = make_tensor((2, 3), torch.float32, "cpu", 30)
    path = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    with torch.no_grad():
        expected = model(x)
    torch.save({"x": x, "expected": expected}, tmp_path / "io.pt")
    code = (f"import warnings; warnings.simplefilter('ignore'); import torch, pylibnn\n"
            f"data = torch.load({str(tmp_path / 'io.pt')!r})\n"
            f"module = torch.jit.load({str(path)!r})\n"
            f"assert torch.equal(module(data['x']), data['expected'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("make", [lambda: pylibnn.Linear(6, 4, activation="tanh"),
                                  lambda: pylibnn.MLP([6, 5, 4], activation="relu")], ids=["Linear", "MLP"])
def test_trace(make):
    # torch.jit.trace records the ops; an MLP records one fused layer op per layer (the
    # tracer has no form for mlp_forward's Tensor?[] argument).
    torch.manual_seed(0)
    module = make()
    x = make_tensor((5, 6), torch.float32, "cpu", 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (x,))
    expected = {"pylibnn::linear_act_forward"} | ({"pylibnn::linear_forward"} if isinstance(module, pylibnn.MLP) else set())
    assert _pylibnn_ops_run(traced, x) == expected
    y = make_tensor((7, 6), torch.float32, "cpu", 41)
    with torch.no_grad():
        torch.testing.assert_close(traced(y), module(y), rtol=1e-6, atol=1e-6)


def test_scripted_errors_are_pylibnn_errors():
    scripted = torch.jit.script(pylibnn.Linear(6, 4))
    with pytest.raises(RuntimeError, match=r"pylibnn.linear_forward: expected input.size\(1\) to equal weight.size\(1\)"):
        scripted(torch.randn(3, 5))
    # An exception raised by TorchScript code itself reaches Python as torch.jit.Error.
    with pytest.raises(torch.jit.Error, match="pylibnn.linear: expected input to have at least 1 dimension"):
        scripted(torch.tensor(1.0))
