"""Read a model's own graph: the nonlinearity each weight layer feeds, its residual and concat role.

``read_graph(model, example)`` is what ``initialize(model, "auto", example=batch)`` reads: for
every weight layer (Linear, Conv/ConvTranspose 1-3d, Bilinear, Embedding, MultiheadAttention's
projections, RNN/LSTM/GRU) the elementwise activation its output feeds, looking through norms,
pooling, dropout, reshapes and identities; whether it is the classifier; which residual stream
its branch adds into and whether it is the last layer of that branch; which concatenation takes
its output and with what share of the channels.

How: ``torch.fx`` tracing with concrete values. ``_ConcreteTracer`` runs every op on the example
as it records it, so control flow on *metadata* (``x.dim() == 3``, ``len(x.size())``,
``x.is_nested``; ``nn.TransformerEncoder`` has all three) follows the example's shapes, while
control flow on *data* (``if x.sum() > 0``) still stops the trace. The model is then read from
forward hooks instead (``method="hooks"``): the order of module calls on the example, each weight
layer feeding the next activation module called before the next weight layer; residuals,
concatenations and functional activations (``F.relu`` in ``forward``) are not seen there.

An op the reader does not know is tested numerically: it is elementwise when f(x)[perm] =
f(x[perm]) for a random permutation of the flattened elements, redrawing half the elements leaves
the other half's outputs alone, it works on a flat tensor, and its outputs are finite and
deterministic. Such an op (or a run of them, such as ``x * torch.sigmoid(x)``) is returned as a
callable that the theory module can integrate by quadrature. Softmax and attention fail the test
and are reported as ``feeds="non-elementwise"``.

The model is left as it was: train/eval flags, buffers (BatchNorm running statistics) and the
global RNG are restored, attributes the tracer adds are removed, hooks are removed on error too.
Lazy modules are materialized by the example, as by any first forward pass.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import modules as _m
from torch.utils import _pytree as pytree

__all__ = ["LayerInfo", "ModelGraph", "read_graph", "WEIGHT_TYPES", "is_elementwise"]

WEIGHT_TYPES = (nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag, _m.conv._ConvNd, nn.MultiheadAttention,
                _m.rnn.RNNBase, _m.rnn.RNNCellBase)
_RECURRENT = (_m.rnn.RNNBase, _m.rnn.RNNCellBase)
_PASS_MODULES = tuple(c for c in (
    _m.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, getattr(nn, "RMSNorm", None),
    _m.pooling._MaxPoolNd, _m.pooling._AvgPoolNd, _m.pooling._AdaptiveAvgPoolNd, _m.pooling._AdaptiveMaxPoolNd,
    _m.pooling._LPPoolNd, _m.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, _m.padding._ConstantPadNd,
    _m.padding._ReflectionPadNd, _m.padding._ReplicationPadNd, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.ChannelShuffle) if c is not None)


def _functions(namespaces, names) -> set:
    return {f for ns in namespaces for n in names if callable(f := getattr(ns, n, None))}


_PASS_FUNCTIONS = _functions((F, torch), (
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm", "normalize",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    *(f"{p}pool{d}d" for p in ("max_", "avg_", "adaptive_avg_", "adaptive_max_", "lp_") for d in (1, 2, 3)),
    "pad", "interpolate", "pixel_shuffle", "pixel_unshuffle", "flatten", "reshape", "permute", "transpose",
    "squeeze", "unsqueeze", "movedim", "swapaxes", "clone", "mean", "sum", "narrow", "select", "t", "chunk",
    "split", "unbind"))
_PASS_METHODS = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t",
                 "contiguous", "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "clone", "to", "float",
                 "double", "half", "bfloat16", "type_as", "detach", "mean", "sum", "narrow", "select", "movedim",
                 "swapaxes", "chunk", "split", "unbind"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__radd__", "__iadd__"}
_CAT_FUNCTIONS = _functions((torch,), ("cat", "concat", "concatenate", "stack"))

# Known activations: name as in initlab.models.ACTIVATIONS where one exists. Trusted as
# elementwise without the numeric test (RReLU in train mode is random, so it would fail it).
_ACT_NAMES = ("relu", "relu6", "leaky_relu", "rrelu", "elu", "celu", "selu", "gelu", "silu", "mish", "tanh",
              "sigmoid", "hardtanh", "hardswish", "hardsigmoid", "softplus", "softsign", "tanhshrink",
              "logsigmoid", "softshrink", "hardshrink")
_ACT_FUNCTIONS = {f: n for n in _ACT_NAMES for ns in (torch, F, torch.special)
                  for v in (n, n + "_") if callable(f := getattr(ns, v, None))}
_ACT_METHODS = {v: n for n in ("relu", "tanh", "sigmoid") for v in (n, n + "_")}
_ACT_MODULES = {getattr(nn, c): n for c, n in (
    ("ReLU", "relu"), ("ReLU6", "relu6"), ("LeakyReLU", "leaky_relu"), ("RReLU", "rrelu"), ("ELU", "elu"),
    ("CELU", "celu"), ("SELU", "selu"), ("GELU", "gelu"), ("SiLU", "silu"), ("Mish", "mish"), ("Tanh", "tanh"),
    ("Sigmoid", "sigmoid"), ("Hardtanh", "hardtanh"), ("Hardswish", "hardswish"), ("Hardsigmoid", "hardsigmoid"),
    ("Softplus", "softplus"), ("Softsign", "softsign"), ("Tanhshrink", "tanhshrink"), ("LogSigmoid", "logsigmoid"),
    ("Softshrink", "softshrink"), ("Hardshrink", "hardshrink"))}
# Tensor metadata: branching on these follows the example's shapes, not its data.
_META_ATTRS = {"shape", "ndim", "dtype", "device", "is_nested", "is_cuda", "is_sparse", "is_quantized", "is_meta",
               "layout", "requires_grad"}
_META_FUNCTIONS = {getattr, len} | _functions((torch,), ("is_floating_point", "is_complex", "is_tensor", "numel",
                                                          "is_same_size"))
_META_METHODS = {"size", "dim", "ndimension", "numel", "nelement", "get_device", "is_floating_point", "is_complex",
                 "is_contiguous", "element_size"}
_SCALE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div}
_SCALE_METHODS = {"mul", "mul_", "div", "div_", "__mul__", "__rmul__", "__truediv__"}
_REGION_SCAN = 64  # nodes scanned past an activation's first op for the rest of it (x * sigmoid(x))


@dataclass(frozen=True)
class LayerInfo:
    """What one weight layer's output meets on its way through the model."""
    name: str  # named_modules() name, e.g. "blocks.3.fc2"; MultiheadAttention: "attn" (in-projection), "attn.out_proj"
    module: nn.Module
    kind: str  # class name
    activation: Callable[[Tensor], Tensor] | None  # elementwise callable its output feeds; None: see feeds
    activation_name: str | None  # "relu", "<lambda>", "torch.sin", "sigmoid>mul"; non-elementwise: "torch.softmax"
    feeds: str  # "activation", "non-elementwise" (softmax, attention), "built-in" (RNN/LSTM/GRU cells), "none"
    through: tuple[str, ...] = ()  # ops passed between layer and activation, e.g. ("BatchNorm2d", "Dropout")
    is_output: bool = False  # reaches the model output without another weight layer (the classifier)
    residual_stream: int | None = None  # stream its residual branch adds into; None outside residual branches
    branch_final: bool = False  # last weight layer of its residual branch
    concat_group: int | None = None  # id of the cat/stack its output goes into
    concat_share: float | None = None  # its share of the concatenated dimension


