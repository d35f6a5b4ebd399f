"""Types and op tables shared by both graph readers: LayerInfo, ModelGraph, the elementwise test."""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import modules as _m

from initlab.core.layer_kinds import is_norm_like, is_transposed_linear

__all__ = ["LayerInfo", "ModelGraph", "WEIGHT_TYPES", "is_elementwise", "is_weight_module", "is_pass_module",
           "is_norm_module"]

WEIGHT_TYPES = (nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag, _m.conv._ConvNd, nn.MultiheadAttention,
                _m.rnn.RNNBase, _m.rnn.RNNCellBase)
RECURRENT = (_m.rnn.RNNBase, _m.rnn.RNNCellBase)
_PASS_MODULES = tuple(c for c in (
    _m.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, getattr(nn, "RMSNorm", None),
    _m.pooling._MaxPoolNd, _m.pooling._AvgPoolNd, _m.pooling._AdaptiveAvgPoolNd, _m.pooling._AdaptiveMaxPoolNd,
    _m.pooling._LPPoolNd, _m.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, _m.padding._ConstantPadNd,
    _m.padding._ReflectionPadNd, _m.padding._ReplicationPadNd, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.ChannelShuffle) if c is not None)


_NORMS = tuple(c for c in (_m.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None)) if c)


def is_weight_module(m: nn.Module) -> bool:
    """A weight layer: the torch types of ``WEIGHT_TYPES`` and other libraries' recognized ones (transformers' Conv1D)."""
    return isinstance(m, WEIGHT_TYPES) or is_transposed_linear(m)


def is_norm_module(m: nn.Module) -> bool:
    """A normalization layer: torch's, or another library's recognized by shape and role (T5LayerNorm, RMSNorm)."""
    return isinstance(m, _NORMS) or (not isinstance(m, WEIGHT_TYPES) and next(m.children(), None) is None
                                    and is_norm_like(m))


def is_pass_module(m: nn.Module) -> bool:
    """A module the signal passes through on its way to an activation (norms, pooling, dropout, reshapes)."""
    return isinstance(m, _PASS_MODULES) or is_norm_module(m)


def _functions(namespaces, names) -> set:
    return {f for ns in namespaces for n in names if callable(f := getattr(ns, n, None))}


PASS_FUNCTIONS = _functions((F, torch), (
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm", "normalize",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    *(f"{p}pool{d}d" for p in ("max_", "avg_", "adaptive_avg_", "adaptive_max_", "lp_") for d in (1, 2, 3)),
    "pad", "interpolate", "pixel_shuffle", "pixel_unshuffle", "flatten", "reshape", "permute", "transpose",
    "squeeze", "unsqueeze", "movedim", "swapaxes", "clone", "mean", "sum", "narrow", "select", "t", "chunk",
    "split", "unbind"))
PASS_METHODS = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t",
                 "contiguous", "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "clone", "to", "float",
                 "double", "half", "bfloat16", "type_as", "detach", "mean", "sum", "narrow", "select", "movedim",
                 "swapaxes", "chunk", "split", "unbind"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_", "__add__", "__radd__", "__iadd__"}
CAT_FUNCTIONS = _functions((torch,), ("cat", "concat", "concatenate", "stack"))

# Known activations: name as in initlab.models.ACTIVATIONS where one exists. Trusted as
# elementwise without the numeric test (RReLU in train mode is random, so it would fail it).
_ACT_NAMES = ("relu", "relu6", "leaky_relu", "rrelu", "elu", "celu", "selu", "gelu", "silu", "mish", "tanh",
              "sigmoid", "hardtanh", "hardswish", "hardsigmoid", "softplus", "softsign", "tanhshrink",
              "logsigmoid", "softshrink", "hardshrink")
ACT_FUNCTIONS = {f: n for n in _ACT_NAMES for ns in (torch, F, torch.special)
                  for v in (n, n + "_") if callable(f := getattr(ns, v, None))}
ACT_METHODS = {v: n for n in ("relu", "tanh", "sigmoid") for v in (n, n + "_")}
ACT_MODULES = {getattr(nn, c): n for c, n in (
    ("ReLU", "relu"), ("ReLU6", "relu6"), ("LeakyReLU", "leaky_relu"), ("RReLU", "rrelu"), ("ELU", "elu"),
    ("CELU", "celu"), ("SELU", "selu"), ("GELU", "gelu"), ("SiLU", "silu"), ("Mish", "mish"), ("Tanh", "tanh"),
    ("Sigmoid", "sigmoid"), ("Hardtanh", "hardtanh"), ("Hardswish", "hardswish"), ("Hardsigmoid", "hardsigmoid"),
    ("Softplus", "softplus"), ("Softsign", "softsign"), ("Tanhshrink", "tanhshrink"), ("LogSigmoid", "logsigmoid"),
    ("Softshrink", "softshrink"), ("Hardshrink", "hardshrink"))}
# Tensor metadata: branching on these follows the example's shapes, not its data.
META_ATTRS = {"shape", "ndim", "dtype", "device", "is_nested", "is_cuda", "is_sparse", "is_quantized", "is_meta",
               "layout", "requires_grad"}
META_FUNCTIONS = {getattr, len} | _functions((torch,), ("is_floating_point", "is_complex", "is_tensor", "numel",
                                                          "is_same_size"))
META_METHODS = {"size", "dim", "ndimension", "numel", "nelement", "get_device", "is_floating_point", "is_complex",
                 "is_contiguous", "element_size"}
SCALE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div}
SCALE_METHODS = {"mul", "mul_", "div", "div_", "__mul__", "__rmul__", "__truediv__"}
REGION_SCAN = 64  # nodes scanned past an activation's first op for the rest of it (x * sigmoid(x))


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
    norm: str | None = None  # the norm module its output passes first, before any add (conv -> bn), by name


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


class _OutOfPlace:
    """Calls an in-place module on a copy: quadrature must not have its points overwritten."""

    def __init__(self, module: nn.Module):
        self.module, self.__name__ = module, type(module).__name__

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x.clone())

    def __repr__(self) -> str:
        return f"<out-of-place {self.module!r}>"


def out_of_place(m: nn.Module) -> Callable[[Tensor], Tensor]:
    return _OutOfPlace(m) if getattr(m, "inplace", False) else m


def function_name(f: Any) -> str:
    name = getattr(f, "__name__", repr(f))
    for prefix, ns in (("torch.", torch), ("torch.nn.functional.", F), ("", operator)):
        if getattr(ns, name, None) is f:
            return prefix + name
    return name


def recurrent_info(name: str, m: nn.Module, is_output: bool, **kw) -> LayerInfo:
    """Recurrent layers are opaque: their activation is the built-in cell nonlinearity (gates: sigmoid)."""
    relu = getattr(m, "nonlinearity", "tanh") == "relu"
    return LayerInfo(name, m, type(m).__name__, torch.relu if relu else torch.tanh, "relu" if relu else "tanh",
                     "built-in", (), is_output, **kw)
