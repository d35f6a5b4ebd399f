"""Depth sweeps: at what depth does each init stop training?

He et al. 2015 ("Delving Deep into Rectifiers", §2.3, Fig. 3) trained a 30-layer ReLU network
from their init while the Xavier-initialized one did not learn at all: with Var(W) = 1/n the
ReLU halves the forward signal variance at every layer (Var y_L = Var x · ∏ ½·n·Var W = 2^-L),
with Var(W) = 2/n it stays constant. ``depth_sweep`` measures that on a small problem: one
:func:`initlab.compare` per depth, hidden widths ``(width,) * depth``, the same seeds (hence the
same batch order) for every init and depth.

Every depth is on disk before the next one starts: ``out/depth_XX/`` holds that depth's whole
comparison (config, metrics, plots), and ``out/depth_metrics.csv`` / ``depth_summary.csv`` /
``depth_acc.png`` are rewritten (atomically) after each depth, so an interrupted sweep keeps
every finished depth.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from initlab import store
from initlab.core.display import html_of
from initlab.experiments.compare import SEED_INITS, CompareResult, CompareSpec, Reporter, run_compare
from initlab.experiments.progress import DepthReporter, bars, show_progress
from initlab.models import MAX_DEPTH, MAX_WIDTH, depth_param, is_factory_spec, parse_int_list, parse_model
from initlab.plots import compare as figures  # figures.save_figure looked up per call (tests capture it)
from initlab.training.loop import TrainConfig

DEFAULT_DEPTHS = (2, 5, 10, 20, 30)


def parse_depths(depths: str | Sequence[int]) -> tuple[int, ...]:
    """Validate depths (numbers of hidden layers): distinct positive ints, from ``"2,5,10"`` or a sequence."""
    values = parse_int_list(depths, "depths")
    if not values:
        raise ValueError("no depths given; pass positive integers, e.g. --depths 2,5,10")
    for d in values:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 < d <= MAX_DEPTH:
            raise ValueError(f"depth must be a positive integer up to {MAX_DEPTH} (number of hidden layers), got {d!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"depths listed twice: {', '.join(map(str, values))}")
    return tuple(int(d) for d in values)


@dataclass
class DepthSweepResult:
    """``metrics``: compare's per-epoch rows plus ``depth``; ``summary``: compare's summary per (depth, init)."""

    depths: tuple[int, ...]
    inits: tuple[str, ...]
    width: int
    activation: str
    dataset: str
    epochs: int
    seeds: int
    metrics: pd.DataFrame
    summary: pd.DataFrame
    results: dict[int, CompareResult]
    out: Path | None = None
    seconds: float = 0.0
    model: str | None = None  # the zoo spec swept (its depth parameter set per depth); None: the MLP

    def __repr__(self) -> str:
        net = self.model or f"MLP width {self.width} {self.activation}"
        return (f"<DepthSweepResult: {len(self.inits)} inits at depths {', '.join(map(str, self.depths))} on "
                f"{self.dataset}, {net}, {self.epochs} epochs × {self.seeds} seeds"
                f"{'' if self.out is None else f'; {self.out}'}>")

    def _repr_html_(self) -> str | None:
        return html_of(self)

    def table(self) -> pd.DataFrame:
        """Final test accuracy (seed mean over non-diverged runs): rows init, columns depth."""
        t = self.summary.pivot(index="init", columns="depth", values="final_test_acc_mean")
        return t.reindex(index=list(self.inits), columns=list(self.depths))


def _summaries(results: dict[int, CompareResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = pd.concat([r.metrics.assign(depth=d) for d, r in results.items()], ignore_index=True)
    summary = pd.concat([r.summary.assign(depth=d) for d, r in results.items()], ignore_index=True)
    front = ["depth", "init"]
    return (metrics[front + [c for c in metrics.columns if c not in front]],
            summary[front + [c for c in summary.columns if c not in front]])


def depth_sweep(
    depths: Sequence[int] = DEFAULT_DEPTHS,
    inits: Sequence[str] = SEED_INITS,
    dataset: str = "digits",
    width: int = 64,
    activation: str = "relu",
    epochs: int = 10,
    seeds: int = 1,
    lr: float = 0.01,
    out: str | Path | None = None,
    *,
    batch_size: int = 64,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    normalize: str = "seed",
    data_dir: str | None = None,
    first_seed: int = 0,
    device: str = "auto",
    log_x: bool = True,
    reporter: Reporter | None = None,
    on_depth: Callable[[int, CompareResult], None] | None = None,
    diverge_loss: float = TrainConfig.diverge_loss,
    overwrite: bool = False,
    resume: bool = False,
    model: str | None = None,
    progress: bool | None = None,
) -> DepthSweepResult:
    """Final test accuracy of each init as the network gets deeper: one ``compare`` per depth.

    Depth L means L hidden layers of ``width`` units (L+1 weight layers). He et al. 2015 §2.3:
    ReLU + Var(W)=2/n_in keeps Var(activations) constant with depth, 1/n_in (Xavier for square
    layers) shrinks it by 2^-L, so Xavier stalls first as L grows; zero init never trains.

    Args:
        depths: numbers of hidden layers, e.g. ``(2, 5, 10, 20, 30)``.
        inits, dataset, activation, epochs, seeds, lr, batch_size, optimizer, momentum,
            normalize, data_dir, first_seed, device, diverge_loss: as in :func:`initlab.compare`.
        width: units in every hidden layer.
        out: folder for ``depth_XX/`` subfolders, ``depth_metrics.csv``, ``depth_summary.csv``,
            ``sweep.json`` and ``depth_acc.png``; all written after every depth.
        log_x: log-scale depth axis in the plot.
        progress: show progress bars (default: in a Jupyter notebook only; never with a ``reporter``).
        reporter: receives compare's progress events for every depth.
        on_depth: called with (depth, CompareResult) after each depth is finished and saved.
        overwrite: replace an earlier depth sweep in ``out``.
        resume: continue an interrupted sweep of the same configuration in ``out``: finished depths
            are read back, the interrupted one continues with its finished runs kept.
        model: a zoo spec (``"cnn(channels=16)"``, ``"resnet(norm=none)"``) swept instead of the
            MLP; depth sets its depth parameter (``initlab.models.depth_param``: conv layers for
            ``cnn``, blocks for ``resnet``/``resmlp``, transformer blocks). ``width`` and
            ``activation`` then stay at their defaults (give them in the spec).

    An interrupt (``KeyboardInterrupt``) leaves every finished depth on disk and re-raises with
    ``finished_depths`` and the interrupted depth's partial ``result`` attached.

    Example: ``depth_sweep(depths=(2, 10), inits=("xavier", "he"), epochs=3).table()``.
    """
    stack = contextlib.ExitStack()  # progress bars (notebooks by default) live as long as the sweep
    if reporter is None and show_progress(progress):
        bar_depths = parse_depths(depths)  # (a bad list raises here, before any bar is shown)
        reporter = DepthReporter(stack.enter_context(bars()), bar_depths)
        on_depth = _then(reporter.depth_done, on_depth)
    with stack:
        depths = parse_depths(depths)
        if isinstance(width, bool) or not isinstance(width, int) or not 0 < width <= MAX_WIDTH:
            raise ValueError(f"width must be a positive integer up to {MAX_WIDTH}, got {width!r}")
        base = None
        if model is not None:
            if not isinstance(model, str) or is_factory_spec(model):
                raise ValueError(f"a depth sweep needs a zoo model, whose depth parameter is known (see `initlab models`); "
                                 f"got {model!r}")
            base = parse_model(model)
            if width != 64 or activation != "relu":
                raise ValueError("width and activation have no effect with a model; give them in the model spec, "
                                 f"e.g. '{base.name}(width=32)'")
        train = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, optimizer=optimizer,
                            diverge_loss=diverge_loss)
        common = dict(inits=inits, dataset=dataset, data_dir=data_dir, normalize=normalize, seeds=seeds,
                      first_seed=first_seed, train=train, device=device)
        if base is None:
            specs = {d: CompareSpec(hidden=(width,) * d, activation=activation, **common) for d in depths}
        else:
            key = depth_param(base)
            specs = {d: CompareSpec(model=str(base.with_params(**{key: d})), **common) for d in depths}
        # every option was checked above, before anything is written
        inits = specs[depths[0]].inits
        config = {"depths": list(depths), "inits": list(inits), "width": width, "activation": activation,
                  "dataset": dataset, "data_dir": data_dir, "epochs": epochs, "seeds": seeds, "lr": lr,
                  "batch_size": batch_size, "optimizer": optimizer, "momentum": momentum, "normalize": normalize,
                  "first_seed": first_seed, "diverge_loss": diverge_loss}
        if base is not None:  # older sweeps (MLP only) have no "model" and resume unchanged
            config["model"] = str(base)
        if out is not None:
            store.check_out_dir(out, "depth", overwrite=overwrite, resume=resume)
            if resume:
                _check_sweep_resume(store.out_path(out), config)
        out_dir = store.claim_out_dir(out, "depth", overwrite=overwrite, resume=resume) if out is not None else None
        t0 = time.perf_counter()
        results: dict[int, CompareResult] = {}
        metrics = summary = pd.DataFrame()
        for depth in depths:
            sub = None if out_dir is None else out_dir / f"depth_{depth:02d}"
            try:
                res = run_compare(specs[depth], out=sub, reporter=reporter,
                                  resume=bool(resume and sub is not None and sub.exists()))
            except KeyboardInterrupt as e:
                e.finished_depths = list(results)
                raise
            results[depth] = res
            metrics, summary = _summaries(results)
            if out_dir is not None:  # this depth is on disk before the next one starts
                store.atomic_write_csv(out_dir / "depth_metrics.csv", metrics)
                store.atomic_write_csv(out_dir / "depth_summary.csv", summary)
                store.atomic_write_json(out_dir / "sweep.json", {
                    **config, "finished_depths": list(results), "seconds": round(time.perf_counter() - t0, 3)})
                plot_depth(metrics, out_dir / "depth_acc.png", inits=inits, log_x=log_x,
                           title=_title(dataset, width, activation, epochs, lr, optimizer, base),
                           chance=res.chance.get("rate"),
                           xlabel="depth (hidden layers)" if base is None else f"depth ({depth_param(base)})")
            if on_depth is not None:
                on_depth(depth, res)
        return DepthSweepResult(depths, inits, width, activation, dataset, epochs, seeds, metrics, summary,
                                results, out_dir, time.perf_counter() - t0, None if base is None else str(base))


def _then(first, second):
    """Call ``first`` then ``second`` (when given) with the same arguments."""
    def both(*args):
        first(*args)
        if second is not None:
            second(*args)
    return both


def _check_sweep_resume(out: Path, config: dict) -> None:
    import json

    try:
        old = json.loads((out / "sweep.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"cannot resume '{out}': its sweep.json is missing or unreadable; "
                         "use --overwrite to start again") from None
    diff = [k for k in config if json.loads(json.dumps(config[k])) != old.get(k)]
    if diff:
        raise ValueError(f"cannot resume '{out}': its configuration differs in {', '.join(diff)}; "
                         "rerun with the same options, or use --overwrite or another --out")


def _title(dataset, width, activation, epochs, lr, optimizer, model=None) -> str:
    net = f"width-{width} {activation} MLP" if model is None else f"{model}, depth = {depth_param(model)}"
    return f"{dataset}: {net}, {epochs} epochs {optimizer} lr {lr:g}"


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every (depth, init, seed) run; diverged runs count as accuracy NaN."""
    return metrics.sort_values("epoch").groupby(["depth", "init", "seed"], sort=False).tail(1)


