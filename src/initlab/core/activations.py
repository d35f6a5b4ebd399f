"""The activations initlab knows by name: one table, for models, engines, theory and criticality.

name -> (module factory, functional form). The functional form is what the batched engine and the
mean-field theory evaluate; the module form is what users see in ``print(model)``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (nn.ReLU, torch.relu),
    "leaky_relu": (nn.LeakyReLU, nn.functional.leaky_relu),  # negative slope 0.01, torch's default
    "tanh": (nn.Tanh, torch.tanh),
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
    "selu": (nn.SELU, nn.functional.selu),
    "elu": (nn.ELU, nn.functional.elu),
    "gelu": (nn.GELU, nn.functional.gelu),
    "silu": (nn.SiLU, nn.functional.silu),
    "mish": (nn.Mish, nn.functional.mish),  # x·tanh(softplus(x)), Misra 2019
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
