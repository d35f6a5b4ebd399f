"""Rules: which scheme each parameter of a model gets, and why.

``initialize(model, rules)`` takes one scheme (for every layer's main weights, today's behaviour)
or a mapping from keys to schemes. A key is one of

* ``"*"``: the default for every layer's main weights (what a single scheme means);
* a glob over qualified parameter names (``fnmatch``, any key with ``*``, ``?`` or ``[``):
  ``"*.out_proj.weight"``, ``"encoder.layers.*.linear2.weight"``;
* a qualified parameter name (``"encoder.layers.0.linear1.weight"``);
* a module type name, the class or one of its bases: ``"Linear"``, ``"Embedding"``, ``"LSTM"``.

Names are those of the tensors a layer computes with: a weight_norm'ed Linear's weight is
``"fc.weight"``, not ``"fc.parametrizations.weight.original0"``; a key matches a whole tensor (all
its q/k/v or gate blocks). Precedence, for each tensor (or block):

1. an exact qualified parameter name;
2. glob patterns, the most specific first (the most literal characters, i.e. not ``*?[...]``),
   ties in insertion order;
3. a bias no name matched follows the bias policy of the scheme its weight (block) got;
4. the owning module's type: its exact class name, then its base classes in MRO order (covers
   all the module's own non-bias tensors: norm scales, PReLU, unknown modules' parameters);
5. ``"*"``, for a layer's main weights only (Linear, Conv, ConvTranspose, Bilinear, Embedding,
   RNN gate blocks, attention projections);
6. the layer type's own default (norm weight 1 and bias 0, PReLU its ``init``);
7. nothing: the tensor is uncovered, left as it is, listed with rule None and warned about.

Name and glob rules act on exactly what they match (``"encoder.*"`` matches biases too; use
``"encoder.*.weight"`` to leave biases to the bias policy); type rules and ``"*"`` act on a
layer's weights and leave its biases to the bias policy. A top-level module's own tensors have no
prefix (``"weight"``: ``"*.bias"`` does not match an ``nn.Linear``'s own bias). The ``recurrent``
option replaces the scheme a type rule or ``"*"`` gives hidden-to-hidden weights, not what a name
or glob rule gives them. A rule's value is a scheme (string,
``SchemeSpec``, its dict, a ``Scheme``) or a ``Rule`` adding layer options (``recurrent``,
``forget_bias``) that type rules and ``"*"`` carry to the layers they cover. A mapping whose keys
are only ``name`` / ``params`` (or ``scheme`` / ``recurrent`` / ``forget_bias``) is one scheme (or
one ``Rule``) in dict form, not a rules mapping.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from initlab.schemes.functions import check_number
from initlab.schemes.registry import Scheme
from initlab.schemes.specs import SchemeSpec, as_spec, parse_scheme

_GLOB = re.compile(r"[*?\[]")
_META = re.compile(r"\[[^\]]*\]|[*?]")


def scheme_value(value: Any, what: str) -> SchemeSpec | Scheme:
    """A rule's scheme value (name or spec text, SchemeSpec, dict, Scheme) as a spec; ``what`` names it in errors."""
    if isinstance(value, (SchemeSpec, Scheme)):
        return value
    if isinstance(value, str):
        return parse_scheme(value)
    if isinstance(value, Mapping):
        return SchemeSpec.from_dict(value)
    raise ValueError(f"{what} must be a scheme name, SchemeSpec or dict, got {type(value).__name__} {value!r}")


def scheme_text(spec: SchemeSpec | Scheme) -> str:
    """``"normal(std=0.02)"`` for a spec, the name for a ``Scheme`` object."""
    return spec.name if isinstance(spec, Scheme) else str(spec)


