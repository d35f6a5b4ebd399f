"""Depth profiles at init: measured per-layer statistics (``probe``) next to mean-field predictions.

``depth_profile`` builds a deep MLP per (activation, scheme), probes it once on a batch of real
inputs and attaches ``schemes.predicted_variances`` to every row; ``profile_summary`` condenses
that to one row per (activation, init); ``load_factory`` resolves a ``module:factory`` spec for
probing a user's own model.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from initlab.analysis.jacobian import jacobian_spectrum
from initlab.analysis.probe import probe
from initlab.data import load_dataset
from initlab.models import arch_text, check_activation, make_model, mlp, resolve_model
from initlab.models.user import build_user_model, check_model, load_factory, model_inputs  # noqa: F401  (re-exported)
from initlab.schemes import check_scheme, initialize, predicted_variances
from initlab.training.memory import available_bytes, format_bytes

__all__ = ["depth_profile", "profile_summary", "load_factory", "model_inputs"]


def _attach_predictions(frame: pd.DataFrame, activation: str, scheme: str, widths, input_var: float) -> pd.DataFrame:
    pred = predicted_variances(activation, scheme, widths, input_var=input_var)
    frame = frame.copy()
    frame["layer"] = frame["name"].str.extract(r"(\d+)$")[0].astype(float).astype("Int64")
    last_grad = float(frame.loc[frame["name"] == f"fc{len(widths) - 1}", "grad_out_norm"].iloc[0])
    pred_std, pred_grad = [], []
    for row in frame.itertuples():
        p = pred.iloc[int(row.layer) - 1]
        is_fc = row.kind == "Linear"
        var = p["pre_var"] if is_fc else p["post_var"]
        pred_std.append(math.sqrt(var) if var >= 0 else math.nan)
        pred_grad.append(last_grad * (p["pre_grad_rel"] if is_fc else p["post_grad_rel"]))
    frame["pred_std"], frame["pred_grad_norm"] = pred_std, pred_grad
    return frame


def depth_profile(activations: Sequence[str] = ("relu", "tanh"),
                  inits: Sequence[str] = ("zero", "random", "xavier", "he", "lecun_normal", "orthogonal"),
                  *, dataset: str = "digits", data_dir=None, normalize: str = "seed", depth: int = 20,
                  width: int = 256, batch: int = 512, seed: int = 0, model: str | None = None,
                  histograms: bool = True, bins: int = 60) -> pd.DataFrame:
    """Probe a depth×width MLP (or ``model``: a zoo spec or ``module:factory``) at init under each scheme.

    Every (activation, init) pair gets a fresh model initialized with
    ``torch.Generator().manual_seed(seed)`` and the first ``batch`` training examples of
    ``dataset``; the loss is cross-entropy on their labels. For built-in MLPs each row gets
    ``pred_std`` (sqrt of the mean-field pre-activation variance for Linear rows, of the
    post-activation variance for activation rows) and ``pred_grad_norm`` (the measured gradient
    norm at the logits times the predicted relative gradient norm; Schoenholz et al. 2017 §4).
    ``input_var`` for the theory is the batch's mean squared input. With ``model``, the
    activation loop is skipped (``activation`` = "model"), predictions are NaN, and init
    ``"none"`` keeps the factory's own initialization.

    Returns:
        ``probe`` columns plus activation, init, layer, pred_std, pred_grad_norm.
    """
    for a in activations:
        check_activation(a)
    for s in inits:
        if not (model is not None and s == "none"):
            check_scheme(s)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"--depth must be a positive integer, got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"--width must be a positive integer, got {width!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ValueError(f"--batch must be an integer >= 2, got {batch!r}")
    if model is not None:
        resolve_model(model)  # a bad spec or import fails before loading data
    data = load_dataset(dataset, data_dir=data_dir, normalize=normalize)
    if model is None:
        check_profile_memory(data.in_features, depth, width, data.num_classes, min(batch, len(data.x_train)))
    x, y = data.x_train[:batch], data.y_train[:batch]
    input_var = float(x.pow(2).mean())
    frames = []
    for act in (["model"] if model is not None else list(activations)):
        for init in inits:
            gen = torch.Generator().manual_seed(seed)
            if model is not None:
                with torch.random.fork_rng(devices=[]):  # the model's own init ("none") is seeded too
                    torch.manual_seed(seed)
                    net = make_model(model, (1, *data.image_shape), data.num_classes)
                if not frames:  # the one user-model check, before the first probe: one line, not a traceback
                    check_model(net, x[:8], data.image_shape, data.num_classes, what=f"model {model}")
                if init != "none":
                    initialize(net, init, generator=gen)
                inputs = model_inputs(net, x, data.image_shape)
            else:
                net = initialize(mlp(data.in_features, [width] * depth, data.num_classes, act), init, generator=gen)
                inputs = x
            f = probe(net, inputs, y, histograms=histograms, bins=bins)
            f["jac_mean_sq"], f["jac_decades"] = _jacobian_summary(net, inputs, seed)
            if model is None:
                widths = [data.in_features] + [width] * depth + [data.num_classes]
                f = _attach_predictions(f, act, init, widths, input_var)
            else:
                f["layer"] = pd.array(np.arange(1, len(f) + 1), dtype="Int64")
                f["pred_std"] = f["pred_grad_norm"] = math.nan
            f.insert(0, "init", init)
            f.insert(0, "activation", act)
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def _jacobian_summary(net, inputs, seed: int) -> tuple[float, float]:
    """Mean squared singular value and decades of the middle 90% of the input-output Jacobian
    (:func:`initlab.jacobian_spectrum`, first two examples); NaNs where it cannot be taken."""
    try:
        spec = jacobian_spectrum(net, inputs, max_examples=2, generator=torch.Generator().manual_seed(seed))
        return float(spec.mean_sq), float(spec.decades)
    except Exception:  # noqa: BLE001 - e.g. a model on integer inputs: no spectrum, the rest stands
        return math.nan, math.nan


def _ratio(num, den) -> float:
    """num / den as Python floats: NaN when den <= 0 or either is NaN, inf / inf = NaN, x / inf = 0."""
    num, den = float(num), float(den)
    return num / den if den > 0 and not math.isnan(num) else math.nan


def _first_nonfinite(g: pd.DataFrame) -> str:
    """Name of the first row (forward order) whose output held inf/NaN, or "" if none."""
    if "nonfinite_frac" in g:
        bad = g["nonfinite_frac"].to_numpy(dtype=float) > 0
    else:  # frames from before the column existed
        bad = ~np.isfinite(g["out_std"].to_numpy(dtype=float))
    return str(g["name"].iloc[int(np.argmax(bad))]) if bad.any() else ""


def check_profile_memory(n_in: int, depth: int, width: int, n_out: int, batch: int) -> int:
    """Refuse (one-line ValueError) a probe whose model and activations exceed free memory.

    Estimate: parameters and their gradients (2 × 4 bytes each), plus per layer the batch's
    outputs kept for backward, their gradients and the float64 copies the statistics take
    (≈ 6 × 4 bytes per output element, Linear and activation rows). Returns the estimate.
    """
    params = n_in * width + (depth - 1) * width * width + width * n_out + depth * width + n_out
    need = 8 * params + 24 * batch * (2 * depth * width + n_out)
    free = available_bytes("cpu")
    if free is not None and need > free:
        raise ValueError(f"probing a {arch_text([n_in, *([width] * depth), n_out])} MLP on {batch} examples needs "
                         f"~{format_bytes(need)} but the CPU has {format_bytes(free)} free; use a smaller "
                         "--width, --depth or --batch")
    return need


def profile_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (activation, init): std of the first/middle/last weight layer's output
    (measured and predicted), first/last gradient-norm ratio, mean dead and saturated fractions.

    Overflowed measurements are data: stds and ratios are then inf or NaN (never an error), and
    ``nonfinite_from`` names the first layer whose output held inf/NaN ("" when none did).
    """
    rows = []
    for (act, init), g in frame.groupby(["activation", "init"], sort=False):
        fc = g[g["kind"].isin(["Linear", "Conv1d", "Conv2d", "Conv3d"])].reset_index(drop=True)
        if fc.empty:
            fc = g.reset_index(drop=True)
        idx = {"first": 0, "mid": (len(fc) - 1) // 2, "last": len(fc) - 1}
        row = dict(activation=act, init=init)
        for k, i in idx.items():
            row[f"std_{k}"] = fc.loc[i, "out_std"]
            row[f"pred_std_{k}"] = fc.loc[i, "pred_std"]
            row[f"layer_{k}"] = fc.loc[i, "name"]
        row["grad_first_over_last"] = _ratio(fc.loc[0, "grad_out_norm"], fc.loc[len(fc) - 1, "grad_out_norm"])
        row["pred_grad_first_over_last"] = _ratio(fc.loc[0, "pred_grad_norm"], fc.loc[len(fc) - 1, "pred_grad_norm"])
        row["dead_frac"] = float(g["dead_frac"].mean()) if g["dead_frac"].notna().any() else math.nan
        row["sat_frac"] = float(g["sat_frac"].mean()) if g["sat_frac"].notna().any() else math.nan
        row["distinct_min"] = fc["distinct_units"].iloc[:-1].min() if len(fc) > 1 else fc["distinct_units"].min()
        row["nonfinite_from"] = _first_nonfinite(g)
        for col in ("jac_mean_sq", "jac_decades"):
            row[col] = float(g[col].iloc[0]) if col in g and len(g) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
