"""The run store: every sweep's runs, statuses and per-epoch metrics in one SQLite file (WAL).

Tables (``SCHEMA``):

* ``sweeps``: one row per distinct sweep (its hash, name, spec as JSON, created/updated times);
* ``runs``: one row per distinct run, keyed by :func:`initlab.experiments.sweeps.spec.run_hash` of its
  parameters (stored as JSON), so a run shared by two sweeps (or a rerun of one) is trained once.
  ``status`` is one of ``STATUSES``; ``attempts`` counts claims; ``worker``/``host``/``pid``/
  ``heartbeat`` say who holds a running run; timings, the engine used, final metrics, the
  divergence record and the error of a failed attempt;
* ``sweep_runs``: which runs a sweep lists, in its order;
* ``epochs``: one row per run per finished epoch (epoch 0: a run diverged at init): train loss,
  validation and test loss/accuracy, training accuracy when measured;
* ``probes``: per-layer statistics (:func:`initlab.analysis.probe.probe_stats`) at init and after the last
  epoch, when the sweep asks for them.

Concurrency and crashes. Every write is a short transaction; ``BEGIN IMMEDIATE`` takes SQLite's
write lock first, so a claim (select claimable runs, mark them ``running`` with this worker) is
atomic: two workers never hold one run. A finished run's epochs, probe rows and final status go in
one transaction, guarded by ``worker = me AND status = 'running'``; a worker whose runs were taken
from it (declared dead) writes nothing. A run whose worker died (``kill -9``, a power cut) stays
``running`` until :meth:`RunStore.recover` finds it: on this host by its pid and process start time
(``/proc/<pid>/stat``), elsewhere by a heartbeat older than ``lease`` seconds (a background
thread of the worker refreshes it every ``lease/10`` s). Recovered runs become ``interrupted``
and are claimed again.
"""
from __future__ import annotations

import io
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from initlab import store as files
from initlab.schemes import split_top_level

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "done", "diverged", "failed", "interrupted")
FINAL = ("done", "diverged")
CLAIMABLE = ("queued", "interrupted", "failed")
DEFAULT_STORE = "runs/sweeps.db"
LEASE_SECONDS = 300.0  # a running run on another host with no heartbeat for this long is dead
MAX_ATTEMPTS = 3  # a run that failed this many times is left failed (its error says why)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,             -- SweepSpec.to_dict() as JSON
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,      -- spec.run_hash(params)
    params TEXT NOT NULL,           -- canonical run parameters, JSON
    group_key TEXT NOT NULL,        -- spec.group_key(params): runs trained as one batched computation
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'diverged', 'failed', 'interrupted')),
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT, host TEXT, pid INTEGER, heartbeat REAL,
    queued_at REAL, started_at REAL, finished_at REAL,
    seconds REAL,                   -- wall time of the attempt (a batched group's runs share it)
    engine TEXT,                    -- mlp | func | single
    epochs_done INTEGER NOT NULL DEFAULT 0,
    final_train_loss REAL, final_train_acc REAL, final_val_loss REAL, final_val_acc REAL,
    final_test_loss REAL, final_test_acc REAL,
    diverged_epoch INTEGER, diverged_step INTEGER, diverge_reason TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, group_key);
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
    run_id INTEGER NOT NULL REFERENCES runs (id),
    position INTEGER NOT NULL,
    PRIMARY KEY (sweep_id, run_id)
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    epoch INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL, test_loss REAL, test_acc REAL,
    diverged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS probes (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    epoch INTEGER NOT NULL,
    layer TEXT NOT NULL,
    stats TEXT NOT NULL,            -- one probe_stats row as JSON
    PRIMARY KEY (run_id, epoch, layer)
);
"""

EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux); None if there is no such
    process, it is a zombie (killed, not yet reaped), or /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def worker_id(pid: int | None = None) -> str:
    """``host:pid:start``: names a process uniquely, even after its pid is reused."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or '?'}"


