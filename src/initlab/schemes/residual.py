"""Residual inits from the model's branch metadata: ``fixup``, ``skipinit``, ``rezero``, ``gpt2``.

These are *model-level* schemes: each reads where the residual branches are from the model's
:class:`~initlab.schemes.structure.ResidualInfo` (``model.residual``, carried by the zoo's ``resmlp``,
``resnet`` and ``transformer``), never by guessing names, and turns that into an ordinary rules
mapping (:func:`fixup_rules`, :func:`skipinit_rules`, :func:`rezero_rules`, :func:`gpt2_rules`)
keyed by qualified parameter names plus ``"*"`` for everything else. ``initialize(model, "fixup")``
applies that mapping with the normal machinery, so ``initialize_with_report`` lists every tensor
with its rule (the generated key), its scheme, and a note naming the part of the scheme it is
("fixup: branch-final layer → 0"). The one exception to "no name guessing" is ``gpt2`` on a model
without ``ResidualInfo``: it falls back to GPT-2's naming (parameters named ``…c_proj.weight``).

Using them: alone (``"fixup"``, ``"fixup(base=xavier)"``, a ``SchemeSpec`` or its dict, a
``Rule``) or as the value of ``"*"`` in a rules mapping, never under another key. The mapping's
other keys are the user's rules and **override the generated ones**: a tensor that a user key acts
on by the precedence of :mod:`initlab.schemes.rules` (an exact name or a glob for any tensor; a
module type for its non-bias tensors) takes the user's rule; the bias of a weight the user took
follows that user scheme's bias policy unless a user key names the bias; every other tensor keeps
the generated rule. ``{"*": "fixup", "head.weight": "xavier"}`` is Fixup with a Xavier classifier
weight (its bias stays Fixup's 0); ``{"*": "fixup", "Linear": "he"}`` hands every Linear weight to
He, so only the gates, scalar biases and non-Linear layers remain Fixup's.

A model without the metadata a scheme needs gets a one-line ValueError naming what is missing
(the model is unchanged): ``fixup``, ``skipinit`` and ``rezero`` need ``ResidualInfo``;
``skipinit`` and ``rezero`` also a gate (a :class:`~initlab.models.Scalar` multiplier) on every
branch, i.e. ``resmlp``/``resnet`` built with ``gate=true`` (or ``fixup=true``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from initlab.schemes.functions import MODES, check_choice, normal_
from initlab.schemes.registry import register_scheme
from initlab.schemes.rules import Rule, RuleSet, as_rule, is_single
from initlab.schemes.specs import SchemeSpec, as_spec, check_tensor_scheme
from initlab.schemes.structure import residual_info
from initlab.schemes.units import collect_units

FIXUP_MODES = tuple(m for m in MODES if m != "fan_avg")  # fan_in (paper's "He et al."), fan_out (its code)


# --------------------------------------------------------------------------- the model's tensors


@dataclass(frozen=True)
class _Tensor:
    """One tensor ``initialize`` sees: its module, the module's class names (MRO) and its role."""

    module: str  # qualified module name ("" for the model itself)
    classes: tuple[str, ...]  # the module class and its bases (MRO) by name
    role: str  # "weight" | "bias" | "other"
    weight: str | None  # a bias: qualified name of the weight whose bias policy it follows


def _tensors(model: nn.Module) -> dict[str, _Tensor]:
    """Every tensor of ``model`` under the qualified name rules use (``initialize``'s own reading)."""
    out: dict[str, _Tensor] = {}
    for mname, m, _slots, targets in collect_units(model)[0]:
        mro = tuple(c.__name__ for c in type(m).__mro__)
        for t in targets:
            q = f"{mname}.{t.name}" if mname else t.name
            if q not in out:  # blocks of one tensor (q/k/v, gates) share its name
                w = t.weight[0] if t.weight else None
                out[q] = _Tensor(mname, mro, t.role, (f"{mname}.{w}" if mname else w) if w else None)
    return out


def _info(model: nn.Module, scheme: str):
    """The model's ResidualInfo, or a one-line ValueError saying it has none."""
    info = residual_info(model)
    if info is None:
        raise ValueError(
            f"{scheme} needs the model's residual branches (model.residual, a ResidualInfo); "
            f"{type(model).__name__} has none: use a zoo residual model (resmlp, resnet, transformer)"
        )
    if not info.branches or any(not b for b in info.branches):
        raise ValueError(f"{scheme}: model.residual lists no branches or an empty branch")
    return info


