"""The trainability phase diagram of Schoenholz et al. 2017 ("Deep Information Propagation", Fig. 5/6).

A deep tanh network with weights N(0, σ_w²/fan_in) and biases N(0, σ_b²) propagates input
correlations for about ξ_c layers (:func:`initlab.core.theory.depth_scale`); Schoenholz et al. found
that it trains only where its depth is below about 6 ξ_c: a band of trainable depths around the
critical σ_w² (χ_1 = 1; ≈ 1.76 for σ_b² = 0.05) that narrows away from it on both sides.

:func:`phase_spec` is that experiment as a sweep: the ``mean_field(sigma_w2, sigma_b2)`` init
registered here (no built-in scheme draws biases from N(0, σ_b²): bias policies take no
parameters), σ_w² over [1, 4] × depths, a few hundred SGD steps, training accuracy measured on the
training set at the end. :func:`phase_table` reads it back with the 6 ξ_c prediction per cell and
:func:`plot_phase` draws the heat map with the 6 ξ_c curve on top.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from initlab.core.theory import depth_scale
from initlab.experiments.sweeps.plots import plot_heatmap
from initlab.experiments.sweeps.spec import KNOWN_SIZES, SweepSpec
from initlab.schemes import parse_scheme, register_scheme, variance_scaling_

SIGMA_B2 = 0.05
DEFAULT_SIGMA_W2 = tuple(round(1 + 0.25 * i, 2) for i in range(13))  # 1.0, 1.25, ..., 4.0
DEFAULT_DEPTHS = (10, 20, 30, 40, 50, 60, 70, 80)
DEFAULT_WIDTH = 64
DEFAULT_STEPS = 300
DEFAULT_LR = 0.01
DEFAULT_BATCH = 32
_BIAS_ATTR = "_initlab_sigma_b2"  # how the weight's draw tells its bias policy σ_b² (policies get no params)


def _mean_field_bias(bias: torch.Tensor, weight: torch.Tensor, *, generator=None) -> None:
    """N(0, σ_b²), σ_b² as given to ``mean_field`` for this bias's weight (0 if the weight was not drawn by it)."""
    sigma_b2 = float(getattr(weight, _BIAS_ATTR, 0.0))
    if sigma_b2 > 0:
        bias.normal_(0.0, math.sqrt(sigma_b2), generator=generator)
    else:
        bias.zero_()


@register_scheme("mean_field", bias=_mean_field_bias)
def mean_field_(weight: torch.Tensor, *, generator=None, sigma_w2: float = 1.0, sigma_b2: float = 0.0) -> torch.Tensor:
    """Weights N(0, σ_w²/fan_in) and biases N(0, σ_b²): the mean-field parametrization.

    Poole et al. 2016, Schoenholz et al. 2017 (§2): in a wide network pre-activations are
    ≈ N(0, q) with q = σ_w² E[φ(√q z)²] + σ_b². The weight is ``variance_scaling(scale=σ_w²,
    mode=fan_in, distribution=normal)``; the bias (drawn after its weight, from the same
    generator) reads σ_b² from the weight it belongs to.

    Example: ``initialize(net, "mean_field(sigma_w2=1.76,sigma_b2=0.05)", generator=g)``.
    """
    for name, v in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
            raise ValueError(f"mean_field {name} must be a finite number >= 0, got {v!r}")
    variance_scaling_(weight, scale=float(sigma_w2), mode="fan_in", distribution="normal", generator=generator) \
        if sigma_w2 > 0 else weight.zero_()
    setattr(weight, _BIAS_ATTR, float(sigma_b2))
    return weight


def scheme_text(sigma_w2: float, sigma_b2: float = SIGMA_B2) -> str:
    return f"mean_field(sigma_w2={float(sigma_w2):g},sigma_b2={float(sigma_b2):g})"


