"""pylibnn.MLP, the module: against the equivalent nn.Sequential in float64 (with the op
database's tolerance rule), its Sequential-compatible parameters and state_dict,
torch.compile / export of the module, the hidden layout, autocast, partial requires_grad,
and the tutorial's training runs (linear and non-linear) against the pure-torch reference.
The fused mlp_forward / mlp_backward ops themselves (shapes, views, every CPU path, dtypes,
gradcheck, opcheck, errors, determinism) are tested from the op database (tests/opdb.py).
"""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pylibnn
from pylibnn import reference
from conftest import DEVICES, DTYPES, TRACEABLE_DEVICES, TUTORIAL_RTOL, make_tensor, seed_for
import opdb

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op:UserWarning")

# (sizes, activation, batch): the module's forms; the op database has the op's shapes.
NETWORKS = [
    pytest.param([1, 3, 3, 2], None, 4, id="tutorial"),
    pytest.param([3, 64, 64, 64, 3], "relu", 256, id="relu-64"),
    pytest.param([5, 200, 37, 130, 7], "gelu", 100, id="gelu-wide"),
    pytest.param([3, 8, 4], "silu", 0, id="M=0"),
]


def _test_matches_sequential(device, dtype, sizes, act, batch):
    """The module's output and gradients against the float64 network its nn.Sequential
    computes (the op database's reference and tolerance rule for the same layers)."""
    torch.manual_seed(seed_for(batch, *sizes))
    mlp = pylibnn.MLP(sizes, activation=act, device=device, dtype=dtype)
    x = make_tensor((batch, sizes[0]), dtype, device, seed_for(batch, 1), True)
    gy = make_tensor((batch, sizes[-1]), dtype, device, seed_for(batch, 2))
    y = mlp(x)
    params = list(mlp.parameters())
    grads = torch.autograd.grad(y, [x] + params, gy)
    spec = opdb.SampleSpec("module", batch, tuple(sizes), act or "none")
    layers = [m for m in mlp if isinstance(m, nn.Linear)]
    sample = opdb.Sample(spec, x, [m.weight for m in layers], [m.bias for m in layers], gy)
    expected = opdb.reference(opdb.OPS_BY_NAME["mlp"], sample)
    # The module's parameter order is the Sequential's (weight, bias per layer); the sample's
    # is weights then biases.
    ours = dict(zip(["grad_input"] + [n for n, _ in mlp.named_parameters()], grads))
    names = {"grad_input": "grad_input"}
    for l, index in enumerate(i for i, m in enumerate(mlp) if isinstance(m, nn.Linear)):
        names[f"{index}.weight"] = f"grad_weight[{l}]"
        names[f"{index}.bias"] = f"grad_bias[{l}]"
    opdb.assert_close(y, *expected["output"], dtype, "output")
    for name, g in ours.items():
        opdb.assert_close(g, *expected[names[name]], dtype, name)


@pytest.mark.parametrize("sizes,act,batch", NETWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_sequential(device, dtype, sizes, act, batch):
    _test_matches_sequential(device, dtype, sizes, act, batch)


def test_parameters_and_state_dict_are_sequentials():
    torch.manual_seed(0)
    mlp = pylibnn.MLP([3, 8, 8, 2], activation="relu")
    params = list(mlp.parameters())
    assert [tuple(p.shape) for p in params] == [(8, 3), (8,), (8, 8), (8,), (2, 8), (2,)]
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert list(mlp.state_dict()) == list(seq.state_dict())
    seq.load_state_dict(mlp.state_dict())
    x = torch.randn(5, 3)
    torch.testing.assert_close(mlp(x), seq(x))
    seq2 = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    mlp.load_state_dict(seq2.state_dict())
    torch.testing.assert_close(mlp(x), seq2(x))
    assert isinstance(mlp[0], nn.Linear) and isinstance(mlp[1], nn.ReLU) and len(mlp) == 5
    assert "activation='relu'" in repr(mlp)
    # No activation: Linear layers at 0, 1, 2 like nn.Sequential(Linear, Linear, Linear).
    assert list(pylibnn.MLP([1, 3, 3, 2], activation=None).state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]


def test_from_sequential():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 9), nn.GELU(approximate="tanh"), nn.Linear(9, 3))
    mlp = pylibnn.MLP.from_sequential(seq)
    assert mlp.activation == "gelu_tanh" and mlp.sizes == [4, 9, 3]
    x = torch.randn(6, 4)
    torch.testing.assert_close(mlp(x), seq(x))
    assert mlp[0].weight.data_ptr() != seq[0].weight.data_ptr()  # copies, not shared
    plain = pylibnn.MLP.from_sequential(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)))
    assert plain.activation is None
    for bad in [nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1), nn.ReLU()),
                nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)),
                nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1)),
                nn.Sequential(nn.Linear(2, 3), nn.Dropout(), nn.Linear(3, 1)),
                nn.Sequential(nn.ReLU())]:
        with pytest.raises(ValueError, match="pylibnn.MLP.from_sequential"):
            pylibnn.MLP.from_sequential(bad)


