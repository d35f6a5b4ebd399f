"""Fans of layer types initlab does not know, inferred from one recorded forward on the example.

A module of an unknown class that owns a matrix-shaped ``weight`` (≥ 2-D) is a weight layer of some
kind, but which dimension is the input and which the output is not written anywhere. One forward on
the example answers it: a hook records the last dimension of what the module receives and of what it
returns (the feature sizes). A weight of shape (out, in, ...) is read as torch lays out Linear and
ConvNd, fans (in·∏k, out·∏k); a 2-D weight of shape (in, out) as a transposed linear (x @ W), fans
(in, out), its blocks columns. A ``bias`` of length out follows the weight's bias policy. Whatever the
forward cannot settle (the module is not called, its sizes match neither layout) stays uncovered and
named; the report says "inferred" and from what for the rest.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from initlab.graph import preserved, split_example
from initlab.schemes.layers import Target


def _unknown_weight(targets: list[Target]) -> Target | None:
    return next((t for t in targets if t.name == "weight" and t.role == "other" and t.fans is not None
                 and t.default_scheme is None and not t.keep), None)


def infer_targets(module: nn.Module, units: list, example: Any) -> list:
    """``units`` (``apply``'s (name, module, slots, targets)) with the targets of unknown weight layers replaced
    by inferred ones, when one forward of ``module`` on ``example`` tells their input and output sizes."""
    todo = {id(m): (i, m) for i, (_, m, _, targets) in enumerate(units) if _unknown_weight(targets) is not None}
    if not todo or example is None:
        return units
    sizes: dict[int, tuple[int, int]] = {}

    def hook(m, args, output):
        x = next((a for a in args if isinstance(a, Tensor)), None)
        if id(m) not in sizes and isinstance(x, Tensor) and isinstance(output, Tensor) and x.dim() and output.dim():
            sizes[id(m)] = (int(x.shape[-1]), int(output.shape[-1]))

    handles = [m.register_forward_hook(hook) for _, m in todo.values()]
    args, kwargs = split_example(example)
    try:
        with preserved(module, []), torch.no_grad():
            module.eval()
            module(*args, **kwargs)
    except Exception:  # noqa: BLE001 - a model that fails here gets no inference: its layers stay named
        return units
    finally:
        for h in handles:
            h.remove()
    out = list(units)
    for key, (i, m) in todo.items():
        if key not in sizes:
            continue
        name, mod, slots, targets = units[i]
        weight = _unknown_weight(targets)
        shape = tuple(slots["weight"].shape)
        n_in, n_out = sizes[key]
        kernel = math.prod(shape[2:]) if len(shape) > 2 else 1
        if shape[0] == n_out and (shape[1] == n_in or shape[1] * kernel == n_in or len(shape) > 2):
            fans, dim, how = (shape[1] * kernel, shape[0] * kernel), 0, "stored (out, in)"
        elif len(shape) == 2 and shape == (n_in, n_out):
            fans, dim, how = (n_in, n_out), 1, "stored (in, out), a transposed linear"
        else:
            continue
        why = (f"inferred from one forward: {type(mod).__name__} maps {n_in} to {n_out} features, its weight "
               f"{list(shape)} {how}")
        new = []
        for t in targets:
            if t is weight:
                new.append(replace(t, role="weight", fans=fans, star=True, dim=dim, why=why))
            elif t.name == "bias" and t.role == "other" and tuple(slots["bias"].shape) == (n_out,):
                new.append(replace(t, role="bias", fans=None, weight=("weight", ""), why=why))
            else:
                new.append(t)
        out[i] = (name, mod, slots, new)
    return out