def _of(model: nn.Module, tensors: dict[str, _Tensor], layer: str, role: str, scheme: str) -> list[str]:
    """Qualified names of ``layer``'s tensors of ``role``; a weight layer without weights is an error."""
    names = [q for q, t in tensors.items() if t.module == layer and t.role == role]
    if not names and role == "weight":
        known = dict(model.named_modules())
        what = "no module by that name" if layer not in known else f"a {type(known[layer]).__name__} with no weight"
        raise ValueError(f"{scheme}: model.residual names layer {layer!r}, but the model has {what}")
    return names


def _value(tensors: dict[str, _Tensor], module: str, scheme: str) -> str:
    """The qualified name of a Scalar module's ``value``."""
    key = f"{module}.value"
    if key not in tensors:
        raise ValueError(f"{scheme}: model.residual names scalar {module!r}, but the model has no {key!r}")
    return key


def _check_base(scheme: str, base: Any) -> str:
    """``base`` as canonical spec text of a per-tensor scheme (one-line ValueError otherwise)."""
    return str(check_tensor_scheme(base, f"{scheme} parameter base", "a per-tensor scheme such as 'he'"))


def _check_std(std: Any) -> float:
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std <= 0:
        raise ValueError(f"gpt2 parameter std must be a finite number > 0, got {std!r}")
    return float(std)


# --------------------------------------------------------------------------- the schemes' rules

Rules = tuple[dict[str, Any], dict[str, str]]  # (rules mapping, note per key)


def _fixup(model: nn.Module, *, base: str = "kaiming_normal", mode: str = "fan_in") -> Rules:
    base = _check_base("fixup", base)
    check_choice("fixup parameter mode", mode, FIXUP_MODES)
    info, tensors = _info(model, "fixup"), _tensors(model)
    L = info.num_branches
    rules: dict[str, Any] = {"*": base}
    notes = {"*": f"fixup: outside the residual branches ({base})"}
    for i, branch in enumerate(info.branches):
        m = len(branch)
        for j, layer in enumerate(branch):
            for key in _of(model, tensors, layer, "weight", "fixup"):
                if j == m - 1:
                    rules[key], notes[key] = "zero", "fixup: branch-final layer → 0"
                else:  # He normal, variance 2/fan, times L^(-2/(2m-2)): scale 2·L^(-1/(m-1))
                    rules[key] = str(SchemeSpec("variance_scaling", {
                        "scale": 2.0 * L ** (-1.0 / (m - 1)), "mode": mode, "distribution": "normal"}))
                    notes[key] = f"fixup: branch layer, He normal ({mode}) × L^(-1/(2m-2)) = {L}^(-1/{2 * m - 2})"
        gate = info.gates[i] if i < len(info.gates) else None
        if gate is not None:
            key = _value(tensors, gate, "fixup")
            rules[key], notes[key] = "constant(value=1.0)", "fixup: scalar multiplier → 1"
        for b in (info.biases[i] if i < len(info.biases) else ()):
            key = _value(tensors, b, "fixup")
            rules[key], notes[key] = "zero", "fixup: scalar bias → 0"
    if info.classifier:
        for key in (_of(model, tensors, info.classifier, "weight", "fixup")
                    + _of(model, tensors, info.classifier, "bias", "fixup")):
            rules[key], notes[key] = "zero", "fixup: classifier → 0"
    return rules, notes


def _gated(model: nn.Module, scheme: str, base: str) -> Rules:
    base = _check_base(scheme, base)
    info = _info(model, scheme)
    gates = [g for g in info.gates if g is not None]
    if len(gates) < info.num_branches:
        raise ValueError(
            f"{scheme} needs a residual gate (a Scalar multiplier) on every branch: build resmlp/resnet with "
            f"gate=true; {type(model).__name__} has gates on {len(gates)} of {info.num_branches} branches"
        )
    tensors = _tensors(model)
    rules: dict[str, Any] = {"*": base}
    notes = {"*": f"{scheme}: every layer ({base})"}
    for g in gates:
        key = _value(tensors, g, scheme)
        rules[key], notes[key] = "zero", f"{scheme}: residual gate → 0"
    return rules, notes