def worker_alive(worker: str, heartbeat: float | None, lease: float = LEASE_SECONDS, now: float | None = None) -> bool:
    """Whether the worker holding a run may still be running it."""
    host, _, rest = (worker or "").partition(":")
    pid, _, start = rest.partition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return start == (_proc_start(os.getpid()) or "?")
        current = _proc_start(int(pid))
        return current is not None and (start == "?" or current == start)
    now = time.time() if now is None else now
    return heartbeat is not None and now - heartbeat < lease


def _clean(v):
    """SQLite has no NaN: store NULL, read back NaN."""
    if isinstance(v, float) and not math.isfinite(v) and math.isnan(v):
        return None
    return v


class _LostLease(Exception):
    """The run is no longer this worker's (declared dead and taken over): write nothing."""


@dataclass
class Claimed:
    """A run this worker holds: its store id, hash and parameters."""

    id: int
    hash: str
    params: dict
    attempts: int


class RunStore:
    """A SQLite run store at ``path`` (created with its folder if missing). One per thread.

    Args:
        path: the database file, e.g. ``runs/sweeps.db``.
        timeout: seconds to wait for another writer's lock before failing.
        lease: seconds without heartbeat after which another host's running run is dead.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, *, timeout: float = 60.0, lease: float = LEASE_SECONDS):
        self.path = Path(path)
        self.lease = lease
        try:
            if self.path.exists() and self.path.is_dir():
                raise ValueError(f"store '{self.path}' is a folder; give a file path like runs/sweeps.db")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process kill
            self.db.execute("PRAGMA foreign_keys=ON")
            with self.transaction():
                for statement in SCHEMA.split(";"):  # executescript would commit: keep it one transaction
                    if statement.strip():
                        self.db.execute(statement)
                row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise ValueError(f"store '{self.path}' has schema version {row[0]}, this initlab reads "
                                     f"{SCHEMA_VERSION}; use another --store")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"cannot use '{self.path}' as a run store: {e}") from None
        except OSError as e:
            raise ValueError(f"cannot create run store '{self.path}': {e.strerror or e}") from None
        self._hb: tuple[threading.Thread, threading.Event] | None = None

    # ------------------------------------------------------------------ plumbing

    def transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store.db.execute("BEGIN IMMEDIATE")
                return store.db

            def __exit__(self, exc_type, exc, tb):
                store.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False

        return _Tx()

    def close(self) -> None:
        self.stop_heartbeat()
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ sweeps

    def add_sweep(self, name: str, spec: Mapping, sweep_hash: str, runs: Sequence[Mapping],
                  hashes: Sequence[str], groups: Sequence[str]) -> int:
        """Record a sweep and its runs (new runs ``queued``, known ones kept as they are); its id."""
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO sweeps (hash, name, spec, created, updated) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (hash) DO UPDATE SET updated = excluded.updated",
                       (sweep_hash, name, json.dumps(spec, sort_keys=True), now, now))
            sweep_id = db.execute("SELECT id FROM sweeps WHERE hash = ?", (sweep_hash,)).fetchone()[0]
            db.executemany("INSERT OR IGNORE INTO runs (hash, params, group_key, status, queued_at) "
                           "VALUES (?, ?, ?, 'queued', ?)",
                           [(h, json.dumps(r, sort_keys=True), g, now) for r, h, g in zip(runs, hashes, groups)])
            db.executemany("INSERT OR IGNORE INTO sweep_runs (sweep_id, run_id, position) "
                           "SELECT ?, id, ? FROM runs WHERE hash = ?",
                           [(sweep_id, i, h) for i, h in enumerate(hashes)])
        return int(sweep_id)

    def find_sweep(self, key: str | int | None = None) -> dict:
        """A sweep by id, hash or name (the latest of that name); None: the most recently updated."""
        q = "SELECT id, hash, name, spec, created, updated FROM sweeps"
        if key is None:
            row = self.db.execute(q + " ORDER BY updated DESC, id DESC LIMIT 1").fetchone()
        else:
            text = str(key)
            row = self.db.execute(q + " WHERE hash = ? OR name = ? OR CAST(id AS TEXT) = ? "
                                      "ORDER BY updated DESC, id DESC LIMIT 1", (text, text, text)).fetchone()
        if row is None:
            names = [r[0] for r in self.db.execute("SELECT DISTINCT name FROM sweeps ORDER BY id")]
            what = "no sweeps yet" if not names else f"sweeps: {', '.join(names)}"
            raise ValueError(f"no sweep {key!r} in '{self.path}' ({what})" if key is not None
                             else f"'{self.path}' holds no sweeps yet; run `initlab sweep` first")
        return {"id": row[0], "hash": row[1], "name": row[2], "spec": json.loads(row[3]),
                "created": row[4], "updated": row[5]}

    # ------------------------------------------------------------------ workers

    def recover(self) -> int:
        """Mark ``running`` runs of dead workers ``interrupted``; how many."""
        now = time.time()
        with self.transaction() as db:
            rows = db.execute("SELECT DISTINCT worker, MAX(heartbeat) FROM runs WHERE status = 'running' "
                              "GROUP BY worker").fetchall()
            dead = [w for w, hb in rows if not worker_alive(w, hb, self.lease, now)]
            n = 0
            for w in dead:
                n += db.execute("UPDATE runs SET status = 'interrupted', error = ? WHERE status = 'running' "
                                "AND worker IS ?", (f"worker {w} stopped (killed or crashed) while running it",
                                                    w)).rowcount
        return n

    def claim(self, sweep_id: int, worker: str, caps: Mapping[str, int], *,
              max_attempts: int = MAX_ATTEMPTS, exclude: Iterable[int] = ()) -> list[Claimed]:
        """Atomically take up to ``caps[group]`` claimable runs of the first engine group (in the
        sweep's order) that has any, except run ids in ``exclude``; [] when none is left."""
        now = time.time()
        skip = "".join(f" AND r.id != {int(i)}" for i in exclude)
        host, pid = socket.gethostname(), os.getpid()
        with self.transaction() as db:
            first = db.execute(
                "SELECT r.group_key FROM sweep_runs s JOIN runs r ON r.id = s.run_id WHERE s.sweep_id = ? AND "
                "(r.status IN ('queued', 'interrupted') OR (r.status = 'failed' AND r.attempts < ?))" + skip +
                " ORDER BY s.position LIMIT 1", (sweep_id, max_attempts)).fetchone()
            if first is None:
                return []
            group = first[0]
            rows = db.execute(
                "SELECT r.id, r.hash, r.params, r.attempts FROM sweep_runs s JOIN runs r ON r.id = s.run_id "
                "WHERE s.sweep_id = ? AND r.group_key = ? AND "
                "(r.status IN ('queued', 'interrupted') OR (r.status = 'failed' AND r.attempts < ?))" + skip +
                " ORDER BY s.position LIMIT ?", (sweep_id, group, max_attempts, int(caps.get(group, 1)))).fetchall()
            db.executemany("UPDATE runs SET status = 'running', attempts = attempts + 1, worker = ?, host = ?, "
                           "pid = ?, heartbeat = ?, started_at = ?, finished_at = NULL, seconds = NULL, "
                           "error = NULL WHERE id = ?", [(worker, host, pid, now, now, r[0]) for r in rows])
        return [Claimed(r[0], r[1], json.loads(r[2]), r[3] + 1) for r in rows]

    def heartbeat(self, worker: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET heartbeat = ? WHERE worker = ? AND status = 'running'", (time.time(), worker))

    def start_heartbeat(self, worker: str, every: float | None = None) -> None:
        """Refresh this worker's heartbeat from a background thread (own connection) every ``every`` s."""
        if self._hb is not None:
            return
        every = every or max(1.0, self.lease / 10)
        stop = threading.Event()

        def beat():
            try:
                side = RunStore(self.path, lease=self.lease)
            except ValueError:
                return
            try:
                while not stop.wait(every):
                    try:
                        side.heartbeat(worker)
                    except sqlite3.Error:
                        pass  # busy: the next beat will do
            finally:
                side.db.close()

        t = threading.Thread(target=beat, name="initlab-heartbeat", daemon=True)
        t.start()
        self._hb = (t, stop)

    def stop_heartbeat(self) -> None:
        if self._hb is not None:
            t, stop = self._hb
            stop.set()
            t.join(timeout=5)
            self._hb = None

    def finish(self, run_id: int, worker: str, *, status: str, rows: Sequence[Mapping], engine: str,
               started: float, diverged_epoch=None, diverged_step=None, diverge_reason=None,
               probes: Iterable[tuple[int, str, dict]] = ()) -> bool:
        """Commit one finished run (``done``/``diverged``) with all its epoch and probe rows in one
        transaction; False (nothing written) if this worker no longer holds it."""
        if status not in FINAL:
            raise ValueError(f"finish takes a final status ({', '.join(FINAL)}), got {status!r}")
        now = time.time()
        last = next((r for r in reversed(rows) if r.get("epoch", 0) > 0 and not r.get("diverged")), None)
        finals = {f"final_{k}": _clean(float(last[k])) if last is not None and last.get(k) is not None else None
                  for k in EPOCH_FIELDS}
        try:
            self._finish(run_id, worker, status, rows, engine, now - started, finals, diverged_epoch,
                         diverged_step, diverge_reason, probes, now)
        except _LostLease:
            return False
        return True

    def _finish(self, run_id, worker, status, rows, engine, seconds, finals, diverged_epoch, diverged_step,
                diverge_reason, probes, now) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, seconds = ?, engine = ?, epochs_done = ?, "
                "final_train_loss = ?, final_train_acc = ?, final_val_loss = ?, final_val_acc = ?, "
                "final_test_loss = ?, final_test_acc = ?, diverged_epoch = ?, diverged_step = ?, "
                "diverge_reason = ?, error = NULL WHERE id = ? AND worker = ? AND status = 'running'",
                (status, now, seconds, engine, sum(1 for r in rows if r.get("epoch", 0) > 0),
                 *(finals[f"final_{k}"] for k in EPOCH_FIELDS), diverged_epoch, diverged_step, diverge_reason,
                 run_id, worker))
            if cur.rowcount != 1:
                raise _LostLease()
            db.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM probes WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO epochs (run_id, epoch, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc, "
                "diverged) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, int(r["epoch"]), *(_clean(r.get(k)) for k in EPOCH_FIELDS), int(bool(r.get("diverged"))))
                 for r in rows])
            db.executemany("INSERT INTO probes (run_id, epoch, layer, stats) VALUES (?, ?, ?, ?)",
                           [(run_id, int(e), str(layer), json.dumps(stats, default=float)) for e, layer, stats in probes])

    def release(self, worker: str, status: str = "interrupted", error: str | None = None,
                run_ids: Sequence[int] | None = None) -> int:
        """Hand back this worker's running runs (all, or ``run_ids``) as ``interrupted`` or ``failed``."""
        if status not in ("interrupted", "failed"):
            raise ValueError(f"release sets interrupted or failed, got {status!r}")
        now = time.time()
        with self.transaction() as db:
            q = ("UPDATE runs SET status = ?, error = ?, finished_at = ?, seconds = ? - started_at "
                 "WHERE worker = ? AND status = 'running'")
            args: list = [status, error, now, now, worker]
            if run_ids is not None:
                q += f" AND id IN ({','.join('?' * len(run_ids))})"
                args += list(run_ids)
            return db.execute(q, args).rowcount

    # ------------------------------------------------------------------ reading

    def counts(self, sweep_id: int) -> dict[str, int]:
        rows = self.db.execute("SELECT r.status, COUNT(*) FROM sweep_runs s JOIN runs r ON r.id = s.run_id "
                               "WHERE s.sweep_id = ? GROUP BY r.status", (sweep_id,)).fetchall()
        return {s: 0 for s in STATUSES} | dict(rows)

    def sweeps(self) -> pd.DataFrame:
        rows = self.db.execute(
            "SELECT w.id, w.name, w.hash, COUNT(s.run_id), SUM(r.status = 'done'), SUM(r.status = 'diverged'), "
            "SUM(r.status = 'failed'), SUM(r.status = 'interrupted'), SUM(r.status = 'running'), "
            "SUM(r.status = 'queued'), w.created, w.updated FROM sweeps w LEFT JOIN sweep_runs s ON s.sweep_id = w.id "
            "LEFT JOIN runs r ON r.id = s.run_id GROUP BY w.id ORDER BY w.id").fetchall()
        return pd.DataFrame(rows, columns=["id", "name", "hash", "runs", "done", "diverged", "failed", "interrupted",
                                           "running", "queued", "created", "updated"])

    RUN_COLUMNS = ("id", "hash", "status", "attempts", "engine", "epochs_done", "final_train_loss", "final_train_acc",
                   "final_val_loss", "final_val_acc", "final_test_loss", "final_test_acc", "diverged_epoch",
                   "diverged_step", "diverge_reason", "error", "seconds", "started_at", "finished_at", "worker",
                   "host")

    def runs(self, sweep_id: int | None = None, status: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per run: its parameters as columns (``init``, ``lr``, ``depth``, ...), then the
        store's columns; in the sweep's order when ``sweep_id`` is given."""
        cols = ", ".join(f"r.{c}" for c in self.RUN_COLUMNS)
        if sweep_id is None:
            rows = self.db.execute(f"SELECT r.params, {cols} FROM runs r ORDER BY r.id").fetchall()
        else:
            rows = self.db.execute(f"SELECT r.params, {cols} FROM sweep_runs s JOIN runs r ON r.id = s.run_id "
                                   "WHERE s.sweep_id = ? ORDER BY s.position", (sweep_id,)).fetchall()
        records = [{**json.loads(r[0]), **dict(zip(self.RUN_COLUMNS, r[1:]))} for r in rows]
        frame = pd.DataFrame.from_records(records)
        if frame.empty:
            return frame
        if status is not None:
            frame = frame[frame["status"].isin(list(status))]
        return frame.reset_index(drop=True)

    def epochs(self, sweep_id: int | None = None, run_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """One row per run per epoch, with the run's ``hash`` and ``id``."""
        q = ("SELECT e.run_id, r.hash, e.epoch, " + ", ".join(f"e.{k}" for k in EPOCH_FIELDS) + ", e.diverged "
             "FROM epochs e JOIN runs r ON r.id = e.run_id")
        args: list = []
        if sweep_id is not None:
            q += " JOIN sweep_runs s ON s.run_id = e.run_id AND s.sweep_id = ?"
            args.append(sweep_id)
        if run_ids is not None:
            q += f" WHERE e.run_id IN ({','.join('?' * len(run_ids))})"
            args += list(run_ids)
        rows = self.db.execute(q + " ORDER BY e.run_id, e.epoch", args).fetchall()
        frame = pd.DataFrame(rows, columns=["id", "hash", "epoch", *EPOCH_FIELDS, "diverged"])
        for k in EPOCH_FIELDS:  # NULL -> NaN even when a whole column is NULL
            frame[k] = pd.to_numeric(frame[k], errors="coerce").astype(float)
        frame["diverged"] = frame["diverged"].astype(bool)
        return frame

    def probes(self, run_id: int) -> pd.DataFrame:
        rows = self.db.execute("SELECT epoch, layer, stats FROM probes WHERE run_id = ? ORDER BY epoch, rowid",
                               (run_id,)).fetchall()
        return pd.DataFrame.from_records([{"epoch": e, **json.loads(s)} for e, _, s in rows])

    def run(self, key: str | int) -> dict:
        """One run by id or hash (a unique hash prefix works): its row, parameters and epochs."""
        text = str(key).strip()
        rows = self.db.execute("SELECT id FROM runs WHERE CAST(id AS TEXT) = ? OR hash = ?", (text, text)).fetchall()
        if not rows and text and all(c in "0123456789abcdef" for c in text.lower()):
            rows = self.db.execute("SELECT id FROM runs WHERE hash LIKE ? LIMIT 2", (text.lower() + "%",)).fetchall()
        if len(rows) != 1:
            raise ValueError(f"no run {text!r} in '{self.path}'" if not rows else
                             f"run {text!r} is ambiguous; give more hash digits or the id")
        run_id = rows[0][0]
        cols = ", ".join(self.RUN_COLUMNS)
        row = self.db.execute(f"SELECT params, {cols}, queued_at, heartbeat, pid FROM runs WHERE id = ?",
                              (run_id,)).fetchone()
        out = dict(zip(self.RUN_COLUMNS, row[1:]))
        out.update(queued_at=row[-3], heartbeat=row[-2], pid=row[-1], params=json.loads(row[0]))
        out["sweeps"] = [r[0] for r in self.db.execute(
            "SELECT w.name FROM sweep_runs s JOIN sweeps w ON w.id = s.sweep_id WHERE s.run_id = ?", (run_id,))]
        out["epochs"] = self.epochs(run_ids=[run_id])
        return out


# ----------------------------------------------------------------------------- reading commands


def open_store(path: str | Path) -> RunStore:
    """The run store at ``path``, which must exist: the commands that read a store never create one."""
    if not Path(path).exists():
        raise ValueError(f"no run store at '{path}'; run `initlab sweep` first or pass --store")
    return RunStore(path)


def select_runs(st: RunStore, sweep: str | None = None, status: str | None = None) -> tuple[dict | None, pd.DataFrame]:
    """The runs of ``sweep`` (name, id or hash; None: every run in the store) whose status is in ``status``
    (comma-separated, e.g. ``"failed,interrupted"``; None: any), with the sweep found (or None)."""
    sw = st.find_sweep(sweep) if sweep is not None else None
    statuses = None if status is None else split_top_level(status, what="--status")
    if statuses:
        bad = [s for s in statuses if s not in STATUSES]
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}; choose from: {', '.join(STATUSES)}")
    return sw, st.runs(sw["id"] if sw else None, statuses)


