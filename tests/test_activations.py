"""The fused activations around the ops: pylibnn.Linear(..., activation=) as an nn.Linear,
pylibnn.linear's activation argument, and the activation kernels alone against float64 over
their whole range on every CPU path. The fused ops themselves (values, gradients, gradcheck,
opcheck, compile, non-finite values, errors) are tested from the op database
(tests/opdb.py, tests/test_opdb.py), which also holds each activation's torch reference.
"""

import pytest
import torch
from torch import nn

import pylibnn
from opdb import ACTIVATION_REFERENCES


def _reference(act):
    return ACTIVATION_REFERENCES[act].torch_fn


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
    # The Python layer's own check (None or a name other than 'none'); the ops' check is in the op database.
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="pylibnn.linear: expected activation to be None or one of"):
        pylibnn.linear(x, w, activation="Relu")
    with pytest.raises(ValueError, match="pylibnn.linear: expected activation to be None or one of"):
        pylibnn.linear(x, w, activation="none")


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
    expected = _reference(act)(z.double())
    eps = torch.finfo(torch.float32).eps
    bound = 2 * eps * expected.abs() + (1.5 * eps * z.double().abs() if act.startswith("gelu") else 0)
    checked = expected.abs() > 1e-30
    worst = ((y.double() - expected).abs() / bound)[checked].max().item()
    assert worst <= 1.0, f"{act}: largest error / bound {worst:.2f}"
    special = torch.tensor([float("inf"), -float("inf"), float("nan")])
    ours = pylibnn.linear(special[:, None], torch.ones(1, 1), activation=act)[:, 0]
    expected = _reference(act)(special)
    if act == "gelu":
        # torch's float32 gelu gives NaN at +inf (its vectorized erf); gelu(+inf) is +inf.
        expected[0] = float("inf")
    torch.testing.assert_close(ours, expected, equal_nan=True)
