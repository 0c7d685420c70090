"""``pylibnn.Linear``: a drop-in for ``torch.nn.Linear`` that runs on pylibnn's kernels;
``convert``, which swaps it in for the ``nn.Linear`` layers of an existing model, and
``unconvert``, which turns pylibnn's layers back into torch's."""

import copy
from collections import OrderedDict

from torch import nn
from torch.jit import is_scripting

from .functional import ACTIVATION_MODULES, activation_name, linear, linear_for_script
from .mlp import MLP


class Linear(nn.Linear):
    """Applies y = act(x Wᵀ + b) with pylibnn's kernels (act = identity by default).

    A subclass of ``torch.nn.Linear``: the constructor, parameters (``weight`` (out, in),
    ``bias``), initialization, state_dict and repr are nn.Linear's own, so the two load
    each other's state_dicts and code that checks ``isinstance(m, nn.Linear)`` keeps
    working. Only ``forward`` differs, and the optional ``activation`` ("relu", "gelu",
    "gelu_tanh", "silu", "tanh", "sigmoid"), fused into the layer's kernels: it equals
    ``nn.Sequential(nn.Linear(...), <the activation module>)`` with the same state_dict
    as the Linear alone.

    Its repr names it ``pylibnn.Linear(...)``, so a printed model shows which layers are
    pylibnn's. ``torch.jit.script`` compiles it (the scripted module runs pylibnn's ops).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, activation=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        activation_name(activation, "pylibnn.Linear")
        self.activation = activation

    def forward(self, input):
        if is_scripting():
            # Compiled instead of the eager path below, which TorchScript cannot compile (the
            # compiler skips the branch not taken). A module-level name: one call, ~30 ns.
            activation = self.activation
            return linear_for_script(input, self.weight, self.bias, "none" if activation is None else activation)
        return linear(input, self.weight, self.bias, self.activation)

    def _get_name(self):
        return "pylibnn.Linear"

    def extra_repr(self):
        text = super().extra_repr()
        return text if self.activation is None else f"{text}, activation={self.activation!r}"

    def __setstate__(self, state):
        # Modules pickled before `activation` existed load as plain layers.
        state.setdefault("activation", None)
        super().__setstate__(state)

    @classmethod
    def from_linear(cls, layer):
        """A ``pylibnn.Linear`` that holds ``layer``'s own Parameter objects (shared, not
        copied), in ``layer``'s training mode. ``layer`` itself is left as it was; hooks
        registered on it are not carried over."""
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"pylibnn.Linear.from_linear: expected an nn.Linear, got {type(layer).__name__}")
        # Built on the meta device: no memory and no initialization for parameters that are
        # replaced at once.
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight = layer.weight
        new.bias = layer.bias
        new.train(layer.training)
        return new


def _is_replaceable(module):
    # nn.Linear and subclasses that keep its forward (such as MultiheadAttention's
    # NonDynamicallyQuantizableLinear); a subclass with a forward of its own computes
    # something else, and pylibnn.Linear layers are already converted.
    return (isinstance(module, nn.Linear) and not isinstance(module, Linear)
            and type(module).forward is nn.Linear.forward)


def convert(module, inplace=False):
    """Replaces every ``nn.Linear`` in ``module`` (recursively) by a ``pylibnn.Linear``.

    Each replacement holds the parameters of the layer it replaces: with ``inplace=True``
    the very same Parameter objects, in ``module`` itself; otherwise ``module`` is left
    untouched and a converted deep copy is returned. A layer that appears at several places
    becomes one pylibnn.Linear at all of them. Layers that are already ``pylibnn.Linear``,
    ``nn.Linear`` subclasses with a ``forward`` of their own, and the layers inside a
    ``pylibnn.MLP`` (already fused) are kept. Returns the
    converted module (a ``pylibnn.Linear`` when ``module`` is itself an ``nn.Linear``).

    Modules that read a layer's weights without calling it (``nn.MultiheadAttention``
    passes ``out_proj.weight`` to a fused function) still compute those products with torch.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"pylibnn.convert: expected an nn.Module, got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    if _is_replaceable(module):
        return Linear.from_linear(module)
    if isinstance(module, MLP):
        return module
    replacements = {}
    visited = set()

    def visit(parent):
        if id(parent) in visited:
            return
        visited.add(id(parent))
        # _modules, not named_children(): the latter names a module seen twice only once.
        for name, child in list(parent._modules.items()):
            # An MLP's Linear children only hold its parameters: its forward does not call them.
            if child is None or isinstance(child, MLP):
                continue
            if _is_replaceable(child):
                if id(child) not in replacements:
                    replacements[id(child)] = Linear.from_linear(child)
                setattr(parent, name, replacements[id(child)])
            else:
                visit(child)

    visit(module)
    return module


def _torch_equivalent(module):
    """The torch module that computes what a pylibnn ``module`` computes, holding its
    Parameter objects; None for modules that are not pylibnn's (or subclasses with a forward
    of their own, which compute something else)."""
    if type(module).forward is Linear.forward:
        # Built on meta: no memory and no initialization for parameters replaced at once.
        layer = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
        layer.weight = module.weight
        layer.bias = module.bias
        layer.train(module.training)
        if module.activation is None:
            return layer
        return nn.Sequential(layer, ACTIVATION_MODULES[module.activation]()).train(module.training)
    if type(module).forward is MLP.forward:
        # The MLP's children are its Sequential's modules under the same names.
        return nn.Sequential(OrderedDict(module._modules)).train(module.training)
    return None


def unconvert(module, inplace=False):
    """The inverse of ``convert``: every ``pylibnn.Linear`` in ``module`` (recursively) becomes
    an ``nn.Linear``, and every ``pylibnn.MLP`` the ``nn.Sequential`` of its layers.

    A ``pylibnn.Linear`` with a fused activation becomes ``nn.Sequential(nn.Linear, <the
    activation module>)`` (as torch's own fused ``LinearReLU`` is laid out), so its
    parameters move from ``name.weight`` to ``name.0.weight``; everything else keeps its
    parameter names, and state_dicts load either way. Parameters are handled as ``convert``
    does: with ``inplace=True`` the very same Parameter objects, in ``module`` itself;
    otherwise ``module`` is left untouched and an unconverted deep copy is returned. A layer
    that appears at several places becomes one torch module at all of them. Returns the
    unconverted module (the replacement itself when ``module`` is a pylibnn layer). Hooks
    registered on the pylibnn layers are not carried over.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"pylibnn.unconvert: expected an nn.Module, got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    # Keyed by id, holding the module too: a replaced module that is freed could otherwise
    # hand its id to a new one.
    replacements = {}
    visited = {}

    def replacement(child):
        if id(child) not in replacements:
            replacements[id(child)] = (child, _torch_equivalent(child))
        return replacements[id(child)][1]

    def visit(parent):
        if id(parent) in visited:
            return
        visited[id(parent)] = parent
        # _modules, not named_children(): the latter names a module seen twice only once.
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = replacement(child)
            if new is not None:
                setattr(parent, name, new)
                child = new
            visit(child)  # an MLP's Sequential may hold converted layers

    top = replacement(module)
    module = module if top is None else top
    visit(module)
    return module
