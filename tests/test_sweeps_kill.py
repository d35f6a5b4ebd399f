"""Crash safety of the run store: ``kill -9`` at random moments, then resume; two workers on one store.

Workers are forked from the test process (torch and the data are already loaded there, so a worker
starts in milliseconds instead of the seconds a fresh interpreter takes); a forked worker sets one
torch thread first, as DataLoader workers do, and never touches the parent's connections.
"""
import os
import random
import signal
import sqlite3
import time

import numpy as np
import pytest
import torch

from initlab.experiments.sweeps import SweepSpec, run_sweep


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared machine: one thread is fastest (conftest restores the count afterwards)
    torch.set_num_threads(1)


# 3 engine groups (depth 1, 2, 3) × 2 inits × 2 lrs × 2 seeds = 24 runs of 2 epochs, 2 models at once:
# 12 chunks, so a kill lands between commits, inside a chunk, or during set-up.
SPEC = SweepSpec({"inits": ["xavier", "he"], "lr": [0.05, 0.2], "seeds": 2, "epochs": 2, "width": 12,
                  "depth": [1, 2, 3]}, name="kill")
COLS = ["train_loss", "val_loss", "val_acc", "test_loss", "test_acc"]


def _fork_worker(store, digits, max_group=2):
    pid = os.fork()
    if pid == 0:  # the worker: run the sweep, never return into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            run_sweep(SPEC, store, data=digits, max_group=max_group)
            code = 0
        finally:
            os._exit(code)
    return pid


def _finished(store):
    db = sqlite3.connect(store)
    try:
        return {h: (a, f) for h, a, f in db.execute(
            "SELECT hash, attempts, finished_at FROM runs WHERE status IN ('done', 'diverged')")}
    except sqlite3.OperationalError:  # killed before the schema existed
        return {}
    finally:
        db.close()


def _epochs(res):
    return res.epochs.sort_values(["hash", "epoch"])[["hash", "epoch", *COLS]].reset_index(drop=True)


def test_kill_9_at_random_moments_then_resume(tmp_path, digits):
    t0 = time.perf_counter()
    ref = run_sweep(SPEC, tmp_path / "ref.db", data=digits, max_group=2)
    duration = time.perf_counter() - t0
    assert ref.complete and len(ref.runs) == 24
    store = tmp_path / "killed.db"
    rng = random.Random(11)
    kills = 0
    seen: dict = {}
    progress = []  # runs finished after each kill
    for _ in range(12):
        # a random moment within the work left (each kill loses at most the chunk in progress)
        left = 1 - len(seen) / 24
        pid = _fork_worker(store, digits)
        time.sleep(rng.uniform(0.01, 0.8 * duration * left + 0.02))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        kills += os.WIFSIGNALED(status)  # killed mid-sweep (not already finished)
        now = _finished(store)
        for h, v in seen.items():  # a finished run is never trained again
            assert now[h] == v
        seen = now
        progress.append(len(seen))
        if kills == 5 or len(seen) == 24:
            break
    assert kills >= 5
    print("runs finished after each kill:", progress)
    assert len(set(progress)) >= 3  # the kills landed at different points of the sweep
    res = run_sweep(SPEC, store, data=digits, max_group=2)
    assert res.complete and res.counts["running"] == 0 and len(res.runs) == 24
    for h, v in seen.items():
        assert _finished(store)[h] == v
    # every run exactly once: one row per run, one row per (run, epoch), results as uninterrupted
    assert res.runs["hash"].is_unique and len(res.epochs) == 24 * 2
    a, b = _epochs(res), _epochs(ref)
    assert (a["hash"] == b["hash"]).all() and (a["epoch"] == b["epoch"]).all()
    assert np.allclose(a[COLS].to_numpy(), b[COLS].to_numpy(), atol=1e-5, equal_nan=True)


def test_two_workers_on_one_store_never_run_the_same_run(tmp_path, digits):
    store = tmp_path / "shared.db"
    pids = [_fork_worker(store, digits, max_group=1) for _ in range(2)]
    codes = [os.waitpid(p, 0)[1] for p in pids]
    assert all(os.WIFEXITED(c) and os.WEXITSTATUS(c) == 0 for c in codes), codes
    db = sqlite3.connect(store)
    rows = db.execute("SELECT status, attempts, worker FROM runs").fetchall()
    assert len(rows) == 24
    assert all(s == "done" and a == 1 for s, a, _ in rows)  # each run claimed (and trained) exactly once
    workers = {w for _, _, w in rows}
    assert 1 <= len(workers) <= 2
    ref = run_sweep(SPEC, tmp_path / "ref.db", data=digits, max_group=1)
    res = run_sweep(SPEC, store, data=digits)  # nothing left to do
    assert res.trained == 0
    assert np.allclose(_epochs(res)[COLS].to_numpy(), _epochs(ref)[COLS].to_numpy(), atol=1e-5, equal_nan=True)


def test_sigterm_leaves_the_store_consistent(tmp_path, digits):
    store = tmp_path / "term.db"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)

            def on_term(signum, frame):  # what `initlab` does: SIGTERM stops like Ctrl-C
                raise KeyboardInterrupt()

            signal.signal(signal.SIGTERM, on_term)
            try:
                run_sweep(SPEC, store, data=digits, max_group=2)
                code = 0
            except KeyboardInterrupt:
                code = 143
        finally:
            os._exit(code)
    time.sleep(0.4)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 143)
    db = sqlite3.connect(store)
    counts = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    assert "running" not in counts  # handed back as interrupted, not left for recovery
    if os.WEXITSTATUS(status) == 143:
        assert counts.get("interrupted", 0) + counts.get("queued", 0) > 0
    res = run_sweep(SPEC, store, data=digits, max_group=2)
    assert res.complete and (res.runs["attempts"] <= 2).all()