def _skipinit(model: nn.Module, *, base: str = "kaiming_normal") -> Rules:
    return _gated(model, "skipinit", base)


def _rezero(model: nn.Module, *, base: str = "xavier_uniform") -> Rules:
    return _gated(model, "rezero", base)


def _gpt2(model: nn.Module, *, std: float = 0.02) -> Rules:
    std = _check_std(std)
    info, tensors = residual_info(model), _tensors(model)
    if info is not None and info.branches:
        finals = [k for layer in info.branch_final for k in _of(model, tensors, layer, "weight", "gpt2")]
        n, how = info.num_branches, "residual branches (model.residual)"
    else:  # GPT-2 / nanoGPT naming: every residual projection is a c_proj
        finals = [q for q, t in tensors.items()
                  if t.role != "bias" and (q == "c_proj.weight" or q.endswith(".c_proj.weight"))]
        n, how = len(finals), "parameters named *c_proj.weight (GPT-2 naming; the model has no ResidualInfo)"
        if not finals:
            raise ValueError(
                f"gpt2 needs the residual projections: {type(model).__name__} has no ResidualInfo (model.residual) "
                "and no parameter named '*c_proj.weight' (GPT-2 naming); name them in a rules mapping instead"
            )
    rules: dict[str, Any] = {"*": str(SchemeSpec("normal", {"std": std}))}
    notes = {"*": f"gpt2: normal(0, {std:g}²)"}
    proj = str(SchemeSpec("normal", {"std": std / math.sqrt(n)}))
    for key in finals:
        rules[key], notes[key] = proj, f"gpt2: residual projection, std {std:g}/√n with n = {n} {how}"
    return rules, notes


_BUILDERS: dict[str, Callable[..., Rules]] = {"fixup": _fixup, "skipinit": _skipinit, "rezero": _rezero, "gpt2": _gpt2}
MODEL_SCHEMES = tuple(_BUILDERS)


def register_model_rules(name: str, builder: Callable[..., Rules]) -> None:
    """Make the model-level scheme ``name`` (registered with ``register_scheme(name, model_level=True)``) expand
    to ``builder(model, **params) -> (rules mapping, note per key)`` in ``initialize`` (family presets use it)."""
    _BUILDERS[name] = builder


def fixup_rules(model: nn.Module, *, base: str = "kaiming_normal", mode: str = "fan_in") -> dict[str, Any]:
    """Fixup's rules mapping for ``model`` (Zhang, Dauphin & Ma 2019, "Fixup Initialization", §3).

    With L = the number of residual branches and m = the weight layers of a branch (the zoo's ``m``):

    * the classifier (``ResidualInfo.classifier``) weight and bias: 0;
    * each branch's last layer (branch-final): 0, so every branch outputs 0 at init;
    * the branch's other layers: He normal, N(0, 2/fan · L^(-2/(2m-2))), i.e. std
      √2/√fan · L^(-1/(2m-2)) (``variance_scaling(scale=2·L^(-1/(m-1)), distribution=normal)``).
      The √2 is He's gain for ReLU, the activation Fixup's networks (and the zoo's default) use;
      fan = ``mode``: fan_in (the paper's "standard method, e.g. He et al."), or fan_out, what the
      authors' code (hongyi-zhang/Fixup, ``fixup_resnet_cifar.py``) draws; the two agree for the
      zoo's width→width branch layers. m = 1: the single layer is branch-final, so nothing is scaled;
    * the scalar multipliers (gates) 1 and scalar biases 0, where the model has them
      (``resmlp``/``resnet`` built with ``fixup=true``);
    * every other weight (the stem; Linear/Conv/Embedding main weights): ``base``, default He
      normal (``kaiming_normal``; the authors' CIFAR code leaves its stem at PyTorch's default:
      ``base=pytorch_default``); biases: the bias policy of their weight's scheme (0 for all but
      ``pytorch_default``).

    Example:
        >>> model = initlab.models.make_model("resmlp(blocks=50,fixup=true)", (64,), 10)
        >>> initialize(model, fixup_rules(model))  # same as initialize(model, "fixup")
    """
    return _fixup(model, base=base, mode=mode)[0]


