"""The hooks reader: the order of module calls on the example, used when fx tracing fails."""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from initlab.graph.ops import (
    _ACT_MODULES, _RECURRENT, LayerInfo, ModelGraph, _out_of_place,
    _recurrent_info, is_elementwise, is_pass_module, is_weight_module)


class _CallOrder:
    """Forward hooks on every weight layer and every leaf module outside one; records calls in order.

    Owns its hooks (as :class:`initlab.analysis.probe.Probe`): leaving the context removes them, on error too.
    """

    def __init__(self, model: nn.Module):
        self.model, self.handles, self.calls = model, [], []

    def __enter__(self) -> _CallOrder:
        inside: list[str] = []
        for name, m in self.model.named_modules():
            if any(name.startswith(w + ".") for w in inside):
                continue
            if is_weight_module(m):
                inside.append(name)
            elif next(m.children(), None) is not None:
                continue
            self.handles.append(m.register_forward_hook(functools.partial(self._hook, name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _hook(self, name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        x = next((t for t in inputs if isinstance(t, Tensor)), None)
        out = output.detach() if isinstance(output, Tensor) else None
        same = out is not None and x is not None and x.shape == out.shape
        self.calls.append((name, module, torch.empty_like(out) if same else None))


def _read_hooks(model: nn.Module, args: tuple, kwargs: dict, reason: str) -> ModelGraph:
    # Grad stays on: nn.TransformerEncoderLayer's inference fast path would skip its Linear modules.
    with _CallOrder(model) as order, torch.enable_grad():
        model(*args, **kwargs)
    calls = order.calls
    weights = [i for i, (_, m, _) in enumerate(calls) if is_weight_module(m)]
    layers, done = [], set()
    for k, i in enumerate(weights):
        name, m, _ = calls[i]
        if name in done:
            continue
        done.add(name)
        stop = weights[k + 1] if k + 1 < len(weights) else len(calls)
        is_output = all(calls[j][0] == name for j in weights[k + 1:])
        if isinstance(m, _RECURRENT):
            layers.append(_recurrent_info(name, m, is_output))
            continue
        through, act, feeds, act_name = (), None, "none", None
        for j in range(i + 1, stop):
            _, u, like = calls[j]
            if is_pass_module(u):
                through += (type(u).__name__,)
                continue
            if type(u) in _ACT_MODULES or (like is not None and is_elementwise(u, like)):
                act, act_name, feeds = _out_of_place(u), _ACT_MODULES.get(type(u), type(u).__name__), "activation"
            else:
                act_name, feeds = type(u).__name__, "non-elementwise"
            break
        if isinstance(m, nn.MultiheadAttention):
            layers.append(LayerInfo(name, m, type(m).__name__, None, "attention", "non-elementwise"))
            name, m = f"{name}.out_proj", m.out_proj
        layers.append(LayerInfo(name, m, type(m).__name__, act, act_name, feeds, through, is_output))
    notes = (f"fx tracing failed ({reason}); read from the order of module calls on the example: residual "
             "additions, concatenations and functional activations (F.relu in forward) are not seen",)
    return ModelGraph(tuple(layers), "hooks", {}, notes)
