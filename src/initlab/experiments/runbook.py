"""The record of every run of a comparison: status, epoch rows, step losses, probe rows, and files.

A comparison's runs are (init, seed) pairs, kept seed-major (seed 0's inits, then seed 1's, ...).
Each run has a **status**:

* ``queued``: not started;
* ``running``: started, not finished (what a folder says of a run after ``kill -9``);
* ``done``: trained for every epoch without diverging;
* ``diverged``: stopped by the divergence rule (:data:`initlab.training.loop.DIVERGE_LOSS`), at init or
  in some epoch, with the reason;
* ``interrupted``: stopped by Ctrl-C or SIGTERM before it finished.

``done`` and ``diverged`` are final; ``resume`` reruns every other run from its start (its seed
fixes its init and data order, so the rerun gives what the uninterrupted run would have). The
book writes ``metrics.csv`` (one row per run per finished epoch, with the run's status), then
``runs.csv`` (one row per run, derived from the same state), ``steps.csv`` and ``probe.csv``, each
atomically, and reads them back. Two files cannot be replaced in one atomic step: metrics.csv is
the record, written first; after ``kill -9`` between the two writes, runs.csv lags it by one
update (a run metrics.csv shows one epoch further, or ``done`` where runs.csv still says
``running``). Resume reads metrics.csv only, and steps/probe rows only of runs it finds finished
there (both are written before a run's final status reaches metrics.csv).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from initlab import store

STATUSES = ("queued", "running", "done", "diverged", "interrupted")
FINAL = ("done", "diverged")

METRIC_COLUMNS = ["init", "seed", "epoch", "status", "train_loss", "test_loss", "test_acc", "diverged",
                  "diverged_step", "diverge_reason"]
RUN_COLUMNS = ["init", "seed", "status", "epochs_done", "diverged_epoch", "diverged_step", "diverge_reason",
               "final_test_loss", "final_test_acc", "at_chance"]


@dataclass
class Run:
    """One (init, seed) run. ``rows``: epoch rows as ``train_model`` makes them (epoch 0 only for a
    run diverged at init); ``steps``: per-step train loss; ``probe``: epoch -> probe_stats rows."""

    init: str
    seed: int
    status: str = "queued"
    rows: list[dict] = field(default_factory=list)
    steps: np.ndarray | None = None
    probe: dict[int, pd.DataFrame] = field(default_factory=dict)
    diverged_epoch: int | None = None  # 0 = at init
    diverged_step: int | None = None
    diverge_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def epochs_done(self) -> int:
        return sum(1 for r in self.rows if r["epoch"] > 0)

    def diverge(self, epoch: int, step: int | None, reason: str) -> None:
        self.status, self.diverged_epoch, self.diverged_step, self.diverge_reason = "diverged", epoch, step, reason

    def reset(self) -> None:
        """Forget a partial run (to rerun it from its start)."""
        self.status, self.rows, self.steps, self.probe = "queued", [], None, {}
        self.diverged_epoch = self.diverged_step = self.diverge_reason = None


class RunBook:
    """All runs of one comparison, in canonical order, and their files in ``out_dir`` (if any).

    Args:
        inits: canonical scheme strings, in the order listed.
        seeds: run seeds.
        out_dir: result folder, or None to keep everything in memory only.
        chance: test accuracy at or below which a run counts as "at chance" (see
            :func:`initlab.experiments.compare.chance_level`); NaN disables the flag.
    """

    def __init__(self, inits, seeds, out_dir: Path | None = None, chance: float = math.nan):
        self.inits, self.seeds, self.out_dir, self.chance = tuple(inits), tuple(seeds), out_dir, chance
        self.runs: dict[tuple[str, int], Run] = {(i, s): Run(i, s) for s in self.seeds for i in self.inits}

    def __iter__(self):
        return iter(self.runs.values())

    def get(self, init: str, seed: int) -> Run:
        return self.runs[(init, seed)]

    def pending(self) -> list[Run]:
        return [r for r in self if not r.finished]

    def interrupt(self) -> None:
        """Mark every started, unfinished run as interrupted (Ctrl-C / SIGTERM)."""
        for r in self:
            if r.status == "running":
                r.status = "interrupted"

    # ------------------------------------------------------------------ frames

    def metrics(self) -> pd.DataFrame:
        rows = []
        for r in self:
            for row in r.rows:
                rows.append({"init": r.init, "seed": r.seed, **row, "status": r.status,
                             "diverged_step": r.diverged_step if row["diverged"] else None,
                             "diverge_reason": r.diverge_reason if row["diverged"] else None})
        frame = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        return frame.astype({"diverged": bool, "seed": "int64", "epoch": "int64", "diverged_step": "Int64"})

    def runs_frame(self) -> pd.DataFrame:
        rows = []
        for r in self:
            last = r.rows[-1] if r.rows else {}
            acc = last.get("test_acc", math.nan) if r.status == "done" else math.nan
            rows.append({"init": r.init, "seed": r.seed, "status": r.status, "epochs_done": r.epochs_done,
                         "diverged_epoch": r.diverged_epoch, "diverged_step": r.diverged_step,
                         "diverge_reason": r.diverge_reason,
                         "final_test_loss": last.get("test_loss", math.nan) if r.status == "done" else math.nan,
                         "final_test_acc": acc,
                         "at_chance": bool(acc <= self.chance) if r.status == "done" and math.isfinite(self.chance)
                         else None})
        return pd.DataFrame(rows, columns=RUN_COLUMNS).astype(
            {"seed": "int64", "epochs_done": "int64", "diverged_epoch": "Int64", "diverged_step": "Int64"})

    def steps_frame(self) -> pd.DataFrame:
        frames = [pd.DataFrame({"init": r.init, "seed": r.seed, "step": np.arange(len(r.steps)),
                                "train_loss": r.steps}) for r in self if r.steps is not None and len(r.steps)]
        if not frames:
            return pd.DataFrame(columns=["init", "seed", "step", "train_loss"])
        return pd.concat(frames, ignore_index=True)

    def probe_frame(self) -> pd.DataFrame | None:
        frames = []
        for r in self:
            for epoch in sorted(r.probe):
                f = r.probe[epoch].copy()
                f.insert(0, "epoch", epoch)
                f.insert(0, "seed", r.seed)
                f.insert(0, "init", r.init)
                frames.append(f)
        return pd.concat(frames, ignore_index=True) if frames else None

    # ------------------------------------------------------------------ files

    def append_steps(self, run: Run, losses: np.ndarray, step0: int) -> None:
        """Add one epoch's per-step losses of ``run`` to steps.csv as they come (kill -9 loses at most
        the epoch in progress). One ``write`` of whole lines per epoch, appended: steps.csv grows
        linearly during a run; :meth:`write` with ``steps=True`` rewrites it whole in run order (on
        start and resume, and when a run or group ends), which also drops the lines of a run that is
        started again."""
        if self.out_dir is None or not len(losses):
            return
        frame = pd.DataFrame({"init": run.init, "seed": run.seed, "step": np.arange(step0, step0 + len(losses)),
                              "train_loss": losses})
        store.append_text(self.out_dir / "steps.csv", frame.to_csv(index=False, header=False))

    def write(self, *, steps: bool = False, probe: bool = False) -> None:
        """Rewrite steps.csv / probe.csv (when asked), then metrics.csv, then runs.csv, atomically.

        The order is the crash contract: whatever a finished run needs is on disk before
        metrics.csv says it finished, and runs.csv never runs ahead of metrics.csv.
        """
        if self.out_dir is None:
            return
        if steps:
            store.atomic_write_csv(self.out_dir / "steps.csv", self.steps_frame())
        if probe:
            frame = self.probe_frame()
            if frame is not None:
                store.atomic_write_csv(self.out_dir / "probe.csv", frame)
        store.atomic_write_csv(self.out_dir / "metrics.csv", self.metrics())
        store.atomic_write_csv(self.out_dir / "runs.csv", self.runs_frame())

    def load(self) -> int:
        """Take back the finished runs recorded in ``out_dir`` (for resume); return how many.

        metrics.csv is the record: a run counts as finished when its rows there carry status
        ``done`` (with every epoch) or ``diverged``. runs.csv is written right after metrics.csv
        and can lag it by one write after ``kill -9``; it is not needed here. Everything else
        stays queued and reruns from its start.
        """
        d = self.out_dir
        metrics = _read_optional(d / "metrics.csv")
        if metrics is None or metrics.empty:
            return 0
        steps = _read_optional(d / "steps.csv")
        probe = _read_optional(d / "probe.csv")
        count = 0
        for (init, seed), m in metrics.groupby(["init", "seed"], sort=False):
            key = (str(init), int(seed))
            status = set(m["status"])
            if key not in self.runs or len(status) != 1 or status.isdisjoint(FINAL):
                continue
            m = m.sort_values("epoch")
            diverged = bool(m["diverged"].astype(str).str.lower().eq("true").iloc[-1])
            if (status == {"done"}) == diverged:
                continue
            run = self.runs[key]
            run.status = status.pop()
            run.rows = [{"epoch": int(row.epoch), "train_loss": float(row.train_loss),
                         "diverged": str(row.diverged).lower() == "true",
                         "test_loss": float(row.test_loss), "test_acc": float(row.test_acc)}
                        for row in m.itertuples()]
            if diverged:
                last = m.iloc[-1]
                run.diverged_epoch = int(last["epoch"])
                run.diverged_step = None if pd.isna(last["diverged_step"]) else int(last["diverged_step"])
                run.diverge_reason = None if pd.isna(last["diverge_reason"]) else str(last["diverge_reason"])
            if steps is not None:
                s = steps[(steps["init"] == key[0]) & (steps["seed"] == key[1])].sort_values("step")
                run.steps = s["train_loss"].to_numpy(dtype=float) if len(s) else np.zeros(0)
            if probe is not None:
                p = probe[(probe["init"] == key[0]) & (probe["seed"] == key[1])]
                run.probe = {int(e): g.drop(columns=["init", "seed", "epoch"]).reset_index(drop=True)
                             for e, g in p.groupby("epoch", sort=True)}
            count += 1
        return count


def _read_optional(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
