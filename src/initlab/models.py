"""Model factories: MLPs whose every hidden layer shares one activation.

The factories return plain ``nn.Sequential`` stacks so any scheme in :mod:`initlab.schemes`
applies to them, hooks see every layer by its ``named_modules`` name, and the batched engine
can read the architecture back from the module (see :func:`initlab.engine.mlp_layout`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

# name -> (module factory, functional form). The functional form is what the batched engine
# and the theory module evaluate; the module form is what users see in `print(model)`.
ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (nn.ReLU, torch.relu),
    "leaky_relu": (nn.LeakyReLU, nn.functional.leaky_relu),  # negative slope 0.01, torch's default
    "tanh": (nn.Tanh, torch.tanh),
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
    "selu": (nn.SELU, nn.functional.selu),
    "elu": (nn.ELU, nn.functional.elu),
    "gelu": (nn.GELU, nn.functional.gelu),
    "silu": (nn.SiLU, nn.functional.silu),
    "linear": (nn.Identity, lambda x: x),
}


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, else raise a one-line ValueError."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose from: {', '.join(ACTIVATIONS)}")
    return name


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The functional form of a named activation (``torch.relu`` for ``"relu"``, ...)."""
    return ACTIVATIONS[check_activation(name)][1]


def check_widths(hidden: Sequence[int]) -> tuple[int, ...]:
    """Validate hidden widths: a sequence of positive ints (empty means a linear classifier)."""
    widths = tuple(hidden)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
            raise ValueError(f"hidden width must be a positive integer, got {w!r}")
    return widths


def mlp(
    in_features: int,
    hidden: Sequence[int] = (128,),
    out_features: int = 10,
    activation: str = "relu",
    *,
    bias: bool = True,
) -> nn.Sequential:
    """A multilayer perceptron ``in -> hidden[0] -> ... -> out`` with ``activation`` between layers.

    ``mlp(784, [128], 10)`` is the seed notebook's 784-128-10 ReLU network. No activation follows
    the last layer: it returns logits. Layers are named ``fc1, act1, fc2, act2, ..., fcL``.
    """
    check_activation(activation)
    widths = check_widths(hidden)
    for name, n in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")
    sizes = (in_features, *widths, out_features)
    layers: dict[str, nn.Module] = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(n_in, n_out, bias=bias)
        if i < len(sizes) - 1:
            layers[f"act{i}"] = ACTIVATIONS[activation][0]()
    return nn.Sequential(OrderedDict(layers))


def parse_int_list(text: str | Sequence[int], what: str) -> list:
    """``"256,256"`` (CLI form) -> ``[256, 256]``; a sequence passes through. ``what`` names it in errors."""
    if not isinstance(text, str):
        return list(text)
    try:
        return [int(p.strip()) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated positive integers, got '{text}'") from None


def parse_hidden(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"256,256"`` (CLI form) or a sequence into validated hidden widths."""
    return check_widths(parse_int_list(text, "hidden widths"))
