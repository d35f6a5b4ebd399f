"""Initialization functions: tensor fillers, ``variance_scaling_``, gains and fan conventions.

Every function modifies its argument in place under ``torch.no_grad()``, torch style, and takes an
optional ``torch.Generator``; nothing reads global RNG state when a generator is passed.

Conventions: weights follow torch's layout ``(out, in, *kernel)`` (Keras/JAX use ``(..., in, out)``).
A layer whose weight is stored otherwise (ConvTranspose, Embedding, ...) declares its own fans with
``declared_fans`` while ``initialize`` fills it; ``fan_in_and_fan_out(tensor)`` then returns them, so
every fan-based scheme (built-in or registered) follows the layer's convention (see
:mod:`initlab.schemes.layers`). "Truncated normal" means two different things: Keras/JAX variance
scaling cuts N(0, 1) at ±2 and rescales so the std is exactly ``sqrt(var)``; torch's
``trunc_normal_`` cuts N(mean, std) at absolute bounds ``[a, b]`` with no correction. Both are here,
under different names.
"""

from __future__ import annotations

import contextvars
import math
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

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


# --------------------------------------------------------------------------- validation


def check_number(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"invalid {name} {value!r}; choose from: {', '.join(choices)}")
    return value


# --------------------------------------------------------------------------- math


# (tensor, fan_in, fan_out) of the tensor initialize is filling right now; fans None = "has none"
_DECLARED: contextvars.ContextVar[tuple[Tensor, float | None, float | None] | None] = contextvars.ContextVar(
    "initlab_declared_fans", default=None
)


@contextmanager
def declared_fans(tensor: Tensor, fan_in: float | None, fan_out: float | None) -> Iterator[Tensor]:
    """Within the block, ``fan_in_and_fan_out(tensor)`` returns ``(fan_in, fan_out)``.

    This is how a layer whose weight is not stored as ``(out, in, *kernel)`` (ConvTranspose,
    Embedding, a gate block of an LSTM) tells every fan-based scheme its convention without
    changing the schemes' signatures. ``None`` fans mean the tensor has none (a bias, a norm
    scale): fan-based schemes then raise ValueError. Only this exact tensor object is affected
    (identity, not equality), and the declaration is context-local (thread- and task-safe).

    Example:
        >>> w = torch.empty(8, 4, 3)  # a ConvTranspose1d(8, 4, 3, stride=3) weight
        >>> with declared_fans(w, 8.0, 12):
        ...     kaiming_normal_(w)  # std sqrt(2 / 8)
    """
    token = _DECLARED.set((tensor, fan_in, fan_out))
    try:
        yield tensor
    finally:
        _DECLARED.reset(token)


def fan_in_and_fan_out(shape: torch.Size | Sequence[int] | Tensor) -> tuple[float, float]:
    """Return ``(fan_in, fan_out)`` of a weight shape in torch's ``(out, in, *kernel)`` layout.

    fan_in = in·∏kernel and fan_out = out·∏kernel (same as torch's private
    ``_calculate_fan_in_and_fan_out``; Keras/JAX read ``(..., in, out)`` instead). For a tensor
    that ``initialize`` is filling, the fans its layer declared (``declared_fans``) instead:
    these can differ from the shape's reading and need not be integers (ConvTranspose with stride).

    Args:
        shape: a weight shape with at least two dimensions, or a tensor (its shape is used).
    """
    if isinstance(shape, Tensor):
        declared = _DECLARED.get()
        if declared is not None and declared[0] is shape:
            if declared[1] is None or declared[2] is None:
                raise ValueError(
                    f"a tensor of shape {tuple(shape.shape)} here has no fan_in/fan_out (a bias or "
                    "elementwise scale); use a scheme that does not depend on fans, e.g. zero, constant, normal"
                )
            return declared[1], declared[2]
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
        slope = 0.01 if param is None else check_number("leaky_relu negative slope", param)
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
    value = check_number("value", value)
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
    mean = check_number("mean", mean)
    std = check_number("std", std, positive=True)
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
    a = check_number("a", a, positive=True)
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
    mean = check_number("mean", mean)
    std = check_number("std", std, positive=True)
    a, b = check_number("a", a), check_number("b", b)
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
    scale = check_number("scale", scale, positive=True)
    check_choice("mode", mode, MODES)
    check_choice("distribution", distribution, DISTRIBUTIONS)
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
    gain = check_number("gain", gain, positive=True)
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
    gain = check_number("gain", gain, positive=True)
    if weight.numel() == 0:
        return weight
    fan_in, fan_out = fan_in_and_fan_out(weight)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    with torch.no_grad():
        return weight.normal_(0.0, std, generator=generator)


def _kaiming_std(weight: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    check_number("a", a)
    check_choice("mode", mode, ("fan_in", "fan_out"))
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
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
    gain = check_number("gain", gain, positive=True)
    if weight.dim() < 2:
        raise ValueError(f"orthogonal needs a tensor with at least 2 dimensions, got shape {tuple(weight.shape)}")
    if weight.dtype in (torch.float16, torch.bfloat16):  # torch's QR (geqrf) has no 16-bit kernels
        with torch.no_grad():
            return weight.copy_(torch.nn.init.orthogonal_(torch.empty_like(weight, dtype=torch.float32), gain,
                                                          generator=generator))
    return torch.nn.init.orthogonal_(weight, gain, generator=generator)


def pytorch_default_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """What ``nn.Linear`` / ``nn.ConvNd`` do at construction: U(±1/sqrt(fan_in)).

    torch writes it as ``kaiming_uniform_(a=sqrt(5))``: gain sqrt(1/3), bound
    gain·sqrt(3/fan_in) = 1/sqrt(fan_in). This is *not* He init (its variance is a third of
    He's). Biases get U(±1/sqrt(fan_in)) too; see the ``pytorch_default`` bias policy. fan_in is
    torch's reading of the shape (dim 1 · ∏kernel), not the fans a layer declares, so on a
    ConvTranspose weight this is exactly that layer's construction-time init too. Other layers'
    own defaults differ (Embedding N(0, 1), RNNs U(±1/sqrt(hidden)), Bilinear U(±1/sqrt(in1))).

    Args:
        weight: tensor modified in place, at least 2-D.
        generator: source of randomness.
    """
    return torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
