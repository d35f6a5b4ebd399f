"""Model factories: MLPs whose every hidden layer shares one activation.

The factories return plain ``nn.Sequential`` stacks so any scheme in :mod:`initlab.schemes`
applies to them, hooks see every layer by its ``named_modules`` name, and the batched engine
can read the architecture back from the module (see :func:`initlab.training.mlp_engine.mlp_layout`).
"""
from __future__ import annotations

import numbers
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from initlab.core.activations import ACTIVATIONS, activation_fn, check_activation  # noqa: F401  (re-exported)

# Widest hidden layer accepted: a 2**20 x 2**20 float32 weight alone is 4 TiB, so anything wider
# would not fit in memory anyway; rejecting it up front beats an overflow or OOM mid-run.
MAX_WIDTH = 1 << 20
# Most hidden layers accepted: signal propagation is studied up to a few hundred layers; 10k is
# far past where any init keeps a plain MLP trainable, and keeps per-layer bookkeeping bounded.
MAX_DEPTH = 10_000
INT64_MAX = (1 << 63) - 1


def _as_int(value: object) -> int | None:
    """``value`` as a Python int if it is an integer (numpy and 0-d torch ints included, bools not)."""
    if isinstance(value, bool):  # numpy bools are not numbers.Integral
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        return int(value)
    return None


def check_widths(hidden: Sequence[int]) -> tuple[int, ...]:
    """Validate hidden widths and return them as a tuple of Python ints.

    Each width is an integer (numpy integer types are accepted and converted) in 1..``MAX_WIDTH``,
    and there are at most ``MAX_DEPTH`` of them. An empty sequence means a linear classifier. Text such as ``"64,64"`` goes through
    :func:`parse_hidden` instead, which rejects empty text.
    """
    if isinstance(hidden, (str, bytes)):
        raise ValueError(
            f"hidden widths must be a sequence of positive integers, got the string {hidden!r}; "
            "parse text like '64,64' with initlab.models.parse_hidden"
        )
    if _as_int(hidden) is not None or not isinstance(hidden, Iterable):
        raise ValueError(f"hidden widths must be a sequence of positive integers like (128, 128), got {hidden!r}")
    widths = []
    for w in hidden:
        n = _as_int(w)
        if n is None or not 1 <= n <= MAX_WIDTH:
            raise ValueError(
                f"hidden width must be a positive integer at most {MAX_WIDTH} "
                f"(wider layers would not fit in memory), got {w!r}"
            )
        widths.append(n)
    if len(widths) > MAX_DEPTH:
        raise ValueError(f"at most {MAX_DEPTH} hidden layers are supported, got {len(widths)}")
    return tuple(widths)


def mlp(
    in_features: int,
    hidden: Sequence[int] = (128,),
    out_features: int = 10,
    activation: str = "relu",
    *,
    bias: bool = True,
) -> nn.Sequential:
    """A multilayer perceptron ``in -> hidden[0] -> ... -> out`` with ``activation`` between layers.

    ``mlp(784, [128], 10)`` is the seed notebook's 784-128-10 ReLU network; ``hidden`` may also be
    text (``"128,128"``, see :func:`parse_hidden`) and ``()`` gives a linear classifier. No activation follows
    the last layer: it returns logits. Layers are named ``fc1, act1, fc2, act2, ..., fcL``.
    """
    check_activation(activation)
    widths = parse_hidden(hidden) if isinstance(hidden, str) else check_widths(hidden)
    sizes_in_out = []
    for name, n in (("in_features", in_features), ("out_features", out_features)):
        value = _as_int(n)
        if value is None or not 1 <= value <= INT64_MAX:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")
        sizes_in_out.append(value)
    in_features, out_features = sizes_in_out
    sizes = (in_features, *widths, out_features)
    layers: dict[str, nn.Module] = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(n_in, n_out, bias=bias)
        if i < len(sizes) - 1:
            layers[f"act{i}"] = ACTIVATIONS[activation][0]()
    return nn.Sequential(OrderedDict(layers))


_ASCII_INT = re.compile(r"[+-]?[0-9]+")


def parse_int_list(text: str | Sequence[int], what: str) -> list[int]:
    """``"256,256"`` (CLI form) -> ``[256, 256]``; a sequence of integers passes through as ints.

    ``what`` names the option in errors. Empty or blank text and empty items (``"128,,128"``,
    ``"128,"``, ``",128"``) are errors, as are non-integers and integers outside int64. Sign and
    range beyond that are the caller's to check.
    """
    hint = "comma-separated positive integers"
    if not isinstance(text, str):
        if _as_int(text) is not None or not isinstance(text, Iterable) or isinstance(text, bytes):
            raise ValueError(f"{what} must be {hint} or a sequence of integers, got {text!r}")
        values = []
        for v in text:
            n = _as_int(v)
            if n is None:
                raise ValueError(f"{what} must be positive integers, got {v!r} in {text!r}")
            values.append(n)
        items = values
    else:
        if not text.strip():
            raise ValueError(f"no {what} given, got {text!r}; pass {hint}")
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise ValueError(f"{what} must be {hint}, got {text!r} (empty item: doubled, leading or trailing comma)")
            if not _ASCII_INT.fullmatch(part):  # int() would also take "8_0" and non-ASCII digits
                raise ValueError(f"{what} must be {hint}, got {text!r}")
            items.append(int(part))
    for n in items:
        if not -INT64_MAX - 1 <= n <= INT64_MAX:
            raise ValueError(f"{what} value {n} is out of range (more than 64 bits) in {text!r}")
    return items


def parse_hidden(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"256,256"`` (CLI form) or a sequence into validated hidden widths.

    Empty text is an error (it used to mean a linear classifier silently); pass ``hidden=()``
    from Python for that.
    """
    return check_widths(parse_int_list(text, "hidden widths"))


# Deeper than any MLP worth training here; checked before a (width,)*depth tuple is built, so an
# absurd --depth is refused at once rather than after allocating a billion-entry tuple.
MAX_DEPTH = 10_000


def arch_text(widths: Sequence[int]) -> str:
    """Layer widths for titles and messages, runs of equal widths folded: ``64-256×40-10``."""
    parts, widths, i = [], list(widths), 0
    while i < len(widths):
        j = i
        while j < len(widths) and widths[j] == widths[i]:
            j += 1
        parts.append(str(widths[i]) if j - i == 1 else f"{widths[i]}×{j - i}")
        i = j
    return "-".join(parts)
