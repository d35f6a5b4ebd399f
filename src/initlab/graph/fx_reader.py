"""The fx reader: trace ``forward`` with concrete values (``_ConcreteTracer``) and read the graph
(``_FxReader``): activations, residual streams, concatenations. See the package docstring."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import os
import re
import warnings
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from initlab.graph.ops import (
    ACT_FUNCTIONS,
    ACT_METHODS,
    ACT_MODULES,
    ADD_FUNCTIONS,
    ADD_METHODS,
    CAT_FUNCTIONS,
    META_ATTRS,
    META_FUNCTIONS,
    META_METHODS,
    PASS_FUNCTIONS,
    PASS_METHODS,
    RECURRENT,
    REGION_SCAN,
    SCALE_FUNCTIONS,
    SCALE_METHODS,
    LayerInfo,
    ModelGraph,
    function_name,
    is_elementwise,
    is_norm_module,
    is_pass_module,
    is_weight_module,
    out_of_place,
    recurrent_info,
)


class Untraceable(Exception):
    pass


class BadExample(ValueError):
    pass


class _Proxy(fx.Proxy):
    def __len__(self) -> int:  # len(x.size()) in nn.TransformerEncoder: the example's length
        return len(self.tracer.values[self.node])


class _ConcreteTracer(fx.Tracer):
    """fx tracer that also runs each op on the example, to resolve branches on tensor metadata.

    Leaves: weight layers and modules without children; other modules are traced through (the
    default tracer would stop at every torch.nn module, nn.TransformerEncoderLayer included).
    """

    def __init__(self, inputs: dict[str, Any]):
        super().__init__()
        self.record_stack_traces = True  # names activations defined as lambdas or functions
        self.inputs = inputs
        self.values: dict[fx.Node, Any] = {}
        self.tainted: set[fx.Node] = set()  # nodes whose value depends on tensor data
        self._eager = False

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_weight_module(m) or next(m.children(), None) is None

    def call_module(self, m, forward, args, kwargs):
        return forward(*args, **kwargs) if self._eager else super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self._eager else super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        p = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        self._evaluate(p.node)
        return p

    def _evaluate(self, node: fx.Node) -> Any:
        if node in self.values:
            return self.values[node]
        if node.op == "placeholder":
            v = self.inputs[node.target] if node.target in self.inputs else (node.args[0] if node.args else None)
        else:
            a = fx.node.map_arg(node.args, self._evaluate)
            k = fx.node.map_arg(node.kwargs, self._evaluate)
            eager, self._eager = self._eager, True
            try:
                v = _execute(self.root, node.op, node.target, a, k)
            finally:
                self._eager = eager
        self.values[node] = v
        meta = ((node.op == "call_function" and node.target is getattr and node.args[1] in META_ATTRS)
                or (node.op == "call_function" and node.target in META_FUNCTIONS and node.target is not getattr)
                or (node.op == "call_method" and node.target in META_METHODS))
        if not meta and (isinstance(v, Tensor) or any(i in self.tainted for i in node.all_input_nodes)):
            self.tainted.add(node)
        return v

    def to_bool(self, obj: fx.Proxy) -> bool:
        if obj.node in self.tainted:
            raise Untraceable(f"data-dependent control flow ({obj.node.format_node()})")
        return bool(self.values[obj.node])

    def iter(self, obj: fx.Proxy):
        return iter([obj[i] for i in range(len(self.values[obj.node]))])


def _execute(root: nn.Module, op: str, target: Any, args: tuple, kwargs: dict) -> Any:
    if op == "call_function":
        return target(*args, **kwargs)
    if op == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    if op == "call_module":
        return root.get_submodule(target)(*args, **kwargs)
    if op == "get_attr":
        return functools.reduce(getattr, target.split("."), root)
    raise ValueError(f"cannot execute fx node op {op!r}")


def _fx_inputs(model: nn.Module, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """Placeholder values and concrete (non-tensor, specialized) arguments for tracing ``model.forward``."""
    sig = inspect.signature(model.forward)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise BadExample(f"example does not fit {type(model).__name__}.forward{sig}: {e}") from None
    inputs, concrete = {}, {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if bound.arguments.get(name):
                raise Untraceable(f"forward takes *{name} or **{name} and the example fills it")
            inputs[("*" if p.kind == p.VAR_POSITIONAL else "**") + name] = () if p.kind == p.VAR_POSITIONAL else {}
        elif name in bound.arguments and any(isinstance(t, Tensor) for t in pytree.tree_leaves(bound.arguments[name])):
            inputs[name] = bound.arguments[name]
        else:  # None, flags, defaults: fixed while tracing, so `if mask is not None` follows the example
            value = bound.arguments.get(name, p.default)
            concrete[name] = value
            inputs.update({f"{name}_{i + 1}": v for i, v in enumerate(pytree.tree_leaves(value))})
    return inputs, concrete


def _bound(model: nn.Module, names: tuple[str, ...], fixed: dict) -> nn.Module:
    """``model`` called with the example's tensors as named keyword arguments and its other arguments fixed:
    a forward with exactly those parameters for fx (Hugging Face models take ``forward(input_ids=...,
    **kwargs)``, which fx cannot trace with concrete arguments)."""
    if not all(n.isidentifier() for n in names):
        raise Untraceable(f"keyword inputs {names} are not all identifiers")
    args = ", ".join(names)
    scope: dict = {}
    exec(f"def forward(self, {args}):\n    return self.model(**dict(zip(self.names, ({args},))), **self.fixed)\n",
         scope)  # a real signature: fx makes one placeholder per parameter
    cls = type("KeywordInputs", (nn.Module,), {"forward": scope["forward"]})
    wrapper = cls()
    wrapper.model, wrapper.names, wrapper.fixed = model, names, fixed
    return wrapper


def read_fx(model: nn.Module, args: tuple, kwargs: dict) -> ModelGraph:
    sig = inspect.signature(model.forward)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise BadExample(f"example does not fit {type(model).__name__}.forward{sig}: {e}") from None
        bound.apply_defaults()
        given = {**{k: v for k, v in bound.arguments.items() if sig.parameters[k].kind != inspect.Parameter.VAR_KEYWORD},
                 **bound.arguments.get(next(k for k, p in sig.parameters.items() if p.kind == p.VAR_KEYWORD), {})}
        tensors = {k: v for k, v in given.items() if isinstance(v, Tensor)}
        fixed = {k: v for k, v in given.items() if k in kwargs and not isinstance(v, Tensor)}
        wrapper = _bound(model, tuple(tensors), fixed)
        graph = _read_traced(wrapper, tuple(tensors.values()), {})
        return _unwrap(graph, "model.")
    return _read_traced(model, args, kwargs)


def _unwrap(graph: ModelGraph, prefix: str) -> ModelGraph:
    """The graph of a ``_bound`` wrapper under the wrapped model's own module names."""
    def name(n):
        return n[len(prefix):] if isinstance(n, str) and n.startswith(prefix) else n
    layers = tuple(dataclasses.replace(x, name=name(x.name), norm=name(x.norm)) for x in graph.layers)
    notes = tuple(n.replace(prefix, "") for n in graph.notes)
    return dataclasses.replace(graph, layers=layers, notes=notes + ("read through keyword inputs (forward takes **kwargs)",))


