"""``initialize``: apply rules to every parametrized layer of a model, and report what was done.

Three phases, so that a failure leaves the model untouched: plan (which scheme, fans and options
each tensor or block gets; no randomness), draw (every scheme fills a copy of its tensor, in
``named_modules()`` order and each layer's target order, from the one generator), write (copies go
back through plain parameters or their parametrizations). The same seeded generator therefore
gives bit-identical parameters; a Linear/Conv-only model gets exactly what the Linear/Conv-only
``initialize`` of earlier versions gave.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from initlab.core.checks import as_module
from initlab.schemes.functions import check_number, declared_fans
from initlab.schemes.infer import infer_targets
from initlab.schemes.layers import UNSUPPORTED, Target
from initlab.schemes.materialize import materialize_for_init
from initlab.schemes.parametrized import Slot
from initlab.schemes.registry import Scheme, init_bias
from initlab.schemes.residual import annotate, expand
from initlab.schemes.rules import Rule, RuleSet, as_rule, is_single, resolve, scheme_text, scheme_value
from initlab.schemes.specs import SchemeSpec, as_spec
from initlab.schemes.units import EMBEDDINGS, collect_units

REPORT_COLUMNS = ("parameter", "module_type", "rule", "scheme", "fan_in", "fan_out", "std_before", "std_after", "note")
LAYER_DEFAULT = "(layer default)"  # the rule column of tensors set by their layer type's default


@dataclass
class _Plan:
    """What one target gets; ``how`` is None when nothing covers it."""

    module: nn.Module
    qname: str  # qualified tensor name, "encoder.layers.0.self_attn.in_proj_weight"
    slot: Slot
    target: Target
    how: str | None = None  # "scheme" | "bias" | "default"
    rule: str | None = None  # report text of the rule
    text: str | None = None  # report text of the scheme
    scheme: Scheme | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    value: float | None = None  # the layer default's constant
    then: float | None = None  # forget_bias: constant written after the bias policy
    by_rule: bool = False  # covered by a rule (not the layer default)
    std_before: float = math.nan
    std_after: float = math.nan
    note: str = ""
    aliases: tuple[str, ...] = ()  # other names of a tied tensor ("transformer.wte.weight")

    @property
    def label(self) -> str:
        return f"{self.qname}[{self.target.block}]" if self.target.block else self.qname


def tensor_std(t: Tensor) -> float:
    if t.numel() < 2:
        return math.nan
    return float(t.detach().to(torch.float64 if t.numel() <= 1 << 22 else torch.float32).std())


def _view(t: Tensor, target: Target) -> Tensor:
    return t.narrow(target.dim, target.rows[0], target.rows[1] - target.rows[0]) if target.rows else t


def _options(recurrent: Any, forget_bias: Any) -> tuple[SchemeSpec | Scheme | None, float | None]:
    rec = scheme_value(recurrent, "recurrent") if recurrent is not None else None
    if rec is not None and resolve(rec)[0].whole_model:
        raise ValueError(f"recurrent={scheme_text(rec)!r} initializes whole models, "
                         "not hidden-to-hidden weights; use a per-tensor scheme such as 'orthogonal'")
    fb = check_number("forget_bias", forget_bias) if forget_bias is not None else None
    return rec, fb




@dataclass(frozen=True)
class _Options:
    """A layer's ``recurrent`` / ``forget_bias``: from the rule covering the layer, else from initialize."""

    recurrent: SchemeSpec | Scheme | None
    forget_bias: float | None
    source: str  # for the report's note

    @classmethod
    def of(cls, layer_rule, recurrent, forget_bias) -> _Options:
        rule = layer_rule.rule if layer_rule is not None else None
        rec = rule.recurrent if rule is not None and rule.recurrent is not None else recurrent
        fb = rule.forget_bias if rule is not None and rule.forget_bias is not None else forget_bias
        own = rule is not None and (rule.recurrent is not None or rule.forget_bias is not None)
        return cls(rec, fb, f"option of rule {layer_rule.key!r}" if own else "option of initialize")


