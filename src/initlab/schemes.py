"""Weight-initialization schemes: tensor functions, ``variance_scaling``, and a registry of names.

Three layers, smallest first:

* tensor functions (``xavier_uniform_``, ``variance_scaling_``, ...) that modify their argument
  in place under ``torch.no_grad()``, torch style, each taking an optional ``torch.Generator``;
* a registry (``register_scheme`` / ``get_scheme`` / ``list_schemes``) mapping names and
  aliases to those functions plus a bias policy, timm style;
* ``initialize(module, scheme)`` applying a scheme to every Linear/Conv layer of a module, and
  ``SchemeSpec`` / ``parse_scheme`` to name a scheme with parameters in configs and on the CLI.

Conventions: weights follow torch's layout ``(out, in, *kernel)`` throughout (Keras/JAX use
``(..., in, out)``). "Truncated normal" means two different things: Keras/JAX variance scaling
cuts N(0, 1) at ±2 and rescales so the std is exactly ``sqrt(var)``; torch's ``trunc_normal_``
cuts N(mean, std) at absolute bounds ``[a, b]`` with no correction. Both are here, under
different names. Nothing reads global RNG state when a generator is passed.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "Scheme",
    "SchemeSpec",
    "calculate_gain",
    "check_scheme",
    "constant_",
    "fan_in_and_fan_out",
    "get_scheme",
    "initialize",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_uniform_",
    "list_aliases",
    "list_schemes",
    "normal_",
    "orthogonal_",
    "parse_scheme",
    "parse_scheme_list",
    "pytorch_default_",
    "register_scheme",
    "split_top_level",
    "trunc_normal_",
    "uniform_",
    "variance_scaling_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

# std of N(0, 1) truncated to [-2, 2]; dividing by it makes the truncated std exactly 1
# (the constant Keras and JAX use).
TRUNCATED_NORMAL_STD = 0.87962566103423978

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "untruncated_normal", "uniform")
_LINEAR_GAIN_NAMES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
NONLINEARITIES = (*_LINEAR_GAIN_NAMES, "sigmoid", "tanh", "relu", "leaky_relu", "selu")
# ConvTranspose weights are (in, out, *k), so torch's fan convention reads them backwards;
# leaving them out is safer than initializing them with swapped fans.
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# --------------------------------------------------------------------------- validation


def _check_number(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"invalid {name} {value!r}; choose from: {', '.join(choices)}")
    return value


# --------------------------------------------------------------------------- math


def fan_in_and_fan_out(shape: torch.Size | Sequence[int] | Tensor) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight shape in torch's ``(out, in, *kernel)`` layout.

    fan_in = in·∏kernel and fan_out = out·∏kernel (same as torch's private
    ``_calculate_fan_in_and_fan_out``; Keras/JAX read ``(..., in, out)`` instead).

    Args:
        shape: a weight shape with at least two dimensions, or a tensor (its shape is used).
    """
    if isinstance(shape, Tensor):
        shape = shape.shape
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"fan needs a shape with at least 2 dimensions (out, in, *kernel), got {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(weight: Tensor, mode: str) -> float:
    fan_in, fan_out = fan_in_and_fan_out(weight)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Return the recommended gain for a nonlinearity; equal to ``torch.nn.init.calculate_gain``.

    linear/conv*/sigmoid → 1, tanh → 5/3, relu → √2, leaky_relu → √(2 / (1 + slope²))
    (slope = ``param``, default 0.01), selu → 3/4.

    Args:
        nonlinearity: one of ``NONLINEARITIES``.
        param: negative slope for ``leaky_relu``; ignored otherwise.
    """
    if nonlinearity in _LINEAR_GAIN_NAMES or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else _check_number("leaky_relu negative slope", param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; choose from: {', '.join(NONLINEARITIES)}")


# --------------------------------------------------------------------------- tensor functions


def zeros_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Fill with zeros (all units identical: the symmetry-breaking failure case).

    Args:
        weight: tensor modified in place.
        generator: unused; accepted so every scheme has the same signature.
    """
    with torch.no_grad():
        return weight.zero_()


