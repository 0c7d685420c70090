"""pylibnn.unconvert: pylibnn's layers back to torch's, and how a converted model prints.

unconvert turns every pylibnn.Linear into an nn.Linear (an nn.Sequential of the nn.Linear and
the activation module where one was fused) and every pylibnn.MLP into its nn.Sequential,
sharing (inplace=True) or copying the parameters as convert does. The unconverted model is
computed by torch alone, so its float64 outputs are the reference; the pylibnn model must
agree within the float32 tolerance of test_onnx (1e-5 of the output's scale).
"""

import pytest
import torch
from torch import nn

import pylibnn
from conftest import make_tensor

RTOL, ATOL = 1e-5, 1e-6


def _modules_of_pylibnn(model):
    return [m for m in model.modules() if isinstance(m, (pylibnn.Linear, pylibnn.MLP))]


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        shared = pylibnn.Linear(8, 8, activation="gelu")
        self.blocks = nn.ModuleList([shared, nn.LayerNorm(8), shared])  # one layer at two places
        self.mlp = pylibnn.MLP([8, 16, 8], activation="silu")
        self.plain = pylibnn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(self.plain(x) + self.mlp(x))


def _assert_close_to_float64(actual, reference):
    bound = RTOL * reference.abs().max().item() + ATOL
    error = (actual.detach().double() - reference.detach()).abs().max().item()
    assert error <= bound, f"largest error {error:.3e} > bound {bound:.3e}"


def test_unconvert_model():
    torch.manual_seed(0)
    model = Model()
    x = make_tensor((5, 8), torch.float32, "cpu", 1)
    torch_model = pylibnn.unconvert(model)
    assert not _modules_of_pylibnn(torch_model) and _modules_of_pylibnn(model)  # the original is untouched
    assert type(torch_model.plain) is nn.Linear and type(torch_model.head) is nn.Linear
    assert type(torch_model.mlp) is nn.Sequential
    assert [type(m) for m in torch_model.mlp] == [nn.Linear, nn.SiLU, nn.Linear]
    fused = torch_model.blocks[0]
    assert type(fused) is nn.Sequential and [type(m) for m in fused] == [nn.Linear, nn.GELU]
    assert torch_model.blocks[2] is fused  # still one layer at two places
    # Copies: equal values, not the same Parameter objects.
    assert torch_model.plain.weight is not model.plain.weight
    assert torch.equal(torch_model.plain.weight, model.plain.weight)

    reference = pylibnn.unconvert(model).double()(x.double())
    _assert_close_to_float64(model(x), reference)
    _assert_close_to_float64(torch_model(x), reference)

    # state_dicts: identical but for the fused layers, whose parameters moved under ".0".
    renamed = {key.replace("blocks.0.", "blocks.0.0.").replace("blocks.2.", "blocks.2.0."): value
               for key, value in model.state_dict().items()}
    assert list(torch_model.state_dict()) == list(renamed)
    for key, value in torch_model.state_dict().items():
        assert torch.equal(value, renamed[key]), key


def test_unconvert_inplace_shares_parameters():
    torch.manual_seed(0)
    model = Model().train(False)
    parameters = dict(model.named_parameters())
    result = pylibnn.unconvert(model, inplace=True)
    assert result is model and not _modules_of_pylibnn(model)
    assert model.plain.weight is parameters["plain.weight"]
    assert model.blocks[0][0].weight is parameters["blocks.0.weight"]
    assert model.mlp[0].weight is parameters["mlp.0.weight"]
    assert not any(m.training for m in model.modules())  # training modes kept


@pytest.mark.parametrize("activation", [None, "relu", "gelu_tanh", "sigmoid"], ids=str)
def test_unconvert_single_layer_and_mlp(activation):
    torch.manual_seed(0)
    layer = pylibnn.Linear(4, 3, bias=False, activation=activation)
    plain = pylibnn.unconvert(layer, inplace=True)
    linear = plain if activation is None else plain[0]
    assert type(linear) is nn.Linear and linear.weight is layer.weight and linear.bias is None
    x = make_tensor((2, 4), torch.float32, "cpu", 2)
    _assert_close_to_float64(layer(x), plain.double()(x.double()))

    mlp = pylibnn.MLP([4, 6, 3], activation=activation)
    sequential = pylibnn.unconvert(mlp)
    assert type(sequential) is nn.Sequential
    assert list(sequential.state_dict()) == list(mlp.state_dict())
    _assert_close_to_float64(mlp(x), sequential.double()(x.double()))


def test_convert_then_unconvert_round_trip():
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    back = pylibnn.unconvert(pylibnn.convert(original))
    assert [type(m) for m in back] == [nn.Linear, nn.ReLU, nn.Linear]
    assert list(back.state_dict()) == list(original.state_dict())
    x = make_tensor((3, 4), torch.float32, "cpu", 3)
    assert torch.equal(back(x), original(x))  # torch's own kernels on equal values


def test_convert_leaves_mlp_layers_alone():
    mlp = pylibnn.MLP([4, 6, 3])
    converted = pylibnn.convert(nn.Sequential(mlp, nn.Linear(3, 3)))
    assert type(converted[1]) is pylibnn.Linear
    assert all(type(m) is nn.Linear for m in converted[0].layers)
    assert all(type(m) is nn.Linear for m in pylibnn.convert(mlp).layers)


def test_unconvert_rejects_non_modules_and_keeps_custom_subclasses():
    with pytest.raises(TypeError, match="pylibnn.unconvert: expected an nn.Module, got Tensor"):
        pylibnn.unconvert(torch.zeros(1))

    class Doubled(pylibnn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(Doubled(2, 2))
    assert type(pylibnn.unconvert(model)[0]) is Doubled  # computes something else: kept


def test_printed_model_shows_pylibnn_layers():
    model = pylibnn.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False)))
    model.append(pylibnn.MLP([2, 5, 1], activation="tanh"))
    text = repr(model)
    assert "(0): pylibnn.Linear(in_features=4, out_features=3, bias=True)" in text
    assert "(2): pylibnn.Linear(in_features=3, out_features=2, bias=False)" in text
    assert "(3): pylibnn.MLP(\n    sizes=[2, 5, 1], activation='tanh', bias=True" in text
    assert "(0): Linear(in_features=2, out_features=5, bias=True)" in text  # the MLP's children are torch's
    # The names stay torch's: state_dict keys are the unconverted model's.
    assert list(model.state_dict()) == list(pylibnn.unconvert(model).state_dict())