def _read_traced(model: nn.Module, args: tuple, kwargs: dict) -> ModelGraph:
    inputs, concrete = _fx_inputs(model, args, kwargs)
    tracer = _ConcreteTracer(inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tracer.trace(model, concrete_args=concrete or None)
    return _FxReader(model, graph, tracer.values).read()


_NORM_FUNCTIONS = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm} | (
    {F.rms_norm} if hasattr(F, "rms_norm") else set())


class _Composite:
    """An elementwise function read from the graph as a run of ops from one entry (x * sigmoid(x))."""

    def __init__(self, root: nn.Module, entry: fx.Node, nodes: list[fx.Node], name: str):
        self.root, self.entry, self.nodes, self.__name__ = root, entry, nodes, name

    def __call__(self, x: Tensor) -> Tensor:
        env = {self.entry: x.clone()}  # ops in the run may be in-place (relu_)
        for n in self.nodes:
            env[n] = _execute(self.root, n.op, n.target, fx.node.map_arg(n.args, env.__getitem__),
                              fx.node.map_arg(n.kwargs, env.__getitem__))
        return env[self.nodes[-1]]

    def __repr__(self) -> str:
        return f"<elementwise {self.__name__}>"


_FRAME = re.compile(r'File "([^"]*)", line \d+, in (\S+)')
# torch's frames and those of this package (every module of initlab.graph) are not the user's
_NOT_USER = (os.path.dirname(torch.__file__), os.path.dirname(os.path.abspath(__file__)) + os.sep)


def _user_function(node: fx.Node) -> str | None:
    """Name of the innermost function outside torch (and this package) that emitted ``node``."""
    frames = [fn for path, fn in _FRAME.findall(node.stack_trace or "") if not path.startswith(_NOT_USER)]
    return frames[-1] if frames else None