def constant_(weight: Tensor, value: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Fill with ``value``.

    Args:
        weight: tensor modified in place.
        value: the constant.
        generator: unused; accepted so every scheme has the same signature.
    """
    value = _check_number("value", value)
    with torch.no_grad():
        return weight.fill_(value)


def normal_(
    weight: Tensor, mean: float = 0.0, std: float = 0.01, *, generator: torch.Generator | None = None
) -> Tensor:
    """Draw from N(mean, std²); the seed's "random" init (note torch's ``normal_`` defaults std=1).

    Args:
        weight: tensor modified in place.
        mean: mean of the normal.
        std: standard deviation, > 0.
        generator: source of randomness.
    """
    mean = _check_number("mean", mean)
    std = _check_number("std", std, positive=True)
    with torch.no_grad():
        return weight.normal_(mean, std, generator=generator)


def uniform_(weight: Tensor, a: float = 0.05, *, generator: torch.Generator | None = None) -> Tensor:
    """Draw from the symmetric U(-a, a).

    Unlike ``torch.nn.init.uniform_(tensor, a, b)``, which draws from U(a, b), this takes
    one half-width ``a``.

    Args:
        weight: tensor modified in place.
        a: half-width of the interval, > 0 (default 0.05).
        generator: source of randomness.
    """
    a = _check_number("a", a, positive=True)
    with torch.no_grad():
        return weight.uniform_(-a, a, generator=generator)


def trunc_normal_(
    weight: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw from N(mean, std²) cut to the absolute interval [a, b], torch semantics.

    The std is *not* corrected for the cut (so it is below ``std``); for the Keras/JAX
    variance-preserving truncated normal use ``variance_scaling_(distribution="truncated_normal")``.
    Delegates to ``torch.nn.init.trunc_normal_`` so the draws match it exactly.

    Args:
        weight: tensor modified in place.
        mean, std: parameters of the normal before truncation (std > 0).
        a, b: absolute cut points, a < b.
        generator: source of randomness.
    """
    mean = _check_number("mean", mean)
    std = _check_number("std", std, positive=True)
    a, b = _check_number("a", a), _check_number("b", b)
    if not a < b:
        raise ValueError(f"trunc_normal needs a < b, got a={a!r}, b={b!r}")
    return torch.nn.init.trunc_normal_(weight, mean, std, a, b, generator=generator)


