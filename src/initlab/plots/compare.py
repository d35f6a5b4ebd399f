"""Plots of comparison results: one line per init (the seed-mean) with a band over seeds."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from initlab import store  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 130) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    store.atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


# Paired seeds share random draws, so inits that differ only in scale (xavier vs he on a wide first
# layer) can give nearly the same curve: line styles keep a curve visible under another.
STYLES = ("-", "--", "-.", ":")


def _finite(frame: pd.DataFrame, column: str, log: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose ``column`` is drawable, rows left out as inf/NaN). On a log axis values <= 0 are
    dropped too but not reported here (callers name exact zeros themselves)."""
    v = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float) if len(frame) else np.zeros(0)
    finite = np.isfinite(v)
    keep = finite & (v > 0) if log else finite
    return frame[keep], frame[~finite]


def _run_counts(runs: pd.DataFrame | None, init: str) -> tuple[int, int, pd.Series]:
    """(runs, diverged runs, epoch at which each diverged run diverged) of ``init`` in a metrics frame."""
    if runs is None or runs.empty or "seed" not in runs:
        return 0, 0, pd.Series(dtype=float)
    sub = runs[runs["init"] == init]
    div = sub[_diverged_mask(sub)] if "diverged" in sub else sub.iloc[:0]
    first = div.groupby("seed")["epoch"].min() if len(div) else pd.Series(dtype=float)
    return int(sub["seed"].nunique()), len(first), first


def _diverged_mask(frame: pd.DataFrame) -> np.ndarray:
    """The ``diverged`` column as bools (missing values, e.g. from a CSV, count as not diverged)."""
    col = frame["diverged"]
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=bool)
    return col.map(lambda v: v.strip().lower() in ("true", "1", "1.0") if isinstance(v, str)
                   else bool(v) if pd.notna(v) else False).to_numpy(dtype=bool)


