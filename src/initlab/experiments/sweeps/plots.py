"""Sweep plots: a heat map of any metric over any two axes, and lr-sensitivity curves per init."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from initlab.experiments.sweeps.runstore import open_store
from initlab.experiments.sweeps.select import best_lr, context_columns, lr_table
from initlab.plots.compare import STYLES, plt, save_figure
from initlab.schemes import parse_scheme


def with_scheme_params(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus one column ``init.<param>`` per parameter of the init schemes
    (``mean_field(sigma_w2=1.5,...)`` gives ``init.sigma_w2`` = 1.5), so scheme parameters can be axes."""
    if "init" not in runs or runs.empty:
        return runs
    params = {text: dict(parse_scheme(text).params) for text in runs["init"].unique()}
    keys = list(dict.fromkeys(k for p in params.values() for k in p))
    out = runs.copy()
    for k in keys:
        out[f"init.{k}"] = out["init"].map(lambda t, k=k: params[t].get(k, np.nan))
    return out


def pivot(runs: pd.DataFrame, x: str, y: str, metric: str, agg: str = "mean",
          diverged_value: float = math.nan) -> pd.DataFrame:
    """``metric`` aggregated over the runs of each (y, x) cell (finished runs; a diverged run
    counts as ``diverged_value``): rows y values, columns x values, both sorted."""
    frame = with_scheme_params(runs)
    for c in (x, y, metric):
        if c not in frame:
            axes = [c for c in frame.columns if frame[c].astype(str).nunique() > 1 and not c.startswith(("final_", "id",
                    "hash", "seconds", "started", "finished", "worker", "host", "error", "diverge", "attempts",
                    "epochs_done", "status", "engine"))]
            raise ValueError(f"no column {c!r}; axes that vary: {', '.join(axes) or '(none)'}; metrics: "
                             f"{', '.join(k for k in frame.columns if k.startswith('final_'))}")
    fin = frame[frame["status"].isin(("done", "diverged"))].copy()
    fin[metric] = pd.to_numeric(fin[metric], errors="coerce").astype(float)
    fin.loc[fin["status"] == "diverged", metric] = diverged_value
    table = fin.pivot_table(index=y, columns=x, values=metric, aggfunc=agg, dropna=False)
    return table.sort_index().sort_index(axis=1)


def _edges(values: Sequence) -> tuple[np.ndarray, bool]:
    """Cell edges for sorted axis values: midpoints when numeric, else integer positions."""
    try:
        v = np.asarray([float(a) for a in values])
    except (TypeError, ValueError):
        return np.arange(len(values) + 1) - 0.5, False
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5]), True
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]]), True


def plot_heatmap(runs: pd.DataFrame, x: str, y: str, metric: str, path: str | Path, *, agg: str = "mean",
                 title: str = "", diverged_value: float = math.nan, vmin: float | None = None,
                 vmax: float | None = None, overlay: Callable | None = None, annotate: bool | None = None,
                 cmap: str = "viridis", xlabel: str | None = None, ylabel: str | None = None) -> pd.DataFrame:
    """A heat map of ``metric`` over axes ``x`` and ``y`` (any run columns, or ``init.<param>``),
    saved to ``path``; returns the table drawn. ``overlay(ax)`` draws on top (data coordinates
    when both axes are numeric). Missing cells are gray."""
    table = pivot(runs, x, y, metric, agg, diverged_value)
    xe, x_num = _edges(list(table.columns))
    ye, y_num = _edges(list(table.index))
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    data = np.ma.masked_invalid(table.to_numpy(dtype=float))
    cm = plt.get_cmap(cmap).with_extremes(bad="#cccccc")
    mesh = ax.pcolormesh(xe, ye, data, cmap=cm, vmin=vmin, vmax=vmax, shading="flat")
    fig.colorbar(mesh, ax=ax, label=f"{metric} ({agg})")
    xc = (xe[1:] + xe[:-1]) / 2
    yc = (ye[1:] + ye[:-1]) / 2
    if not x_num:
        ax.set_xticks(xc, [str(c) for c in table.columns], rotation=30, ha="right")
    if not y_num:
        ax.set_yticks(yc, [str(c) for c in table.index])
    if annotate is None:
        annotate = data.size <= 100
    if annotate:
        lo, hi = np.nanmin(table.to_numpy(dtype=float)), np.nanmax(table.to_numpy(dtype=float))
        for i, yv in enumerate(yc):
            for j, xv in enumerate(xc):
                v = table.iat[i, j]
                if np.isfinite(v):
                    light = hi > lo and (v - lo) / (hi - lo) < 0.55
                    ax.text(xv, yv, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if light else "black")
    if overlay is not None:
        overlay(ax)
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title or f"{metric} over {x} × {y}", fontsize=10)
    save_figure(fig, Path(path))
    return table


