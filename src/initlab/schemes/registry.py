"""Registry of scheme names and aliases (timm style): ``register_scheme``, ``get_scheme``, ``list_schemes``.

A ``Scheme`` is a weight function ``fn(weight, *, generator=None, **params)`` plus a bias policy
and default parameters. The built-in schemes are registered at the bottom of this module.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from initlab.schemes.functions import (
    calculate_gain,
    check_choice,
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


def init_bias(policy: str | Callable, bias: Tensor, weight: Tensor, generator: torch.Generator | None) -> None:
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
    # scheme's own module (register_scheme(..., initialize_model=)); ``initialize`` hands the model to it, by no name.
    initialize_model: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    # check(**params): validate the parameters without drawing (one-line ValueErrors), for a scheme whose
    # per-tensor call has no meaning (auto); ``check_scheme`` calls it instead of drawing a throwaway tensor.
    check: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    # second_moment(params, fan_in, fan_out) -> E[W²] of one entry, what the mean-field theory needs
    # (``initlab.schemes.variance.weight_variance``); None when there is no closed form.
    second_moment: Callable[[Mapping[str, Any], int, int], float] | None = field(default=None, compare=False,
                                                                                  repr=False)

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
    second_moment: Callable[[Mapping[str, Any], int, int], float] | None = None,
    check: Callable[..., Any] | None = None,
    initialize_model: Callable[..., Any] | None = None,
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
        second_moment: ``(params, fan_in, fan_out) -> E[W²]``, the scheme's analytic second moment
            for the mean-field theory (``initlab.schemes.variance``), params merged with defaults.
        check: ``check(**params)`` validating a whole-model scheme's parameters without drawing.
        initialize_model: the whole-model protocol (see :class:`Scheme`).

    Example:
        >>> @register_scheme("half_normal")
        ... def half_normal_(w, *, generator=None, std=0.1):
        ...     w.normal_(0, std, generator=generator).abs_()
    """
    if not callable(bias):
        check_choice("bias policy", bias, BIAS_POLICIES)

    def decorator(fn: Callable) -> Callable:
        for key in (name, *aliases):
            if key in _SCHEMES or key in _ALIASES:
                warnings.warn(f"init scheme {key!r} is already registered; overwriting it", stacklevel=3)
                _SCHEMES.pop(key, None)
                _ALIASES.pop(key, None)
        _SCHEMES[name] = Scheme(name, fn, bias, dict(defaults or {}), tuple(aliases), needs_example, model_level,
                                initialize_model=initialize_model, check=check, second_moment=second_moment)
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


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


# Second moments E[W²] of the built-in schemes (torch layout, fans as given): zero 0; constant v²; normal
# std² + mean²; uniform(a) a²/3; trunc_normal the truncated normal's; variance_scaling scale/n; xavier
# gain²·2/(fan_in + fan_out); kaiming gain²/fan; lecun 1/fan_in; orthogonal gain²/max(fan_in, fan_out) (exact: an
# (out × in) semi-orthogonal matrix has min(out, in) unit-norm rows or columns); pytorch_default 1/(3 fan_in).


def _trunc_normal_moment(p, fan_in, fan_out):
    from scipy.stats import truncnorm  # scipy.stats takes ~0.3 s to import; only the theory needs it

    a, b = (p["a"] - p["mean"]) / p["std"], (p["b"] - p["mean"]) / p["std"]
    d = truncnorm(a, b, loc=p["mean"], scale=p["std"])
    return float(d.var() + d.mean() ** 2)


def _scaling_moment(p, fan_in, fan_out):
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[p["mode"]]
    return p["scale"] / max(1.0, n)


def _xavier_moment(p, fan_in, fan_out):
    return p["gain"] ** 2 * 2.0 / (fan_in + fan_out)


def _kaiming_moment(p, fan_in, fan_out):
    fan = fan_in if p["mode"] == "fan_in" else fan_out
    return calculate_gain(p["nonlinearity"], p["a"]) ** 2 / fan


def _lecun_moment(p, fan_in, fan_out):
    return 1.0 / fan_in


register_scheme("zero", aliases=("zeros",), second_moment=lambda p, fi, fo: 0.0)(zeros_)
register_scheme("constant", second_moment=lambda p, fi, fo: float(p["value"]) ** 2)(constant_)
register_scheme("normal", aliases=("random",), second_moment=lambda p, fi, fo: p["std"] ** 2 + p["mean"] ** 2)(normal_)
register_scheme("uniform", second_moment=lambda p, fi, fo: p["a"] ** 2 / 3)(uniform_)
register_scheme("trunc_normal", second_moment=_trunc_normal_moment)(trunc_normal_)
register_scheme("variance_scaling", second_moment=_scaling_moment)(variance_scaling_)
register_scheme("xavier_uniform", aliases=("xavier", "glorot", "glorot_uniform"),
                second_moment=_xavier_moment)(xavier_uniform_)
register_scheme("xavier_normal", aliases=("glorot_normal",), second_moment=_xavier_moment)(xavier_normal_)
register_scheme("kaiming_uniform", aliases=("he", "kaiming", "he_uniform"), second_moment=_kaiming_moment)(kaiming_uniform_)
register_scheme("kaiming_normal", aliases=("he_normal",), second_moment=_kaiming_moment)(kaiming_normal_)
register_scheme("lecun_uniform", second_moment=_lecun_moment)(lecun_uniform_)
register_scheme("lecun_normal", aliases=("lecun",), second_moment=_lecun_moment)(lecun_normal_)
register_scheme("orthogonal", second_moment=lambda p, fi, fo: p["gain"] ** 2 / max(fi, fo))(orthogonal_)
register_scheme("pytorch_default", bias="pytorch_default", aliases=("default",),
                second_moment=lambda p, fi, fo: 1.0 / (3 * fi))(pytorch_default_)
