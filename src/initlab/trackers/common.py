"""What both trackers read from a comparison: its folder, each run's hyperparameters and rows."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from initlab.experiments.compare import CompareSpec
from initlab.training.loop import TrainConfig

PROBE_KEYS = ("init", "seed", "epoch", "name", "kind")  # probe.csv columns that say which row; the rest are statistics


def read_folder(folder: Path):
    """(spec or None, spec dict, metrics, steps, probe, runs) from a compare result folder."""
    def csv(name):
        p = folder / name
        if not p.exists():
            return None
        try:
            return pd.read_csv(p)
        except pd.errors.EmptyDataError:
            return None

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"'{folder}' is not a compare result folder (no readable config.json)") from None
    metrics = csv("metrics.csv")
    if metrics is None:
        raise ValueError(f"'{folder}' is not a compare result folder (no metrics.csv)")
    return spec_from_config(config), config, metrics, csv("steps.csv"), csv("probe.csv"), csv("runs.csv")


def spec_from_config(config: dict):
    """The CompareSpec of a config.json, or None where it cannot be rebuilt (e.g. a model callable)."""

    try:
        fields = {f.name for f in dataclasses.fields(CompareSpec)}
        kw = {k: v for k, v in config.items() if k in fields and k != "train"}
        for k in ("inits", "hidden"):
            if isinstance(kw.get(k), list):
                kw[k] = tuple(kw[k])
        kw["train"] = TrainConfig.from_dict(config.get("train") or {})
        kw["device"] = "cpu"
        return CompareSpec(**kw)
    except Exception:  # noqa: BLE001 - histograms are then skipped, everything else still exported
        return None


def hparams_record(spec_d: dict, init: str, seed: int, status: str) -> dict[str, Any]:
    """The hyperparameters both trackers record for one run."""
    train = spec_d.get("train") or {}
    model = spec_d.get("model")
    hidden = spec_d.get("hidden")
    return {
        "init": str(init), "seed": int(seed), "dataset": str(spec_d.get("dataset")),
        "model": "mlp" if model in (None, "") else str(model),
        "hidden": ",".join(str(h) for h in hidden) if isinstance(hidden, (list, tuple)) else str(hidden),
        "activation": str(spec_d.get("activation")), "optimizer": str(train.get("optimizer")),
        "lr": float(train.get("lr", float("nan"))), "momentum": float(train.get("momentum", float("nan"))),
        "batch_size": int(train.get("batch_size", 0)), "epochs": int(train.get("epochs", 0)),
        "status": str(status),
    }


def run_keys(runs: pd.DataFrame | None, metrics: pd.DataFrame) -> list[tuple[str, int]]:
    """(init, seed) of every run, in runs.csv's order (or first appearance in the metrics)."""
    if runs is not None and len(runs):
        return [(str(r.init), int(r.seed)) for r in runs.itertuples()]
    return list(dict.fromkeys((str(i), int(s)) for i, s in zip(metrics["init"], metrics["seed"])))


def run_rows(df: pd.DataFrame | None, init: str, seed: int) -> pd.DataFrame | None:
    """The rows of one run in a frame with init and seed columns; None for a missing or empty frame."""
    if df is None or not len(df):
        return None
    return df[(df["init"].astype(str) == init) & (df["seed"].astype(int) == seed)]


def probe_stat_columns(probe: pd.DataFrame | None) -> list[str]:
    """The numeric statistics of probe.csv (every column but :data:`PROBE_KEYS`)."""
    if probe is None:
        return []
    return [c for c in probe.columns if c not in PROBE_KEYS and pd.api.types.is_numeric_dtype(probe[c])]


def number(v) -> float | None:
    """``v`` as a float, or None where it is not a number or is NaN (both trackers drop those)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


EPOCH_SCALARS = ("train_loss", "test_loss", "test_acc")  # metrics.csv columns both trackers log per epoch


@dataclass
class RunRecord:
    """One run's rows of a comparison, as both trackers log them."""

    init: str
    seed: int
    metrics: pd.DataFrame | None  # sorted by epoch
    steps: pd.DataFrame | None
    probe: pd.DataFrame | None
    run: pd.Series | None  # its runs.csv row

    @classmethod
    def of(cls, init: str, seed: int, metrics, steps, probe, runs) -> "RunRecord":
        m = run_rows(metrics, init, seed)
        run = run_rows(runs, init, seed)
        return cls(init, seed, m.sort_values("epoch") if m is not None else None, run_rows(steps, init, seed),
                   run_rows(probe, init, seed), None if run is None or not len(run) else run.iloc[0])

    @property
    def status(self) -> str:
        if self.run is not None:
            return str(self.run["status"])
        m = self.metrics
        return str(m["status"].iloc[-1]) if m is not None and len(m) and "status" in m else "unknown"

    @property
    def last_epoch(self) -> int:
        return int(self.metrics["epoch"].max()) if self.metrics is not None and len(self.metrics) else 0

    def final(self) -> tuple[float | None, float | None]:
        """(final test accuracy, final test loss): runs.csv's, else the last epoch's."""
        r = self.run
        acc = number(r["final_test_acc"]) if r is not None and "final_test_acc" in r else None
        loss = number(r["final_test_loss"]) if r is not None and "final_test_loss" in r else None
        if acc is None and self.metrics is not None and len(self.metrics):
            acc, loss = number(self.metrics["test_acc"].iloc[-1]), number(self.metrics["test_loss"].iloc[-1])
        return acc, loss

    def scalars(self, stat_cols) -> Iterator[tuple[tuple[str, ...], Any, int]]:
        """(name parts, raw value, step) of every scalar: step train losses, epoch metrics and divergence,
        probe statistics per layer; each tracker joins the parts its way and drops what it cannot store."""
        if self.steps is not None:
            for step, loss in zip(self.steps["step"], self.steps["train_loss"]):
                yield ("step", "train_loss"), loss, int(step)
        if self.metrics is not None:
            for r in self.metrics.itertuples():
                for col in EPOCH_SCALARS:
                    yield ("epoch", col), getattr(r, col), int(r.epoch)
                if hasattr(r, "diverged"):
                    yield ("epoch", "diverged"), float(bool(r.diverged)), int(r.epoch)
        if self.probe is not None:
            for r in self.probe.itertuples(index=False):
                for col in stat_cols:
                    yield ("probe", col, str(r.name)), getattr(r, col), int(r.epoch)