def skipinit_rules(model: nn.Module, *, base: str = "kaiming_normal") -> dict[str, Any]:
    """SkipInit's rules mapping (De & Smith 2020, "Batch Normalization Biases Residual Blocks
    Towards the Identity Function in Deep Networks", §4): every residual gate 0, so each block
    is the identity at init; every other layer ``base`` (default He normal, ``kaiming_normal``:
    the paper keeps its ResNets' standard He init and only adds the zero-initialised scalar).

    Needs a gate on every branch (``resmlp``/``resnet`` with ``gate=true`` or ``fixup=true``).
    """
    return _skipinit(model, base=base)[0]


def rezero_rules(model: nn.Module, *, base: str = "xavier_uniform") -> dict[str, Any]:
    """ReZero's rules mapping (Bachlechner et al. 2020, "ReZero is All You Need"): ``x + α·F(x)``
    with every α (the residual gate) 0; every other layer ``base``, default Xavier uniform: the
    authors' ReZero Transformer (majumderb/rezero, ``rztx.py``) is built inside ``nn.Transformer``,
    whose ``_reset_parameters`` draws ``xavier_uniform_`` for every weight matrix.

    Needs a gate on every branch (``resmlp``/``resnet`` with ``gate=true`` or ``fixup=true``).
    """
    return _rezero(model, base=base)[0]


def gpt2_rules(model: nn.Module, *, std: float = 0.02) -> dict[str, Any]:
    """GPT-2's rules mapping (Radford et al. 2019, §2.3; nanoGPT ``GPT._init_weights``).

    * every layer's main weight (Linear and Embedding in GPT-2; conv/RNN/attention weights too if
      the model has them): N(0, std²), std = 0.02; biases 0; LayerNorm its default (1, 0);
    * each residual projection: N(0, (std/√n)²), n = the number of residual branches. nanoGPT
      writes 0.02/√(2·n_layer): two branches (attention, MLP) per block, so n = 2·n_layer. The
      projections and n come from ``ResidualInfo`` (``branch_final``, ``num_branches``); on a model
      without one, from GPT-2's naming: every parameter named ``c_proj.weight`` or
      ``….c_proj.weight`` is a projection and n is their count (nanoGPT's own
      ``pn.endswith('c_proj.weight')``). A model with neither raises ValueError.
    """
    return _gpt2(model, std=std)[0]


# --------------------------------------------------------------------------- initialize's hook


def _model_scheme(value: Any) -> tuple[Any, Any, dict[str, Any]] | None:
    """``(rule, scheme, params)`` if ``value`` (a rule value) is a model-level scheme, else None."""
    try:
        rule = as_rule(value)
        sch, params = as_spec(rule.scheme)
    except (ValueError, TypeError):
        return None  # initialize raises its own error for it
    return (rule, sch, params) if sch.name in _BUILDERS else None


def _with_options(base: Any, rule: Any) -> Any:
    """The ``"*"`` value: ``base``, carrying a ``Rule``'s recurrent / forget_bias options."""
    if rule.recurrent is None and rule.forget_bias is None:
        return base
    return Rule(base, rule.recurrent, rule.forget_bias)


def expand(model: nn.Module, rules: Any, params: Mapping[str, Any]) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """``(rules, params, notes)`` for ``initialize``: a model-level scheme replaced by its mapping.

    Rules without a model-level scheme come back unchanged (and ``notes`` empty). ``notes`` maps a
    generated rule key to the note ``initialize_with_report`` adds to the rows it covers.
    """
    if is_single(rules):
        found = _model_scheme(rules)
        if found is None:
            return rules, dict(params), {}
        rule, sch, own = found
        generated, notes = _BUILDERS[sch.name](model, **sch.resolve_params({**own, **params}))
        generated["*"] = _with_options(generated["*"], rule)
        return generated, {}, notes
    if not isinstance(rules, Mapping):
        return rules, dict(params), {}
    found = {k: f for k, f in ((k, _model_scheme(v)) for k, v in rules.items()) if f is not None}
    if not found:
        return rules, dict(params), {}
    for key, (_, sch, _) in found.items():
        if key != "*":
            raise ValueError(f"{sch.name} is a model-level scheme: use it alone or as the value of '*' in a rules "
                             f"mapping, not for {key!r}")
    rule, sch, own = found["*"]
    if params:
        raise ValueError(f"scheme parameters {sorted(params)} as keyword arguments need a single scheme; put them in "
                         f"the scheme, e.g. {{'*': '{sch.name}(...)'}}")
    generated, notes = _BUILDERS[sch.name](model, **sch.resolve_params(own))
    generated["*"] = _with_options(generated["*"], rule)
    user = {k: v for k, v in rules.items() if k != "*"}
    tensors = _tensors(model)
    taken = RuleSet(user, tensors) if user else None
    drop = set()
    if taken is not None:
        for key in generated:
            t = tensors.get(key)
            if t is not None and (taken.by_name(key) is not None or (t.role != "bias" and taken.by_type(t.classes))):
                drop.add(key)
        for key in generated:  # a bias follows the user's scheme when the user took its weight
            t = tensors.get(key)
            if t is not None and t.role == "bias" and t.weight in drop:
                drop.add(key)
    merged = {k: v for k, v in generated.items() if k not in drop}
    merged.update(user)
    return merged, {}, {k: v for k, v in notes.items() if k not in drop}