def export_runs(path: str | Path, out: Path, *, sweep: str | None = None, epochs: bool = False) -> int:
    """Write the runs of ``sweep`` (default: every run) with their parameters as columns to ``out`` (.csv, or
    .parquet with pyarrow); ``epochs``: one row per run per epoch instead. Returns the number of rows."""
    try:
        st = open_store(path)
        sw = st.find_sweep(sweep) if sweep is not None else None
        frame = st.runs(sw["id"] if sw else None)
        if epochs and len(frame):
            ep = st.epochs(sw["id"] if sw else None)
            frame = frame.drop(columns=[c for c in frame.columns if c.startswith("final_")]).merge(
                ep.drop(columns=["hash"]), on="id")
        suffix = out.suffix.lower()
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401  (optional: Parquet only)
            except ImportError:
                raise ValueError("Parquet needs pyarrow (pip install pyarrow); or write .csv") from None
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            files.atomic_write_bytes(out, buf.getvalue())
        elif suffix == ".csv":
            files.atomic_write_csv(out, frame)
        else:
            raise ValueError(f"unknown export format {out.suffix or '(none)'!r}; choose from: .csv, .parquet")
    except OSError as e:
        raise ValueError(f"cannot write '{out}': {e.strerror or e}") from None
    return len(frame)