@dataclass(frozen=True)
class ModelGraph:
    """Weight layers in execution order, how they were read, and the residual streams."""
    layers: tuple[LayerInfo, ...]
    method: str  # "fx" (traced graph) or "hooks" (module call order; residuals and concats unknown)
    residual_streams: dict[int, int] = field(default_factory=dict)  # stream id -> residual branches added into it
    notes: tuple[str, ...] = ()  # anything not understood

    def __getitem__(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no weight layer named {name!r}; layers: {', '.join(x.name for x in self.layers)}")


def is_elementwise(f: Callable[[Tensor], Tensor], like: Tensor, *, seed: int = 0) -> bool:
    """Whether ``f`` acts elementwise on tensors shaped like ``like``, tested on random inputs.

    Elementwise here: outputs finite and deterministic, of the input's shape; f(x)[perm] = f(x[perm])
    for a random permutation of the flattened elements (one function for every position);
    redrawing half of the elements leaves the other half's outputs unchanged (softmax fails
    this); and f of the flattened input is the flattened output (so quadrature can call it on
    1-D tensors). Uses its own generator; ``f`` sees clones, so in-place ops are harmless.
    """
    if not like.is_floating_point() or like.numel() == 0:
        return False
    g = torch.Generator().manual_seed(seed)
    x = (2 * torch.randn(like.shape, generator=g)).to(like.device, like.dtype)
    n = x.numel()
    perm = torch.randperm(n, generator=g).to(like.device)
    redraw = (torch.rand(n, generator=g) < 0.5).to(like.device)
    x2 = x.flatten().clone()
    x2[redraw] = (2 * torch.randn(n, generator=g)).to(like.device, like.dtype)[redraw]

    def same(a, b) -> bool:
        return isinstance(a, Tensor) and a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-5, atol=1e-6))

    try:
        with torch.no_grad():
            y = f(x.clone())
            if not isinstance(y, Tensor) or y.shape != x.shape or not bool(torch.isfinite(y).all()):
                return False
            y = y.flatten()
            return (same(f(x.clone()).flatten(), y)
                    and same(f(x.flatten()[perm].reshape(x.shape)).flatten(), y[perm])
                    and same(f(x2.reshape(x.shape)).flatten()[~redraw], y[~redraw])
                    and same(f(x.flatten().clone()), y))
    except Exception:  # a callable that cannot take such a tensor is not usable as an activation
        return False