def _diverged_bool(col: pd.Series) -> pd.Series:
    """A ``diverged`` column as bools: missing values (and "False" strings from a CSV) are False."""
    if pd.api.types.is_bool_dtype(col):
        return col
    return col.map(lambda v: v.strip().lower() in ("true", "1", "1.0") if isinstance(v, str)
                   else bool(v) if pd.notna(v) else False).astype(bool)


def plot_depth(metrics: pd.DataFrame, path: Path, *, inits: Sequence[str], log_x: bool = True,
               title: str = "", chance: float | None = None, xlabel: str = "depth (hidden layers)") -> Path:
    """Final test accuracy vs depth, one line per init (seed mean), band min–max over seeds.

    The mean and band use the finite accuracies only: a diverged run (its last row has
    ``diverged`` True and NaN accuracy, a single ``epoch`` 0 row when it diverged at init) is an
    'x' in a strip below 0 at its depth ("×k" for k runs), and the legend reads
    "init (k of n runs diverged)". An init whose every run diverged is still in the legend.
    """
    last = final_rows(metrics)
    if len(last):
        last = last.assign(diverged=_diverged_bool(last["diverged"]) if "diverged" in last else False,
                           test_acc=pd.to_numeric(last["test_acc"], errors="coerce"))
        last.loc[~np.isfinite(last["test_acc"].to_numpy(dtype=float)), "test_acc"] = np.nan
    fig, ax = figures.plt.subplots(figsize=(7, 4.5))
    colors = figures.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_seeds = int(last["seed"].nunique()) if len(last) else 0
    markers = "osD^v<>p"
    strip_y = -0.08  # diverged runs: below every accuracy
    any_div = False
    for i, init in enumerate(inits):
        sub = last[last["init"] == init]
        if sub.empty:
            continue
        g = sub.groupby("depth")["test_acc"]
        mean, lo, hi = g.mean(), g.min(), g.max()
        color = colors[i % len(colors)]
        div = sub[sub["diverged"]]
        label = init if div.empty else f"{init} ({len(div)} of {len(sub)} runs diverged)"
        # Open markers of decreasing size: inits stuck at the same accuracy (zero, random) stay visible.
        ax.plot(mean.index, mean.values, marker=markers[i % len(markers)], ms=9 - 1.5 * (i % 4), mfc="none",
                mew=1.5, color=color, lw=1.6, label=label, alpha=0.9)
        if n_seeds > 1 and lo.notna().any():
            ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.18, lw=0)
        if len(div):
            any_div = True
            counts = div["depth"].value_counts().sort_index()
            y = -0.045 - 0.02 * (i % 5)  # one row per init in the strip: inits diverging at one depth stay apart
            ax.scatter(counts.index, [y] * len(counts), marker="x", color=color, s=40, zorder=3)
            for d, c in counts.items():
                if c > 1:
                    ax.annotate(f"×{c}", (d, y), xytext=(5, 0), textcoords="offset points", color=color,
                                fontsize=7, va="center")
    if chance is not None and math.isfinite(chance):
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"constant predictor ({chance:.3f})")
    depths = sorted(last["depth"].unique()) if len(last) else []
    if log_x and depths:
        ax.set_xscale("log")
    if depths:
        ax.set_xticks(depths)
        ax.set_xticklabels([str(d) for d in depths])
        ax.minorticks_off()
    if any_div:  # the strip below 0 gets its own tick label instead of a number
        ax.axhline(-0.03, color="gray", lw=0.8, ls=":")
        ax.set_yticks([strip_y, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0], ["diverged", "0.0", "0.2", "0.4", "0.6", "0.8", "1.0"])
    ax.set_ylim(-0.13 if any_div else -0.03, 1.03)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final test accuracy")
    band = f"; line: mean of {n_seeds} seeds, band: min–max" if n_seeds > 1 else ""
    ax.set_title(title + band + ("\nx (below 0): diverged run, loss inf/NaN (also at init)" if any_div else ""),
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title="init", fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figures.save_figure(fig, path)