def _legend(ax, inits, **kwargs) -> None:
    """Legend with entries in the order of ``inits`` (an init drawn only as 'x' marks comes last
    among the artists but keeps its place)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    rank = {init: i for i, init in enumerate(inits)}
    key = lambda hl: next((rank[i] for i in rank if hl[1] == i or hl[1].startswith(i + " (")), len(rank))
    pairs = sorted(zip(handles, labels), key=key)
    ax.legend([h for h, _ in pairs], [l for _, l in pairs], **kwargs)


def _label(init: str, n: int, k: int, note: str = "") -> str:
    parts = [f"n={n}"] + ([f"{k} diverged"] if k else []) + ([note] if note else [])
    return f"{init} ({', '.join(parts)})"


def _edge_strip(ax, marks: list[tuple[pd.Series, str, str | None]], at: str, log: bool) -> None:
    """Draw 'x' markers in a strip added below (``at="bottom"``) or above (``"top"``) the data.

    ``marks``: (x positions, one per run; color; legend label or None) per init. The y range is
    widened so the strip holds no data, a dotted line separates it, and each init gets its own
    row in it; several runs at one x get a "×k" count. Call after all data is drawn.
    """
    if not marks:
        return
    ax.relim()
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    fwd, inv = (np.log10, lambda v: 10.0 ** v) if log else (lambda v: v, lambda v: v)
    flo, fhi = fwd(lo), fwd(hi)
    span = (fhi - flo) or 1.0
    rows = len(marks)
    strip = span * (0.08 + 0.05 * (rows - 1))
    if at == "bottom":
        new_lo, new_hi, edge = flo - strip, fhi, flo
        ys = [new_lo + strip * (j + 0.5) / rows for j in range(rows)]
    else:
        new_lo, new_hi, edge = flo, fhi + strip, fhi
        ys = [new_hi - strip * (j + 0.5) / rows for j in range(rows)]
    for (xs, color, label), y in zip(marks, ys):
        counts = xs.value_counts().sort_index()
        x = counts.index.to_numpy(dtype=float)
        ax.plot(x, [inv(y)] * len(x), "x", ms=8, mew=2, color=color, label=label)
        for xi, c in zip(x, counts.to_numpy()):
            if c > 1:
                ax.annotate(f"×{c}", (xi, inv(y)), xytext=(6, 0), textcoords="offset points", color=color,
                            fontsize=8, va="center")
    ax.axhline(inv(edge), color="gray", lw=0.8, ls=":")
    ax.set_ylim(inv(new_lo), inv(new_hi))
    # Tick labels: none inside the strip (it holds no values), one "diverged" label for it.
    keep_lo, keep_hi = (edge, new_hi) if at == "bottom" else (new_lo, edge)
    for minor in (False, True):
        locs = [t for t in ax.get_yticks(minor=minor) if t > 0 or not log]
        locs = [t for t in locs if keep_lo - 1e-9 * span <= fwd(t) <= keep_hi + 1e-9 * span]
        labels = list(ax.yaxis.get_minor_formatter().format_ticks(locs) if minor
                      else ax.yaxis.get_major_formatter().format_ticks(locs))
        if not minor:
            mid = (new_lo + edge) / 2 if at == "bottom" else (edge + new_hi) / 2
            locs, labels = locs + [inv(mid)], labels + ["diverged"]
        ax.set_yticks(locs, labels, minor=minor)


def _band_plot(ax, frame: pd.DataFrame, column: str, inits, log: bool = False, *,
               runs: pd.DataFrame | None = None, mark_at: str | None = None) -> dict[str, float]:
    """Seed-mean line and min–max band of ``column`` per init, over the finite values only.

    ``runs`` (a metrics frame with ``diverged``): legend labels count each init's runs and diverged
    runs, and with ``mark_at`` ("bottom" or "top") an 'x' on that edge marks the epoch at which each
    run diverged (epoch 0: at init). An init with nothing to draw still gets a legend entry.

    Returns {init: first epoch with an inf/NaN value left out} for the inits that had any.
    """
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawable, bad = _finite(frame, column, log)
    left_out: dict[str, float] = {}
    marks: list[tuple[pd.Series, str, str | None]] = []
    for i, init in enumerate(inits):
        sub = drawable[drawable["init"] == init]
        sub_bad = bad[bad["init"] == init]
        n, k, div_epochs = _run_counts(runs, init)
        if not n:  # no metrics frame: count the seeds drawn here
            n = int(frame.loc[frame["init"] == init, "seed"].nunique()) if len(frame) else 0
        if sub.empty and not n and sub_bad.empty:
            continue
        color, ls = colors[i % len(colors)], STYLES[i % len(STYLES)]
        if len(sub_bad):
            left_out[init] = float(sub_bad["epoch"].min())
        note = "" if len(sub) or k == n else ("inf/NaN only" if len(sub_bad) else "nothing drawable")
        label = _label(init, n, k, note)
        if len(sub):
            g = sub.groupby("epoch")[column]
            mean, lo, hi = g.mean(), g.min(), g.max()
            ax.plot(mean.index, mean.values, marker="o", ms=3, color=color, ls=ls, label=label)
            if sub["seed"].nunique() > 1:
                ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.2, lw=0)
            label = None
        if mark_at and k:
            marks.append((div_epochs, color, label))
            label = None
        if label is not None:  # nothing drawn for this init: keep it in the legend anyway
            ax.plot([], [], marker="o", ms=3, color=color, ls=ls, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if mark_at:
        _edge_strip(ax, marks, mark_at, log)
    return left_out


def _nonfinite_note(left_out: dict, what: str = "epoch") -> str:
    return "inf/NaN, not drawn: " + ", ".join(f"{init} (from {what} {x:g})" for init, x in left_out.items())


def plot_compare(result, out_dir: Path) -> list[Path]:
    """Write ``test_acc.png``, ``train_loss.png`` and ``steps.png`` for a comparison into ``out_dir``.

    Lines are seed means over the finite values of runs that had not diverged (yet). A diverged
    run is an 'x' at the epoch it diverged (0: at init): at the bottom of test_acc.png, the top of
    train_loss.png; legend labels read "init (n=3, 2 diverged)". In steps.png the per-step loss is
    drawn where finite and an 'x' at the top marks each run's first inf/NaN step.
    """
    spec, m = result.spec, result.metrics
    title = (f"{spec.dataset}: {spec.arch}, "
             f"{spec.train.optimizer} lr {spec.train.lr:g}, batch {spec.train.batch_size}")
    paths = []
    any_div = bool(len(m)) and "diverged" in m and bool(_diverged_mask(m).any())
    ok = m[~_diverged_mask(m)] if len(m) and "diverged" in m else m
    for column, label, fname, log, edge in (("test_acc", "test accuracy", "test_acc.png", False, "bottom"),
                                            ("train_loss", "train loss (epoch mean)", "train_loss.png", True, "top")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        left_out = _band_plot(ax, ok, column, spec.inits, log=log, runs=m, mark_at=edge)
        ax.set_ylabel(label)
        lines = [title + ("\nline: mean over seeds; band: min–max" if spec.seeds > 1 else "")]
        if any_div:
            lines.append(f"x ({edge} strip): a run diverged (loss inf/NaN) in that epoch; epoch 0 = at init")
        if left_out:
            lines.append(_nonfinite_note(left_out))
        ax.set_title("\n".join(lines), fontsize=10 if len(lines) < 3 else 9)
        _legend(ax, spec.inits, title="init", fontsize=9)
        paths.append(save_figure(fig, out_dir / fname))
    paths.append(_plot_steps(result, title, out_dir / "steps.png"))
    return paths


def _plot_steps(result, title: str, path: Path) -> Path:
    """Per-step train loss, smoothed: shows the first epoch, where inits differ most."""
    spec, m, steps = result.spec, result.metrics, result.steps
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    marked = at_init = False
    marks: list[tuple[pd.Series, str, str | None]] = []
    for i, init in enumerate(spec.inits):
        color, ls = colors[i % len(colors)], STYLES[i % len(STYLES)]
        n, k, div_epochs = _run_counts(m, init)
        sub = steps[steps["init"] == init] if len(steps) else steps
        if sub.empty and not n:
            continue
        loss = pd.to_numeric(sub["train_loss"], errors="coerce").to_numpy(dtype=float) if len(sub) else np.zeros(0)
        finite = np.isfinite(loss) & (loss > 0)
        bad = sub[~np.isfinite(loss)]
        first_bad = bad.groupby("seed")["step"].min() if len(bad) else pd.Series(dtype=float)
        # runs that diverged at init have no steps: they get no mark here, only their count in the label
        n_at_init = int((div_epochs == 0).sum()) if k else 0
        at_init |= n_at_init > 0
        note = f"{n_at_init} at init" if n_at_init else ""
        label = _label(init, n, k, note)
        if finite.any():
            # mean over the seeds whose loss at that step is finite (a diverged run drops out)
            curve = sub[finite].groupby("step")["train_loss"].mean()
            window = max(1, len(curve) // 200)
            smooth = curve.rolling(window, min_periods=1).mean()
            # few finite steps (a run that blew up at once): markers, or a lone point would not show
            ax.plot(smooth.index, smooth.values, color=color, ls=ls, lw=1.2, label=label,
                    marker="o" if len(smooth) < 20 else None, ms=3)
            label = None
        if len(first_bad):
            marks.append((first_bad, color, label))
            marked, label = True, None
        if label is not None:
            ax.plot([], [], color=color, ls=ls, lw=1.2, label=label + " — nothing finite to draw")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (seed mean, smoothed)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    _edge_strip(ax, marks, "top", log=True)
    lines = [title]
    if marked:
        lines.append("x (top strip): first inf/NaN loss of a run; finite steps only are drawn")
    if at_init:
        lines.append("runs that diverged at init took no steps")
    ax.set_title("\n".join(lines), fontsize=10 if len(lines) < 3 else 9)
    _legend(ax, spec.inits, title="init", fontsize=9)
    return save_figure(fig, path)


def _probe_curves(probe: pd.DataFrame) -> pd.DataFrame:
    """Per (init, seed, epoch): the few numbers the training-probe plot shows (NaN where inf/NaN
    outputs made a statistic undefined; non-finite values pass through as they are)."""
    names = [n for n in probe["name"].unique() if isinstance(n, str)]
    fcs = sorted({n for n in names if n.startswith("fc") and n[2:].isdigit()}, key=lambda n: int(n[2:]))
    hidden_fc, acts = fcs[:-1], [n for n in names if n.startswith("act")]
    nan = float("nan")
    rows = []
    for (init, seed, epoch), g in probe.groupby(["init", "seed", "epoch"], sort=False):
        by = g.drop_duplicates("name").set_index("name")
        hid = by.reindex(hidden_fc).dropna(how="all") if hidden_fc else by.iloc[:0]
        act = by.reindex(acts).dropna(how="all") if acts else by.iloc[:0]
        rows.append({
            "init": init, "seed": seed, "epoch": epoch,
            "distinct": hid["distinct_units"].min() if len(hid) else nan,
            "dead": act["dead_frac"].mean() if len(act) else nan,
            "sat": act["sat_frac"].mean() if len(act) else nan,
            "grad_first": by["grad_out_norm"].get(fcs[0], nan) if fcs else nan,
            "eff_rank": act["eff_rank"].iloc[-1] if len(act) else nan,
        })
    return pd.DataFrame(rows, columns=["init", "seed", "epoch", "distinct", "dead", "sat", "grad_first", "eff_rank"])


def plot_probe(result, out_dir: Path) -> Path | None:
    """``probe.png``: what happens inside each init's network over training (epoch 0 = at init).

    inf/NaN statistics (an overflowed network) are left out of the lines and named in the panel
    title ("inf/NaN, not drawn: init (from epoch e)"); legend labels count diverged runs.
    """
    if result.probe is None or result.probe.empty:
        return None
    spec = result.spec
    curves = _probe_curves(result.probe)
    relu_like = curves["dead"].notna().any()
    panels = [("distinct", "distinct hidden units\n(fewest over hidden layers)", False),
              ("dead" if relu_like else "sat",
               "dead units (mean over layers)" if relu_like else "saturated units (mean over layers)", False),
              ("grad_first", "‖dL/d(first layer output)‖", True),
              ("eff_rank", "effective rank of last hidden activation", False)]
    metrics = getattr(result, "metrics", None)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (col, label, log) in zip(axes.flat, panels):
        frame = curves.rename(columns={col: "value"})[["init", "seed", "epoch", "value"]]
        zeros = []
        if log:  # zero-init gradients are exactly 0: not drawable on a log axis
            zeros = [i for i in spec.inits if i in set(frame.loc[frame["value"] == 0, "init"])]
        left_out = _band_plot(ax, frame, "value", spec.inits, log=log, runs=metrics)
        notes = [label]
        if zeros:
            notes.append(f"(exactly 0, not drawn: {', '.join(zeros)})")
        if left_out:
            notes.append(f"({_nonfinite_note(left_out)})")
        ax.set_title("\n".join(notes), fontsize=10 if len(notes) < 3 else 9)
    _legend(axes.flat[0], spec.inits, title="init", fontsize=8)
    fig.suptitle(f"{spec.dataset}: inside the network during training (probe batch of {spec.probe_size}; "
                 f"epoch 0 = at init)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_dir / "probe.png")