def annotate(frame, notes: Mapping[str, str]):
    """Add each generated rule's note to the report rows it covers (``initialize_with_report``)."""
    if not notes or frame is None or "rule" not in frame or "note" not in frame:
        return frame
    for i, (rule, scheme) in enumerate(zip(frame["rule"], frame["scheme"])):
        key = rule.split(" (")[0] if isinstance(rule, str) else None  # "* (recurrent)", "… (forget_bias)"
        if key in notes and "(bias policy of" not in str(scheme):  # a bias policy row explains itself
            old = frame["note"].iat[i]
            frame.iat[i, frame.columns.get_loc("note")] = "; ".join(x for x in (old, notes[key]) if x)
    return frame


# --------------------------------------------------------------------------- registered names


@register_scheme("fixup", model_level=True)
def fixup_(weight: Tensor, *, generator: torch.Generator | None = None, base: str = "kaiming_normal",
           mode: str = "fan_in") -> Tensor:
    """Fixup (Zhang, Dauphin & Ma 2019): classifier and branch-final layers 0, other branch layers He × L^(-1/(2m-2)).

    A model-level scheme (:func:`fixup_rules`): ``initialize(model, "fixup")`` reads the
    branches from ``model.residual``. Called on one tensor (``check_scheme``), it checks the
    parameters and draws ``base`` only.
    """
    check_choice("fixup parameter mode", mode, FIXUP_MODES)
    return _draw_base(weight, _check_base("fixup", base), generator)


@register_scheme("skipinit", model_level=True)
def skipinit_(weight: Tensor, *, generator: torch.Generator | None = None, base: str = "kaiming_normal") -> Tensor:
    """SkipInit (De & Smith 2020): every residual gate 0, other layers ``base`` (He normal).

    A model-level scheme (:func:`skipinit_rules`); called on one tensor (``check_scheme``), it
    checks the parameters and draws ``base`` only.
    """
    return _draw_base(weight, _check_base("skipinit", base), generator)


@register_scheme("rezero", model_level=True)
def rezero_(weight: Tensor, *, generator: torch.Generator | None = None, base: str = "xavier_uniform") -> Tensor:
    """ReZero (Bachlechner et al. 2020): every residual gate α = 0, other layers ``base`` (Xavier uniform).

    A model-level scheme (:func:`rezero_rules`); called on one tensor (``check_scheme``), it
    checks the parameters and draws ``base`` only.
    """
    return _draw_base(weight, _check_base("rezero", base), generator)


@register_scheme("gpt2", model_level=True)
def gpt2_(weight: Tensor, *, generator: torch.Generator | None = None, std: float = 0.02) -> Tensor:
    """GPT-2 (Radford et al. 2019; nanoGPT): N(0, 0.02²) weights, residual projections N(0, (0.02/√n)²), n branches.

    A model-level scheme (:func:`gpt2_rules`); called on one tensor (``check_scheme``), it checks
    ``std`` and draws N(0, std²).
    """
    return normal_(weight, std=_check_std(std), generator=generator)


def _draw_base(weight: Tensor, base: str, generator: torch.Generator | None) -> Tensor:
    sch, params = as_spec(base)
    sch.fn(weight, generator=generator, **sch.resolve_params(params))
    return weight
