"""LSUV: layer-sequential unit-variance init (Mishkin & Matas 2016, "All you need is a good init", ICLR).

``initialize(model, "lsuv", example=batch)`` runs the paper's Algorithm 1:

1. pre-init: every weight the scheme covers gets ``pre_init`` (default ``orthogonal``: the weight
   viewed as (dim 0, the rest), e.g. (out, in·∏kernel) for Linear/Conv, has orthonormal rows, or
   columns when dim 0 is the larger; Saxe et al. 2014), and biases follow that scheme's bias
   policy (zeros for orthogonal);
2. in the order the layers first run on ``example``, for each Linear, Bilinear, ConvNd and
   ConvTransposeNd layer whose weight an lsuv rule covers: run the model, read the std σ of every
   element the layer outputs (a forward hook on the module, pooled over all its calls when it runs
   more than once per forward), and while |σ − target_std| > tol and fewer than ``max_iters``
   rescalings were made: W ← W · target_std / σ, and run again.

With a zero bias the output is linear in W, so one rescaling lands σ on the target up to float
error; the loop matters for nonzero biases and layers that run more than once.

``mean_correction=True`` also asks |μ| ≤ tol of the output mean μ and rescales the bias with the
weight, b ← (b − μ)·target_std/σ, which maps the layer's output y to (y − μ)·target_std/σ: mean 0
and std target_std in one step. The paper's Algorithm 1 rescales W only, and so does the current
``lsuv`` package (``LSUVinit`` with ``ignore_layers_regexp_list``); an earlier version of the authors'
``LSUVinit`` (with ``needed_mean``) also added needed_mean − μ·target_std/σ to the bias at each step,
which is this map for needed_mean = 0, and the fast.ai course's LSUV (course-v3 ``07a_lsuv``)
subtracts μ from the bias. Without mean correction, biases are never touched after the pre-init.

Rules: ``lsuv`` can be the value of any rule (``{"*": "lsuv", "fc_out": "zeros"}``). The layers whose
weight an lsuv rule covers get its pre-init and then its rescaling (each rule its own parameters);
every other tensor gets its own rule's scheme, drawn before any rescaling, so the rescaled layers
measure the model as it will be. Layers an lsuv rule covers that are not Linear/Bilinear/Conv
(Embedding, RNN gate blocks, attention's in-projection), parametrized weights (weight_norm,
spectral_norm) and layers that never run on the example keep their pre-init and are listed with
a note. Measurements are taken in eval mode (dropout off, batch norm on its running statistics);
the train/eval flags are restored afterwards.

A layer whose output std is 0 or not finite on the example (a constant input: dead ReLUs
upstream, an all-zero example; an overflow) cannot be rescaled: the call raises a one-line
ValueError naming the layer, and the model's parameters are restored to what they were.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Mapping

import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from initlab.graph import split_example
from initlab.schemes.apply import plan_and_draw, report_frame, tensor_std
from initlab.schemes.registry import Scheme, register_scheme
from initlab.schemes.rules import as_rule, is_single
from initlab.schemes.specs import SchemeSpec, as_spec, check_tensor_scheme

LSUV_TYPES = (nn.Linear, nn.Bilinear, _ConvNd)  # output linear in the weight: rescaling W rescales it
LAYER_COLUMNS = ("layer", "module_type", "calls", "iterations", "std_before", "std_after", "within_tol",
                 "mean_before", "mean_after", "note")
KEEP_NAMES = ("none", "keep")  # pre_init values that leave weights and biases as they are


def _keep_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Leave the tensor as it is (LSUV on top of the model's current weights)."""
    return weight


KEEP = Scheme("keep", _keep_, bias="keep")