def _assign(p: _Plan, ruleset: RuleSet, mro: list[str], done: dict, opts: _Options) -> None:
    """Fill ``p`` by the precedence of :mod:`initlab.schemes.rules`; leave ``how`` None if uncovered."""
    t = p.target
    e = next((e for q in (p.qname, *p.aliases) if (e := ruleset.by_name(q)) is not None), None)
    if e is None and t.role != "bias":
        e = ruleset.by_type(mro) or (ruleset.default() if t.star else None)
    if e is not None:
        p.how, p.rule, p.by_rule = "scheme", e.key, True
        p.scheme, p.params, p.text = e.scheme, e.params, scheme_text(e.rule.scheme)
        if t.recurrent and e.kind in ("type", "default") and opts.recurrent is not None:
            p.scheme, p.params = resolve(opts.recurrent)
            p.rule, p.text = f"{e.key} (recurrent)", scheme_text(opts.recurrent)
            p.note = f"recurrent: {opts.source}"
    elif t.role == "bias" and t.weight in done and done[t.weight].by_rule:
        w = done[t.weight]
        policy = w.scheme.bias if isinstance(w.scheme.bias, str) else getattr(w.scheme.bias, "__name__", "custom")
        p.how, p.rule, p.by_rule, p.scheme = "bias", w.rule, True, w.scheme
        p.text = f"{policy} (bias policy of {w.text})"
    elif t.default is not None:
        p.how, p.rule, p.value, p.text = "default", LAYER_DEFAULT, t.default, f"constant(value={t.default:g})"
    elif t.default_scheme is not None:
        p.how, p.rule, p.text = "scheme", LAYER_DEFAULT, t.default_scheme
        p.scheme, p.params = resolve(t.default_scheme)
    elif t.keep:
        p.how, p.rule, p.text = "keep", LAYER_DEFAULT, "kept (the model's own value)"
    if p.how is not None and t.forget and opts.forget_bias is not None:
        p.then = opts.forget_bias if t.forget == "ih" else 0.0
        p.rule, p.text = f"{p.rule} (forget_bias)", f"constant(value={p.then:g})"
        p.note = f"forget_bias: {opts.source}; bias_ih holds it, bias_hh is 0"
    if t.padding_idx is not None and p.how is not None:
        p.note = f"padding_idx {t.padding_idx}: row kept at zero"
    if t.role == "other" and p.how is None and type(p.module).__name__ in UNSUPPORTED:
        p.note = UNSUPPORTED[type(p.module).__name__]
    if t.why and p.how is not None:
        p.note = "; ".join(x for x in (t.why, p.note) if x)


def _plan(module: nn.Module, rules: Any, params: Mapping[str, Any], recurrent: Any,
          forget_bias: Any, example: Any = None) -> tuple[list[_Plan], RuleSet]:
    rec_default, fb_default = _options(recurrent, forget_bias)
    units, aliases = collect_units(module)
    units = infer_targets(module, units, example)
    names = [f"{mname}.{n}" if mname else n for mname, _, slots, _ in units for n in slots]
    ruleset = RuleSet(rules, names + [a for q in names for a in aliases.get(q, ())], params)
    plans: list[_Plan] = []
    for mname, m, slots, targets in units:
        mro = [c.__name__ for c in type(m).__mro__]
        opts = _Options.of(ruleset.by_type(mro) or ruleset.default(), rec_default, fb_default)
        if opts.forget_bias is not None and isinstance(m, (nn.LSTM, nn.LSTMCell)) and not m.bias:
            raise ValueError(
                f"forget_bias={opts.forget_bias} needs LSTM biases, but {mname or '(the model)'!r} has bias=False"
            )
        done: dict[tuple[str, str], _Plan] = {}
        for t in targets:
            qname = f"{mname}.{t.name}" if mname else t.name
            p = _Plan(m, qname, slots[t.name], t, aliases=tuple(aliases.get(qname, ())))
            _assign(p, ruleset, mro, done, opts)
            if p.aliases:
                role = " as the output projection (its fans), so initial logits stay O(1)" if (
                    t.fans and isinstance(m, nn.Module) and not isinstance(m, EMBEDDINGS)
                    and any(isinstance(o, EMBEDDINGS) for o in _alias_modules(module, p.aliases))) else ""
                p.note = "; ".join(x for x in (f"tied with {', '.join(p.aliases)}: initialized once{role}", p.note) if x)
            done[(t.name, t.block)] = p
            plans.append(p)
    return plans, ruleset


