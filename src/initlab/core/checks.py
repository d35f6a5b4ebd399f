"""Argument coercion and validation, in one place, for every API entry of initlab.

Each function takes the argument's user-facing ``name`` and the value, returns the value in its
canonical Python type, or raises ``ValueError`` (``TypeError`` for a value of the wrong kind of
object) with one sentence that names the value and what is allowed.

Rules, the same everywhere:
- integers: Python ``int`` and numpy integers (``np.int64(2)``) are accepted and returned as ``int``;
  ``bool`` is never a number (``seeds=True`` is refused), nor is a float with an integer value;
- real numbers: ints, floats and numpy scalars; ``bool`` refused; NaN refused unless ``allow_nan``;
- choices: the value must be one of the listed strings (the error lists them);
- devices: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``; returned as text.

This module imports nothing else of initlab (it is part of the maths core).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

MAX_INT = 2**63 - 1  # int64: seeds, sizes and counts travel through torch and SQLite as int64


def is_integer(value: Any) -> bool:
    """An integer for initlab: Python and numpy integers, never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number for initlab: ints, floats and numpy scalars, never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = MAX_INT) -> int:
    """``value`` as an ``int`` within [minimum, maximum]; numpy integers accepted, bools and floats refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise ValueError(f"{name} must be {bound}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v}")
    return v


def as_float(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False,
             allow_inf: bool = False, allow_nan: bool = False) -> float:
    """``value`` as a ``float``; ints, floats and numpy scalars accepted, bools and strings refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v) and not allow_nan:
        raise ValueError(f"{name} must be a number, got nan")
    if math.isinf(v) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be ≥ 0, got {v!r}")
    return v


def as_bool(name: str, value: Any) -> bool:
    """``value`` as a ``bool``: True/False (and numpy bools) only, never 0/1 or strings."""
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def as_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices`` (the error lists them)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from: {', '.join(choices)}")
    return value


def as_device_text(name: str, value: Any) -> str:
    """A device as text: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, or a ``torch.device``."""
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, str):
        if value == "auto":
            return value
        try:
            d = torch.device(value)
        except (RuntimeError, ValueError):
            d = None
        if d is not None and d.type in ("cpu", "cuda", "mps"):
            return value
    raise ValueError(f"unknown {name} {value!r}; choose from: auto, cpu, cuda, cuda:N, mps or a torch.device")


def as_module(name: str, value: Any) -> torch.nn.Module:
    """``value`` if it is a ``torch.nn.Module``; a one-line ``TypeError`` otherwise."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value