def test_constructor_rejects_bad_arguments():
    for sizes in [[3], [3, -1], [3.0, 2], "32"]:
        with pytest.raises(ValueError, match="pylibnn.MLP: expected sizes"):
            pylibnn.MLP(sizes)
    with pytest.raises(ValueError, match="pylibnn.MLP: expected activation"):
        pylibnn.MLP([2, 3], activation="softplus")


@pytest.mark.parametrize("device", DEVICES)
def test_hidden_layout(device):
    # z_l and act(z_l) in 16-column bands, rows rounded up to 8, zeros in the padding.
    torch.manual_seed(0)
    x = make_tensor((11, 3), torch.float32, device, 1)
    w = [make_tensor((20, 3), torch.float32, device, 2), make_tensor((5, 20), torch.float32, device, 3),
         make_tensor((2, 5), torch.float32, device, 4)]
    b = [make_tensor((20,), torch.float32, device, 5), None, make_tensor((2,), torch.float32, device, 6)]
    _, hidden = pylibnn.ops.mlp_forward(x, w, b, "sigmoid", True)
    assert hidden.shape == pylibnn.ops.mlp_hidden_shape(11, [20, 5, 2], "sigmoid") == (16, 2 * (32 + 16))
    z0 = F.linear(x, w[0], b[0])
    z1 = F.linear(torch.sigmoid(z0), w[1])
    expected = torch.zeros(16, 96, device=device)
    expected[:11, 0:20], expected[:11, 32:37] = z0, z1
    expected[:11, 48:68], expected[:11, 80:85] = torch.sigmoid(z0), torch.sigmoid(z1)
    torch.testing.assert_close(hidden, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", TRACEABLE_DEVICES)
def test_compile_and_export(device):
    torch._dynamo.reset()
    torch.manual_seed(0)
    mlp = pylibnn.MLP([3, 16, 16, 2], activation="silu", device=device)
    x = make_tensor((9, 3), torch.float32, device, 1, True)
    assert torch._dynamo.explain(mlp)(x).graph_break_count == 0
    compiled = torch.compile(mlp, fullgraph=True, dynamic=True)
    y = compiled(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    mlp(x).square().sum().backward()
    torch.testing.assert_close(y, mlp(x))
    for ours, eager in zip(grads, [p.grad for p in mlp.parameters()]):
        torch.testing.assert_close(ours, eager)
    batch = torch.export.Dim("batch")
    exported = torch.export.export(mlp, (x.detach(),), dynamic_shapes=({0: batch},))
    x2 = make_tensor((5, 3), torch.float32, device, 2)
    torch.testing.assert_close(exported.module()(x2), mlp(x2))
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision(device, dtype):
    torch.manual_seed(0)
    mlp = pylibnn.MLP([8, 16, 4], activation="gelu", device=device, dtype=dtype)
    x = make_tensor((10, 8), dtype, device, 1, True)
    y = mlp(x)
    y.float().sum().backward()
    assert y.dtype == dtype and x.grad.dtype == dtype and mlp[0].weight.grad.dtype == dtype
    seq = mlp.to_sequential().float()
    expected = seq(x.detach().float())
    torch.testing.assert_close(y.float(), expected, rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("act", [None, "relu"])
@pytest.mark.parametrize("device", DEVICES)
def test_tutorial_training_matches_reference(device, act):
    # The tutorial's network (act None) and its next step (an activation between the
    # layers), as one fused MLP, against the pure-torch scratch network.
    for seed in range(3):
        runs = reference.train_side_by_side(seed=seed, device=device, model="mlp", activation=act)
        for epoch, (ref, ours) in enumerate(zip(runs.reference_losses, runs.pylibnn_losses), start=1):
            assert abs(ours - ref) <= TUTORIAL_RTOL * abs(ref), f"seed {seed} epoch {epoch}: {ours!r} vs {ref!r}"
        if seed == 0:  # it trains (other seeds' ReLU networks may lose units and stall)
            assert runs.pylibnn_losses[-1] < 0.01 * runs.pylibnn_losses[0]


@pytest.mark.parametrize("device", DEVICES)
def test_autocast(device):
    # Like F.linear under autocast: float32 parameters, the product in the autocast dtype,
    # gradients back in float32.
    dtype = torch.bfloat16
    torch.manual_seed(0)
    mlp = pylibnn.MLP([8, 16, 4], activation="relu", device=device)
    layer = pylibnn.Linear(8, 5, activation="tanh", device=device)
    x = make_tensor((6, 8), torch.float32, device, 1, True)
    with torch.autocast(device_type=device, dtype=dtype):
        y, z = mlp(x), layer(x)
        expected_y, expected_z = mlp.to_sequential()(x), torch.tanh(torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert y.dtype == dtype and z.dtype == dtype
    torch.testing.assert_close(y, expected_y, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(z, expected_z, rtol=2e-2, atol=2e-2)
    (y.float().sum() + z.float().sum()).backward()
    assert x.grad.dtype == torch.float32 and mlp[0].weight.grad.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_partial_requires_grad(device):
    # Frozen layers, an input that needs no gradient, and create_graph through a frozen
    # network: gradients flow exactly where the Sequential's do.
    torch.manual_seed(0)
    mlp = pylibnn.MLP([5, 12, 3], activation="silu", device=device, dtype=torch.float64)
    seq = mlp.to_sequential()
    x = make_tensor((7, 5), torch.float64, device, 1)
    for frozen in (["0.weight"], ["0.weight", "0.bias", "2.weight", "2.bias"], []):
        for module in (mlp, seq):
            for name, p in module.named_parameters():
                p.requires_grad_(name not in frozen)
        for x_grad in (False, True):
            xs = [x.detach().clone().requires_grad_(x_grad) for _ in range(2)]
            outs = [mlp(xs[0]), seq(xs[1])]
            if not outs[1].requires_grad:
                assert not outs[0].requires_grad
                continue
            for out in outs:
                out.square().sum().backward()
            if x_grad:
                torch.testing.assert_close(xs[0].grad, xs[1].grad)
            for (name, p), q in zip(mlp.named_parameters(), seq.parameters()):
                assert (p.grad is None) == (name in frozen) == (q.grad is None), name
                if p.grad is not None:
                    torch.testing.assert_close(p.grad, q.grad)
            mlp.zero_grad(set_to_none=True)
            seq.zero_grad(set_to_none=True)
    # A gradient penalty through frozen weights: d/dx of |d out/dx|^2.
    x2 = x.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(mlp(x2).sum(), x2, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x2)
    x3 = x.detach().clone().requires_grad_()
    (h,) = torch.autograd.grad(seq(x3).sum(), x3, create_graph=True)
    (hh,) = torch.autograd.grad(h.square().sum(), x3)
    torch.testing.assert_close(gg, hh)


def test_non_tensor_input_is_a_type_error():
    # As pylibnn.linear and nn.Sequential (F.linear) do: TypeError naming the type.
    np = pytest.importorskip("numpy")
    mlp = pylibnn.MLP([3, 4, 2])
    with pytest.raises(TypeError, match="pylibnn.MLP: expected input to be a Tensor, but got ndarray"):
        mlp(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="pylibnn.MLP: expected input to be a Tensor, but got list"):
        mlp([[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("device", DEVICES)
def test_first_weight_updated_between_forward_and_backward(device):
    # An input without grad: nn.Sequential does not save the first weight (only grad_input
    # reads it), so updating it in place before backward is no error there, and the weight
    # gradients are those of the forward's values. pylibnn.MLP must agree.
    torch.manual_seed(0)
    mlp = pylibnn.MLP([5, 7, 3], activation="tanh", device=device, dtype=torch.float64)
    seq = mlp.to_sequential()
    x = make_tensor((6, 5), torch.float64, device, 1)
    outs = [mlp(x), seq(x)]
    with torch.no_grad():
        for module in (mlp, seq):
            module[0].weight.mul_(2.0)
    for out in outs:
        out.square().sum().backward()
    for (name, p), q in zip(mlp.named_parameters(), seq.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12, msg=name)

    # With an input that requires grad the weight is needed, and both refuse alike.
    for module in (mlp, seq):
        xg = x.detach().clone().requires_grad_()
        out = module(xg)
        with torch.no_grad():
            module[0].weight.mul_(0.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()

    # A double backward recomputes the first layer from the weight: pylibnn's clear error.
    out = mlp(x)
    with torch.no_grad():
        mlp[0].weight.add_(1.0)
    with pytest.raises(RuntimeError, match="the first layer's weight was modified by an inplace operation"):
        torch.autograd.grad(out.square().sum(), mlp[0].weight, create_graph=True)