def _alias_modules(module: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    return [module.get_submodule(q.rpartition(".")[0]) for q in names]


def _by_slot(plans: list[_Plan]) -> dict[int, list[_Plan]]:
    groups: dict[int, list[_Plan]] = {}
    for p in plans:
        groups.setdefault(id(p.slot), []).append(p)
    return groups


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_dtype(value: Tensor) -> Tensor:
    """Half and bfloat16 tensors are drawn in float32 (QR, erfinv and friends are not implemented for them,
    and a draw in 16 bits loses the distribution's tails); the slot's write casts the result back."""
    return value.float() if value.dtype in LOW_PRECISION else value


def _draw(plans: list[_Plan], generator: torch.Generator | None, report: bool) -> dict[int, Tensor]:
    groups = _by_slot(plans)
    new: dict[int, Tensor] = {}  # id(slot) -> the slot's new effective value
    views: dict[tuple[int, str, str], tuple[Tensor, Target]] = {}
    for p in plans:
        sid = id(p.slot)
        if sid not in new and (report or any(q.how is not None for q in groups[sid])):
            new[sid] = _compute_dtype(p.slot.read())
            if report:  # std before, for every block of this slot, from the untouched value
                for q in groups[sid]:
                    q.std_before = tensor_std(_view(new[sid], q.target))
        if p.how is None or p.how == "keep":
            continue
        t = p.target
        view = _view(new[sid], t)
        views[(id(p.module), t.name, t.block)] = (view, t)
        try:
            with torch.no_grad(), declared_fans(view, *(t.fans or (None, None))):
                if p.how == "scheme":
                    p.scheme.fn(view, generator=generator, **p.params)
                elif p.how == "bias":
                    wview, wt = views[(id(p.module), *t.weight)]
                    with declared_fans(wview, *(wt.fans or (None, None))):
                        init_bias(p.scheme.bias, view, wview, generator)
                else:
                    view.fill_(p.value)
                if p.then is not None:
                    view.fill_(p.then)
                if t.padding_idx is not None:
                    view[t.padding_idx].zero_()
        except ValueError as err:
            raise ValueError(
                f"cannot initialize {p.label!r} ({type(p.module).__name__}) with {p.text} (rule {p.rule!r}): {err}"
            ) from None
    return new


def _write(plans: list[_Plan], new: dict[int, Tensor], report: bool) -> None:
    for sid, group in _by_slot(plans).items():
        slot, note = group[0].slot, ""
        covered = any(p.how is not None for p in group)
        if covered:
            note = slot.write(new[sid])
        if report:
            after = new[sid] if slot.kind == "parameter" or not covered else slot.read()
            for p in group:
                p.std_after = tensor_std(_view(after, p.target))
        for p in group:
            p.note = "; ".join(x for x in (slot.describe(), note if p.how else "", p.note) if x)


def _check_coverage(module: nn.Module, plans: list[_Plan], ruleset: RuleSet, strict: bool) -> None:
    if not any(p.by_rule for p in plans):
        what = "no layers to initialize" if ruleset.single else "no parameters the rules apply to"
        unknown = [p.label for p in plans if p.how is None and p.target.fans is not None]
        hint = (f"; {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} look like weights of unknown layer "
                "types: pass example= so that their fans are inferred from one forward") if unknown else ""
        raise ValueError(
            f"{type(module).__name__} has {what}; the scheme covers Linear, Bilinear, Conv, ConvTranspose, "
            f"Embedding, RNN and attention weights, and rules can name any parameter or module type{hint}"
        )
    problems = []
    uncovered = [p.label for p in plans if p.how is None]
    if uncovered:
        shown = ", ".join(uncovered[:10]) + (f" and {len(uncovered) - 10} more" if len(uncovered) > 10 else "")
        problems.append(f"no rule covers {len(uncovered)} parameter(s), left as they are: {shown}; "
                        "add a rule naming them (qualified name, glob or module type), or pass example= so that "
                        "the fans of unknown layer types are inferred from one forward")
    unused = [] if ruleset.single else ruleset.unused(
        [q for p in plans for q in (p.qname, *p.aliases)], {c.__name__ for m in module.modules() for c in type(m).__mro__})
    if unused:
        problems.append(f"rule(s) {', '.join(map(repr, unused))} matched no parameter or module type")
    if problems and strict:
        raise ValueError("; ".join(problems))
    for text in problems:
        warnings.warn(text, stacklevel=4)


def plan_and_draw(module, rules, generator, recurrent, forget_bias, strict, params, report=False, example=None) -> list[_Plan]:
    plans, ruleset = _plan(module, rules, params, recurrent, forget_bias, example)
    _check_coverage(module, plans, ruleset, strict)
    new = _draw(plans, generator, report)
    _write(plans, new, report)
    return plans


def initialize(
    module: nn.Module,
    rules: str | SchemeSpec | Mapping[str, Any] | Rule,
    *,
    generator: torch.Generator | None = None,
    recurrent: str | SchemeSpec | Mapping[str, Any] | None = None,
    forget_bias: float | None = None,
    strict: bool = False,
    example: Any = None,
    device: torch.device | str | None = None,
    **params: Any,
) -> nn.Module:
    """Initialize every parametrized layer of ``module`` in place by ``rules``; return the module.

    ``"auto"`` (``"auto(mode=empirical)"``, ...) reads the model's graph on ``example`` and picks
    each layer's scale from the activation it feeds: see :mod:`initlab.schemes.auto`. ``"lsuv"`` (alone
    or as the value of rules) rescales each Linear/Conv layer it covers until its output std on
    ``example`` is 1: see :mod:`initlab.schemes.lsuv`. :func:`needs_example` says which need it.
    ``"fixup"``, ``"skipinit"``, ``"rezero"`` and ``"gpt2"`` (alone or as the value of ``"*"``)
    compute a rules mapping from the model's residual branches (``model.residual``), which the
    other keys of ``rules`` override: see :mod:`initlab.schemes.residual`.

    ``rules`` is one scheme for every layer's main weights (Linear, Bilinear, Conv, ConvTranspose,
    Embedding, RNN gate blocks, attention projections) or a mapping from qualified parameter
    names, ``fnmatch`` globs over them, module type names and ``"*"`` to schemes or ``Rule``s;
    see :mod:`initlab.schemes.rules` for the precedence and :mod:`initlab.schemes.layers` for each
    layer type's fans. Biases follow the bias policy of their weight's scheme (zeros for every
    built-in but ``pytorch_default``); norm layers keep weight 1 and bias 0 unless a rule names
    them. Parametrized weights (weight_norm, spectral_norm, any parametrization) are initialized
    as their effective tensor and written back through ``right_inverse``. A parameter nothing
    covers is left as it is and warned about (one warning naming all of them).

    Args:
        module: any module; at least one of its parameters must be covered by a rule.
        rules: a name or alias (``"he"``), a spec string (``"normal(std=0.05)"``), a
            ``SchemeSpec`` or its ``to_dict()`` form, a ``Rule``, or a mapping of those by key,
            e.g. ``{"Linear": "he", "Embedding": "normal(std=0.02)", "*.out_proj.weight": "zero"}``.
        generator: source of randomness; must live on the weights' device.
        recurrent: scheme for RNN hidden-to-hidden weights (each gate block), e.g. ``"orthogonal"``;
            a ``Rule``'s own ``recurrent`` wins for the layers its key covers.
        forget_bias: LSTM forget-gate bias, written to ``bias_ih``'s f block (``bias_hh``'s f
            block is set to 0, so the sum the gate sees is ``forget_bias``).
        strict: raise ValueError instead of warning when a parameter is uncovered or a rule key
            matches nothing.
        device: where a model with tensors on the ``meta`` device is materialized before it is
            initialized (default: the generator's device); bit-identical to the same model built
            there eagerly: see :mod:`initlab.schemes.materialize`.
        **params: scheme parameters, overriding those in a single scheme.

    Raises:
        ValueError: unknown scheme or bad parameter, a lazy module before its first forward pass,
            nothing to initialize, a fan-based scheme on a tensor without fans (a bias); the
            module is unchanged when it raises (new values are drawn into copies first, so the
            call needs memory for one extra copy of the parameters it initializes).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> initialize(nn.LSTM(8, 16), "xavier", recurrent="orthogonal", forget_bias=1.0, generator=g)
    """
    as_module("module", module)
    module = materialize_for_init(module, generator, device)  # meta tensors get memory first (schemes/materialize)
    rules, params, _ = _model_level(module, rules, params)
    owner = model_initializer(rules)
    if owner is not None:
        return owner.initialize_model(module, rules, params, own=_own_params(rules), example=example,
                                      generator=generator, recurrent=recurrent, forget_bias=forget_bias,
                                      strict=strict, report=False)
    plan_and_draw(module, rules, generator, recurrent, forget_bias, strict, params, example=example)
    return module


def _model_level(module: nn.Module, rules: Any, params: Mapping[str, Any]):
    """Model-level schemes (fixup, skipinit, rezero, gpt2) replaced by the rules mapping they compute
    from the model, and the report note of each generated key: see :mod:`initlab.schemes.residual`."""
    return expand(module, rules, params)


def _example_schemes(rules: Any) -> set[str]:
    """Canonical names of the schemes in ``rules`` that need an example batch; unreadable rules give
    an empty set (``initialize`` then raises its own error for them)."""

    try:
        values = [rules] if is_single(rules) else list(rules.values()) if isinstance(rules, Mapping) else []
        out = set()
        for value in values:
            rule = as_rule(value)
            for spec in (rule.scheme, rule.recurrent):
                if spec is not None and as_spec(spec)[0].needs_example:
                    out.add(as_spec(spec)[0].name)
        return out
    except (ValueError, TypeError):
        return set()


def needs_example(rules: Any) -> bool:
    """Whether ``rules`` (a scheme name, spec text, ``SchemeSpec``, dict, ``Scheme``, ``Rule`` or a
    rules mapping) uses a scheme that reads the model on an example batch (``auto``, ``lsuv``), so
    that ``initialize`` needs ``example=``.

    Example:
        >>> needs_example("lsuv(tol=0.05)"), needs_example({"*": "lsuv", "fc": "zeros"}), needs_example("he")
        (True, True, False)
    """
    return bool(_example_schemes(rules))


def _own_params(rules: Any) -> dict | None:
    """A single scheme's own parameters (``"auto(mode=empirical)"`` -> {"mode": "empirical"}); None for a mapping."""
    if not is_single(rules):
        return None
    spec = as_rule(rules).scheme
    return dict(as_spec(spec)[1]) if spec is not None else {}


def model_initializer(rules: Any) -> Scheme | None:
    """The whole-model scheme that ``rules`` hand the model to (its ``initialize_model``), or None.

    Found by the protocol, not by name: any scheme in the rules (a single scheme or a mapping's
    values, recurrent ones too) registered with ``register_scheme(..., initialize_model=)``.
    Two different ones in one set of rules are an error.
    """
    try:
        values = [rules] if is_single(rules) else list(rules.values()) if isinstance(rules, Mapping) else []
        found = {}
        for value in values:
            rule = as_rule(value)
            for spec in (rule.scheme, rule.recurrent):
                if spec is not None:
                    scheme = as_spec(spec)[0]
                    if scheme.initialize_model is not None:
                        found[scheme.name] = scheme
    except (ValueError, TypeError):  # unreadable rules: initialize raises its own error for them
        return None
    if len(found) > 1:
        raise ValueError(f"rules use {' and '.join(sorted(found))}, which each initialize the whole model; use one")
    return next(iter(found.values()), None)


def initialize_with_report(
    module: nn.Module,
    rules: str | SchemeSpec | Mapping[str, Any] | Rule,
    *,
    generator: torch.Generator | None = None,
    recurrent: str | SchemeSpec | Mapping[str, Any] | None = None,
    forget_bias: float | None = None,
    strict: bool = False,
    example: Any = None,
    device: torch.device | str | None = None,
    **params: Any,
):
    """``initialize``, returning ``(module, report)``: one row per tensor or block.

    With ``"auto"`` the report also has each tensor's layer reading (see :func:`initlab.schemes.auto.auto_initialize`);
    with ``"lsuv"`` each rescaled layer's iterations and output std (see :mod:`initlab.schemes.lsuv`).

    Columns: parameter (qualified name, ``[q]`` / ``[gate f]`` for blocks), module_type, rule (the
    key that matched; "(layer default)"; None when uncovered), scheme, fan_in, fan_out (NaN
    without fans), std_before, std_after (of the effective tensor), note (parametrizations,
    spectral_norm's rescaling, padding rows, forget gates, why a class is unsupported).
    """
    as_module("module", module)
    module = materialize_for_init(module, generator, device)  # meta tensors get memory first (schemes/materialize)
    rules, params, notes = _model_level(module, rules, params)
    owner = model_initializer(rules)
    if owner is not None:
        module, frame = owner.initialize_model(module, rules, params, own=_own_params(rules), example=example,
                                               generator=generator, recurrent=recurrent, forget_bias=forget_bias,
                                               strict=strict, report=True)
        return module, annotate(frame, notes) if notes else frame
    plans = plan_and_draw(module, rules, generator, recurrent, forget_bias, strict, params, report=True, example=example)
    return module, annotate(report_frame(plans), notes)


def report_frame(plans: list[_Plan]):
    """The report of ``initialize_with_report``: one row per planned tensor or block."""
    import pandas as pd

    columns = {
        "parameter": [p.label for p in plans],
        "module_type": [type(p.module).__name__ for p in plans],
        "rule": [p.rule for p in plans],  # None when uncovered
        "scheme": [p.text for p in plans],
        "fan_in": [p.target.fans[0] if p.target.fans else math.nan for p in plans],
        "fan_out": [p.target.fans[1] if p.target.fans else math.nan for p in plans],
        "std_before": [p.std_before for p in plans],
        "std_after": [p.std_after for p in plans],
        "note": [p.note for p in plans],
    }
    text = {"parameter", "module_type", "rule", "scheme", "note"}  # object dtype keeps None as None
    return pd.DataFrame({k: pd.Series(v, dtype=object if k in text else float) for k, v in columns.items()})
