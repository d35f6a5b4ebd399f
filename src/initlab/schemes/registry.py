"""Registry of scheme names and aliases (timm style): ``register_scheme``, ``get_scheme``, ``list_schemes``.

A ``Scheme`` is a weight function ``fn(weight, *, generator=None, **params)`` plus a bias policy
and default parameters. The built-in schemes are registered at the bottom of this module.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from initlab.schemes.functions import (
    _check_choice,
    constant_,
    fan_in_and_fan_out,
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    normal_,
    orthogonal_,
    pytorch_default_,
    trunc_normal_,
    uniform_,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
    zeros_,
)

BIAS_POLICIES = ("zeros", "keep", "pytorch_default")


def _init_bias(policy: str | Callable, bias: Tensor, weight: Tensor, generator: torch.Generator | None) -> None:
    """Fill ``bias`` by a scheme's bias policy; ``weight`` is the (block of the) weight it belongs to.

    "pytorch_default" is U(±1/sqrt(fan_in)) with fan_in read from ``weight.shape`` the way torch
    reads it (dim 1 · ∏kernel), so it reproduces what Linear, ConvNd and ConvTransposeNd do at
    construction, whatever fans the layer declares for the weight's own scheme.
    """
    with torch.no_grad():
        if callable(policy):
            policy(bias, weight, generator=generator)
        elif policy == "zeros":
            bias.zero_()
        elif policy == "pytorch_default":
            fan_in, _ = fan_in_and_fan_out(weight.shape) if weight.dim() >= 2 else (weight.numel(), 0)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            bias.uniform_(-bound, bound, generator=generator)
        # "keep" leaves the bias as it is


@dataclass(frozen=True)
class Scheme:
    """A registered scheme: the weight function, its bias policy and default parameters.

    Calling it validates parameter names, merges ``defaults`` and initializes one weight.
    """

    name: str
    fn: Callable[..., Any]  # fn(weight, *, generator=None, **params), in place
    bias: str | Callable = "zeros"  # "zeros" | "keep" | "pytorch_default" | fn(bias, weight, *, generator)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # merged under the caller's params
    aliases: tuple[str, ...] = ()
    needs_example: bool = False  # whole-model scheme reading the model on an example batch (auto, lsuv)
    model_level: bool = False  # whole-model scheme reading the model's structure (fixup, skipinit, rezero, gpt2)
    # The whole-model protocol: initialize_model(module, rules, params, *, own, example, generator, recurrent,
    # forget_bias, strict, report) -> module, or (module, report frame) with report=True; ``own`` is the
    # scheme's own parameters when ``rules`` is that scheme alone, None for a rules mapping. Set by the
    # scheme's own module with register_model_initializer; ``initialize`` hands the model to it, by no name.
    initialize_model: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def whole_model(self) -> bool:
        """Initializes a whole model (``needs_example`` or ``model_level``), not one tensor at a time."""
        return self.needs_example or self.model_level

    @property
    def params(self) -> dict[str, Any]:
        """Parameter names → default values (``inspect.Parameter.empty`` when required)."""
        sig = inspect.signature(self.fn)
        return {
            p.name: self.defaults.get(p.name, p.default)
            for p in list(sig.parameters.values())[1:]
            if p.name != "generator" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def _accepts_any(self) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(self.fn).parameters.values())

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Merge defaults with ``params``, raising ValueError for unknown or missing names."""
        valid = self.params
        if not self._accepts_any():
            for key in params:
                if key not in valid:
                    raise ValueError(
                        f"scheme {self.name!r} got unexpected parameter {key!r}; "
                        f"valid parameters: {', '.join(valid) or '(none)'}"
                    )
        merged = {**self.defaults, **params}
        missing = [k for k, v in valid.items() if v is inspect.Parameter.empty and k not in merged]
        if missing:
            raise ValueError(f"scheme {self.name!r} requires parameter(s): {', '.join(missing)}")
        return merged

    def __call__(self, weight: Tensor, *, generator: torch.Generator | None = None, **params: Any) -> Tensor:
        self.fn(weight, generator=generator, **self.resolve_params(params))
        return weight


_SCHEMES: dict[str, Scheme] = {}
_ALIASES: dict[str, str] = {}


