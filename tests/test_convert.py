"""pylibnn.convert and Linear.from_linear: swapping pylibnn in for the nn.Linear layers of
existing models, on models built from a config (torch's own TransformerEncoder, an
MLP-Mixer written here, and Hugging Face BERT and Llama when transformers is installed;
nothing is downloaded). Converted models give the outputs and gradients of the original."""

import pytest
import torch
from torch import nn

import pylibnn
from conftest import CUDA_BACKENDS, make_tensor


def _linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear) and not isinstance(m, pylibnn.Linear)]


def _pylibnn_linears(model):
    return [m for m in model.modules() if isinstance(m, pylibnn.Linear)]


# ---------------------------------------------------------------------------------------
# One layer.

@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_shares_parameters(bias):
    layer = nn.Linear(4, 3, bias=bias).eval()
    new = pylibnn.Linear.from_linear(layer)
    assert type(new) is pylibnn.Linear and not new.training
    assert new.weight is layer.weight and new.bias is layer.bias
    assert (new.in_features, new.out_features) == (4, 3) and repr(new) == "pylibnn." + repr(layer)
    assert type(layer) is nn.Linear  # the original is left as it was
    x = make_tensor((2, 4), torch.float64, "cpu", 1)
    torch.testing.assert_close(new(x.float()), layer(x.float()))


def test_from_linear_rejects_other_modules():
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        pylibnn.Linear.from_linear(nn.Conv1d(2, 2, 1))


def test_convert_a_single_layer():
    layer = nn.Linear(4, 3)
    new = pylibnn.convert(layer, inplace=True)
    assert type(new) is pylibnn.Linear and new.weight is layer.weight
    copied = pylibnn.convert(layer)
    assert type(copied) is pylibnn.Linear and copied.weight is not layer.weight
    assert torch.equal(copied.weight, layer.weight)


class Custom(nn.Linear):
    """An nn.Linear subclass with a forward of its own: not a drop-in candidate."""

    def forward(self, x):
        return super().forward(x) * 2


def _nested():
    shared = nn.Linear(6, 6)
    return nn.Sequential(
        nn.Linear(4, 6),
        nn.ModuleList([shared, nn.ReLU(), shared]),
        nn.ModuleDict({"head": nn.Linear(6, 2, bias=False), "kept": pylibnn.Linear(2, 2), "custom": Custom(2, 2)}),
    )


def test_convert_copy_leaves_the_input_untouched():
    model = _nested()
    before = {name: p for name, p in model.named_parameters()}
    types_before = [type(m) for m in model.modules()]
    converted = pylibnn.convert(model)
    assert converted is not model
    assert [type(m) for m in model.modules()] == types_before
    assert all(p is before[name] for name, p in model.named_parameters())
    # The copy: new Parameter objects with equal values, same names.
    after = dict(converted.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n] is not before[n] and torch.equal(after[n], before[n]) for n in before)
    assert len(_linears(converted)) == 1  # only the custom subclass is left


def test_convert_inplace_keeps_the_parameter_objects():
    model = _nested()
    before = {name: p for name, p in model.named_parameters()}
    kept = model[2]["kept"]
    converted = pylibnn.convert(model, inplace=True)
    assert converted is model
    assert all(p is before[name] for name, p in model.named_parameters())
    assert type(model[0]) is pylibnn.Linear and type(model[2]["head"]) is pylibnn.Linear
    assert model[1][0] is model[1][2] and type(model[1][0]) is pylibnn.Linear  # shared stays shared
    assert model[2]["kept"] is kept                                            # already pylibnn
    assert type(model[2]["custom"]) is Custom                                  # own forward: kept


def test_convert_rejects_non_modules():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        pylibnn.convert(torch.zeros(2))


# ---------------------------------------------------------------------------------------
# Models. Each is built in float64 with dropout off, converted, and run on the same input;
# outputs and every parameter's gradient must match the original.

class MixerBlock(nn.Module):
    """MLP-Mixer (Tolstikhin et al. 2021): an MLP across tokens, then one across channels."""

    def __init__(self, tokens, channels, token_hidden, channel_hidden):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(channels, channel_hidden), nn.GELU(),
                                         nn.Linear(channel_hidden, channels))

    def forward(self, x):  # (B, tokens, channels)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(nn.Module):
    def __init__(self, image=8, patch=4, channels=16, depth=2, classes=5):
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch = patch
        self.embed = nn.Linear(3 * patch * patch, channels)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, channels, 8, 32) for _ in range(depth)])
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, images):  # (B, 3, H, W)
        p = self.patch
        patches = images.unfold(2, p, p).unfold(3, p, p)            # (B, 3, H/p, W/p, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        return self.head(self.norm(self.blocks(self.embed(patches))).mean(1))


def _mixer(device):
    return MLPMixer().to(device), (make_tensor((2, 3, 8, 8), torch.float64, device, 11),)


def _transformer_encoder(device):
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False), nn.Linear(16, 3))
    return model.to(device), (make_tensor((2, 5, 16), torch.float64, device, 12),)


def _bert(device):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(13)).to(device)
    return transformers.BertModel(config).to(device), (ids,)


def _llama(device):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, intermediate_size=32, max_position_embeddings=16,
                                      tie_word_embeddings=True)
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(14)).to(device)
    return transformers.LlamaForCausalLM(config).to(device), (ids,)


MODELS = {"mlp-mixer": _mixer, "transformer-encoder": _transformer_encoder, "bert": _bert, "llama": _llama}


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    return output[0]  # transformers' ModelOutput: last_hidden_state / logits


def _test_converted_model_matches(device, name):
    torch.manual_seed(0)
    model, inputs = MODELS[name](device)
    model = model.double().eval()  # eval: no dropout anywhere, so the two runs see the same graph
    count = len(_linears(model))
    converted = pylibnn.convert(model)
    assert len(_linears(model)) == count > 0                   # the original is untouched
    assert len(_pylibnn_linears(converted)) == count and not _linears(converted)

    out_original, out_converted = _first_tensor(model(*inputs)), _first_tensor(converted(*inputs))
    torch.testing.assert_close(out_converted, out_original)
    out_original.square().sum().backward()
    out_converted.square().sum().backward()
    original_params, converted_params = dict(model.named_parameters()), dict(converted.named_parameters())
    assert original_params.keys() == converted_params.keys()
    for key, p in original_params.items():
        if p.grad is None:
            assert converted_params[key].grad is None, key
        else:
            torch.testing.assert_close(converted_params[key].grad, p.grad, msg=key)


@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_matches_cpu(name):
    _test_converted_model_matches("cpu", name)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_matches_cuda(device, name):
    _test_converted_model_matches(device, name)


def test_convert_keeps_tied_weights():
    # Llama with tied embeddings: lm_head.weight is the embedding matrix; still after convert.
    model, _ = _llama("cpu")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    converted = pylibnn.convert(model)
    assert type(converted.lm_head) is pylibnn.Linear
    assert converted.lm_head.weight is converted.model.embed_tokens.weight