def check_lsuv_params(target_std: float = 1.0, tol: float = 0.1, max_iters: int = 10,
                      mean_correction: bool = False, pre_init: str = "orthogonal") -> dict[str, Any]:
    """Validate ``lsuv``'s parameters (one-line ValueErrors); return them as a dict."""
    for name, v in (("target_std", target_std), ("tol", tol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"lsuv parameter {name} must be a finite number > 0, got {v!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or not 1 <= max_iters <= 1000:
        raise ValueError(f"lsuv parameter max_iters must be an integer from 1 to 1000, got {max_iters!r}")
    if not isinstance(mean_correction, bool):
        raise ValueError(f"lsuv parameter mean_correction must be true or false, got {mean_correction!r}")
    if not isinstance(pre_init, str) or pre_init.strip() not in KEEP_NAMES:
        check_tensor_scheme(pre_init, "lsuv parameter pre_init", "a per-tensor scheme or 'none'")
    return dict(target_std=float(target_std), tol=float(tol), max_iters=max_iters,
                mean_correction=mean_correction, pre_init=pre_init.strip())


def pre_init_scheme(pre_init: str) -> tuple[Scheme, dict[str, Any]]:
    """The scheme and parameters of a (checked) ``pre_init`` value; ``"none"`` keeps the tensors."""
    if pre_init in KEEP_NAMES:
        return KEEP, {}
    sch, params = as_spec(pre_init)
    return sch, sch.resolve_params(params)


def _split(rules: Any, params: Mapping[str, Any]):
    """Rules with every lsuv scheme replaced by its pre-init, the lsuv keys' texts and parameters,
    and the keyword parameters left for the other schemes (none with a single lsuv scheme)."""
    single = is_single(rules)
    new: dict[str, Any] = {}
    lsuv: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, value in ({"*": rules} if single else dict(rules)).items():
        rule = as_rule(value)
        if rule.recurrent is not None and as_spec(rule.recurrent)[0].needs_example:
            raise ValueError(f"rule {key!r}: recurrent={rule.recurrent} initializes whole models, not "
                             "hidden-to-hidden weights; use a per-tensor scheme such as 'orthogonal'")
        sch, own = as_spec(rule.scheme)
        if sch.name != "lsuv":
            new[key] = value
            continue
        given = {**own, **(params if single else {})}
        merged = sch.resolve_params(given)  # unknown names: one-line ValueError listing the valid ones
        checked = check_lsuv_params(**{**sch.params, **merged})
        pre, pre_params = pre_init_scheme(checked["pre_init"])
        pre_spec = pre if pre is KEEP else SchemeSpec(pre.name, pre_params)
        lsuv[key] = (str(SchemeSpec("lsuv", given)), checked)
        new[key] = dataclasses.replace(rule, scheme=pre_spec)
    return (new["*"] if single else new), lsuv, ({} if single else dict(params))


class _Measured(Exception):
    """Raised by a hook once its layer has run as often as in a full forward pass: the rest of the
    pass cannot change the measurement, so it is skipped."""


class _Meter:
    """Forward hook: count, mean and sum of squared deviations of every element a module outputs,
    pooled over its calls in one pass (Chan et al.'s pairwise update, float64)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.reset()

    def reset(self) -> None:
        self.calls, self.n, self.mean, self.m2 = 0, 0, 0.0, 0.0

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor) or (self.stop_after is not None and self.calls >= self.stop_after):
            return  # extra calls (a model that swallowed _Measured) do not count
        o = output.detach().double()
        self.calls += 1
        if o.numel():
            n, m = o.numel(), float(o.mean())
            m2 = float((o - m).square().sum())
            d, total = m - self.mean, self.n + n
            self.m2 += m2 + d * d * self.n * n / total
            self.mean += d * n / total
            self.n = total
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise _Measured

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 and math.isfinite(self.m2) else math.nan


def _runner(model: nn.Module, example: Any):

    args, kwargs = split_example(example)

    def run() -> None:
        try:
            with torch.no_grad():
                model(*args, **kwargs)
        except _Measured:
            pass
    return run


def _row(layer: str, module: nn.Module, **values: Any) -> dict[str, Any]:
    row = dict(layer=layer, module_type=type(module).__name__, calls=0, iterations=0, std_before=math.nan,
               std_after=math.nan, within_tol=False, mean_before=math.nan, mean_after=math.nan, note="")
    row.update(values)
    return row


def _fit(run, module: nn.Module, calls: int, layer: str, p: dict[str, Any]) -> dict[str, Any]:
    """Algorithm 1's inner loop for one layer; the row of the per-layer table."""
    target, tol, mc = p["target_std"], p["tol"], p["mean_correction"]
    bias = getattr(module, "bias", None) if mc else None
    meter = _Meter(stop_after=calls)
    handle = module.register_forward_hook(meter)

    def measure(done: int) -> tuple[float, float]:
        meter.reset()
        run()
        std, mean = meter.std, meter.mean
        if not (math.isfinite(std) and std > 0):
            why = "its input is constant (dead units upstream? an all-zero example?)" if std == 0 else (
                "non-finite outputs (overflow upstream, or NaN/inf in the example)")
            raise ValueError(f"lsuv: layer {layer!r} ({type(module).__name__}) has output std {std:g} on the example "
                             f"after {done} rescaling(s), so it cannot be rescaled to {target:g}: {why}")
        return std, mean

    def ok(std: float, mean: float) -> bool:
        return abs(std - target) <= tol and (bias is None or abs(mean) <= tol)

    try:
        std, mean = before = measure(0)
        it = 0
        while not ok(std, mean) and it < p["max_iters"]:
            s = target / std
            with torch.no_grad():
                module.weight.mul_(s)
                if bias is not None:
                    bias.sub_(mean).mul_(s)
            it += 1
            std, mean = measure(it)
    finally:
        handle.remove()
    note = f"output pooled over {calls} calls per forward" if calls > 1 else ""
    if mc and getattr(module, "bias", None) is None:
        note = "; ".join(x for x in (note, "no bias: mean not corrected") if x)
    return _row(layer, module, calls=calls, iterations=it, std_before=before[0], std_after=std,
                within_tol=ok(std, mean), mean_before=before[1], mean_after=mean, note=note)


def _apply(model: nn.Module, rules: Any, example: Any, *, generator, recurrent, forget_bias, strict,
           report: bool, params: Mapping[str, Any]):
    """Pre-init by the rules, then Algorithm 1 on the covered layers.

    Returns the plans, the per-layer rows by module (in table order) and, for each module an lsuv
    rule covers, the text of that rule's lsuv scheme.
    """
    if example is None:
        raise ValueError("lsuv measures each layer's output on an example batch: pass example=<inputs>, "
                         "e.g. initialize(model, 'lsuv', example=x[:256])")
    pre_rules, lsuv, rest = _split(rules, params)
    saved = [(p, p.detach().clone()) for p in model.parameters()]
    plans = plan_and_draw(model, pre_rules, generator, recurrent, forget_bias, strict, rest, report=report)

    targets: dict[nn.Module, tuple[str, dict]] = {}  # module -> (layer, lsuv parameters)
    covered: dict[nn.Module, str] = {}  # module -> lsuv scheme text, for every module a lsuv rule covers
    skipped: dict[nn.Module, dict[str, Any]] = {}
    for p in plans:
        if p.how != "scheme" or p.rule not in lsuv or p.target.role != "weight" or p.module in covered:
            continue
        m, layer = p.module, p.qname.rsplit(".", 1)[0] if "." in p.qname else "(model)"
        covered[m] = lsuv[p.rule][0]
        if not isinstance(m, LSUV_TYPES) or p.target.name != "weight" or p.target.rows is not None:
            skipped[m] = _row(layer, m, note=f"{type(m).__name__} is not a Linear/Bilinear/Conv layer: "
                                             "pre-init only")
        elif p.slot.kind != "parameter":
            skipped[m] = _row(layer, m, note=f"{p.slot.describe()} weight: pre-init only, not rescaled")
        else:
            targets[m] = (layer, lsuv[p.rule][1])

    modes = [(m, m.training) for m in model.modules()]
    rows: dict[nn.Module, dict[str, Any]] = {}
    try:
        model.eval()
        run = _runner(model, example)
        calls: dict[nn.Module, int] = {}  # insertion order: the order layers first run

        def count(module, inputs, output):
            calls[module] = calls.get(module, 0) + 1
        handles = [m.register_forward_hook(count) for m in targets]
        try:
            run()
        except Exception as err:  # noqa: BLE001 - any failure of the user's model, in one line
            first = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(f"lsuv: the model failed on the example: {type(err).__name__}: {first}") from None
        finally:
            for h in handles:
                h.remove()
        for m, n in calls.items():
            layer, p = targets[m]
            rows[m] = _fit(run, m, n, layer, p)
    except BaseException:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
        raise
    finally:
        for m, mode in modes:
            m.training = mode
    for m, (layer, _) in targets.items():
        if m not in calls:
            rows[m] = _row(layer, m, note="never ran on the example: pre-init only, not rescaled")
    rows.update(skipped)
    missed = [r["layer"] for r in rows.values() if r["calls"] and not r["within_tol"]]
    if missed:
        shown = ", ".join(missed[:5]) + (f" and {len(missed) - 5} more" if len(missed) > 5 else "")
        warnings.warn(f"lsuv: {len(missed)} layer(s) not within tol of target_std after max_iters rescalings: "
                      f"{shown}", stacklevel=4)
    return plans, rows, covered


def _table(rows: Mapping[nn.Module, dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(list(rows.values()), columns=list(LAYER_COLUMNS))
    return table.astype({"calls": int, "iterations": int, "within_tol": bool})


def lsuv_initialize(model: nn.Module, rules: Any, example: Any, *, generator: torch.Generator | None = None,
                    recurrent: Any = None, forget_bias: float | None = None, strict: bool = False,
                    report: bool = False, **params: Any):
    """What ``initialize`` / ``initialize_with_report`` do for rules with ``lsuv`` (module docstring).

    With ``report=True`` return ``(model, frame)``: ``initialize_with_report``'s rows (std_before /
    std_after are the tensors' own stds, std_after after the rescaling) plus, on each rescaled
    weight's row, ``lsuv_iterations``, ``output_std_before``, ``output_std_after`` and
    ``within_tol`` (NaN / None on other rows), and a note on every row an lsuv rule covers; the
    per-layer table (what :func:`lsuv_` returns) is ``frame.attrs["lsuv"]``.
    """
    plans, rows, covered = _apply(model, rules, example, generator=generator, recurrent=recurrent,
                                  forget_bias=forget_bias, strict=strict, report=report, params=params)
    if not report:
        return model
    frame = report_frame(plans)
    extra: dict[str, list] = {k: [math.nan] * len(plans)
                              for k in ("lsuv_iterations", "output_std_before", "output_std_after")}
    extra["within_tol"] = [None] * len(plans)
    for i, p in enumerate(plans):
        row = rows.get(p.module)
        if row is None or p.module not in covered:
            continue
        if p.target.name in ("weight", "bias") and isinstance(p.module, LSUV_TYPES) and p.slot.kind == "parameter":
            frame.at[i, "std_after"] = tensor_std(getattr(p.module, p.target.name))
        if p.target.role != "weight":
            continue
        if row["calls"]:
            what = (f"pre-init {p.text}; lsuv: output std {row['std_before']:.3g} → {row['std_after']:.3g} "
                    f"in {row['iterations']} rescaling(s)")
            frame.at[i, "scheme"] = covered[p.module]
            extra["lsuv_iterations"][i] = row["iterations"]
            extra["output_std_before"][i], extra["output_std_after"][i] = row["std_before"], row["std_after"]
            extra["within_tol"][i] = bool(row["within_tol"])
        else:
            what = f"lsuv: {row['note']}"
        frame.at[i, "note"] = "; ".join(x for x in (frame.at[i, "note"], what) if x)
    for k, v in extra.items():
        frame[k] = pd.Series(v, dtype=object if k == "within_tol" else float)
    frame.attrs["lsuv"] = _table(rows)
    return model, frame


def lsuv_(model: nn.Module, example: Any, *, generator: torch.Generator | None = None, target_std: float = 1.0,
          tol: float = 0.1, max_iters: int = 10, mean_correction: bool = False,
          pre_init: str = "orthogonal") -> pd.DataFrame:
    """LSUV-initialize every Linear, Bilinear, ConvNd and ConvTransposeNd layer of ``model`` in place.

    Mishkin & Matas 2016, "All you need is a good init", Algorithm 1: orthonormal pre-init, then,
    layer by layer in forward order, W ← W · target_std / std(layer output on ``example``) until
    |std − target_std| ≤ tol, at most ``max_iters`` times (see :mod:`initlab.schemes.lsuv`). Other
    layers get :func:`~initlab.schemes.initialize`'s ``"*"`` treatment under the pre-init scheme
    (embeddings, RNNs) or their layer defaults (norms). Same as ``initialize(model, "lsuv", ...)``.

    Args:
        model: modified in place.
        example: the batch: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        generator: source of randomness for the pre-init.
        target_std: the std every layer's output should have, > 0.
        tol: allowed |std − target_std| (and |mean| with ``mean_correction``), > 0.
        max_iters: most rescalings per layer, 1 to 1000.
        mean_correction: also shift the bias so the output mean is 0 (b ← (b − mean)·target_std/std).
        pre_init: scheme drawn first (``"orthogonal"``, ``"he"``, ``"normal(std=0.1)"``), or
            ``"none"`` to rescale the model's current weights.

    Returns:
        One row per covered layer, in the order layers first run: layer, module_type, calls (per
        forward; 0: never ran), iterations (rescalings made), std_before / std_after (of the
        layer's output, before the first and after the last rescaling), within_tol, mean_before,
        mean_after, note; then layers that never ran and those that are not rescaled.

    Example:
        >>> model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))
        >>> table = lsuv_(model, torch.randn(256, 64), generator=torch.Generator().manual_seed(0))
        >>> bool(table["within_tol"].all())
        True
    """
    spec = SchemeSpec("lsuv", dict(target_std=target_std, tol=tol, max_iters=max_iters,
                                   mean_correction=mean_correction, pre_init=pre_init))
    _, rows, _ = _apply(model, spec, example, generator=generator, recurrent=None, forget_bias=None,
                        strict=False, report=False, params={})
    return _table(rows)


def _initialize_model(module: nn.Module, rules: Any, params: dict, *, own: dict | None, example, generator,
                      recurrent, forget_bias, strict: bool, report: bool):
    """``lsuv`` in the whole-model protocol (:class:`initlab.schemes.registry.Scheme`): alone or as rules' values."""
    return lsuv_initialize(module, rules, example, generator=generator, recurrent=recurrent, forget_bias=forget_bias,
                           strict=strict, report=report, **params)


def lsuv_pre_init_(weight, *, generator=None, target_std=1.0, tol=0.1, max_iters=10, mean_correction=False,
                   pre_init="orthogonal"):
    """Layer-sequential unit-variance init (Mishkin & Matas 2016): pre-init, then rescale each layer's output std.

    The rescaling needs the model and an example batch, so it is applied by ``initialize(model,
    "lsuv", example=batch)`` (alone or as the value of rules). Called on one tensor (``check_scheme``),
    it checks the parameters and draws the pre-init only.
    """
    p = check_lsuv_params(target_std=target_std, tol=tol, max_iters=max_iters, mean_correction=mean_correction,
                          pre_init=pre_init)
    sch, params = pre_init_scheme(p["pre_init"])
    sch.fn(weight, generator=generator, **params)


register_scheme("lsuv", needs_example=True, initialize_model=_initialize_model)(lsuv_pre_init_)
