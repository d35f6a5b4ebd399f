"""Plots of comparison results: one line per init (the seed-mean) with a band over seeds."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
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


def _band_plot(ax, frame: pd.DataFrame, column: str, inits, log: bool = False) -> None:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, init in enumerate(inits):
        sub = frame[frame["init"] == init]
        if sub.empty:
            continue
        g = sub.groupby("epoch")[column]
        mean, lo, hi = g.mean(), g.min(), g.max()
        n = sub["seed"].nunique()
        color = colors[i % len(colors)]
        ax.plot(mean.index, mean.values, marker="o", ms=3, color=color, ls=STYLES[i % len(STYLES)],
                label=f"{init} (n={n})")
        if n > 1:
            ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)


def plot_compare(result, out_dir: Path) -> list[Path]:
    """Write ``test_acc.png``, ``train_loss.png`` and ``steps.png`` for a comparison into ``out_dir``."""
    spec, m = result.spec, result.metrics
    title = (f"{spec.dataset}: {'-'.join(map(str, spec.hidden))} {spec.activation} MLP, "
             f"{spec.train.optimizer} lr {spec.train.lr:g}, batch {spec.train.batch_size}")
    paths = []
    ok = m[~m["diverged"]] if len(m) else m
    for column, label, fname, log in (("test_acc", "test accuracy", "test_acc.png", False),
                                      ("train_loss", "train loss (epoch mean)", "train_loss.png", True)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _band_plot(ax, ok, column, spec.inits, log=log)
        ax.set_ylabel(label)
        ax.set_title(title + ("\nline: mean over seeds; band: min–max" if spec.seeds > 1 else ""), fontsize=10)
        ax.legend(title="init", fontsize=9)
        paths.append(save_figure(fig, out_dir / fname))
    # Per-step train loss, smoothed: shows the first epoch, where inits differ most.
    steps = result.steps
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, init in enumerate(spec.inits):
        sub = steps[steps["init"] == init]
        if sub.empty:
            continue
        curve = sub.groupby("step")["train_loss"].mean()
        window = max(1, len(curve) // 200)
        smooth = curve.rolling(window, min_periods=1).mean()
        ax.plot(smooth.index, smooth.values, color=colors[i % len(colors)], ls=STYLES[i % len(STYLES)], lw=1.2,
                label=init)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (seed mean, smoothed)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(title="init", fontsize=9)
    paths.append(save_figure(fig, out_dir / "steps.png"))
    return paths


def _probe_curves(probe: pd.DataFrame) -> pd.DataFrame:
    """Per (init, seed, epoch): the few numbers the training-probe plot shows."""
    fcs = sorted({n for n in probe["name"] if n.startswith("fc")}, key=lambda n: int(n[2:]))
    hidden_fc, acts = fcs[:-1], [n for n in probe["name"].unique() if n.startswith("act")]
    rows = []
    for (init, seed, epoch), g in probe.groupby(["init", "seed", "epoch"], sort=False):
        by = g.set_index("name")
        hid = by.loc[hidden_fc] if hidden_fc else by.iloc[:0]
        act = by.loc[acts] if acts else by.iloc[:0]
        rows.append({
            "init": init, "seed": seed, "epoch": epoch,
            "distinct": hid["distinct_units"].min() if len(hid) else float("nan"),
            "dead": act["dead_frac"].mean() if len(act) else float("nan"),
            "sat": act["sat_frac"].mean() if len(act) else float("nan"),
            "grad_first": by.loc[fcs[0], "grad_out_norm"] if fcs else float("nan"),
            "eff_rank": act["eff_rank"].iloc[-1] if len(act) else float("nan"),
        })
    return pd.DataFrame(rows)


def plot_probe(result, out_dir: Path) -> Path | None:
    """``probe.png``: what happens inside each init's network over training (epoch 0 = at init)."""
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
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (col, label, log) in zip(axes.flat, panels):
        frame = curves.rename(columns={col: "value"})[["init", "seed", "epoch", "value"]]
        zeros = []
        if log:  # zero-init gradients are exactly 0: not drawable on a log axis
            zeros = sorted(set(frame.loc[frame["value"] == 0, "init"]), key=spec.inits.index)
            frame = frame[frame["value"] > 0]
        _band_plot(ax, frame, "value", spec.inits, log=log)
        ax.set_title(label + (f"\n(exactly 0, not drawn: {', '.join(zeros)})" if zeros else ""), fontsize=10)
    axes.flat[0].legend(title="init", fontsize=8)
    fig.suptitle(f"{spec.dataset}: inside the network during training (probe batch of {spec.probe_size}; "
                 f"epoch 0 = at init)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_dir / "probe.png")
