"""pylibnn.Linear against torch.nn.Linear: init, state_dict both ways, repr (under pylibnn's name), kwargs, forward."""

import pytest
import torch
from torch import nn

import pylibnn
from conftest import DEVICES, DTYPES, assert_close_to_reference, make_tensor, reference_linear

LAYER_ARGS = [
    pytest.param((7, 5, True), id="7to5-bias"),
    pytest.param((7, 5, False), id="7to5-nobias"),
    pytest.param((1, 1, True), id="1to1"),
    pytest.param((300, 130, True), id="300to130"),
]


def _pair(in_features, out_features, bias, seed=0, **kwargs):
    torch.manual_seed(seed)
    ours = pylibnn.Linear(in_features, out_features, bias=bias, **kwargs)
    torch.manual_seed(seed)
    theirs = nn.Linear(in_features, out_features, bias=bias, **kwargs)
    return ours, theirs


def test_is_a_drop_in_subclass():
    layer = pylibnn.Linear(3, 2)
    assert isinstance(layer, nn.Linear)
    assert layer.in_features == 3 and layer.out_features == 2
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    y = layer(torch.ones(2, 3))
    # The node recorded is the C++ autograd of pylibnn's linear_forward op.
    assert "pylibnn" in y.grad_fn.name() and "LinearForward" in y.grad_fn.name(), \
        f"forward must run on pylibnn's kernels, got {y.grad_fn.name()}"


@pytest.mark.parametrize("args", LAYER_ARGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_same_init_under_seed(args, seed):
    ours, theirs = _pair(*args, seed=seed)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    # And the seed matters: a different seed gives different weights.
    other, _ = _pair(*args, seed=seed + 10)
    assert not torch.equal(other.weight, ours.weight)


@pytest.mark.parametrize("args", LAYER_ARGS)
def test_state_dict_both_ways(args):
    ours, theirs = _pair(*args, seed=0)
    torch.manual_seed(123)
    source = nn.Linear(*args[:2], bias=args[2])  # different values from `ours`
    result = ours.load_state_dict(source.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for name, value in source.state_dict().items():
        assert torch.equal(getattr(ours, name), value), f"nn.Linear -> pylibnn.Linear: {name}"
    ours_values = {k: v.clone() for k, v in ours.state_dict().items()}
    with torch.no_grad():
        ours.weight.mul_(2)  # change it, then hand it back to an nn.Linear
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert torch.equal(theirs.weight, 2 * ours_values["weight"])
    if args[2]:
        assert torch.equal(theirs.bias, ours_values["bias"])


def test_state_dict_mismatch_is_rejected():
    # strict loading between bias and no-bias layers fails the same way nn.Linear does.
    with pytest.raises(RuntimeError, match="bias"):
        pylibnn.Linear(3, 2, bias=False).load_state_dict(nn.Linear(3, 2).state_dict())


@pytest.mark.parametrize("args", LAYER_ARGS)
def test_repr_and_extra_repr_match(args):
    # nn.Linear's repr under pylibnn's name, so a printed model shows which layers are pylibnn's.
    ours, theirs = _pair(*args)
    assert repr(ours) == "pylibnn." + repr(theirs)
    assert ours.extra_repr() == theirs.extra_repr()


def test_bias_false():
    layer = pylibnn.Linear(4, 3, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    x = make_tensor((2, 4), torch.float32, "cpu", 1)
    torch.testing.assert_close(layer(x), x @ layer.weight.detach().t(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_device_dtype_kwargs(device, dtype):
    ours, theirs = _pair(6, 4, True, device=device, dtype=dtype)
    for layer in (ours, theirs):
        assert layer.weight.dtype == dtype and layer.bias.dtype == dtype
        assert layer.weight.device.type == device and layer.bias.device.type == device
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    x = make_tensor((3, 6), dtype, device, 5)
    y = ours(x)
    assert y.dtype == dtype and y.device.type == device


def test_meta_device():
    # The fake kernels let a module on the meta device trace shapes without data.
    layer = pylibnn.Linear(6, 4, device="meta")
    assert layer.weight.is_meta
    y = layer(torch.empty(2, 3, 6, device="meta"))
    assert y.is_meta and y.shape == (2, 3, 4)


def _test_forward_backward_match(device, dtype):
    ours, theirs = _pair(129, 40, True, seed=3, device=device, dtype=dtype)
    x = make_tensor((2, 5, 129), dtype, device, 4)
    gy = make_tensor((2, 5, 40), dtype, device, 6)
    expected = reference_linear(x, theirs.weight, theirs.bias, gy)
    y = ours(x.requires_grad_())
    y.backward(gy)
    got = {"output": y, "grad_input": x.grad, "grad_weight": ours.weight.grad, "grad_bias": ours.bias.grad}
    for name, (ref, bound) in expected.items():
        assert_close_to_reference(got[name], ref, bound, dtype, f"Linear {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_forward_backward_match_nn_linear(device, dtype):
    _test_forward_backward_match(device, dtype)


def test_parameters_train_with_optimizer():
    # One SGD step moves the same parameters by the same amounts as nn.Linear's.
    ours, theirs = _pair(5, 3, True, dtype=torch.float64)
    x = make_tensor((4, 5), torch.float64, "cpu", 7)
    for layer in (ours, theirs):
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        layer(x).pow(2).sum().backward()
        opt.step()
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=1e-12, atol=1e-12)
