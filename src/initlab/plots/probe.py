"""Plots of depth profiles: per-layer std and gradient norm (measured vs predicted) and
per-layer activation histograms in the style of Glorot & Bengio 2010, fig. 6."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from initlab.plots.compare import plt, save_figure

_WEIGHT_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv3d")


def _colors(inits):
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {init: cycle[i % len(cycle)] for i, init in enumerate(inits)}


def _positive(s: pd.Series) -> np.ndarray:
    v = s.to_numpy(dtype=float)
    # log axis: zeros (zero init) and inf/NaN (overflow) are left out, not clipped
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _first_nonfinite(values: pd.Series) -> int | None:
    """1-based position of the first inf/NaN value, or None when all are finite."""
    bad = ~np.isfinite(values.to_numpy(dtype=float))
    return int(np.argmax(bad)) + 1 if bad.any() else None


def _nonfinite_note(first_bad: dict[str, int]) -> str:
    """"non-finite from layer 23: normal(std=1)", one line per layer, inits sharing a layer on one line."""
    by_layer: dict[int, list[str]] = {}
    for init, layer in first_bad.items():
        by_layer.setdefault(layer, []).append(init)
    return "\n".join(f"non-finite (inf/NaN) from layer {l}: {', '.join(inits)}" for l, inits in sorted(by_layer.items()))


def plot_depth(frame: pd.DataFrame, column: str, pred_column: str, ylabel: str, path: Path, title: str) -> Path:
    """One panel per activation: ``column`` of the weight layers vs depth (solid) and ``pred_column`` (dashed).

    Only finite positive values are drawn (log axis). Where an init's measured values become inf
    or NaN (overflow), its line stops, an "x" at the top of the panel marks the first such layer,
    and the panel says "non-finite (inf/NaN) from layer L: init".
    """
    acts = list(dict.fromkeys(frame["activation"]))
    inits = list(dict.fromkeys(frame["init"]))
    colors = _colors(inits)
    fig, axes = plt.subplots(1, len(acts), figsize=(5.5 * len(acts), 4.2), squeeze=False, sharey=True)
    for ax, act in zip(axes[0], acts):
        sub = frame[(frame["activation"] == act) & frame["kind"].isin(_WEIGHT_KINDS)]
        hidden, first_bad = [], {}
        for init in inits:
            g = sub[sub["init"] == init]
            if g.empty:
                continue
            measured = g[column].to_numpy(dtype=float)
            if not ((measured > 0) & np.isfinite(measured)).any() and (measured == 0).any():
                hidden.append(init)
            x = np.arange(1, len(g) + 1)
            ax.plot(x, _positive(g[column]), "-o", ms=2.5, color=colors[init], label=init)
            if g[pred_column].notna().any():
                ax.plot(x, _positive(g[pred_column]), "--", color=colors[init], lw=1.2, alpha=0.8)
            bad = _first_nonfinite(g[column])
            if bad is not None:
                first_bad[init] = bad
                # at the top edge of the panel (axes coordinates in y): visible whatever the y range
                ax.plot([bad], [0.985], "x", ms=8, mew=2, color=colors[init], transform=ax.get_xaxis_transform(),
                        clip_on=False)
        ax.set_yscale("log")
        notes = []
        if hidden:  # a log axis cannot show exact zeros
            notes.append(f"all zero, not shown: {', '.join(hidden)}")
        if first_bad:
            notes.append(_nonfinite_note(first_bad) + " (x; not drawn)")
        ax.set_xlabel("layer (Linear/Conv output)")
        # notes go under the panel title, where no curve can hide them
        ax.set_title("\n".join([act] + notes), fontsize=9 if notes else None)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    # the legend names only what is drawn: the dashed theory lines exist for initlab's own MLPs only
    theory = any(line.get_linestyle() == "--" for ax in axes[0] for line in ax.get_lines())
    if axes[0][-1].get_legend_handles_labels()[0]:  # every init may be all-zero (not drawable on a log axis)
        axes[0][-1].legend(title="init (solid measured,\ndashed theory)" if theory else "init (measured)", fontsize=8,
                           title_fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_histograms(frame: pd.DataFrame, activation: str, path: Path, layers=(1, 5, 10, 15, 20)) -> Path | None:
    """One panel per init: overlaid activation densities for a few layers (Glorot & Bengio 2010, fig. 6).

    Histograms cover the finite elements only; a layer's inf/NaN share is named in its legend entry.
    """
    sub = frame[(frame["activation"] == activation) & ~frame["kind"].isin(_WEIGHT_KINDS)]
    if "hist_counts" not in sub or sub.empty:
        return None
    inits = list(dict.fromkeys(sub["init"]))
    depth = int(sub["layer"].max())
    chosen = [l for l in layers if l <= depth] or [1, depth]
    cmap = plt.get_cmap("viridis")
    ncol = min(3, len(inits))
    nrow = -(-len(inits) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.3 * ncol, 3.2 * nrow), squeeze=False)
    for ax, init in zip(axes.flat, inits):
        g = sub[sub["init"] == init].set_index("layer")
        for j, l in enumerate(chosen):
            if l not in g.index:
                continue
            counts = np.asarray(g.loc[l, "hist_counts"], dtype=float)
            edges = np.asarray(g.loc[l, "hist_edges"], dtype=float)
            color = cmap(j / max(1, len(chosen) - 1))
            bad = float(g.loc[l, "nonfinite_frac"]) if "nonfinite_frac" in g else 0.0
            if not counts.sum() > 0:  # every element inf/NaN: nothing to draw, say so in the legend
                ax.plot([], [], color=color, ls=":", label=f"layer {l}: all inf/NaN, not drawn")
                continue
            # density of the finite elements; the inf/NaN share is named in the label
            dens = counts / counts.sum() / np.diff(edges)
            note = f", {bad:.0%} inf/NaN not drawn" if bad > 0 else ""
            ax.stairs(dens, edges, color=color, lw=1.2, label=f"layer {l} (std {g.loc[l, 'out_std']:.2g}{note})")
        ax.set_yscale("log")
        ax.set_title(init, fontsize=10)
        ax.set_xlabel(f"{activation} output")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(inits):]:
        ax.axis("off")
    fig.suptitle(f"{activation}: activation densities by layer at init (cf. Glorot & Bengio 2010, fig. 6)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_profile(frame: pd.DataFrame, out_dir: Path, title: str) -> list[Path]:
    """Write depth_std.png, depth_grad.png and hist_<activation>.png into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [plot_depth(frame, "out_std", "pred_std", "std of layer output", out_dir / "depth_std.png",
                        f"{title}: forward signal"),
             plot_depth(frame, "grad_out_norm", "pred_grad_norm", "‖dLoss/d(layer output)‖", out_dir / "depth_grad.png",
                        f"{title}: backward signal")]
    for act in dict.fromkeys(frame["activation"]):
        p = plot_histograms(frame, act, out_dir / f"hist_{act}.png")
        if p:
            paths.append(p)
    return paths
