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
book writes ``steps.csv`` and ``probe.csv`` (when asked), then ``metrics.csv`` (one row per run per
finished epoch, with the run's status), then ``runs.csv`` (one row per run, derived from the same
state). metrics.csv and runs.csv are replaced atomically. Two files cannot be replaced in one
atomic step: metrics.csv is the record, written first; after ``kill -9`` between the two writes,
runs.csv lags it by one update (a run metrics.csv shows one epoch further, or ``done`` where
runs.csv still says ``running``). Resume reads metrics.csv only, and steps/probe rows only of runs
it finds finished there (both are written before a run's final status reaches metrics.csv).

**Memory.** With a result folder, a finished run's epoch rows, step losses and probe rows live in
the folder only: once they are on disk the book keeps of the run its status, epoch count, last
test loss/accuracy and where its lines are in steps.csv and probe.csv (:class:`RunLog`), O(1) per
run, so a comparison of many seeds holds the rows of the runs in training only. Without a folder
every row stays in memory, to be returned.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
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
STEP_COLUMNS = ["init", "seed", "step", "train_loss"]
METRIC_TYPES = {"diverged": bool, "seed": "int64", "epoch": "int64", "diverged_step": "Int64"}
# pandas < 3 parses floats with a fast converter that is not always exact; 3 is exact by default (and
# deprecates the argument): the CSVs read back must give the very floats that were written
EXACT = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
# NaN is written as an empty field; nothing else is missing (a scheme may be called "none")
NA = {"keep_default_na": False, "na_values": [""]}
COPY_BLOCK = 1 << 20  # bytes per read when copying a run's lines from the old file into the new one

Key = tuple[str, int]


@dataclass
class Run:
    """One (init, seed) run. ``rows``: epoch rows as ``train_model`` makes them (epoch 0 only for a
    run diverged at init); ``steps``: per-step train loss; ``probe``: epoch -> probe_stats rows.
    A run whose rows are on disk only (``on_disk``, :meth:`RunBook.write`) keeps ``done_epochs`` and
    ``last`` (its last row's test loss and accuracy) instead."""

    init: str
    seed: int
    status: str = "queued"
    rows: list[dict] = field(default_factory=list)
    steps: np.ndarray | None = None
    probe: dict[int, pd.DataFrame] = field(default_factory=dict)
    diverged_epoch: int | None = None  # 0 = at init
    diverged_step: int | None = None
    diverge_reason: str | None = None
    on_disk: bool = False
    done_epochs: int = 0
    last: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def epochs_done(self) -> int:
        return self.done_epochs if self.on_disk else sum(1 for r in self.rows if r["epoch"] > 0)

    @property
    def last_row(self) -> dict:
        return self.last if self.on_disk else (self.rows[-1] if self.rows else {})

    def diverge(self, epoch: int, step: int | None, reason: str) -> None:
        self.status, self.diverged_epoch, self.diverged_step, self.diverge_reason = "diverged", epoch, step, reason

    def reset(self) -> None:
        """Forget a partial run (to rerun it from its start)."""
        self.status, self.rows, self.steps, self.probe = "queued", [], None, {}
        self.diverged_epoch = self.diverged_step = self.diverge_reason = None
        self.on_disk, self.done_epochs, self.last = False, 0, {}

    def retire(self) -> None:
        """Keep of a finished run what runs.csv needs; its rows are on disk (the book's files)."""
        last = self.last_row
        self.done_epochs = self.epochs_done
        self.last = {k: last[k] for k in ("test_loss", "test_acc") if k in last}
        self.rows, self.steps, self.probe, self.on_disk = [], None, {}, True


class RunLog:
    """One per-run CSV of a result folder (steps.csv, probe.csv): its header, then each run's lines in
    canonical run order, the lines of runs still in training last.

    Of every retired run (finished, its rows dropped from memory) the log keeps where its lines are:
    byte ranges, O(1) per run. ``end`` is where the retired runs' lines stop while they form the
    file's beginning: then a rewrite truncates the file there and appends the new lines (work in
    proportion to the new lines; a ``kill -9`` in between leaves the finished runs' lines and, at
    worst, part of the new ones, which resume drops). Otherwise (``end`` None: after resume, or a
    run to write before a retired one) a rewrite copies the retired runs' lines into a new file in
    run order and replaces the old one atomically.
    """

    def __init__(self, path: Path, header: str | None, index: dict[Key, int], always: bool):
        self.path, self.header, self.index, self.always = path, header, index, always
        self.ranges: dict[Key, list[tuple[int, int]]] = {}  # retired runs with lines
        self.fresh: dict[Key, tuple[int, int]] = {}  # lines the last rewrite wrote for runs not retired yet
        self.end: int | None = None
        self.last = -1  # index of the last retired run with lines

    def rewrite(self, chunks: list[tuple[Key, str]]) -> None:
        """Make the file: retired runs' lines as they are, then ``chunks`` ((run, lines) of runs not
        retired, in run order) where they belong in run order."""
        if self.header is None or not (chunks or self.ranges or self.always or self.path.exists()):
            return  # nothing to write (probe.csv of a comparison without probe)
        if (self.end is not None and self.path.exists()
                and all(self.index[key] > self.last for key, _ in chunks)):
            os.truncate(self.path, self.end)
            pos, self.fresh = self.end, {}
            for key, text in chunks:
                self.fresh[key] = (pos, len(text.encode()))
                pos += self.fresh[key][1]
            if chunks:
                store.append_text(self.path, "".join(text for _, text in chunks))
            return
        self._copy(chunks)

    def _copy(self, chunks: list[tuple[Key, str]]) -> None:
        if not self.path.exists():  # created through store: the marker records the name
            store.atomic_write_text(self.path, self.header)
        items = sorted([(self.index[key], key, None) for key in self.ranges]
                       + [(self.index[key], key, text) for key, text in chunks], key=lambda t: t[0])
        ranges, fresh, end, last = {}, {}, None, -1
        head = self.header.encode()

        def fill(dst) -> None:
            nonlocal end, last
            pos = len(head)
            dst.write(head)
            end = pos
            with open(self.path, "rb") as src:
                for i, key, text in items:
                    if text is None:
                        n = sum(_copy_range(src, dst, off, length) for off, length in self.ranges[key])
                        ranges[key] = [(pos, n)]
                        last = max(last, i)
                        end = None if fresh else pos + n
                    else:
                        data = text.encode()
                        dst.write(data)
                        fresh[key] = (pos, len(data))
                        n = len(data)
                    pos += n

        store.atomic_write_stream(self.path, fill, keep_mode=True)  # already in the marker
        self.ranges, self.fresh, self.end, self.last = ranges, fresh, end, last

    def commit(self, retired: set[Key]) -> None:
        """The runs ``retired`` have left memory: their lines from the last rewrite are theirs for good."""
        blocked = False
        for key, (off, n) in sorted(self.fresh.items(), key=lambda kv: kv[1][0]):
            if key not in retired:
                blocked = True
                continue
            if n:
                self.ranges[key] = [(off, n)]
                self.last = max(self.last, self.index[key])
            if self.end is not None:
                self.end = None if blocked or off != self.end else off + n
        self.fresh = {}

    def scan(self, keep: set[Key]) -> None:
        """Find the lines of the runs ``keep`` in the file as it is (resume): byte ranges, in one pass;
        lines of other runs (unfinished, or cut short by ``kill -9``) are left behind by the next rewrite."""
        self.ranges, self.fresh, self.end, self.last = {}, {}, None, -1
        try:
            with open(self.path, "rb") as f:
                self._scan(f, _key_texts(keep))
        except FileNotFoundError:
            return

    def _scan(self, f, raw: dict[bytes, Key]) -> None:
        header = f.readline()
        if not header.endswith(b"\n"):
            return
        self.header = self.header or header.decode()
        pos = len(header)
        for line in f:
            key = raw.get(_lead(line)) if line.endswith(b"\n") else None
            if key is not None:
                spans = self.ranges.setdefault(key, [])
                if spans and spans[-1][0] + spans[-1][1] == pos:
                    spans[-1] = (spans[-1][0], spans[-1][1] + len(line))
                else:
                    spans.append((pos, len(line)))
                self.last = max(self.last, self.index[key])
            pos += len(line)


def _copy_range(src, dst, offset: int, length: int) -> int:
    src.seek(offset)
    left = length
    while left:
        block = src.read(min(left, COPY_BLOCK))
        if not block:
            raise OSError(f"{src.name} ended before byte {offset + length}")
        dst.write(block)
        left -= len(block)
    return length


def _key_texts(keys: Iterable[Key]) -> dict[bytes, Key]:
    """How each run's (init, seed) begins its CSV lines (pandas' quoting) -> the run."""
    keys = list(keys)
    if not keys:
        return {}
    text = pd.DataFrame({"init": [k[0] for k in keys], "seed": [k[1] for k in keys]}).to_csv(index=False, header=False)
    return {line.encode(): key for line, key in zip(text.splitlines(), keys)}


def _lead(line: bytes) -> bytes:
    """The first two fields of a CSV line, as written (a quoted first field may hold commas)."""
    start = 0
    if line.startswith(b'"'):
        i = 1
        while True:
            j = line.find(b'"', i)
            if j < 0:
                return b""
            if line[j + 1:j + 2] == b'"':
                i = j + 2
                continue
            start = j + 1
            break
    first = line.find(b",", start)
    second = line.find(b",", first + 1) if first >= 0 else -1
    return line[:second] if second >= 0 else b""


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv as :meth:`RunBook.metrics` makes it (same columns, types and values)."""
    frame = pd.read_csv(path, dtype={"init": str, "status": str, "diverge_reason": object}, **NA, **EXACT)
    return _metric_types(frame)


def _metric_types(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=METRIC_COLUMNS).astype(METRIC_TYPES)
    # reasons as they are in memory: None where there is none, and the type pandas infers from them
    frame["diverge_reason"] = pd.Series([None if pd.isna(v) else v for v in frame["diverge_reason"]],
                                        index=frame.index, dtype=None if len(frame) else object)
    return frame


def read_steps(path: Path) -> pd.DataFrame:
    """steps.csv as :meth:`RunBook.steps_frame` makes it."""
    frame = pd.read_csv(path, dtype={"init": str, "seed": "int64", "step": "int64", "train_loss": "float64"},
                        **NA, **EXACT)
    return frame if len(frame) else pd.DataFrame(columns=STEP_COLUMNS)


def read_probe(path: Path) -> pd.DataFrame | None:
    """probe.csv as :meth:`RunBook.probe_frame` makes it; None when there is none."""
    try:
        frame = pd.read_csv(path, dtype={"init": str, "seed": "int64", "epoch": "int64", "name": str}, **NA, **EXACT)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return frame if len(frame) else None


class RunBook:
    """All runs of one comparison, in canonical order, and their files in ``out_dir`` (if any).

    Args:
        inits: canonical scheme strings, in the order listed.
        seeds: run seeds.
        out_dir: result folder, or None to keep everything in memory only. With a folder the rows of
            finished runs are dropped from memory once they are on disk (the module's "Memory").
        chance: test accuracy at or below which a run counts as "at chance" (see
            :func:`initlab.experiments.compare.chance_level`); NaN disables the flag.
    """

    def __init__(self, inits, seeds, out_dir: Path | None = None, chance: float = math.nan):
        self.inits, self.seeds, self.out_dir, self.chance = tuple(inits), tuple(seeds), out_dir, chance
        self.runs: dict[Key, Run] = {(i, s): Run(i, s) for s in self.seeds for i in self.inits}
        self.index = {key: i for i, key in enumerate(self.runs)}
        if out_dir is not None:
            self.steps_log = RunLog(out_dir / "steps.csv", ",".join(STEP_COLUMNS) + "\n", self.index, always=True)
            self.probe_log = RunLog(out_dir / "probe.csv", None, self.index, always=False)

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

    def rows_in_memory(self) -> int:
        """Epoch, step and probe rows the book holds (what a folder keeps out of memory)."""
        return sum(len(r.rows) + (0 if r.steps is None else len(r.steps)) + sum(len(p) for p in r.probe.values())
                   for r in self)

    # ------------------------------------------------------------------ frames

    def metrics(self) -> pd.DataFrame:
        """One row per run and finished epoch, in run order; retired runs' rows read from metrics.csv."""
        rows = []
        for r in self:
            for row in r.rows:
                rows.append({"init": r.init, "seed": r.seed, **row, "status": r.status,
                             "diverged_step": r.diverged_step if row["diverged"] else None,
                             "diverge_reason": r.diverge_reason if row["diverged"] else None})
        frame = pd.DataFrame(rows, columns=METRIC_COLUMNS).astype(METRIC_TYPES)
        retired = {key for key, r in self.runs.items() if r.on_disk}
        if not retired:
            return frame
        disk = read_metrics(self.out_dir / "metrics.csv")
        disk = disk[[(i, s) in retired for i, s in zip(disk["init"], disk["seed"])]]
        both = pd.concat([disk, frame], ignore_index=True) if len(frame) else disk
        order = np.argsort([self.index[(i, s)] for i, s in zip(both["init"], both["seed"])], kind="stable")
        return _metric_types(both.iloc[order].reset_index(drop=True))

    def runs_frame(self) -> pd.DataFrame:
        rows = []
        for r in self:
            last = r.last_row
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
        """Per-step losses of the runs in memory (every run, without a folder)."""
        frames = [_steps_of(r) for r in self if _has_steps(r)]
        if not frames:
            return pd.DataFrame(columns=STEP_COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def probe_frame(self) -> pd.DataFrame | None:
        """Probe rows of the runs in memory (every run, without a folder)."""
        frames = [f for r in self for f in _probe_of(r)]
        return pd.concat(frames, ignore_index=True) if frames else None

    # ------------------------------------------------------------------ files

    def append_steps(self, run: Run, losses: np.ndarray, step0: int) -> None:
        """Add one epoch's per-step losses of ``run`` to steps.csv as they come (kill -9 loses at most
        the epoch in progress). One ``write`` of whole lines per epoch, appended: steps.csv grows
        linearly during a run; :meth:`write` with ``steps=True`` puts it back in run order (on start
        and resume, and when a run or group ends), which also drops the lines of a run that is
        started again."""
        if self.out_dir is None or not len(losses):
            return
        frame = pd.DataFrame({"init": run.init, "seed": run.seed, "step": np.arange(step0, step0 + len(losses)),
                              "train_loss": losses})
        store.append_text(self.out_dir / "steps.csv", frame.to_csv(index=False, header=False))

    def write(self, *, steps: bool = False, probe: bool = False) -> None:
        """Rewrite steps.csv / probe.csv (when asked), then metrics.csv, then runs.csv.

        The order is the crash contract: whatever a finished run needs is on disk before
        metrics.csv says it finished, and runs.csv never runs ahead of metrics.csv. Finished runs
        whose rows are then all on disk leave memory (after a write of both steps and probe, or of
        probe when the only runs holding rows diverged at init).
        """
        if self.out_dir is None:
            return
        live = [r for r in self if not r.on_disk]
        if steps:
            self.steps_log.rewrite([((r.init, r.seed), _steps_of(r).to_csv(index=False, header=False))
                                    for r in live if _has_steps(r)])
        if probe:
            chunks = []
            for r in live:
                frames = [_float_stats(f) for f in _probe_of(r)]
                if frames:
                    frame = pd.concat(frames, ignore_index=True)
                    if self.probe_log.header is None:
                        self.probe_log.header = frame.iloc[:0].to_csv(index=False)
                    chunks.append(((r.init, r.seed), frame.to_csv(index=False, header=False)))
            self.probe_log.rewrite(chunks)
        store.atomic_write_csv(self.out_dir / "metrics.csv", self.metrics())
        store.atomic_write_csv(self.out_dir / "runs.csv", self.runs_frame())
        holding = [r for r in live if r.rows or r.probe or r.steps is not None]
        if (steps and probe) or (probe and all(r.finished and not _has_steps(r) for r in holding)):
            # every finished run's lines are in both files now (a run diverged at init has no steps)
            retired = {(r.init, r.seed) for r in holding if r.finished}
            for key in retired:
                self.runs[key].retire()
            self.steps_log.commit(retired)
            self.probe_log.commit(retired)

    def load(self) -> int:
        """Take back the finished runs recorded in ``out_dir`` (for resume); return how many.

        metrics.csv is the record: a run counts as finished when its rows there carry status
        ``done`` (with every epoch) or ``diverged``. runs.csv is written right after metrics.csv
        and can lag it by one write after ``kill -9``; it is not needed here. Everything else
        stays queued and reruns from its start. The finished runs' rows stay on disk: the book
        notes where their lines are in steps.csv and probe.csv (one pass over each).
        """
        d = self.out_dir
        try:
            metrics = read_metrics(d / "metrics.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            return 0
        if metrics.empty:
            return 0
        count = 0
        for (init, seed), m in metrics.groupby(["init", "seed"], sort=False):
            key = (str(init), int(seed))
            status = set(m["status"])
            if key not in self.runs or len(status) != 1 or status.isdisjoint(FINAL):
                continue
            m = m.sort_values("epoch")
            diverged = bool(m["diverged"].iloc[-1])
            if (status == {"done"}) == diverged:
                continue
            run = self.runs[key]
            run.status = status.pop()
            last = m.iloc[-1]
            if diverged:
                run.diverged_epoch = int(last["epoch"])
                run.diverged_step = None if pd.isna(last["diverged_step"]) else int(last["diverged_step"])
                run.diverge_reason = None if pd.isna(last["diverge_reason"]) else str(last["diverge_reason"])
            run.on_disk, run.done_epochs = True, int((m["epoch"] > 0).sum())
            run.last = {"test_loss": float(last["test_loss"]), "test_acc": float(last["test_acc"])}
            count += 1
        finished = {key for key, r in self.runs.items() if r.on_disk}
        self.steps_log.scan(finished)
        self.probe_log.scan(finished)
        return count


def _has_steps(run: Run) -> bool:
    return run.steps is not None and len(run.steps) > 0


def _steps_of(run: Run) -> pd.DataFrame:
    return pd.DataFrame({"init": run.init, "seed": run.seed, "step": np.arange(len(run.steps)),
                         "train_loss": np.asarray(run.steps, dtype=np.float64)})


def _probe_of(run: Run) -> Iterable[pd.DataFrame]:
    for epoch in sorted(run.probe):
        f = run.probe[epoch].copy()
        f.insert(0, "epoch", epoch)
        f.insert(0, "seed", run.seed)
        f.insert(0, "init", run.init)
        yield f


def _float_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Probe statistics as float64, so that a run's lines read the same whichever runs share the file
    (an integer column next to another run's NaN would otherwise print as 3 here and 3.0 there)."""
    stats = [c for c in frame.columns[4:] if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool]
    return frame.astype({c: "float64" for c in stats}) if stats else frame
