"""The SQLite run store: schema, resume skipping finished runs, claims, recovery, interrupts, failures, CLI."""
import json
import sqlite3
import threading

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from initlab.cli import app
from initlab.experiments.compare import compare
from initlab.experiments.sweeps import RunStore, SweepReporter, SweepSpec, make_plan, run_sweep
from initlab.experiments.sweeps.runstore import worker_alive, worker_id


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared machine: one thread is fastest (conftest restores the count afterwards)
    torch.set_num_threads(1)


TINY = {"inits": ["xavier", "he"], "lr": [0.05, 0.2], "seeds": 2, "epochs": 1, "width": 16}


def tiny(**kw):
    return SweepSpec({**TINY, **kw.pop("axes", {})}, **kw)


def test_schema_wal_and_one_row_per_run(tmp_path, digits):
    res = run_sweep(tiny(), tmp_path / "s.db", data=digits)
    assert res.complete and res.trained == 8 and len(res.runs) == 8
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sweeps", "runs", "sweep_runs", "epochs", "probes", "meta"} <= tables
    row = db.execute("SELECT params, status, attempts, host, worker, started_at, finished_at, engine FROM runs "
                     "LIMIT 1").fetchone()
    params = json.loads(row[0])
    assert params["init"] == "xavier" and row[1] == "done" and row[2] == 1 and row[3] and row[7] == "mlp"
    assert row[5] <= row[6]
    # every run has its epoch: train loss, validation and test metrics
    ep = res.epochs
    assert len(ep) == 8 and ep[["train_loss", "val_acc", "val_loss", "test_acc", "test_loss"]].notna().all().all()
    assert res.runs["final_test_acc"].notna().all()


def test_rerun_skips_finished_runs_and_changes_nothing(tmp_path, digits):
    store = tmp_path / "s.db"
    first = run_sweep(tiny(), store, data=digits)
    before = sqlite3.connect(store).execute("SELECT id, attempts, finished_at FROM runs ORDER BY id").fetchall()
    again = run_sweep(tiny(), store, data=digits)
    assert again.trained == 0 and again.complete
    after = sqlite3.connect(store).execute("SELECT id, attempts, finished_at FROM runs ORDER BY id").fetchall()
    assert before == after
    cols = ["train_loss", "val_acc", "test_acc"]
    assert np.array_equal(first.epochs[cols].to_numpy(), again.epochs[cols].to_numpy())
    # a larger sweep reuses the runs it shares (same hash): only the new lr trains
    bigger = run_sweep(tiny(axes={"lr": [0.05, 0.2, 0.5]}), store, data=digits)
    assert bigger.trained == 4 and len(bigger.runs) == 12
    assert len(RunStore(store).sweeps()) == 2


def test_without_validation_split_it_equals_compare(tmp_path, digits):
    spec = SweepSpec({"inits": ["zero", "random", "xavier", "he"], "lr": 0.01, "seeds": 2, "epochs": 2},
                     val_fraction=0.0)
    res = run_sweep(spec, tmp_path / "s.db", data=digits)
    ref = compare(dataset="digits", epochs=2, seeds=2, probe=False)
    got = res.runs.set_index(["init", "seed"])["final_test_acc"].sort_index()
    want = ref.metrics[ref.metrics["epoch"] == 2].set_index(["init", "seed"])["test_acc"].sort_index()
    assert np.allclose(got.to_numpy(), want.to_numpy(), atol=1e-6)
    assert res.epochs["val_acc"].isna().all()


def test_claims_are_disjoint_between_workers(tmp_path):
    spec = tiny(axes={"lr": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5], "seeds": 3})
    plan = make_plan(spec, gflops=1.0, max_group=3)
    store = RunStore(tmp_path / "s.db")
    sweep_id = store.add_sweep(spec.name, spec.to_dict(), spec.hash, plan.runs, plan.hashes,
                               [g.key for g in plan.groups for _ in g.runs])
    got: dict[str, list[int]] = {}

    def worker(name):
        st = RunStore(tmp_path / "s.db")
        mine = []
        while True:
            claimed = st.claim(sweep_id, name, plan.caps())
            if not claimed:
                break
            mine += [c.id for c in claimed]
        got[name] = mine
        st.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for ids in got.values() for i in ids]
    assert len(claimed) == len(set(claimed)) == 36
    assert store.db.execute("SELECT MAX(attempts) FROM runs").fetchone()[0] == 1