def read_graph(model: nn.Module, example: Any) -> ModelGraph:
    """Read which nonlinearity every weight layer of ``model`` feeds, and its residual/concat role.

    ``example`` is a batch the model accepts: a tensor (or any single argument), a tuple of
    positional arguments, or a dict of keyword arguments; outputs may be tuples or dicts. The
    model runs on it (twice when fx tracing fails) and is left as it was (module docstring).

    Returns a :class:`ModelGraph`, one :class:`LayerInfo` per weight layer in execution order (a
    MultiheadAttention gives two: its packed in-projection, feeding attention, and ``out_proj``).
    ``is_output`` is not set by a path that enters a residual stream from its branch side, so a
    pre-norm transformer's last ``linear2`` is branch-final, not a classifier. Example:

        >>> g = read_graph(initlab.mlp(784, [128], 10), torch.randn(8, 784))
        >>> g["fc1"].activation_name, g["fc2"].is_output
        ('relu', True)
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    args, kwargs = _split_example(example)
    leaves = pytree.tree_leaves((args, kwargs)) + list(model.parameters()) + list(model.buffers())
    cuda = sorted({t.device.index or 0 for t in leaves if isinstance(t, Tensor) and t.device.type == "cuda"})
    with _preserved(model, cuda):
        try:
            return _read_fx(model, args, kwargs)
        except _BadExample:
            raise
        except _Untraceable as e:
            reason = str(e)
        except Exception as e:  # anything fx cannot follow: read the call order instead
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    with _preserved(model, cuda):
        return _read_hooks(model, args, kwargs, reason)


def _split_example(example: Any) -> tuple[tuple, dict]:
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, tuple):  # a list is one argument (forward(self, xs: list[Tensor]))
        return example, {}
    return (example,), {}


@contextlib.contextmanager
def _preserved(model: nn.Module, cuda_devices: list[int]):
    """Restore train/eval flags, buffers, root attributes and the RNG after running ``model``."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    attrs = set(vars(model))
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        for name in set(vars(model)) - attrs:  # the tracer's _tensor_constant<i>
            delattr(model, name)


# ---------------------------------------------------------------------------------------- fx


class _Untraceable(Exception):
    pass