class _FxReader:
    def __init__(self, root: nn.Module, graph: fx.Graph, values: dict[fx.Node, Any]):
        self.root, self.values = root, values
        self.nodes = list(graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.kinds = {n: self._kind(n) for n in self.nodes}
        self.notes: list[str] = []
        self.stream_input: dict[fx.Node, fx.Node] = {}  # residual add -> its stream-side input

    def _module(self, n: fx.Node) -> nn.Module:
        return self.root.get_submodule(n.target)

    def _kind(self, n: fx.Node) -> str:
        """'output', 'meta', 'weight', 'struct' (tuple indexing), 'pass', 'add' (two tensors), 'cat' or 'other'."""
        op, t = n.op, n.target
        if op == "output":
            return "output"
        if ((op == "call_function" and t in META_FUNCTIONS and (t is not getattr or n.args[1] in META_ATTRS))
                or (op == "call_method" and t in META_METHODS)
                or not any(isinstance(v, Tensor) for v in pytree.tree_leaves(self.values.get(n)))):
            return "meta"  # shapes, flags, asserts: not part of the signal's path
        if (t in SCALE_FUNCTIONS if op == "call_function" else op == "call_method" and t in SCALE_METHODS) \
                and any(isinstance(a, fx.Node) and a.op == "get_attr" for a in n.args[:2]):
            return "pass"  # x * self.gamma (LayerScale): a learned scale, not an activation
        if op == "call_module":
            m = self._module(n)
            return "weight" if is_weight_module(m) else "pass" if is_pass_module(m) else "other"
        two = len(n.args) >= 2 and all(isinstance(self.values.get(a), Tensor) for a in n.args[:2]
                                       if isinstance(a, fx.Node)) and all(isinstance(a, fx.Node) for a in n.args[:2])
        if op == "call_function":
            if t is operator.getitem:
                return "struct" if isinstance(self.values.get(n.args[0]), (tuple, list)) else "pass"
            if t in PASS_FUNCTIONS or t is getattr:  # getattr: x.T, x.mT
                return "pass"
            if t in ADD_FUNCTIONS:
                return "add" if two else "other"
            return "cat" if t in CAT_FUNCTIONS else "other"
        if op == "call_method":
            return "pass" if t in PASS_METHODS else "add" if t in ADD_METHODS and two else "other"
        return "other"

    def _label(self, n: fx.Node) -> str:
        if n.op == "call_module":
            m = self._module(n)
            return ACT_MODULES.get(type(m), type(m).__name__)
        if n.op == "call_function" and self.kinds.get(n) == "pass":
            return getattr(n.target, "__name__", str(n.target))  # "dropout", "flatten", "getitem"
        if n.op == "call_function":
            return ACT_FUNCTIONS.get(n.target) or function_name(n.target)
        return ACT_METHODS.get(n.target, str(n.target))

    # -- activations ---------------------------------------------------------------------------
    def _eligible(self, n: fx.Node, s: fx.Node, allowed: set) -> bool:
        v, ref = self.values.get(n), self.values.get(s)
        return (n.op in ("call_function", "call_method", "call_module") and self.kinds[n] == "other"
                and isinstance(v, Tensor) and isinstance(ref, Tensor) and v.shape == ref.shape
                and v.is_floating_point() and all(i in allowed for i in n.all_input_nodes))

    def _activation(self, s: fx.Node, u: fx.Node):
        """The longest elementwise run of ops from ``s`` starting at its user ``u`` with one exit, or None."""
        if not self._eligible(u, s, {s}):
            return None
        region, members, ends = [], set(), []
        node = u
        for _ in range(REGION_SCAN):
            if node.op == "output":
                break
            ins = node.all_input_nodes
            touches = any(i in members for i in ins)
            if node is u or touches or s in ins:  # other users of s join too: x * sigmoid(x)
                if self._eligible(node, s, members | {s}):
                    region.append(node)
                    members.add(node)
                    if {r for r in members if any(x not in members for x in r.users)} == {node}:
                        ends.append(len(region))
                elif touches:
                    break
            node = node.next
        for end in reversed(ends):
            nodes = region[:end]
            f, name, known = self._callable(s, nodes)
            if known or is_elementwise(f, self.values[s]):
                return nodes, f, name
        return None

    def _callable(self, s: fx.Node, nodes: list[fx.Node]):
        """(callable, name, known) for the run ``nodes`` applied to ``s``; the callable never writes to its input."""
        n = nodes[0]
        plain = len(nodes) == 1 and n.args == (s,) and all(k == "inplace" and v is False for k, v in n.kwargs.items())
        frames = {_user_function(x) for x in nodes}
        frame = frames.pop() if len(frames) == 1 else None
        if n.op == "call_module" and plain:
            m = self._module(n)
            return out_of_place(m), self._label(n), type(m) in ACT_MODULES
        known = len(nodes) == 1 and (n.op == "call_function" and n.target in ACT_FUNCTIONS
                                     or n.op == "call_method" and n.target in ACT_METHODS and n.args == (s,))
        if known:
            name = self._label(n)
        elif frame is not None and frame != "forward":
            name = frame  # "<lambda>", "swish": the user's own function
        else:
            name = ">".join(self._label(x) for x in nodes)
        if plain and n.op == "call_function" and not getattr(n.target, "__name__", "").endswith("_"):
            return n.target, name, known
        if plain and n.op == "call_method" and known:
            return operator.methodcaller(ACT_METHODS[n.target]), name, known
        return _Composite(self.root, s, nodes, name), name, known

    def _norm_of(self, n: fx.Node) -> str | None:
        """The module name of a norm node: a norm module, or a functional norm (timm's BatchNormAct2d calls
        F.batch_norm in its forward) whose weight is a module's attribute."""
        if n.op == "call_module":
            return n.target if is_norm_module(self._module(n)) else None
        if n.op == "call_function" and n.target in _NORM_FUNCTIONS:
            for a in (*n.args, *n.kwargs.values()):
                if isinstance(a, fx.Node) and a.op == "get_attr" and a.target.endswith(".weight"):
                    return a.target.rpartition(".")[0]
        return None

    def _walk(self, start: fx.Node) -> dict[str, Any]:
        """Follow ``start``'s output through pass-through ops, adds and concats up to weight layers."""
        act = nonelem = out_through = norm = None
        is_output = False
        # after: past an activation (only outputs are looked for); branch: added into a residual stream
        # from the branch side, so reaching the output there does not make a classifier.
        stack = [(start, (), False, False)]
        seen, consumed = {start}, set()
        while stack:
            n, through, after, branch = stack.pop()
            for u in n.users:
                kind = self.kinds[u]
                if kind == "output" and not branch:
                    is_output = True
                    out_through = out_through or through
                if kind in ("output", "weight", "meta") or u in seen or u in consumed:
                    continue
                seen.add(u)
                if kind == "struct":
                    stack.append((u, through, after, branch))
                elif kind in ("pass", "add", "cat"):
                    if norm is None and not after and kind == "pass" and "add" not in through and "cat" not in through:
                        norm = self._norm_of(u)
                    into_stream = u in self.stream_input and self.stream_input[u] is not n
                    stack.append((u, through + ((self._label(u) if kind == "pass" else kind),), after,
                                  branch or into_stream))
                elif after:
                    stack.append((u, through, True, branch))
                elif (found := self._activation(n, u)) is not None:
                    nodes, f, name = found
                    consumed.update(nodes)
                    if act is None or self.index[u] < act[0]:
                        act = (self.index[u], f, name, through)
                    stack.append((nodes[-1], through, True, branch))
                else:
                    if nonelem is None or self.index[u] < nonelem[0]:
                        nonelem = (self.index[u], self._label(u), through)
                    stack.append((u, through, True, branch))
        if act is not None:
            return dict(activation=act[1], activation_name=act[2], feeds="activation", through=act[3],
                        is_output=is_output, norm=norm)
        if nonelem is not None:
            return dict(activation=None, activation_name=nonelem[1], feeds="non-elementwise", through=nonelem[2],
                        is_output=is_output, norm=norm)
        return dict(activation=None, activation_name=None, feeds="none", through=out_through or (),
                    is_output=is_output, norm=norm)

    # -- residuals and concatenations ----------------------------------------------------------
    def _ancestors(self, n: fx.Node) -> set[fx.Node]:
        seen, stack = {n}, [n]
        while stack:
            for i in stack.pop().all_input_nodes:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
        return seen

    def _last_weights(self, n: fx.Node, stop: int = -1) -> set[fx.Node]:
        """Weight layers with a weight-free path to ``n`` (not looking before node index ``stop``)."""
        found, seen, stack = set(), {n}, [n]
        while stack:
            x = stack.pop()
            if self.kinds[x] == "weight":
                found.add(x)
                continue
            for i in x.all_input_nodes:
                if i not in seen and self.index[i] > stop:
                    seen.add(i)
                    stack.append(i)
        return found

    def _names(self, nodes) -> str:
        return ", ".join(str(n.target) for n in sorted(nodes, key=self.index.__getitem__))

    def _residuals(self):
        """(weight node -> stream id, branch-final weight nodes, stream id -> branch count)."""
        stream_of: dict[fx.Node, int] = {}
        counts: dict[int, int] = {}
        member: dict[fx.Node, int] = {}
        final: set[fx.Node] = set()
        for a in self.nodes:
            if self.kinds[a] != "add":
                continue
            p, q = a.args[0], a.args[1]
            ap, aq = self._ancestors(p), self._ancestors(q)
            common = [n for n in ap & aq if n.op != "get_attr" and isinstance(self.values.get(n), Tensor)]
            if not common:
                continue
            fork = max(common, key=self.index.__getitem__)
            after = {n for n in self._ancestors(a) if self.index[n] > self.index[fork]} - {a}
            wp = {n for n in ap & after if self.kinds[n] == "weight"}
            wq = {n for n in aq & after if self.kinds[n] == "weight"}
            if len(wp) == len(wq):
                if wp:
                    self.notes.append(f"an add sums two branches with {len(wp)} weight layer(s) each "
                                      f"({self._names(wp | wq)}); not read as a residual")
                continue
            stream_in, branch_in, branch = (p, q, wq) if len(wp) < len(wq) else (q, p, wp)
            if min(len(wp), len(wq)):
                shortcut = self._names(wp if branch is wq else wq)
                self.notes.append(f"a residual add has a projection shortcut ({shortcut}); the stream after it is "
                                  "read as a new stream")
            origin = stream_in
            while origin not in stream_of and self.kinds[origin] != "weight" and origin.op.startswith("call_"):
                data = [x for x in origin.args if isinstance(x, fx.Node)] or origin.all_input_nodes
                if not data:
                    break
                origin = data[0]
            self.stream_input[a] = stream_in
            sid = stream_of.setdefault(origin, len(counts))
            stream_of[a] = sid
            counts[sid] = counts.get(sid, 0) + 1
            for w in sorted(branch, key=self.index.__getitem__):
                member.setdefault(w, sid)
            final |= self._last_weights(branch_in, self.index[fork])
        return member, final, counts

    def _concats(self) -> dict[fx.Node, tuple[int, float]]:
        info, group = {}, 0
        for c in self.nodes:
            if self.kinds[c] != "cat" or not c.args or not isinstance(c.args[0], (list, tuple)):
                continue
            parts = [t for t in c.args[0] if isinstance(self.values.get(t), Tensor)]
            if not parts:
                continue
            dim = c.args[1] if len(c.args) > 1 else c.kwargs.get("dim", 0)
            if c.target is torch.stack:
                sizes = [1] * len(parts)
            else:
                sizes = [self.values[t].shape[dim % self.values[t].dim()] for t in parts]
            for t, size in zip(parts, sizes):
                for w in self._last_weights(t):
                    info.setdefault(w, (group, size / sum(sizes)))
            group += 1
        return info

    def read(self) -> ModelGraph:
        member, final, counts = self._residuals()
        concats = self._concats()
        first: dict[str, fx.Node] = {}
        calls: dict[str, int] = {}
        for n in self.nodes:
            if self.kinds[n] == "weight":
                first.setdefault(n.target, n)
                calls[n.target] = calls.get(n.target, 0) + 1
        layers = []
        for target, n in first.items():
            if calls[target] > 1:
                self.notes.append(f"{target} is called {calls[target]} times (shared weights); read at its first call")
            m = self._module(n)
            shared = dict(residual_stream=member.get(n), concat_group=concats.get(n, (None,))[0],
                          concat_share=concats.get(n, (None, None))[1])
            walk = self._walk(n)
            if isinstance(m, nn.MultiheadAttention):
                layers.append(LayerInfo(target, m, type(m).__name__, None, "attention", "non-elementwise", **shared))
                layers.append(LayerInfo(f"{target}.out_proj", m.out_proj, type(m.out_proj).__name__, **walk,
                                        branch_final=n in final, **shared))
            elif isinstance(m, RECURRENT):
                layers.append(recurrent_info(target, m, walk["is_output"], **shared, branch_final=n in final))
            else:
                layers.append(LayerInfo(target, m, type(m).__name__, **walk, branch_final=n in final, **shared))
        unused = [name for name, m in self.root.named_modules() if is_weight_module(m) and name not in first
                  and not any(name.startswith(f + ".") for f in first)]
        if unused:
            self.notes.append(f"not called on the example: {', '.join(unused)}")
        return ModelGraph(tuple(layers), "fx", counts, tuple(self.notes))