def register_scheme(
    name: str,
    *,
    bias: str | Callable = "zeros",
    aliases: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    needs_example: bool = False,
    model_level: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn(weight, *, generator=None, **params)`` under ``name``.

    Re-registering a name (or alias) warns and replaces it, as in timm.

    Args:
        name: canonical scheme name.
        bias: bias policy: "zeros", "keep", "pytorch_default", or ``fn(bias, weight, *, generator)``.
        aliases: extra names resolving to this scheme.
        defaults: parameter values used when the caller does not give them.
        needs_example: the scheme initializes a whole model from an example batch
            (``initialize(model, name, example=batch)``), not one tensor at a time.
        model_level: the scheme computes a rules mapping from the model's structure
            (``initialize(model, name)``; see :mod:`initlab.schemes.residual`).

    Example:
        >>> @register_scheme("half_normal")
        ... def half_normal_(w, *, generator=None, std=0.1):
        ...     w.normal_(0, std, generator=generator).abs_()
    """
    if not callable(bias):
        _check_choice("bias policy", bias, BIAS_POLICIES)

    def decorator(fn: Callable) -> Callable:
        for key in (name, *aliases):
            if key in _SCHEMES or key in _ALIASES:
                warnings.warn(f"init scheme {key!r} is already registered; overwriting it", stacklevel=3)
                _SCHEMES.pop(key, None)
                _ALIASES.pop(key, None)
        _SCHEMES[name] = Scheme(name, fn, bias, dict(defaults or {}), tuple(aliases), needs_example, model_level)
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


def register_model_initializer(name: str, initialize_model: Callable[..., Any]) -> None:
    """Make the registered scheme ``name`` initialize whole models through ``initialize_model`` (the
    protocol on :class:`Scheme`); ``initialize`` then hands any rules using it to that function."""
    _SCHEMES[name] = dataclasses.replace(get_scheme(name), initialize_model=initialize_model)


def list_schemes() -> list[str]:
    """Canonical scheme names, sorted."""
    return sorted(_SCHEMES)


def list_aliases() -> dict[str, str]:
    """Alias → canonical name, sorted by alias."""
    return dict(sorted(_ALIASES.items()))


def get_scheme(name: str | Scheme) -> Scheme:
    """Return the ``Scheme`` for a name or alias; a ``Scheme`` passes through unchanged."""
    if isinstance(name, Scheme):
        return name
    key = _ALIASES.get(name, name)
    if key not in _SCHEMES:
        valid = sorted([*_SCHEMES, *_ALIASES])
        raise ValueError(f"unknown init scheme {name!r}; choose from: {', '.join(valid)}")
    return _SCHEMES[key]


register_scheme("zero", aliases=("zeros",))(zeros_)
register_scheme("constant")(constant_)
register_scheme("normal", aliases=("random",))(normal_)
register_scheme("uniform")(uniform_)
register_scheme("trunc_normal")(trunc_normal_)
register_scheme("variance_scaling")(variance_scaling_)
register_scheme("xavier_uniform", aliases=("xavier", "glorot", "glorot_uniform"))(xavier_uniform_)
register_scheme("xavier_normal", aliases=("glorot_normal",))(xavier_normal_)
register_scheme("kaiming_uniform", aliases=("he", "kaiming", "he_uniform"))(kaiming_uniform_)
register_scheme("kaiming_normal", aliases=("he_normal",))(kaiming_normal_)
register_scheme("lecun_uniform")(lecun_uniform_)
register_scheme("lecun_normal", aliases=("lecun",))(lecun_normal_)
register_scheme("orthogonal")(orthogonal_)
register_scheme("pytorch_default", bias="pytorch_default", aliases=("default",))(pytorch_default_)


@register_scheme("auto", needs_example=True)
def auto_(weight, *, generator=None, mode="analytic", max_sigma_b2=0.5, target_q=1.0, tol=0.1, max_iters=10):
    """Whole-model init from the model's graph: each layer at its activation's critical point.

    See :mod:`initlab.schemes.auto`; it needs the model and an example batch, so it is applied by
    ``initialize(model, "auto", example=batch)``, not per tensor.
    """
    raise ValueError("auto initializes a whole model from its graph: call initialize(model, 'auto', "
                     "example=batch), not inside a rules mapping")


@register_scheme("lsuv", needs_example=True)
def lsuv_pre_init_(weight, *, generator=None, target_std=1.0, tol=0.1, max_iters=10, mean_correction=False,
                   pre_init="orthogonal"):
    """Layer-sequential unit-variance init (Mishkin & Matas 2016): pre-init, then rescale each layer's output std.

    See :mod:`initlab.schemes.lsuv`; the rescaling needs the model and an example batch, so it is
    applied by ``initialize(model, "lsuv", example=batch)`` (alone or as the value of rules).
    Called on one tensor (``check_scheme``), it checks the parameters and draws the pre-init only.
    """
    from initlab.schemes.lsuv import check_lsuv_params, pre_init_scheme

    p = check_lsuv_params(target_std=target_std, tol=tol, max_iters=max_iters, mean_correction=mean_correction,
                          pre_init=pre_init)
    sch, params = pre_init_scheme(p["pre_init"])
    sch.fn(weight, generator=generator, **params)