def test_dead_workers_runs_are_recovered_and_rerun(tmp_path, digits):
    store = tmp_path / "s.db"
    spec = tiny()
    plan = make_plan(spec, gflops=1.0)
    st = RunStore(store)
    sweep_id = st.add_sweep(spec.name, spec.to_dict(), spec.hash, plan.runs, plan.hashes,
                            [g.key for g in plan.groups for _ in g.runs])
    dead = "nohost-that-exists:12345:1"
    st.claim(sweep_id, dead, {plan.groups[0].key: 3})
    st.db.execute("UPDATE runs SET heartbeat = 0 WHERE worker = ?", (dead,))
    assert not worker_alive(dead, 0.0) and worker_alive(worker_id(), None)
    res = run_sweep(spec, store, data=digits)
    assert res.complete and res.trained == 8
    attempts = sorted(res.runs["attempts"])
    assert attempts == [1] * 5 + [2] * 3  # the dead worker's three runs were claimed twice, trained once


class StopAfter(SweepReporter):
    def __init__(self, n, exc=KeyboardInterrupt):
        self.n, self.exc = n, exc

    def epoch_end(self, run, row):
        self.n -= 1
        if self.n == 0:
            raise self.exc("stop")


def test_interrupt_marks_runs_interrupted_and_resume_finishes(tmp_path, digits):
    store = tmp_path / "s.db"
    spec = tiny(axes={"epochs": 2})
    with pytest.raises(KeyboardInterrupt) as e:
        run_sweep(spec, store, data=digits, max_group=2, reporter=StopAfter(5))
    part = e.value.result
    assert part is not None and not part.complete
    counts = part.counts
    assert counts["running"] == 0 and counts["interrupted"] >= 1 and counts["done"] >= 2
    res = run_sweep(spec, store, data=digits, max_group=2)
    assert res.complete and res.counts["done"] == 8
    ref = run_sweep(spec, tmp_path / "ref.db", data=digits, max_group=2)
    a = res.epochs.sort_values(["hash", "epoch"])[["train_loss", "val_loss", "test_acc"]].to_numpy()
    b = ref.epochs.sort_values(["hash", "epoch"])[["train_loss", "val_loss", "test_acc"]].to_numpy()
    assert np.allclose(a, b, atol=1e-5)


def test_a_failing_group_is_recorded_and_retried(tmp_path, digits):
    store = tmp_path / "s.db"
    with pytest.warns(UserWarning, match="8 run.s. of mlp.* failed: RuntimeError: stop"):
        res = run_sweep(tiny(), store, data=digits, reporter=StopAfter(1, RuntimeError))
    assert res.counts["failed"] == 8 and "RuntimeError: stop" in res.errors[0]
    assert (res.runs["error"] == "RuntimeError: stop").all()
    again = run_sweep(tiny(), store, data=digits)
    assert again.complete and (again.runs["attempts"] == 2).all() and again.runs["error"].isna().all()


def test_cli_runs_list_show_export(tmp_path, digits):
    store = str(tmp_path / "s.db")
    run_sweep(tiny(name="tiny"), store, data=digits)
    r = CliRunner()
    env = {"COLUMNS": "200"}
    out = r.invoke(app, ["runs", "list", "--store", store], env=env)
    assert out.exit_code == 0 and "tiny" in out.output
    out = r.invoke(app, ["runs", "list", "--sweep", "tiny", "--store", store], env=env)
    assert out.exit_code == 0 and out.output.count(" done ") == 8
    out = r.invoke(app, ["runs", "show", "1", "--store", store], env=env)
    assert out.exit_code == 0 and "epochs" in out.output and "xavier" in out.output
    csv = tmp_path / "runs.csv"
    out = r.invoke(app, ["runs", "export", "--out", str(csv), "--store", store])
    assert out.exit_code == 0
    import pandas as pd

    frame = pd.read_csv(csv)
    assert len(frame) == 8 and {"init", "lr", "seed", "final_val_acc", "status"} <= set(frame.columns)
    out = r.invoke(app, ["runs", "export", "--out", str(tmp_path / "e.csv"), "--epochs", "--store", store])
    assert out.exit_code == 0 and len(pd.read_csv(tmp_path / "e.csv")) == 8
    out = r.invoke(app, ["runs", "export", "--out", str(tmp_path / "x.json"), "--store", store])
    assert out.exit_code == 2 and "choose from: .csv, .parquet" in out.output
    out = r.invoke(app, ["runs", "show", "999", "--store", store])
    assert out.exit_code == 2 and "no run '999'" in out.output
    out = r.invoke(app, ["runs", "list", "--store", str(tmp_path / "none.db")])
    assert out.exit_code == 2 and "no run store" in out.output


def test_probe_statistics_at_init_and_after_the_last_epoch(tmp_path, digits):
    res = run_sweep(tiny(axes={"inits": ["he"], "lr": 0.1, "seeds": 1, "epochs": 2}, probe=True,
                         train_eval="every"), tmp_path / "s.db", data=digits)
    st = RunStore(tmp_path / "s.db")
    probes = st.probes(int(res.runs["id"][0]))
    assert sorted(probes["epoch"].unique()) == [0, 2]
    assert {"name", "out_std", "dead_frac"} <= set(probes.columns) and len(probes) == 2 * 3
    assert res.epochs["train_acc"].notna().all()