def epochs_for(steps: int, dataset: str, batch_size: int) -> int:
    """Epochs giving at least ``steps`` SGD steps on ``dataset``'s full training set."""
    per_epoch = -(-KNOWN_SIZES[dataset][0] // batch_size)
    return max(1, -(-int(steps) // per_epoch))


def phase_spec(sigma_w2: Sequence[float] = DEFAULT_SIGMA_W2, depths: Sequence[int] = DEFAULT_DEPTHS, *,
               sigma_b2: float = SIGMA_B2, width: int = DEFAULT_WIDTH, dataset: str = "digits",
               steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH, seeds: int = 1,
               name: str = "phase", device: str = "auto") -> SweepSpec:
    """The phase-diagram sweep: tanh MLPs of ``width``, every (σ_w², depth), SGD for ~``steps`` steps.

    No validation split (the quantity is training accuracy, measured on the whole training set
    after the last epoch: ``train_eval = "final"``); one engine group per depth (all σ_w² of a
    depth train as one computation).
    """
    if not sigma_w2 or not depths:
        raise ValueError("give at least one sigma_w2 and one depth")
    return SweepSpec(
        axes={"init": [scheme_text(s, sigma_b2) for s in sigma_w2], "depth": list(depths), "width": width,
              "activation": "tanh", "dataset": dataset, "lr": lr, "batch_size": batch_size,
              "epochs": epochs_for(steps, dataset, batch_size), "seeds": seeds},
        name=name, val_fraction=0.0, train_eval="final", device=device)


def six_xi(sigma_w2: float, sigma_b2: float = SIGMA_B2) -> float:
    """6 ξ_c for tanh (:func:`initlab.core.theory.depth_scale`): the predicted largest trainable depth."""
    return 6.0 * depth_scale("tanh", float(sigma_w2), float(sigma_b2))


@dataclass
class PhaseTable:
    """``cells``: one row per (σ_w², depth): ``train_acc`` (mean over seeds), ``six_xi``,
    ``predicted`` (depth < 6 ξ_c), ``trains`` (train_acc >= ``threshold``), ``agree``."""

    cells: pd.DataFrame
    threshold: float
    sigma_b2: float

    @property
    def agreement(self) -> float:
        return float(self.cells["agree"].mean()) if len(self.cells) else math.nan


def phase_table(runs: pd.DataFrame, *, threshold: float | None = None, chance: float = 0.1) -> PhaseTable:
    """Training accuracy per (σ_w², depth) against the 6 ξ_c prediction.

    A cell "trains" when its mean final training accuracy is at least ``threshold``, by default
    halfway between ``chance`` and the best cell's accuracy. Diverged runs count as ``chance``.
    """
    fin = runs[runs["status"].isin(("done", "diverged"))].copy()
    if fin.empty:
        raise ValueError("no finished runs to draw; run the phase sweep first")
    params = fin["init"].map(lambda t: dict(parse_scheme(t).params))
    fin["sigma_w2"] = params.map(lambda p: float(p.get("sigma_w2", math.nan)))
    fin["sigma_b2"] = params.map(lambda p: float(p.get("sigma_b2", 0.0)))
    if fin["sigma_w2"].isna().any():
        raise ValueError("phase tables read mean_field(sigma_w2=..,sigma_b2=..) inits; these runs have others")
    acc = pd.to_numeric(fin["final_train_acc"], errors="coerce").astype(float)
    acc[fin["status"] == "diverged"] = chance
    fin["train_acc"] = acc
    sigma_b2 = float(fin["sigma_b2"].iloc[0])
    cells = fin.groupby(["sigma_w2", "depth"], as_index=False).agg(train_acc=("train_acc", "mean"),
                                                                    runs=("train_acc", "size"))
    best = float(cells["train_acc"].max())
    thr = threshold if threshold is not None else chance + 0.5 * (best - chance)
    xi = {s: six_xi(s, sigma_b2) for s in cells["sigma_w2"].unique()}
    cells["six_xi"] = cells["sigma_w2"].map(xi)
    cells["predicted"] = cells["depth"] < cells["six_xi"]
    cells["trains"] = cells["train_acc"] >= thr
    cells["agree"] = cells["predicted"] == cells["trains"]
    return PhaseTable(cells, thr, sigma_b2)


def plot_phase(runs: pd.DataFrame, path: str | Path, *, title: str = "", threshold: float | None = None) -> PhaseTable:
    """The heat map of final training accuracy over (σ_w², depth) with the 6 ξ_c curve; returns the table."""
    table = phase_table(runs, threshold=threshold)
    frame = runs.copy()
    s_min, s_max = float(table.cells["sigma_w2"].min()), float(table.cells["sigma_w2"].max())
    d_max = float(table.cells["depth"].max())

    def overlay(ax):
        pad = 0.5 * (s_max - s_min) / max(1, table.cells["sigma_w2"].nunique() - 1)
        grid = np.linspace(s_min - pad, s_max + pad, 121)
        ys = np.array([six_xi(s, table.sigma_b2) for s in grid])
        ax.plot(grid, np.minimum(ys, 10 * d_max), color="white", lw=2.2)
        ax.plot(grid, np.minimum(ys, 10 * d_max), color="crimson", lw=1.3, ls="--", label="6 ξ_c (mean-field theory)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=8, frameon=False)

    seeds = int(frame["seed"].nunique())
    head = title or "tanh MLP: final training accuracy"
    sub = (f"σ_b² = {table.sigma_b2:g}; {seeds} seed{'s' if seeds > 1 else ''}; trains (≥ {table.threshold:.2f}) "
           f"agrees with depth < 6 ξ_c in {table.agreement:.0%} of cells")
    plot_heatmap(frame, "init.sigma_w2", "depth", "final_train_acc", path, title=f"{head}\n{sub}",
                 diverged_value=0.1, vmin=0.0, vmax=1.0, overlay=overlay, annotate=True, cmap="magma",
                 xlabel="σ_w² (weights N(0, σ_w²/fan_in))", ylabel="depth (hidden layers)")
    return table


def write_phase(spec: SweepSpec, runs: pd.DataFrame, out: str | Path) -> PhaseTable:
    """:func:`plot_phase` of the finished ``runs`` of the phase sweep ``spec`` into ``out`` (its folder made),
    titled with the network, data and SGD steps; a file that cannot be written is a one-line ValueError."""
    first = spec.runs()[0]
    steps = first["epochs"] * -(-KNOWN_SIZES[first["dataset"]][0] // first["batch_size"])
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        return plot_phase(runs, out, title=f"tanh MLP, width {first['width']}, {first['dataset']}: final training "
                                           f"accuracy after {steps} SGD steps (lr {first['lr']:g}, batch "
                                           f"{first['batch_size']})")
    except OSError as e:
        raise ValueError(f"cannot write '{out}': {e.strerror or e}") from None