class _BadExample(ValueError):
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
        return isinstance(m, WEIGHT_TYPES) or next(m.children(), None) is None

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
        meta = ((node.op == "call_function" and node.target is getattr and node.args[1] in _META_ATTRS)
                or (node.op == "call_function" and node.target in _META_FUNCTIONS and node.target is not getattr)
                or (node.op == "call_method" and node.target in _META_METHODS))
        if not meta and (isinstance(v, Tensor) or any(i in self.tainted for i in node.all_input_nodes)):
            self.tainted.add(node)
        return v

    def to_bool(self, obj: fx.Proxy) -> bool:
        if obj.node in self.tainted:
            raise _Untraceable(f"data-dependent control flow ({obj.node.format_node()})")
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
        raise _BadExample(f"example does not fit {type(model).__name__}.forward{sig}: {e}") from None
    inputs, concrete = {}, {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if bound.arguments.get(name):
                raise _Untraceable(f"forward takes *{name} or **{name} and the example fills it")
            inputs[("*" if p.kind == p.VAR_POSITIONAL else "**") + name] = () if p.kind == p.VAR_POSITIONAL else {}
        elif name in bound.arguments and any(isinstance(t, Tensor) for t in pytree.tree_leaves(bound.arguments[name])):
            inputs[name] = bound.arguments[name]
        else:  # None, flags, defaults: fixed while tracing, so `if mask is not None` follows the example
            value = bound.arguments.get(name, p.default)
            concrete[name] = value
            inputs.update({f"{name}_{i + 1}": v for i, v in enumerate(pytree.tree_leaves(value))})
    return inputs, concrete


def _read_fx(model: nn.Module, args: tuple, kwargs: dict) -> ModelGraph:
    inputs, concrete = _fx_inputs(model, args, kwargs)
    tracer = _ConcreteTracer(inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tracer.trace(model, concrete_args=concrete or None)
    return _FxReader(model, graph, tracer.values).read()


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


class _OutOfPlace:
    """Calls an in-place module on a copy: quadrature must not have its points overwritten."""

    def __init__(self, module: nn.Module):
        self.module, self.__name__ = module, type(module).__name__

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x.clone())

    def __repr__(self) -> str:
        return f"<out-of-place {self.module!r}>"


def _out_of_place(m: nn.Module) -> Callable[[Tensor], Tensor]:
    return _OutOfPlace(m) if getattr(m, "inplace", False) else m


def _function_name(f: Any) -> str:
    name = getattr(f, "__name__", repr(f))
    for prefix, ns in (("torch.", torch), ("torch.nn.functional.", F), ("", operator)):
        if getattr(ns, name, None) is f:
            return prefix + name
    return name


_FRAME = re.compile(r'File "([^"]*)", line \d+, in (\S+)')
_NOT_USER = (os.path.dirname(torch.__file__), __file__)


def _user_function(node: fx.Node) -> str | None:
    """Name of the innermost function outside torch (and this module) that emitted ``node``."""
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
        if ((op == "call_function" and t in _META_FUNCTIONS and (t is not getattr or n.args[1] in _META_ATTRS))
                or (op == "call_method" and t in _META_METHODS)
                or not any(isinstance(v, Tensor) for v in pytree.tree_leaves(self.values.get(n)))):
            return "meta"  # shapes, flags, asserts: not part of the signal's path
        if (t in _SCALE_FUNCTIONS if op == "call_function" else op == "call_method" and t in _SCALE_METHODS) \
                and any(isinstance(a, fx.Node) and a.op == "get_attr" for a in n.args[:2]):
            return "pass"  # x * self.gamma (LayerScale): a learned scale, not an activation
        if op == "call_module":
            m = self._module(n)
            return "weight" if isinstance(m, WEIGHT_TYPES) else "pass" if isinstance(m, _PASS_MODULES) else "other"
        two = len(n.args) >= 2 and all(isinstance(self.values.get(a), Tensor) for a in n.args[:2]
                                       if isinstance(a, fx.Node)) and all(isinstance(a, fx.Node) for a in n.args[:2])
        if op == "call_function":
            if t is operator.getitem:
                return "struct" if isinstance(self.values.get(n.args[0]), (tuple, list)) else "pass"
            if t in _PASS_FUNCTIONS or t is getattr:  # getattr: x.T, x.mT
                return "pass"
            if t in _ADD_FUNCTIONS:
                return "add" if two else "other"
            return "cat" if t in _CAT_FUNCTIONS else "other"
        if op == "call_method":
            return "pass" if t in _PASS_METHODS else "add" if t in _ADD_METHODS and two else "other"
        return "other"

    def _label(self, n: fx.Node) -> str:
        if n.op == "call_module":
            m = self._module(n)
            return _ACT_MODULES.get(type(m), type(m).__name__)
        if n.op == "call_function" and self.kinds.get(n) == "pass":
            return getattr(n.target, "__name__", str(n.target))  # "dropout", "flatten", "getitem"
        if n.op == "call_function":
            return _ACT_FUNCTIONS.get(n.target) or _function_name(n.target)
        return _ACT_METHODS.get(n.target, str(n.target))

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
        for _ in range(_REGION_SCAN):
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
            return _out_of_place(m), self._label(n), type(m) in _ACT_MODULES
        known = len(nodes) == 1 and (n.op == "call_function" and n.target in _ACT_FUNCTIONS
                                     or n.op == "call_method" and n.target in _ACT_METHODS and n.args == (s,))
        if known:
            name = self._label(n)
        elif frame is not None and frame != "forward":
            name = frame  # "<lambda>", "swish": the user's own function
        else:
            name = ">".join(self._label(x) for x in nodes)
        if plain and n.op == "call_function" and not getattr(n.target, "__name__", "").endswith("_"):
            return n.target, name, known
        if plain and n.op == "call_method" and known:
            return operator.methodcaller(_ACT_METHODS[n.target]), name, known
        return _Composite(self.root, s, nodes, name), name, known

    def _walk(self, start: fx.Node) -> dict[str, Any]:
        """Follow ``start``'s output through pass-through ops, adds and concats up to weight layers."""
        act = nonelem = out_through = None
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
                        is_output=is_output)
        if nonelem is not None:
            return dict(activation=None, activation_name=nonelem[1], feeds="non-elementwise", through=nonelem[2],
                        is_output=is_output)
        return dict(activation=None, activation_name=None, feeds="none", through=out_through or (),
                    is_output=is_output)

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
            elif isinstance(m, _RECURRENT):
                layers.append(_recurrent_info(target, m, walk["is_output"], **shared, branch_final=n in final))
            else:
                layers.append(LayerInfo(target, m, type(m).__name__, **walk, branch_final=n in final, **shared))
        unused = [name for name, m in self.root.named_modules() if isinstance(m, WEIGHT_TYPES) and name not in first
                  and not any(name.startswith(f + ".") for f in first)]
        if unused:
            self.notes.append(f"not called on the example: {', '.join(unused)}")
        return ModelGraph(tuple(layers), "fx", counts, tuple(self.notes))


def _recurrent_info(name: str, m: nn.Module, is_output: bool, **kw) -> LayerInfo:
    """Recurrent layers are opaque: their activation is the built-in cell nonlinearity (gates: sigmoid)."""
    relu = getattr(m, "nonlinearity", "tanh") == "relu"
    return LayerInfo(name, m, type(m).__name__, torch.relu if relu else torch.tanh, "relu" if relu else "tanh",
                     "built-in", (), is_output, **kw)


# ------------------------------------------------------------------------------------- hooks


class _CallOrder:
    """Forward hooks on every weight layer and every leaf module outside one; records calls in order.

    Owns its hooks (as :class:`initlab.probe.Probe`): leaving the context removes them, on error too.
    """

    def __init__(self, model: nn.Module):
        self.model, self.handles, self.calls = model, [], []

    def __enter__(self) -> _CallOrder:
        inside: list[str] = []
        for name, m in self.model.named_modules():
            if any(name.startswith(w + ".") for w in inside):
                continue
            if isinstance(m, WEIGHT_TYPES):
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
    weights = [i for i, (_, m, _) in enumerate(calls) if isinstance(m, WEIGHT_TYPES)]
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
            if isinstance(u, _PASS_MODULES):
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
