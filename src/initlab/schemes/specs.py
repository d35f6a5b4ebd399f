"""Scheme specs: ``SchemeSpec`` (a name with parameters), ``parse_scheme`` for text like
``"normal(std=0.01)"``, ``check_scheme``, and ``parse_scheme_list`` for what users pass as "inits".
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import types
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping

import torch

from initlab.schemes.registry import Scheme, get_scheme, init_bias


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


def as_spec(scheme: str | SchemeSpec | Mapping | Scheme) -> tuple[Scheme, dict[str, Any]]:
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


def check_scheme(scheme: str | SchemeSpec | Mapping[str, Any]) -> SchemeSpec:
    """Validate a scheme (name, parameter names and values) before any work starts; return its spec.

    Applies it once to a throwaway 4×4 weight and its bias (what ``initialize`` does to an
    ``nn.Linear(4, 4)``), or, if that fails, to a 4×4×3×3 convolution weight (schemes only for
    convolutions), so value errors (``std=-1``, ``mode=foo``) surface as the same one-line
    ValueError ``initialize`` would raise mid-experiment (the Linear attempt's error).
    """
    spec = parse_scheme(scheme) if isinstance(scheme, str) else (
        scheme if isinstance(scheme, SchemeSpec) else SchemeSpec.from_dict(scheme))
    sch, params = as_spec(spec)
    if sch.check is not None:  # a whole-model scheme without a per-tensor meaning: check, draw nothing
        try:
            sch.check(**params)
        except TypeError:
            raise ValueError(f"unknown parameter for {sch.name} in {str(spec)!r}; choose from: "
                             f"{', '.join(sch.params)}") from None
        return spec
    first = None
    # a Linear weight first; a scheme only for convolutions (dirac, delta_orthogonal) gets a 3×3 one
    for shape in ((4, 4), (4, 4, 3, 3)):
        generator = torch.Generator().manual_seed(0)
        weight, bias = torch.empty(*shape), torch.empty(shape[0])
        try:
            sch.fn(weight, generator=generator, **sch.resolve_params(params))
            init_bias(sch.bias, bias, weight, generator)
            return spec
        except ValueError as e:
            first = first or e
    raise first


def check_tensor_scheme(value: Any, what: str, suggestion: str) -> SchemeSpec:
    """The per-tensor scheme that a whole-model scheme's parameter names (lsuv's ``pre_init``, fixup's
    ``base``), checked: one-line ValueError starting with ``what`` (``"lsuv parameter pre_init"``) for
    text that is not a scheme, a whole-model scheme (``suggestion`` says what to use instead), or bad values."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a scheme name or spec text, got {value!r}")
    try:
        spec = parse_scheme(value)
        if get_scheme(spec.name).whole_model:
            raise ValueError(f"{spec.name} is a whole-model scheme; use {suggestion}")
        return check_scheme(spec)
    except ValueError as err:
        raise ValueError(f"{what}={value!r}: {err}") from None


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
    seen: dict[tuple, str] = {}  # the scheme's identity (name behind aliases, every parameter) -> its spelling
    for item in flat:
        text = _canonical(item, allow)
        if text in out:
            raise ValueError(f"init scheme {text!r} is listed twice in {what} {inits!r}; list each scheme once")
        key = _identity(text, allow)
        if key in seen:
            raise ValueError(f"init schemes {seen[key]!r} and {text!r} are the same scheme ({key[0]} with the same "
                             "parameters); list it once")
        seen[key] = text
        out.append(text)
    return tuple(out)


def _identity(text: str, allow: Collection[str]) -> tuple:
    """What makes two spellings one init: the canonical name behind aliases and every parameter, defaults included."""
    if text in allow:
        return (text,)
    spec = parse_scheme(text)
    scheme = get_scheme(spec.name)
    params = {k: v for k, v in scheme.params.items() if v is not inspect.Parameter.empty}
    params.update(scheme.resolve_params(spec.params))
    norm = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in params.items()}
    return (scheme.name, tuple(sorted((k, repr(v)) for k, v in norm.items())))
