"""Serialization and copies: torch.save / torch.load of whole models and of state_dicts (to
and from nn.Linear models), copy.deepcopy and pickle. A restored model is a pylibnn model
with the same values, and computes the same outputs."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import pylibnn
from conftest import DEVICES, make_tensor


def _model(device, cls=pylibnn.Linear):
    torch.manual_seed(0)
    return nn.Sequential(cls(5, 7, device=device), nn.ReLU(), cls(7, 3, bias=False, device=device))


def _assert_same_model(restored, original, device):
    assert [type(m) for m in restored.modules()] == [type(m) for m in original.modules()]
    assert restored.state_dict().keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert restored.state_dict()[key].device == value.device
        assert torch.equal(restored.state_dict()[key], value), key
    x = make_tensor((4, 5), torch.float32, device, 1)
    assert torch.equal(restored(x), original(x))


def _round_trip(obj, **load_kwargs):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, **load_kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_save_load_whole_model(device):
    model = _model(device)
    restored = _round_trip(model, weights_only=False)
    assert restored is not model and restored[0].weight is not model[0].weight
    _assert_same_model(restored, model, device)


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip(device):
    model = _model(device)
    state = _round_trip(model.state_dict(), weights_only=True)
    fresh = _model(device)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(state)
    _assert_same_model(fresh, model, device)


@pytest.mark.parametrize("direction", ["nn-to-pylibnn", "pylibnn-to-nn"])
def test_state_dict_between_nn_and_pylibnn(direction):
    source_cls, target_cls = (nn.Linear, pylibnn.Linear) if direction == "nn-to-pylibnn" else (pylibnn.Linear, nn.Linear)
    source = _model("cpu", source_cls)
    target = _model("cpu", target_cls)
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    target.load_state_dict(_round_trip(source.state_dict(), weights_only=True))
    x = make_tensor((4, 5), torch.float64, "cpu", 1).float()
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)
    torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("device", DEVICES)
def test_deepcopy(device):
    model = _model(device)
    clone = copy.deepcopy(model)
    assert clone[0].weight is not model[0].weight
    _assert_same_model(clone, model, device)
    # The copy trains on its own.
    clone(make_tensor((4, 5), torch.float32, device, 2)).sum().backward()
    assert clone[0].weight.grad is not None and model[0].weight.grad is None


def test_pickle():
    model = _model("cpu")
    restored = pickle.loads(pickle.dumps(model))
    _assert_same_model(restored, model, "cpu")
    layer = pickle.loads(pickle.dumps(pylibnn.Linear(3, 2)))
    assert type(layer) is pylibnn.Linear


def test_converted_model_saves_and_loads():
    # convert() then save: the converted model is an ordinary pylibnn model.
    converted = pylibnn.convert(_model("cpu", nn.Linear))
    _assert_same_model(_round_trip(converted, weights_only=False), converted, "cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_save_load_copy_pickle(device):
    torch.manual_seed(0)
    mlp = pylibnn.MLP([5, 7, 3], activation="gelu", device=device)
    x = make_tensor((4, 5), torch.float32, device, 1)
    for restored in (_round_trip(mlp, weights_only=False), copy.deepcopy(mlp), pickle.loads(pickle.dumps(mlp))):
        assert type(restored) is pylibnn.MLP and restored.activation == "gelu" and restored.sizes == [5, 7, 3]
        assert torch.equal(restored(x), mlp(x))
    state = _round_trip(mlp.state_dict())
    fresh = pylibnn.MLP([5, 7, 3], activation="gelu", device=device)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), mlp(x))
