"""Models by name, like schemes: ``register_model``, ``list_models``, ``parse_model`` and ``make_model``.

A model spec is written in the scheme syntax: ``"resnet(blocks=20,width=64,norm=none)"``, ``"cnn"``,
``"mlp(depth=3,width=256,activation=tanh)"``. ``make_model`` builds one for a dataset's input shape
and class count from a zoo spec, a ``module:factory`` string (the user's own model) or a Python
callable; every zoo model gets its size arguments from the data, never from the spec.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from initlab.models.external import external_factory, is_external_spec
from initlab.models.mlp import mlp
from initlab.models.user import call_factory, load_factory, pick_logits
from initlab.models.zoo import CNN, ResMLP, ResNet, Transformer, check_in_shape, int_param
from initlab.schemes.specs import SchemeSpec, parse_scheme

ModelSource = str | Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``build(in_shape, num_classes, **params)``, its default parameters, the
    parameter a depth sweep varies, and whether it takes images or flat vectors."""

    name: str
    build: Callable[..., nn.Module]
    defaults: Mapping[str, Any]
    depth_param: str  # what "depth" means for this model in initlab depth (layers, blocks)
    layout: str  # "image" | "flat"
    summary: str

    def __post_init__(self):
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, build: Callable[..., nn.Module], *, depth_param: str, layout: str,
                   summary: str, defaults: Mapping[str, Any] | None = None) -> ModelEntry:
    """Register ``build(in_shape, num_classes, **params) -> nn.Module`` under ``name``.

    ``defaults`` are the parameters it accepts with their defaults (read from ``build``'s
    keyword-only arguments when omitted); a spec naming any other parameter is an error.
    """
    if not name.isidentifier():
        raise ValueError(f"model names are Python identifiers, got {name!r}")
    if layout not in ("image", "flat"):
        raise ValueError(f"layout must be 'image' or 'flat', got {layout!r}")
    if defaults is None:
        sig = inspect.signature(build)
        defaults = {k: p.default for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if depth_param not in defaults:
        raise ValueError(f"depth_param {depth_param!r} is not a parameter of model {name!r}")
    entry = ModelEntry(name, build, defaults, depth_param, layout, summary)
    _MODELS[name] = entry
    return entry


def list_models() -> list[str]:
    return list(_MODELS)


def get_model(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(_MODELS)} or your own 'module:factory'")
    return _MODELS[name]


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model name with parameters; prints as ``resnet(blocks=20,norm=none)``."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __str__(self) -> str:
        # booleans as users type them (true/false); everything else as a scheme spec prints it
        parts = [f"{k}={str(v).lower()}" if isinstance(v, bool) or v == "none" else str(SchemeSpec("x", {k: v}))[2:-1]
                 for k, v in self.params.items()]
        return f"{self.name}({','.join(parts)})" if parts else self.name

    def with_params(self, **params) -> ModelSpec:
        return ModelSpec(self.name, {**self.params, **params})


def is_factory_spec(text: str) -> bool:
    """``module:factory`` (the user's own model) or a library model (``timm:resnet18``) rather than a zoo spec."""
    return isinstance(text, str) and ":" in text and "(" not in text.partition(":")[0]


def parse_model(text: str | ModelSpec) -> ModelSpec:
    """``"resnet(blocks=20,norm=none)"`` -> ``ModelSpec``; name and parameters checked against the zoo."""
    if isinstance(text, ModelSpec):
        spec = text
    else:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a model spec is a zoo name like 'cnn' or 'resnet(blocks=20)', got {text!r}")
        try:
            parsed = parse_scheme(text.strip())
        except ValueError as e:
            raise ValueError(str(e).replace("init scheme", "model spec")) from None
        # a bare `none` reads as None; every zoo parameter that takes it means the string "none"
        spec = ModelSpec(parsed.name, {k: ("none" if v is None else v) for k, v in parsed.params.items()})
    entry = get_model(spec.name)
    unknown = [k for k in spec.params if k not in entry.defaults]
    if unknown:
        raise ValueError(f"model {spec.name!r} has no parameter {unknown[0]!r}; choose from: "
                         f"{', '.join(f'{k}={v}' for k, v in entry.defaults.items())}")
    return spec


def model_text(model: ModelSource | None) -> str | None:
    """How a model source is written in configs and titles: the spec text, or ``module:qualname``."""
    if model is None or isinstance(model, str):
        return model if model is None or is_factory_spec(model) else str(parse_model(model))
    if isinstance(model, ModelSpec):
        return str(model)
    mod, qual = getattr(model, "__module__", None), getattr(model, "__qualname__", None)
    return f"{mod}:{qual}" if mod and qual else repr(model)


def resolve_model(model: ModelSource) -> ModelSpec | Callable[..., nn.Module]:
    """A zoo ``ModelSpec`` or the factory callable (``module:factory`` imported): checked, not built."""
    if isinstance(model, ModelSpec):
        return parse_model(model)
    if isinstance(model, str):
        if is_external_spec(model):
            return external_factory(model)
        return load_factory(model.strip()) if is_factory_spec(model) else parse_model(model)
    if callable(model) and not isinstance(model, nn.Module):
        return model
    raise ValueError(f"model must be a zoo spec like 'cnn', a 'module:factory' or 'timm:NAME' string or a callable returning an "
                     f"nn.Module (called once per run), got {type(model).__name__}")


def make_model(model: ModelSource | ModelSpec, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fresh model for data of per-example shape ``in_shape`` ((C, H, W)) and ``num_classes``.

    Zoo specs are built with the data's sizes; factories are called with the sizes they declare
    (:func:`initlab.models.user.call_factory`) and made to return logits (:func:`pick_logits`).
    """
    source = resolve_model(model)
    if isinstance(source, ModelSpec):
        entry = get_model(source.name)
        return entry.build(tuple(in_shape), int(num_classes), **source.params)
    what = f"--model factory '{model}'" if isinstance(model, str) else "model factory"
    return pick_logits(call_factory(source, in_shape, num_classes, what=what))


def depth_param(model: str | ModelSpec) -> str:
    return get_model(parse_model(model).name).depth_param


# ----------------------------------------------------------------------------- the zoo


def _mlp(in_shape, num_classes, *, depth: int = 1, width: int = 128, activation: str = "relu") -> nn.Module:
    depth = int_param("depth", depth, 0, 10_000)
    width = int_param("width", width, 1, 1 << 20)
    shape = check_in_shape(in_shape, image=False)
    net = mlp(math.prod(shape), (width,) * depth, num_classes, activation)
    net.input_shape = (math.prod(shape),)
    return net


def _kw(cls):
    def build(in_shape, num_classes, **params):
        return cls(in_shape, num_classes, **params)
    sig = inspect.signature(cls.__init__)
    defaults = {k: p.default for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return build, defaults


register_model("mlp", _mlp, depth_param="depth", layout="flat",
               summary="fully connected: depth hidden layers of width units (the seed's 784-128-10 is mlp(depth=1,width=128))")
for _name, _cls, _depth, _layout, _summary in (
    ("cnn", CNN, "depth", "image", "plain conv stack: depth × (conv → [BN] → act), pooling, global-average-pool head"),
    ("resmlp", ResMLP, "blocks", "flat", "residual MLP: blocks of m Linear layers, pre-activation, norm none|batch|layer"),
    ("resnet", ResNet, "blocks", "image", "residual CNN: blocks of m convs at one resolution, pre-activation, norm none|batch|layer"),
    ("transformer", Transformer, "depth", "image", "pre-LN encoder over image rows or patches, GPT-2 names (c_attn, c_proj, c_fc)"),
):
    _build, _defaults = _kw(_cls)
    register_model(_name, _build, depth_param=_depth, layout=_layout, summary=_summary, defaults=_defaults)
