"""``initialize(model, "auto", example=batch)``: an init read from the model's own graph.

For every weight layer, :func:`initlab.graph.read_graph` finds what its output feeds (through norms,
pooling, dropout and reshapes), and :func:`initlab.core.criticality.auto_init_params` gives the weight
and bias variances that put that activation at a critical fixed point (χ₁ = 1 at a finite q*,
Schoenholz et al. 2017; Pennington et al. 2017), or, where criticality is out of reach, keep the
forward variance, with a verdict saying why. Per layer (σ² is the weight variance times fan_in,
drawn N(0, σ²/fan_in) with the layer type's own fans, :mod:`initlab.schemes.layers`):

* feeds an elementwise φ: σ² = σ_w²(φ), bias N(0, σ_b²(φ)); the model's first layer instead
  gets σ² = (q* − σ_b²)/E[x²] so that the example's inputs land on q*;
* the classifier (its output is the model's output) and layers feeding no elementwise φ (a norm,
  attention's softmax, nothing): σ² = 1 (LeCun), bias 0;
* the last layer of a residual branch: σ² divided by the number of branches adding into its
  stream, so that L branches add ≈ the stream's own variance in total and the sum stays bounded
  with depth (the 1/L residual scaling of Fixup, Zhang et al. 2019, and T-Fixup); where a norm
  follows that layer (conv → BatchNorm, as in every torchvision/timm ResNet), the norm would undo a
  weight scale, so its γ is set to 1/√L instead (the variance-bounded cousin of the zero-γ
  "zero_init_last" of Goyal et al. 2017, which starts each branch at exactly zero and its last
  weights with no gradient);
* Embedding: N(0, 1) rows; RNN/LSTM/GRU: LeCun input weights, orthogonal recurrent blocks and
  forget-gate bias 1 (Jozefowicz et al. 2015); norms: weight 1, bias 0.

``mode="empirical"`` then rescales each layer that feeds φ, in execution order, until its output
variance on the example is within ``tol`` (relative) of q* (LSUV, Mishkin & Matas 2016, with
the critical q* as the target instead of 1), at most ``max_iters`` forward passes per layer.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import pandas as pd
import torch
from torch import nn

from initlab.core.criticality import auto_init_params
from initlab.graph import read_graph, split_example
from initlab.schemes.apply import initialize_with_report
from initlab.schemes.registry import register_scheme
from initlab.schemes.rules import Rule

MODES = ("analytic", "empirical")
_FAN_KINDS = {"Linear", "NonDynamicallyQuantizableLinear", "Bilinear", "Conv1d", "Conv2d", "Conv3d", "Conv1D",
              "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"}


def check_auto_params(mode: str = "analytic", max_sigma_b2: float = 0.5, target_q: float = 1.0,
                      tol: float = 0.1, max_iters: int = 10) -> dict:
    """Validate ``auto``'s parameters (one-line ValueErrors); return them as a dict."""
    if mode not in MODES:
        raise ValueError(f"unknown auto mode {mode!r}; choose from: {', '.join(MODES)}")
    for name, v in (("max_sigma_b2", max_sigma_b2), ("target_q", target_q), ("tol", tol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"auto parameter {name} must be a finite number >= 0, got {v!r}")
    if target_q <= 0 or tol <= 0:
        raise ValueError(f"auto parameters target_q and tol must be > 0, got {target_q!r} and {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or not 0 < max_iters <= 1000:
        raise ValueError(f"auto parameter max_iters must be an integer from 1 to 1000, got {max_iters!r}")
    return dict(mode=mode, max_sigma_b2=max_sigma_b2, target_q=target_q, tol=tol, max_iters=max_iters)


def _example_tensor(example) -> torch.Tensor | None:
    if isinstance(example, torch.Tensor):
        return example
    items = example.values() if isinstance(example, dict) else example if isinstance(example, (tuple, list)) else ()
    return next((t for t in items if isinstance(t, torch.Tensor)), None)


# A zero-bias fixed point whose per-layer gradient factor χ₁ compounds to at most this over the
# depth is preferred to exact criticality bought with bias variance: the bias is shared by all
# inputs, so it raises the correlation between examples layer after layer (the "shared fraction"
# of q*), and the batch weight-gradient of deep layers grows with it. Measured on 50×256 SELU
# MLPs (N(0,1) inputs, cross-entropy on random labels, 3 seeds): critical with σ_b² = 0.067 gives
# a first/last weight-gradient ratio of 0.09–0.10, the zero-bias point (σ_w² = 1, χ₁ = 1.07) 2.0–2.1.
ZERO_BIAS_GRAD_FACTOR = 10.0


def layer_params(activation, max_sigma_b2: float, target_q: float, depth: int = 50):
    """``auto_init_params`` for one activation, preferring σ_b² = 0 where that is near-critical:
    a stable zero-bias fixed point with χ₁^(depth/2) (the mean-field gradient-norm factor over
    ``depth`` layers) within ``ZERO_BIAS_GRAD_FACTOR``^±1."""
    zero = auto_init_params(activation, max_sigma_b2=0.0, target_q=target_q, depth=depth)
    factor = zero.chi1 ** (depth / 2) if zero.chi1 > 0 else 0.0
    if zero.stable and zero.q_star > 0 and 1 / ZERO_BIAS_GRAD_FACTOR <= factor <= ZERO_BIAS_GRAD_FACTOR:
        if zero.mode == "critical":
            return zero
        return dataclasses.replace(zero, verdict=f"near-critical without bias: χ₁ = {zero.chi1:.3g} at q* = {zero.q_star:.3g} "
                                     f"(gradient norm ×{factor:.2g} over {depth} layers by mean field)")
    return auto_init_params(activation, max_sigma_b2=max_sigma_b2, target_q=target_q, depth=depth)


_GRID = torch.linspace(-6.0, 6.0, 97, dtype=torch.float64)


def _fingerprint(activation) -> tuple | None:
    """φ on a fixed grid: equal for the same function however it is wrapped (50 ``nn.Tanh()``
    modules, ``torch.tanh``), so one model's layers share one quadrature; None if φ fails there."""
    try:
        with torch.no_grad():
            v = activation(_GRID.clone())
        return tuple(torch.round(v.double() * 1e9).tolist()) if isinstance(v, torch.Tensor) and v.shape == _GRID.shape else None
    except Exception:  # noqa: BLE001 - any φ that cannot run on float64 is simply not cached
        return None


def _plan(model: nn.Module, graph, example, params: dict) -> tuple[dict, list[dict]]:
    """Rules (exact parameter names and layer-type defaults) and one report row per graph layer."""
    cache: dict = {}

    def params_for(activation):
        key = _fingerprint(activation)
        if key is None:
            return layer_params(activation, params["max_sigma_b2"], params["target_q"])
        if key not in cache:
            cache[key] = layer_params(activation, params["max_sigma_b2"], params["target_q"])
        return cache[key]
    rules: dict[str, Any] = {}
    rows = []
    unstable: dict[tuple, list[str]] = {}  # (activation, verdict) -> layers: one warning each
    x = _example_tensor(example)
    input_var = float(x.detach().double().pow(2).mean()) if x is not None and x.is_floating_point() else 1.0
    first = next((layer.name for layer in graph.layers if layer.kind in _FAN_KINDS), None)
    for layer in graph.layers:
        row = {"layer": layer.name, "kind": layer.kind, "feeds": layer.activation_name or layer.feeds,
               "role": "", "sigma_w2": math.nan, "sigma_b2": math.nan, "q_star": math.nan, "verdict": ""}
        if layer.kind not in _FAN_KINDS or not hasattr(layer.module, "weight"):
            row["role"] = "layer type default"
            rows.append(row)
            continue
        ap = None
        if layer.is_output:
            role, s2, b2 = "output (linear)", 1.0, 0.0
        elif layer.feeds == "activation" and layer.activation is not None:
            ap = params_for(layer.activation)
            if layer.name == first:
                role, s2, b2 = "input", ap.sigma_w2_input / max(input_var, 1e-12), ap.sigma_b2
            else:
                role, s2, b2 = "hidden", ap.sigma_w2, ap.sigma_b2
            row.update(q_star=ap.q_star, verdict=ap.verdict)
            if not ap.stable:
                unstable.setdefault((layer.activation_name, ap.verdict), []).append(layer.name)
        else:
            role, s2, b2 = f"linear (feeds {layer.feeds})", 1.0, 0.0
        if layer.branch_final and layer.residual_stream is not None:
            n = max(1, graph.residual_streams.get(layer.residual_stream, 1))
            if layer.norm is not None and _has_scale(model, layer.norm):
                # a norm after the branch's last layer (conv -> BN) resets its output variance to γ²: the
                # 1/n goes to γ (γ = 1/√n) instead of to the weights, where the norm would undo it
                rules[f"{layer.norm}.weight"] = f"constant(value={1 / math.sqrt(n)!r})"
                role += f", residual branch-final: its norm {layer.norm} γ = 1/√{n}"
            else:
                s2 /= n
                role += f", residual branch-final ÷{n}"
        row.update(role=role, sigma_w2=s2, sigma_b2=b2)
        rules[f"{layer.name}.weight"] = f"variance_scaling(scale={s2!r},mode=fan_in,distribution=normal)"
        if getattr(layer.module, "bias", None) is not None:
            rules[f"{layer.name}.bias"] = f"normal(std={math.sqrt(b2)!r})" if b2 > 0 else "zero"
        rows.append(row)
    for (act, verdict), names in unstable.items():
        where = names[0] if len(names) == 1 else f"{len(names)} layers ({names[0]} ... {names[-1]})"
        warnings.warn(f"auto: {where} feed {act}: {verdict}", stacklevel=4)
    # layers the per-name rules do not reach (attention in-projections, embeddings, recurrent
    # layers), for the types this model has
    present = {type(m).__name__ for m in model.modules()}
    defaults = {"MultiheadAttention": "lecun_normal", "Embedding": "normal(std=1.0)",
                "EmbeddingBag": "normal(std=1.0)"}
    for rnn in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"):
        defaults[rnn] = Rule("lecun_normal", recurrent="orthogonal", forget_bias=1.0 if rnn.startswith("LSTM") else None)
    rules.update({k: v for k, v in defaults.items() if k in present})
    rules["*"] = "lecun_normal"  # any other main weight: variance-preserving for a linear map
    return rules, rows


def _has_scale(model: nn.Module, name: str) -> bool:
    w = getattr(model.get_submodule(name), "weight", None)
    return isinstance(w, torch.Tensor) and w.dim() == 1


def _lsuv(model: nn.Module, graph, example, rows: list[dict], tol: float, max_iters: int) -> None:
    """Rescale each layer feeding φ until Var(output)/q* is within ``tol`` of 1 on the example."""
    args, kwargs = split_example(example)
    by_name = {r["layer"]: r for r in rows}
    for layer in graph.layers:
        row = by_name[layer.name]
        row.setdefault("iterations", 0)
        q = row.get("q_star", math.nan)
        w = getattr(layer.module, "weight", None)
        if not (math.isfinite(q) and q > 0 and isinstance(w, nn.Parameter)) or layer.through:
            continue  # a norm in between resets the variance anyway; parametrized weights are left alone
        seen = {}
        handle = layer.module.register_forward_hook(lambda m, i, o: seen.__setitem__("var", float(o.detach().double().var())))
        try:
            for it in range(1, max_iters + 1):
                with torch.no_grad():
                    model(*args, **kwargs)
                var = seen.get("var", math.nan)
                row.update(iterations=it, measured_var=var)
                if not math.isfinite(var) or var <= 0 or abs(var / q - 1) <= tol:
                    break
                with torch.no_grad():
                    w.mul_(math.sqrt(q / var))
        finally:
            handle.remove()


def auto_initialize(model: nn.Module, example, *, generator: torch.Generator | None = None,
                    report: bool = False, strict: bool = False, **params):
    """Initialize ``model`` in place from its own graph (see the module docstring); return it.

    With ``report=True`` return ``(model, frame)``: :func:`initlab.schemes.initialize_with_report`'s
    rows (one per tensor or block) joined with their layer's reading: what it feeds, its role, σ²,
    σ_b², q*, the criticality verdict and (empirical mode) the iterations and the measured output
    variance. ``frame.attrs`` holds how the graph was read (fx or hooks) and its notes.

    Raises:
        ValueError: no example, the model failing on it, or a bad parameter (one line).
    """
    p = check_auto_params(**params)
    if example is None:
        raise ValueError("auto reads the model's graph on an example batch: pass example=<inputs>, "
                         "e.g. initialize(model, 'auto', example=x[:256])")
    was_training = model.training
    model.eval()  # dropout off for the reading and the measurements
    try:
        graph = read_graph(model, example)
        rules, rows = _plan(model, graph, example, p)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*'\*'.* matched no parameter")  # no other main weights
            _, tensors = initialize_with_report(model, rules, generator=generator, strict=strict, example=example)
        if p["mode"] == "empirical":
            _lsuv(model, graph, example, rows, p["tol"], p["max_iters"])
    finally:
        model.train(was_training)
    if not report:
        return model
    layers = pd.DataFrame(rows).rename(columns={"kind": "layer_kind"})
    tensors["layer"] = tensors["parameter"].str.replace(r"\.[^.\[]+(\[.*\])?$", "", regex=True)
    frame = tensors.merge(layers, on="layer", how="left")
    frame.attrs["graph_method"], frame.attrs["notes"] = graph.method, graph.notes
    return model, frame


def _initialize_model(module: nn.Module, rules: Any, params: dict, *, own: dict | None, example, generator,
                      recurrent, forget_bias, strict: bool, report: bool):
    """``auto`` in the whole-model protocol (:class:`initlab.schemes.registry.Scheme`): alone, never in a mapping."""
    if own is None:
        raise ValueError("auto initializes a whole model from its graph: call initialize(model, 'auto', "
                         "example=batch), not inside a rules mapping")
    return auto_initialize(module, example, generator=generator, report=report, strict=strict, **{**own, **params})


def auto_(weight, *, generator=None, mode="analytic", max_sigma_b2=0.5, target_q=1.0, tol=0.1, max_iters=10):
    """Whole-model init from the model's graph: each layer at its activation's critical point.

    Its parameters are declared here; it needs the model and an example batch, so it is applied by
    ``initialize(model, "auto", example=batch)`` (``_initialize_model``), never to one tensor.
    """
    raise ValueError("auto initializes a whole model from its graph: call initialize(model, 'auto', "
                     "example=batch), not on one tensor")


register_scheme("auto", needs_example=True, check=check_auto_params, initialize_model=_initialize_model)(auto_)