@dataclass(frozen=True)
class Rule:
    """A scheme plus options for the layers a type rule or ``"*"`` covers.

    ``Rule("he", recurrent="orthogonal", forget_bias=1.0)`` gives LSTMs He input weights,
    orthogonal hidden-to-hidden weights (Saxe et al. 2014) and forget-gate bias 1
    (Jozefowicz et al. 2015, "An Empirical Exploration of Recurrent Network Architectures").
    """

    scheme: SchemeSpec | Scheme  # strings and dicts are parsed into a SchemeSpec
    recurrent: SchemeSpec | Scheme | None = None  # scheme of weight_hh (all RNNs and cells)
    forget_bias: float | None = None  # LSTM forget gate: bias_ih[f] = this, bias_hh[f] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", scheme_value(self.scheme, "rule scheme"))
        if self.recurrent is not None:
            object.__setattr__(self, "recurrent", scheme_value(self.recurrent, "recurrent"))
        if self.forget_bias is not None:
            object.__setattr__(self, "forget_bias", check_number("forget_bias", self.forget_bias))

    def to_dict(self) -> dict[str, Any]:
        """``{"scheme": {...}, "recurrent": {...} | None, "forget_bias": float | None}``, JSON-ready.

        A ``Scheme`` object is written by its registered name.
        """
        return {"scheme": _spec_dict(self.scheme), "forget_bias": self.forget_bias,
                "recurrent": None if self.recurrent is None else _spec_dict(self.recurrent)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Inverse of ``to_dict``; ``recurrent`` and ``forget_bias`` are optional."""
        extra = set(data) - {"scheme", "recurrent", "forget_bias"}
        if "scheme" not in data or extra:
            raise ValueError(
                f"rule dict needs key 'scheme' and optional 'recurrent', 'forget_bias', got {sorted(data)}"
            )
        return cls(data["scheme"], data.get("recurrent"), data.get("forget_bias"))


def as_rule(value: Any) -> Rule:
    """A ``Rule`` from a rule, a scheme, or either one's dict form."""
    if isinstance(value, Rule):
        return value
    if isinstance(value, Mapping) and "scheme" in value:
        return Rule.from_dict(value)
    return Rule(scheme_value(value, "rule value"))


def _spec_dict(spec: SchemeSpec | Scheme) -> dict[str, Any]:
    return spec.to_dict() if isinstance(spec, SchemeSpec) else {"name": spec.name, "params": {}}


def is_single(rules: Any) -> bool:
    """One scheme or Rule, including their dict forms (a mapping of just those keys)."""
    if isinstance(rules, (str, SchemeSpec, Scheme, Rule)):
        return True
    if not isinstance(rules, Mapping):
        return False
    keys = set(rules)
    spec_dict = "name" in keys and keys <= {"name", "params"}
    return spec_dict or "scheme" in keys and keys <= {"scheme", "recurrent", "forget_bias"}


@dataclass(frozen=True)
class Entry:
    """One key of a rules mapping, classified."""

    key: str
    kind: str  # "exact" | "glob" | "type" | "default"
    rule: Rule
    order: int
    scheme: Scheme = field(compare=False)  # resolved from rule.scheme
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)  # validated parameters

    @property
    def literal(self) -> int:
        """Characters of a glob that are not wildcards: its specificity."""
        return len(_META.sub("", self.key))


def resolve(spec: SchemeSpec | Scheme, extra: Mapping[str, Any] | None = None) -> tuple[Scheme, dict[str, Any]]:
    """The registered scheme and its merged, name-checked parameters (values are checked when drawing)."""
    sch, params = as_spec(spec)
    return sch, sch.resolve_params({**params, **(extra or {})})


class RuleSet:
    """Rules of one ``initialize`` call, classified against a model's parameter names."""

    def __init__(self, rules: Any, names: Iterable[str], params: Mapping[str, Any] | None = None) -> None:
        params = dict(params or {})
        self.single = is_single(rules)
        if self.single:
            rules = {"*": rules}
        elif not isinstance(rules, Mapping):
            raise ValueError(
                f"rules must be a scheme or a mapping of names/patterns/types to schemes, got "
                f"{type(rules).__name__} {rules!r}"
            )
        elif params:
            raise ValueError(
                f"scheme parameters {sorted(params)} as keyword arguments need a single scheme; "
                "put them in the rules' schemes, e.g. {'Linear': 'normal(std=0.02)'}"
            )
        names = set(names)
        self.entries: list[Entry] = []
        for order, (key, value) in enumerate(rules.items()):
            if not isinstance(key, str) or not key:
                raise ValueError(f"rule keys must be non-empty strings, got {key!r}")
            rule = as_rule(value)
            kind = ("default" if key == "*" else "glob" if _GLOB.search(key)
                    else "exact" if key in names else "type")
            sch, resolved = resolve(rule.scheme, params)
            if rule.recurrent is not None:
                resolve(rule.recurrent)
            self.entries.append(Entry(key, kind, rule, order, sch, resolved))
        self.globs = sorted((e for e in self.entries if e.kind == "glob"), key=lambda e: (-e.literal, e.order))
        self.by_key = {e.key: e for e in self.entries}

    def by_name(self, name: str) -> Entry | None:
        """The exact rule for a qualified parameter name, else the most specific matching glob."""
        exact = self.by_key.get(name)
        if exact is not None and exact.kind == "exact":
            return exact
        for e in self.globs:
            if fnmatch.fnmatchcase(name, e.key):
                return e
        return None

    def by_type(self, mro_names: Iterable[str]) -> Entry | None:
        """The type rule for the owning module's class, else for its nearest base class."""
        for cls_name in mro_names:
            e = self.by_key.get(cls_name)
            if e is not None and e.kind == "type":
                return e
        return None

    def default(self) -> Entry | None:
        return self.by_key.get("*")

    def unused(self, names: Iterable[str], type_names: set[str]) -> list[str]:
        """Keys (other than ``"*"``) matching no parameter name and no class in the model: likely typos.

        A key that matches but always loses to a more specific one is not reported.
        """
        names = list(names)
        out = []
        for e in self.entries:
            if e.kind == "glob" and not any(fnmatch.fnmatchcase(n, e.key) for n in names):
                out.append(e.key)
            elif e.kind == "type" and e.key not in type_names:
                out.append(e.key)
        return out