def variance_scaling_(
    weight: Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw weights with variance ``scale / n``, the Keras/JAX ``VarianceScaling`` initializer.

    n = fan_in, fan_out, or (fan_in + fan_out) / 2 for ``mode`` fan_in / fan_out / fan_avg,
    with fans in torch's ``(out, in, *kernel)`` layout. Distributions:

    * ``truncated_normal``: N(0, 1) cut at ±2, times sqrt(var) / 0.87962566103423978,
      so the std is exactly sqrt(var) and |w| <= 2·sqrt(var) / 0.8796;
    * ``normal`` (alias ``untruncated_normal``): N(0, var);
    * ``uniform``: U(-sqrt(3·var), sqrt(3·var)).

    Args:
        weight: tensor modified in place, at least 2-D.
        scale: variance multiplier, > 0 (1 for LeCun/Glorot, 2 for He).
        mode: which fan divides the scale.
        distribution: the shape of the distribution.
        generator: source of randomness.
    """
    scale = _check_number("scale", scale, positive=True)
    _check_choice("mode", mode, MODES)
    _check_choice("distribution", distribution, DISTRIBUTIONS)
    if weight.numel() == 0:
        return weight
    var = scale / max(1.0, _fan(weight, mode))
    with torch.no_grad():
        if distribution == "truncated_normal":
            torch.nn.init.trunc_normal_(weight, 0.0, 1.0, -2.0, 2.0, generator=generator)
            return weight.mul_(math.sqrt(var) / TRUNCATED_NORMAL_STD)
        if distribution in ("normal", "untruncated_normal"):
            return weight.normal_(0.0, math.sqrt(var), generator=generator)
        bound = math.sqrt(3.0 * var)
        return weight.uniform_(-bound, bound, generator=generator)


def lecun_uniform_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """LeCun uniform: U(±sqrt(3 / fan_in)) = ``variance_scaling_(1, "fan_in", "uniform")``.

    LeCun et al. 1998, "Efficient BackProp".

    Args:
        weight: tensor modified in place.
        generator: source of randomness.
    """
    return variance_scaling_(weight, 1.0, "fan_in", "uniform", generator=generator)


def lecun_normal_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """LeCun normal: truncated normal with std sqrt(1 / fan_in), Keras/JAX semantics.

    = ``variance_scaling_(1, "fan_in", "truncated_normal")``. LeCun et al. 1998,
    "Efficient BackProp"; the default for SELU networks (Klambauer et al. 2017).

    Args:
        weight: tensor modified in place.
        generator: source of randomness.
    """
    return variance_scaling_(weight, 1.0, "fan_in", "truncated_normal", generator=generator)


# Glorot and He below follow torch's arithmetic step by step rather than calling
# variance_scaling_, so that with the same generator they are bit-identical to
# torch.nn.init; mathematically they are the specializations named in each docstring.


def xavier_uniform_(weight: Tensor, gain: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
    """Glorot/Xavier uniform: U(±gain·sqrt(6 / (fan_in + fan_out))).

    For gain=1 this is ``variance_scaling_(1, "fan_avg", "uniform")``.
    Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward networks".

    Args:
        weight: tensor modified in place, at least 2-D.
        gain: multiplier, > 0 (see ``calculate_gain``).
        generator: source of randomness.
    """
    gain = _check_number("gain", gain, positive=True)
    if weight.numel() == 0:
        return weight
    fan_in, fan_out = fan_in_and_fan_out(weight)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    with torch.no_grad():
        return weight.uniform_(-bound, bound, generator=generator)


def xavier_normal_(weight: Tensor, gain: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
    """Glorot/Xavier normal: N(0, std²) with std = gain·sqrt(2 / (fan_in + fan_out)).

    Untruncated, as in torch; for gain=1 this is ``variance_scaling_(1, "fan_avg", "normal")``
    (Keras' ``glorot_normal`` is truncated instead). Glorot & Bengio 2010.

    Args:
        weight: tensor modified in place, at least 2-D.
        gain: multiplier, > 0.
        generator: source of randomness.
    """
    gain = _check_number("gain", gain, positive=True)
    if weight.numel() == 0:
        return weight
    fan_in, fan_out = fan_in_and_fan_out(weight)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    with torch.no_grad():
        return weight.normal_(0.0, std, generator=generator)


def _kaiming_std(weight: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    _check_number("a", a)
    _check_choice("mode", mode, ("fan_in", "fan_out"))
    _check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(weight, mode))


def kaiming_uniform_(
    weight: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming uniform: U(±gain·sqrt(3 / fan)), gain = ``calculate_gain(nonlinearity, a)``.

    With the defaults (relu, fan_in) this is true He init, gain √2, i.e.
    ``variance_scaling_(2, "fan_in", "uniform")``. torch's own default
    (nonlinearity="leaky_relu", a=0) gives the same gain √2. Not to be confused with torch's
    *layer* default, ``a=sqrt(5)``, which is ``pytorch_default_``.
    He et al. 2015, "Delving Deep into Rectifiers".

    Args:
        weight: tensor modified in place, at least 2-D.
        a: negative slope, used only for ``leaky_relu``.
        mode: ``fan_in`` preserves forward variance, ``fan_out`` backward.
        nonlinearity: name understood by ``calculate_gain``.
        generator: source of randomness.
    """
    std = _kaiming_std(weight, a, mode, nonlinearity) if weight.numel() else 0.0
    bound = math.sqrt(3.0) * std
    with torch.no_grad():
        return weight.uniform_(-bound, bound, generator=generator)


def kaiming_normal_(
    weight: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming normal: N(0, std²), std = gain / sqrt(fan), untruncated (torch semantics).

    With the defaults this is ``variance_scaling_(2, "fan_in", "normal")``; Keras/JAX
    ``he_normal`` is the truncated variant. He et al. 2015, "Delving Deep into Rectifiers".

    Args:
        weight: tensor modified in place, at least 2-D.
        a: negative slope, used only for ``leaky_relu``.
        mode: ``fan_in`` or ``fan_out``.
        nonlinearity: name understood by ``calculate_gain``.
        generator: source of randomness.
    """
    std = _kaiming_std(weight, a, mode, nonlinearity) if weight.numel() else 0.0
    with torch.no_grad():
        if weight.numel() == 0:
            return weight
        return weight.normal_(0.0, std, generator=generator)


def orthogonal_(weight: Tensor, gain: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
    """(Semi-)orthogonal matrix times ``gain``, from the QR of a Gaussian matrix.

    The weight is viewed as (out, in·∏kernel); rows are orthonormal when out <= in, columns
    otherwise; signs are corrected with diag(R) so the result is Haar-distributed.
    Delegates to ``torch.nn.init.orthogonal_``. Saxe et al. 2014, "Exact solutions to the
    nonlinear dynamics of learning in deep linear neural networks".

    Args:
        weight: tensor modified in place, at least 2-D.
        gain: multiplier, > 0.
        generator: source of randomness.
    """
    gain = _check_number("gain", gain, positive=True)
    if weight.dim() < 2:
        raise ValueError(f"orthogonal needs a tensor with at least 2 dimensions, got shape {tuple(weight.shape)}")
    return torch.nn.init.orthogonal_(weight, gain, generator=generator)


def pytorch_default_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """What ``nn.Linear`` / ``nn.ConvNd`` do at construction: U(±1/sqrt(fan_in)).

    torch writes it as ``kaiming_uniform_(a=sqrt(5))``: gain sqrt(1/3), bound
    gain·sqrt(3/fan_in) = 1/sqrt(fan_in). This is *not* He init (its variance is a third of
    He's). Biases get U(±1/sqrt(fan_in)) too; see the ``pytorch_default`` bias policy.

    Args:
        weight: tensor modified in place, at least 2-D.
        generator: source of randomness.
    """
    return torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)


# --------------------------------------------------------------------------- registry

BIAS_POLICIES = ("zeros", "keep", "pytorch_default")


def _init_bias(policy: str | Callable, bias: Tensor, weight: Tensor, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        if callable(policy):
            policy(bias, weight, generator=generator)
        elif policy == "zeros":
            bias.zero_()
        elif policy == "pytorch_default":
            fan_in, _ = fan_in_and_fan_out(weight)
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
) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn(weight, *, generator=None, **params)`` under ``name``.

    Re-registering a name (or alias) warns and replaces it, as in timm.

    Args:
        name: canonical scheme name.
        bias: bias policy: "zeros", "keep", "pytorch_default", or ``fn(bias, weight, *, generator)``.
        aliases: extra names resolving to this scheme.
        defaults: parameter values used when the caller does not give them.

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
        _SCHEMES[name] = Scheme(name, fn, bias, dict(defaults or {}), tuple(aliases))
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


# --------------------------------------------------------------------------- specs


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        # bare when parse_scheme would read it back as the same string
        if re.fullmatch(r"[A-Za-z_][\w.\-]*", value) and _parse_value(value) == value:
            return value
        return repr(value)
    return repr(value)


@dataclass(frozen=True)
class SchemeSpec:
    """A scheme name with parameters; JSON-serializable, printable as ``normal(std=0.01)``."""

    name: str  # canonical name or alias, resolved by get_scheme at use
    params: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments for the scheme

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"scheme name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "params", types.MappingProxyType(dict(self.params)))

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))

    def __str__(self) -> str:
        if not self.params:
            return self.name
        args = ",".join(f"{k}={_format_value(v)}" for k, v in self.params.items())
        return f"{self.name}({args})"

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, JSON-serializable when the params are."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SchemeSpec:
        """Inverse of ``to_dict``."""
        extra = set(data) - {"name", "params"}
        if "name" not in data or extra:
            raise ValueError(f"scheme dict needs keys 'name' and optional 'params', got {sorted(data)}")
        return cls(data["name"], dict(data.get("params") or {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


_SPEC_RE = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", re.S)
_ARG_RE = re.compile(r"""\s*([A-Za-z_]\w*)\s*=\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,'"()=]*?)\s*(?:,|$)""")


def _parse_value(text: str) -> Any:
    if text[:1] in "'\"":
        return ast.literal_eval(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_scheme(text: str) -> SchemeSpec:
    """Parse ``"he"`` or ``"variance_scaling(scale=2.0,mode=fan_in)"`` into a ``SchemeSpec``.

    Values are read as bool (true/false), None, int, float, quoted string, or bare string.
    The name is not checked against the registry here; ``initialize`` does that.
    """
    match = _SPEC_RE.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"malformed init scheme {text!r}; expected name or name(key=value,...)")
    name, body = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    if body is not None and body.strip():
        pos = 0
        while pos < len(body):
            arg = _ARG_RE.match(body, pos)
            if not arg or arg.end() == pos or not arg.group(2):
                raise ValueError(f"malformed init scheme {text!r}; expected name(key=value,...)")
            key, raw = arg.group(1), arg.group(2)
            if key in params:
                raise ValueError(f"malformed init scheme {text!r}; parameter {key!r} given twice")
            try:
                params[key] = _parse_value(raw)
            except (ValueError, SyntaxError):
                raise ValueError(f"malformed init scheme {text!r}; cannot read value {raw!r}") from None
            pos = arg.end()
            if pos == len(body) and body.rstrip().endswith(","):
                raise ValueError(f"malformed init scheme {text!r}; trailing comma")
    return SchemeSpec(name, params)


def _as_spec(scheme: str | SchemeSpec | Mapping | Scheme) -> tuple[Scheme, dict[str, Any]]:
    if isinstance(scheme, Scheme):
        return scheme, {}
    if isinstance(scheme, SchemeSpec):
        spec = scheme
    elif isinstance(scheme, Mapping):
        spec = SchemeSpec.from_dict(scheme)
    elif isinstance(scheme, str):
        spec = parse_scheme(scheme)
    else:
        raise ValueError(f"scheme must be a name, SchemeSpec or dict, got {type(scheme).__name__}")
    return get_scheme(spec.name), dict(spec.params)


# --------------------------------------------------------------------------- modules


def initialize(
    module: nn.Module,
    scheme: str | SchemeSpec | Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
    **params: Any,
) -> nn.Module:
    """Apply a scheme in place to every Linear/Conv1d/2d/3d layer of ``module``; return it.

    Layers are visited in ``module.modules()`` order, weight then bias, so the same seeded
    generator gives bit-identical weights. Biases follow the scheme's bias policy (zeros for
    all built-ins except ``pytorch_default``). ConvTranspose layers are not touched.

    Args:
        module: any module; it must contain at least one supported layer.
        scheme: a name or alias (``"he"``), a spec string (``"normal(std=0.05)"``), a
            ``SchemeSpec``, or its ``to_dict()`` form.
        generator: source of randomness; must live on the weights' device.
        **params: scheme parameters, overriding those in ``scheme``.

    Example:
        >>> initialize(nn.Linear(4, 3), "kaiming_normal", generator=torch.Generator().manual_seed(0))
    """
    sch, spec_params = _as_spec(scheme)
    merged = sch.resolve_params({**spec_params, **params})
    layers = [m for m in module.modules() if isinstance(m, LAYER_TYPES)]
    if not layers:
        raise ValueError(
            f"{type(module).__name__} has no layers to initialize; expected nn.Linear or nn.Conv1d/2d/3d"
        )
    for layer in layers:
        sch.fn(layer.weight, generator=generator, **merged)
        if layer.bias is not None:
            _init_bias(sch.bias, layer.bias, layer.weight, generator)
    return module


def check_scheme(scheme: str | SchemeSpec | Mapping[str, Any]) -> SchemeSpec:
    """Validate a scheme (name, parameter names and values) before any work starts; return its spec.

    Applies it once to a throwaway ``nn.Linear(4, 4)`` so value errors (``std=-1``, ``mode=foo``)
    surface as the same one-line ValueError ``initialize`` would raise mid-experiment.
    """
    spec = parse_scheme(scheme) if isinstance(scheme, str) else (
        scheme if isinstance(scheme, SchemeSpec) else SchemeSpec.from_dict(scheme))
    initialize(nn.Linear(4, 4), spec, generator=torch.Generator().manual_seed(0))
    return spec


# --------------------------------------------------------------------------- lists of schemes


def split_top_level(text: str, *, keep_empty: bool = False, what: str = "list") -> list[str]:
    """Split ``"he,normal(std=0.1,mean=0)"`` on commas outside parentheses and quotes; strip items.

    Quoted strings (``'...'`` / ``"..."``, backslash escapes) are opaque: commas and parentheses
    inside them do not count. Unbalanced parentheses or an unclosed quote raise ValueError.

    Args:
        text: the comma-separated text.
        keep_empty: return empty items (``"a,,b"`` -> ``["a", "", "b"]``; ``""`` -> ``[""]``)
            instead of raising, for callers that report them themselves.
        what: names the list in error messages (``"--inits"``, ``"init schemes"``).

    Raises:
        ValueError: unbalanced parentheses or quotes, or (unless ``keep_empty``) an empty or blank
            text or an empty item (doubled, leading or trailing comma).
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a comma-separated string, got {type(text).__name__} {text!r}")
    parts: list[str] = []
    cur: list[str] = []
    depth, quote, escaped = 0, "", False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced parentheses in {what} {text!r}: ')' without a matching '('")
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if quote:
        raise ValueError(f"unclosed quote {quote} in {what} {text!r}")
    if depth > 0:
        raise ValueError(f"unbalanced parentheses in {what} {text!r}: '(' without a matching ')'")
    parts.append("".join(cur).strip())
    if not keep_empty:
        if not text.strip():
            raise ValueError(f"{what} is empty, got {text!r}; give comma-separated items like 'a,b'")
        if "" in parts:
            raise ValueError(
                f"{what} {text!r} has an empty item (doubled, leading or trailing comma); "
                "give comma-separated items like 'a,b'"
            )
    return parts


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    # numpy scalars (np.float64(0.1)) print as "np.float64(0.1)", which parse_scheme cannot read
    out = {}
    for key, value in params.items():
        if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        out[key] = value
    return out


def _canonical(item: Any, allow: Collection[str]) -> str:
    if isinstance(item, str) and item.strip() in allow:
        return item.strip()
    if isinstance(item, str):
        spec = parse_scheme(item)
    elif isinstance(item, SchemeSpec):
        spec = item
    elif isinstance(item, Mapping):
        spec = SchemeSpec.from_dict(item)
    else:
        raise ValueError(
            f"init scheme must be a string, SchemeSpec or dict, got {type(item).__name__} {item!r}"
        )
    spec = SchemeSpec(spec.name, _plain_params(spec.params))
    check_scheme(spec)
    text = str(spec)
    try:
        again = parse_scheme(text)
    except ValueError:
        again = None
    if again != spec:
        raise ValueError(
            f"init scheme {spec.to_dict()!r} cannot be written as text (it reads back as {text!r}); "
            "use numbers, booleans, None or strings as parameter values"
        )
    return text


def parse_scheme_list(
    inits: str | SchemeSpec | Mapping[str, Any] | Iterable[str | SchemeSpec | Mapping[str, Any]],
    *,
    allow: Collection[str] = (),
) -> tuple[str, ...]:
    """Turn what a user passes as "inits" into validated canonical scheme strings, in order.

    Accepts a string, split on top-level commas (``"he,normal(std=0.1,mean=0)"`` ->
    ``("he", "normal(std=0.1,mean=0)")``); a ``SchemeSpec``; a dict in ``SchemeSpec.to_dict()``
    form; or any iterable of those (string items are split on top-level commas too; a bare string
    is never iterated character by character). Each item is validated with ``check_scheme`` and
    returned as ``str(spec)``, which ``parse_scheme`` reads back to the same spec
    (``SchemeSpec("normal", {"std": 0.05})`` -> ``"normal(std=0.05)"``). Aliases stay as written:
    ``"he"`` and ``"kaiming_uniform"`` are different labels for the same init.

    Args:
        inits: the schemes.
        allow: extra names passed through unchecked (e.g. ``{"none"}`` for "keep the model's init").

    Raises:
        ValueError: nothing given, an empty item (``"he,,xavier"``, ``"he,"``), unbalanced
            parentheses, an unknown scheme or bad parameter, an item of another type, or the same
            scheme twice after canonicalization (``"normal(std=0.10),normal(std=0.1)"``).
    """
    what = "init scheme list"
    if isinstance(inits, (str, SchemeSpec, Mapping)):
        items: list[Any] = [inits]
    elif isinstance(inits, (bytes, bytearray)) or not isinstance(inits, Iterable):
        raise ValueError(
            f"init schemes must be a string, SchemeSpec, dict or a list of them, got {type(inits).__name__} {inits!r}"
        )
    else:
        items = list(inits)
    flat: list[Any] = []
    for item in items:
        flat.extend(split_top_level(item, what=what) if isinstance(item, str) else [item])
    if not flat:
        raise ValueError(f"no init schemes given, got {inits!r}; pass at least one, e.g. 'he' or 'he,xavier'")
    out: list[str] = []
    for item in flat:
        text = _canonical(item, allow)
        if text in out:
            raise ValueError(f"init scheme {text!r} is listed twice in {what} {inits!r}; list each scheme once")
        out.append(text)
    return tuple(out)
