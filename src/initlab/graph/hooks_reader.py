"""The hooks reader: the order of module calls on the example, used when fx tracing fails."""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from initlab.graph.ops import (
    ACT_MODULES,
    RECURRENT,
    LayerInfo,
    ModelGraph,
    is_elementwise,
    is_pass_module,
    is_weight_module,
    out_of_place,
    recurrent_info,
)


class _CallOrder:
    """Forward hooks on every weight layer and every leaf module outside one; records calls in order. Containers
    (modules with children) also record their first input and output tensors and the span of calls inside
    them, from which residual additions are found (:func:`_residuals`).

    Owns its hooks (as :class:`initlab.analysis.probe.Probe`): leaving the context removes them, on error too.
    """

    def __init__(self, model: nn.Module):
        self.model, self.handles, self.calls = model, [], []
        self.outputs: dict[int, Tensor] = {}  # call index of a weight layer -> a copy of its output
        self.containers: list[tuple[str, Tensor, Tensor, int, int, int, int]] = []  # name, x, y, start, end, ptrs
        self._starts: dict[int, list[int]] = {}

    def __enter__(self) -> _CallOrder:
        inside: list[str] = []
        for name, m in self.model.named_modules():
            if any(name.startswith(w + ".") for w in inside):
                continue
            if is_weight_module(m):
                inside.append(name)
            elif next(m.children(), None) is not None:
                if name:
                    self.handles.append(m.register_forward_pre_hook(functools.partial(self._enter, id(m)),
                                                                    with_kwargs=True))
                    self.handles.append(m.register_forward_hook(functools.partial(self._container, name, id(m)),
                                                                with_kwargs=True))
                continue
            self.handles.append(m.register_forward_hook(functools.partial(self._hook, name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _enter(self, key: int, module: nn.Module, inputs: tuple, kwargs: dict) -> None:
        self._starts.setdefault(key, []).append(len(self.calls))

    def _container(self, name: str, key: int, module: nn.Module, inputs: tuple, kwargs: dict, output: Any) -> None:
        start = self._starts[key].pop()
        x = next((t for t in (*inputs, kwargs.get("hidden_states"), *kwargs.values()) if isinstance(t, Tensor)), None)
        y = output if isinstance(output, Tensor) else next(
            (t for t in (output if isinstance(output, (tuple, list)) else ()) if isinstance(t, Tensor)), None)
        if (x is not None and y is not None and x.shape == y.shape and x.is_floating_point()
                and start < len(self.calls)):
            self.containers.append((name, x.detach().clone(), y.detach().clone(), start, len(self.calls),
                                    x.data_ptr(), y.data_ptr()))

    def _hook(self, name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        x = next((t for t in inputs if isinstance(t, Tensor)), None)
        out = output.detach() if isinstance(output, Tensor) else None
        same = out is not None and x is not None and x.shape == out.shape
        if out is not None and is_weight_module(module) and out.is_floating_point():
            self.outputs[len(self.calls)] = out.clone()
        self.calls.append((name, module, torch.empty_like(out) if same else None))


def _residuals(order: _CallOrder) -> tuple[dict[str, int], dict[int, int]]:
    """Residual branches found by matching each container's input and output: a container whose output minus its
    input is the sum of outputs of weight layers called inside it adds those layers' outputs into a residual
    stream (y = x + F(x) + G(x + F(x)) ...). Returns {branch-final layer: stream} and {stream: branches}.

    The layers are found by least squares over the outputs (of the container's shape) of the weight layers called
    inside it: those with coefficient 1 (within 1e-3) are the branches, and the match holds when what is left
    is below 1e-4 of the difference (dropout is off while reading, so the sum is exact up to float rounding). A stream continues from container to container
    through the tensor that one returns and the next receives."""
    matched: dict[int, list[str]] = {}  # container index -> the layers it newly explains
    taken: set[str] = set()
    order_by_span = sorted(range(len(order.containers)), key=lambda k: order.containers[k][4] - order.containers[k][3])
    for k in order_by_span:  # inner containers first: a layer is the final of the innermost branch holding it
        name, x, y, start, end, xp, yp = order.containers[k]
        r = y - x
        total = float(r.norm())
        if not total > 1e-6 * float(y.norm()) or not torch.isfinite(r).all():
            continue
        cands = [i for i in range(start, end) if (o := order.outputs.get(i)) is not None and o.shape == r.shape]
        if not cands:
            continue
        a = torch.stack([order.outputs[i].flatten().double() for i in cands], dim=1)
        coef = torch.linalg.lstsq(a, r.flatten().double().unsqueeze(1)).solution.flatten()
        pick = [j for j, c in enumerate(coef.tolist()) if abs(c - 1) < 1e-3]
        found = [order.calls[cands[j]][0] for j in pick]
        if pick:
            r = r.double() - a[:, pick].sum(dim=1).reshape(r.shape)
        if found and float(r.norm()) <= 1e-4 * total:
            matched[k] = [f for f in found if f not in taken]
            taken.update(found)
    final: dict[str, int] = {}
    streams: dict[int, int] = {}
    stream_of: dict[int, int] = {}  # data_ptr of a stream tensor -> stream id
    for k in sorted(matched):  # call order (containers end inner before outer): chain the streams
        _, _, _, _, _, xp, yp = order.containers[k]
        sid = stream_of.get(xp, len(streams))
        streams.setdefault(sid, 0)
        stream_of[xp] = stream_of[yp] = sid
        for layer in matched[k]:
            if layer not in final:
                final[layer] = sid
                streams[sid] += 1
    return final, {k: v for k, v in streams.items() if v}


def read_hooks(model: nn.Module, args: tuple, kwargs: dict, reason: str) -> ModelGraph:
    # Grad stays on: nn.TransformerEncoderLayer's inference fast path would skip its Linear modules.
    with _CallOrder(model) as order, torch.enable_grad():
        model(*args, **kwargs)
    calls = order.calls
    final, streams = _residuals(order)
    weights = [i for i, (_, m, _) in enumerate(calls) if is_weight_module(m)]
    layers, done = [], set()
    for k, i in enumerate(weights):
        name, m, _ = calls[i]
        if name in done:
            continue
        done.add(name)
        stop = weights[k + 1] if k + 1 < len(weights) else len(calls)
        is_output = all(calls[j][0] == name for j in weights[k + 1:])
        if isinstance(m, RECURRENT):
            layers.append(recurrent_info(name, m, is_output))
            continue
        through, act, feeds, act_name = (), None, "none", None
        for j in range(i + 1, stop):
            _, u, like = calls[j]
            if is_pass_module(u):
                through += (type(u).__name__,)
                continue
            if type(u) in ACT_MODULES or (like is not None and is_elementwise(u, like)):
                act, act_name, feeds = out_of_place(u), ACT_MODULES.get(type(u), type(u).__name__), "activation"
            else:
                act_name, feeds = type(u).__name__, "non-elementwise"
            break
        if isinstance(m, nn.MultiheadAttention):
            layers.append(LayerInfo(name, m, type(m).__name__, None, "attention", "non-elementwise"))
            name, m = f"{name}.out_proj", m.out_proj
        layers.append(LayerInfo(name, m, type(m).__name__, act, act_name, feeds, through,
                                is_output and name not in final, residual_stream=final.get(name),
                                branch_final=name in final))
    notes = (f"fx tracing failed ({reason}); read from the order of module calls on the example: "
             "concatenations and functional activations (F.relu in forward) are not seen; residual additions "
             f"found by matching container inputs and outputs: {sum(streams.values())} branch(es) in "
             f"{len(streams)} stream(s)",)
    return ModelGraph(tuple(layers), "hooks", streams, notes)