def plot_lr_sensitivity(runs: pd.DataFrame, path: str | Path, *, metric: str = "final_val_acc",
                        title: str = "") -> Path:
    """Validation accuracy vs lr (log axis), one line per init (mean over seeds), band min–max,
    a star at each init's chosen lr (:func:`initlab.experiments.sweeps.select.best_lr`). Diverged runs count 0.
    One panel per value of the other axes that vary (up to 6)."""
    table = lr_table(runs, metric)
    best = best_lr(runs, metric)
    ctx = context_columns(runs)
    panels = list(table.groupby(ctx, sort=False, dropna=False)) if ctx else [((), table)]
    panels = panels[:6]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.4, 5.2 * cols), 3.9 * rows + 0.5), squeeze=False,
                             layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    inits = list(dict.fromkeys(runs["init"]))
    for n, (key, sub) in enumerate(panels):
        ax = axes[n // cols][n % cols]
        key = key if isinstance(key, tuple) else (key,)
        for i, init in enumerate(inits):
            s = sub[sub["init"] == init].sort_values("lr")
            if s.empty:
                continue
            color = colors[i % len(colors)]
            ax.plot(s["lr"], s["score_mean"], marker="o", ms=4, color=color, ls=STYLES[i % len(STYLES)], label=init)
            if (s["runs"] > 1).any():
                ax.fill_between(s["lr"], s["score_min"], s["score_max"], color=color, alpha=0.15, lw=0)
            mask = best["init"] == init
            for c, v in zip(ctx, key):
                mask &= best[c] == v
            if mask.any():
                b = best[mask].iloc[0]
                ax.plot([b["best_lr"]], [b["val_mean"]], marker="*", ms=14, color=color, mec="black", mew=0.6,
                        zorder=4)
            div = s[s["diverged"] > 0]
            if len(div):
                ax.scatter(div["lr"], [-0.04] * len(div), marker="x", color=color, s=30)
        ax.set_xscale("log")
        ax.set_ylim(-0.08, 1.02)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("learning rate")
        ax.set_ylabel(metric.replace("final_", "final ").replace("_", " "))
        if ctx:
            ax.set_title(", ".join(f"{c}={v}" for c, v in zip(ctx, key)), fontsize=9)
        if n == 0:
            ax.legend(title="init", fontsize=8)
    for n in range(len(panels), rows * cols):
        axes[n // cols][n % cols].axis("off")
    seeds = int(runs["seed"].nunique())
    fig.suptitle((title + "\n" if title else "") + f"line: mean over {seeds} seed{'s' if seeds > 1 else ''}, band: "
                 "min–max; ★ lr chosen on validation; x: diverged runs (count as 0)", fontsize=9)
    return save_figure(fig, Path(path))


AGGREGATES = ("mean", "median", "min", "max")


def store_heatmap(store: str | Path, x: str, y: str, metric: str, out: str | Path, *, agg: str = "mean",
                  sweep: str | None = None) -> pd.DataFrame:
    """:func:`plot_heatmap` of a sweep in the run ``store`` (default: the latest sweep), titled with its name;
    returns the table drawn. A file that cannot be written is a one-line ValueError."""
    if agg not in AGGREGATES:
        raise ValueError(f"unknown --agg {agg!r}; choose from: {', '.join(AGGREGATES)}")
    try:
        st = open_store(store)
        sw = st.find_sweep(sweep)
        return plot_heatmap(st.runs(sw["id"]), x, y, metric, out, agg=agg, title=f"{sw['name']}: {metric} ({agg})")
    except OSError as e:
        raise ValueError(f"cannot write '{out}': {e.strerror or e}") from None


def best_lr_runs(store: str | Path, sweep: str | None = None) -> tuple[dict, pd.DataFrame]:
    """A sweep in ``store`` (default: the latest) and its runs, for choosing each init's best lr: the sweep
    must vary lr and have validation metrics."""
    st = open_store(store)
    sw = st.find_sweep(sweep)
    runs = st.runs(sw["id"])
    if runs.empty or runs["lr"].nunique() < 2:
        raise ValueError(f"sweep {sw['name']!r} has one lr; a best lr needs an lr axis")
    if runs["final_val_acc"].isna().all():
        raise ValueError(f"sweep {sw['name']!r} has no validation metrics (val_fraction = 0, or no run finished)")
    return sw, runs
