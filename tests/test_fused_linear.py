"""Fused activations: pylibnn.linear(..., activation=) and pylibnn.Linear(..., activation=)
against act(F.linear(...)) in float64, their gradients, the linear_act_backward op on its
own, gradcheck / gradgradcheck, opcheck, torch.compile, and the module's torch manners.

Tolerance. y = act(z) with z a sum of K products: the error of z (the bound of conftest)
passes through act with a gain of at most sup|act'| (LIPSCHITZ below), and act itself adds a
few ulps of |y| (SLEEF's 1-ulp exp/tanh/erf and a handful of roundings in each formula:
ACT_ULPS). Gradients: grad_z = grad_y act'(z) carries, besides its rounding, the error of z
times sup|act''| (CURVATURE); the products then sum N (grad_input) or M (grad_weight,
grad_bias) such terms. The magnitudes below are the float64 sums of absolute terms, as in
conftest, scaled by those constants.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.library import opcheck

import pylibnn
from conftest import DEVICES, DTYPES, EPS, ERROR_FACTOR, TRACEABLE_DEVICES, make_tensor, seed_for

ACTIVATIONS = ["relu", "gelu", "gelu_tanh", "silu", "tanh", "sigmoid"]
TORCH_ACTIVATION = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
TORCH_MODULE = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
                "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
# sup |act'| and sup |act''| over the reals (relu'' is 0 away from the kink).
LIPSCHITZ = {"relu": 1.0, "gelu": 1.13, "gelu_tanh": 1.13, "silu": 1.1, "tanh": 1.0, "sigmoid": 0.25}
CURVATURE = {"relu": 0.0, "gelu": 0.8, "gelu_tanh": 0.8, "silu": 0.5, "tanh": 0.77, "sigmoid": 0.1}
ACT_ULPS = 8

# (M, K, N): the direct path, the dot path (thin, K >= 64), the blocked engine with edge
# tiles, and the empty cases.
SHAPES = [(4, 3, 3), (5, 70, 9), (67, 129, 45), (0, 5, 4), (3, 0, 4), (3, 5, 0)]


def _reference(x, w, b, gy, act):
    """float64 act(F.linear) and its gradients, with the magnitudes the bound scales."""
    x64, w64 = x.detach().double().cpu().requires_grad_(), w.detach().double().cpu().requires_grad_()
    b64 = None if b is None else b.detach().double().cpu().requires_grad_()
    z = F.linear(x64, w64, b64)
    y = TORCH_ACTIVATION[act](z)
    inputs = [t for t in (x64, w64, b64) if t is not None]
    grads = torch.autograd.grad(y, inputs, gy.double().cpu(), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
    with torch.no_grad():
        K = x64.size(-1)
        z_mag = F.linear(x64.abs(), w64.abs(), None if b64 is None else b64.abs())
        z_err = ERROR_FACTOR[x.dtype] * EPS[x.dtype] * math.sqrt(max(K, 1)) * z_mag
        # |grad_z| terms: |gy| (sup|act'| + sup|act''| * error of z / eps)
        gz_mag = gy.double().cpu().abs() * (LIPSCHITZ[act] + CURVATURE[act] * z_err / EPS[x.dtype])
        x2 = x64.reshape(math.prod(x64.shape[:-1]), K).abs()
        gz2 = gz_mag.reshape(x2.size(0), w64.size(0))
        result = {"output": (y.detach(), LIPSCHITZ[act] * z_mag + ACT_ULPS * y.detach().abs() / math.sqrt(max(K, 1)), K),
                  "grad_input": (grads[0], (gz2 @ w64.abs()).reshape(x64.shape), w64.size(0)),
                  "grad_weight": (grads[1], gz2.t() @ x2, x2.size(0))}
        if b64 is not None:
            result["grad_bias"] = (grads[2], gz2.sum(0), x2.size(0))
    return result


def _assert_close(actual, expected, magnitude, depth, dtype, what):
    actual64 = actual.detach().double().cpu()
    assert actual.dtype == dtype and actual64.shape == expected.shape, what
    bound = ERROR_FACTOR[dtype] * EPS[dtype] * math.sqrt(max(depth, 1)) * magnitude
    error = (actual64 - expected).abs()
    bad = error > bound
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements outside the bound, largest error/bound "
                           f"{(error / bound.clamp_min(1e-300)).max().item():.3g}")


def _test_matches_reference(device, dtype, act, shape, bias=True):
    M, K, N = shape
    seed = seed_for(M, K, N, ACTIVATIONS.index(act))
    x = make_tensor((M, K), dtype, device, seed, True)
    w = make_tensor((N, K), dtype, device, seed + 1, True)
    b = make_tensor((N,), dtype, device, seed + 2, True) if bias else None
    gy = make_tensor((M, N), dtype, device, seed + 3)
    y = pylibnn.linear(x, w, b, activation=act)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, inputs, gy, allow_unused=True)
    expected = _reference(x, w, b, gy, act)
    _assert_close(y, *expected["output"], dtype, f"{act} output")
    names = ["grad_input", "grad_weight", "grad_bias"][:len(inputs)]
    for name, g, t in zip(names, grads, inputs):
        g = torch.zeros_like(t) if g is None else g
        _assert_close(g, *expected[name], dtype, f"{act} {name}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference(device, dtype, act, shape):
    _test_matches_reference(device, dtype, act, shape)


@pytest.mark.parametrize("act", ["gelu", "tanh"])
def test_every_cpu_path(cpu_isa, act):
    # Each micro-kernel set's epilogue and activation kernels, on the blocked and dot paths.
    for shape in [(67, 129, 45), (5, 70, 9), (4, 3, 3)]:
        _test_matches_reference("cpu", torch.float32, act, shape)


@pytest.mark.parametrize("device", DEVICES)
def test_no_bias_and_views(device):
    x = make_tensor((40, 30), torch.float32, device, 1)[::2]  # strided rows
    w = make_tensor((30, 33), torch.float32, device, 2).t()   # transposed weight
    y = pylibnn.linear(x, w, None, activation="silu")
    torch.testing.assert_close(y, F.silu(F.linear(x, w)), rtol=1e-5, atol=1e-5)
    x3 = make_tensor((2, 3, 30), torch.float32, device, 3)
    torch.testing.assert_close(pylibnn.linear(x3, w, None, activation="relu"), F.relu(F.linear(x3, w)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_backward_op_on_given_preactivation(device, act):
    # linear_act_backward alone: grad_z = grad_output * act'(z) for the z it is given.
    M, K, N = 37, 20, 50
    gy = make_tensor((M, N), torch.float64, device, 1)
    x = make_tensor((M, K), torch.float64, device, 2)
    w = make_tensor((N, K), torch.float64, device, 3)
    z = make_tensor((M, N), torch.float64, device, 4) * 3
    gx, gw, gb = pylibnn.ops.linear_act_backward(gy, x, w, z, act, [True, True, True])
    z64 = z.cpu().requires_grad_()
    (act_grad,) = torch.autograd.grad(TORCH_ACTIVATION[act](z64), z64, torch.ones_like(z64))
    gz = gy.cpu() * act_grad
    torch.testing.assert_close(gx.cpu(), gz @ w.cpu(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw.cpu(), gz.t() @ x.cpu(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb.cpu(), gz.sum(0), rtol=1e-12, atol=1e-12)
    # An unrequested gradient comes back empty.
    gx, gw, gb = pylibnn.ops.linear_act_backward(gy, x, w, z, act, [False, True, False])
    assert gx.shape == (0,) and gb.shape == (0,) and gw.shape == (N, K)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_and_gradgradcheck(device, act):
    x = make_tensor((5, 4), torch.float64, device, 1, True)
    w = make_tensor((3, 4), torch.float64, device, 2, True)
    b = make_tensor((3,), torch.float64, device, 3, True)

    def fn(x, w, b):
        return pylibnn.linear(x, w, b, activation=act)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck_backward_op(device):
    # The backward op's own autograd (used by a create_graph backward of it) in all inputs.
    gy = make_tensor((3, 5), torch.float64, device, 1, True)
    x = make_tensor((3, 4), torch.float64, device, 2, True)
    w = make_tensor((5, 4), torch.float64, device, 3, True)
    z = make_tensor((3, 5), torch.float64, device, 4, True)

    def fn(gy, x, w, z):
        return pylibnn.ops.linear_act_backward(gy, x, w, z, "gelu", [True, True, True])

    assert torch.autograd.gradcheck(fn, (gy, x, w, z))
    assert torch.autograd.gradgradcheck(fn, (gy, x, w, z))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = make_tensor((5, 4), torch.float32, device, 1, True)
    w = make_tensor((3, 4), torch.float32, device, 2, True)
    b = make_tensor((3,), torch.float32, device, 3, True)
    for args in [(x, w, b, "gelu", True), (x, w, None, "relu", False), (x.detach(), w.detach(), b.detach(), "tanh", True)]:
        opcheck(pylibnn.ops.linear_act_forward.default, args)
    gy, z = make_tensor((5, 3), torch.float32, device, 4), make_tensor((5, 3), torch.float32, device, 5)
    opcheck(pylibnn.ops.linear_act_backward.default, (gy, x, w, z, "silu", [True, True, True]))
    opcheck(pylibnn.ops.linear_act_backward.default, (gy, x.detach(), w.detach(), z, "sigmoid", [True, False, True]))


@pytest.mark.parametrize("device", TRACEABLE_DEVICES)
def test_compile_fullgraph(device):
    torch._dynamo.reset()
    layer = pylibnn.Linear(6, 5, activation="gelu_tanh", device=device)
    x = make_tensor((7, 6), torch.float32, device, 1, True)
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    y = compiled(x)
    y.square().sum().backward()
    grad_compiled = layer.weight.grad.clone()
    layer.zero_grad()
    layer(x).square().sum().backward()
    torch.testing.assert_close(y, layer(x))
    torch.testing.assert_close(grad_compiled, layer.weight.grad)
    assert torch._dynamo.explain(layer)(x).graph_break_count == 0
    torch._dynamo.reset()


def test_module_is_a_linear_with_an_activation():
    torch.manual_seed(0)
    layer = pylibnn.Linear(4, 3, activation="silu")
    assert isinstance(layer, nn.Linear)
    assert "activation='silu'" in repr(layer)
    plain = nn.Linear(4, 3)
    plain.load_state_dict(layer.state_dict())  # the same state_dict as nn.Linear's
    x = torch.randn(6, 4)
    torch.testing.assert_close(layer(x), nn.Sequential(plain, nn.SiLU())(x))
    assert pylibnn.Linear(4, 3).activation is None
    with pytest.raises(ValueError, match="pylibnn.Linear: expected activation"):
        pylibnn.Linear(4, 3, activation="softmax")


def test_bad_activation_names():
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="pylibnn.linear: expected activation to be None or one of"):
        pylibnn.linear(x, w, activation="Relu")
    with pytest.raises(ValueError, match="pylibnn.linear_act_forward: expected activation to be one of"):
        pylibnn.ops.linear_act_forward(x, w, None, "elu", False)
    with pytest.raises(ValueError, match="pylibnn.linear_act_backward: expected activation"):
        pylibnn.ops.linear_act_backward(torch.randn(2, 4), x, w, torch.randn(2, 4), "", [True, True, True])
    with pytest.raises(RuntimeError, match=r"pylibnn.linear_act_backward: expected preactivation of shape \[2, 4\]"):
        pylibnn.ops.linear_act_backward(torch.randn(2, 4), x, w, torch.randn(4, 2), "relu", [True, True, True])
    with pytest.raises(RuntimeError, match="pylibnn.linear_act_forward: expected input.size"):
        pylibnn.ops.linear_act_forward(torch.randn(2, 5), w, None, "relu", False)


@pytest.mark.parametrize("device", DEVICES)
def test_relu_passes_nan_like_torch(device):
    x = torch.tensor([[1.0, float("nan")], [-1.0, 2.0]], device=device)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], device=device)
    torch.testing.assert_close(pylibnn.linear(x, w, activation="relu"), F.relu(F.linear(x, w)), equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision(device, dtype):
    # float32 arithmetic, one rounding of z and one of act(z): within 2 ulps of the dtype.
    x = make_tensor((9, 40), dtype, device, 1)
    w = make_tensor((7, 40), dtype, device, 2)
    b = make_tensor((7,), dtype, device, 3)
    y = pylibnn.linear(x, w, b, activation="gelu")
    expected = F.gelu(F.linear(x.double(), w.double(), b.double()))
    assert y.dtype == dtype
    ulp = torch.finfo(dtype).eps
    assert ((y.double() - expected).abs() <= 2 * ulp * (expected.abs() + 1)).all()


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "silu", "gelu_tanh", "gelu"])
def test_activation_accuracy_over_the_range(cpu_isa, act):
    # The activation kernels alone (z = x * 1 exactly) against float64, densely over
    # [-20, 20] and at the edges: within 2 float32 ulps of |act(z)|, plus, for the gelus,
    # 1.5 eps |z|: z/2 (1 + erf) and z/2 (1 + tanh) round 1 + (...) to eps, which the
    # negative tail scales by |z|, and the float32 erf (Abramowitz-Stegun, as torch's) adds
    # up to 0.63 eps. (Ours reaches 0.80 of this bound; torch's own float32 F.gelu 1.6.)
    # And the same non-finite values as torch for infinities and NaN.
    z = torch.cat([torch.linspace(-20, 20, 100001), torch.linspace(-100, 100, 2001),
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-7, 0.39999, 0.4, 0.40001, 9.0, 9.02, 88.7, 88.8, -87.2,
                                 -87.4])])
    y = pylibnn.linear(z[:, None], torch.ones(1, 1), activation=act)[:, 0]
    expected = TORCH_ACTIVATION[act](z.double())
    eps = torch.finfo(torch.float32).eps
    bound = 2 * eps * expected.abs() + (1.5 * eps * z.double().abs() if act.startswith("gelu") else 0)
    checked = expected.abs() > 1e-30
    worst = ((y.double() - expected).abs() / bound)[checked].max().item()
    assert worst <= 1.0, f"{act}: largest error / bound {worst:.2f}"
    special = torch.tensor([float("inf"), -float("inf"), float("nan")])
    ours = pylibnn.linear(special[:, None], torch.ones(1, 1), activation=act)[:, 0]
    expected = TORCH_ACTIVATION[act](special)
    if act == "gelu":
        # torch's float32 gelu gives NaN at +inf (its vectorized erf); gelu(+inf) is +inf.
        expected[0] = float("inf")
    torch.testing.assert_close(ours, expected, equal_nan=True)
