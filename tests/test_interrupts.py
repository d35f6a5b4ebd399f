"""Ctrl-C, SIGTERM and ``kill -9`` of a real ``initlab compare`` process, then ``--resume``.

Each test starts ``initlab compare`` as a subprocess (``python -m initlab.cli``), waits until the
result folder shows the comparison demonstrably in progress (polling runs.csv/metrics.csv, never a
fixed sleep), sends a signal, and checks what the folder and the process say:

* SIGINT -> exit 130, SIGTERM -> exit 143, each with one true line on stderr (how many runs
  finished, were interrupted after how many epochs, were not started); runs.csv has one row per
  (init, seed) with a status in {done, diverged, interrupted, queued} (no "running" left);
  metrics.csv has only whole epochs 1..epochs_done of each run, with the run's status;
  summary.json says "interrupted".
* SIGKILL -> every file still parses (atomic writes), statuses are in {done, diverged, running,
  queued} and metrics.csv matches runs.csv's epochs_done.
* ``--resume`` with the same options then finishes exactly the missing runs: runs that were done
  keep their metrics.csv rows byte for byte, and the final metrics equal an uninterrupted run of
  the same command (run in-process into another folder): exactly for the kept runs, up to float32
  summation order (rtol 1e-5) for the rerun ones; runs.csv all done, summary.json "complete".

Both engines are covered (SIGINT: batched and single; SIGTERM: batched; SIGKILL: both). The
batched engine normally trains all four runs here as one group, so some tests run it with groups
of two runs (``default_max_models`` patched in the child process and in the reference run) to
have done runs next to interrupted ones.

metrics.csv and runs.csv are two atomic files written one after the other (metrics.csv, the
record, first), so a kill -9 between the two writes leaves runs.csv one update behind: the
documented contract (initlab.experiments.runbook). The random kill -9 tests kill the child (stopped with
SIGSTOP first) at a moment when the two files agree; test_kill_9_between_metrics_csv_and_runs_csv
kills it deterministically inside the gap, at an epoch and at a run's end, and checks that runs.csv
lags by exactly that one update and that resume, which reads metrics.csv, finishes every run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import initlab
import initlab.training.mlp_engine

INITS, SEEDS = ("he", "xavier"), 2
KEYS = {(i, s) for i in INITS for s in range(SEEDS)}
BASE = ["--dataset", "digits", "--inits", ",".join(INITS), "--seeds", str(SEEDS), "--hidden", "32"]
# name -> (engine, epochs, group size forced on the batched engine or None)
CONFIGS = {
    "batched": ("batched", 60, None),
    "batched-groups-of-2": ("batched", 60, 2),
    "single": ("single", 20, None),
}
NUMERIC = ["train_loss", "test_loss", "test_acc"]
# Runs `initlab` with the batched engine's group size fixed to argv[1] (then dropped from argv).
GROUP_LAUNCHER = ("import sys, initlab.training.mlp_engine as e; n = int(sys.argv.pop(1)); "
                  "e.default_max_models = lambda *a, **k: n; from initlab.cli import main; main()")
TIMEOUT = 60


def _argv(config: str, out: Path, *extra: str) -> list[str]:
    engine, epochs, group = CONFIGS[config]
    head = [sys.executable, "-m", "initlab.cli"] if group is None else [sys.executable, "-c", GROUP_LAUNCHER, str(group)]
    return [*head, "compare", *BASE, "--epochs", str(epochs), "--engine", engine, "--out", str(out), *extra]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    src = str(Path(initlab.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


class Child:
    """One `initlab compare` subprocess with stdout/stderr in files (no pipe to fill up)."""

    def __init__(self, argv: list[str], logs: Path):
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / "stdout.txt", logs / "stderr.txt"
        with open(self.stdout_path, "wb") as so, open(self.stderr_path, "wb") as se:
            self.proc = subprocess.Popen(argv, stdout=so, stderr=se, stdin=subprocess.DEVNULL, env=_env())

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def describe(self) -> str:
        return f"rc={self.proc.returncode}\nstdout:\n{self.stdout_path.read_text()}\nstderr:\n{self.stderr}"

    def wait(self, timeout=TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"initlab did not exit within {timeout} s\n{self.describe()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _read(out: Path):
    """(runs, metrics) as they are on disk now, or None while either file is missing."""
    try:
        return pd.read_csv(out / "runs.csv"), pd.read_csv(out / "metrics.csv")
    except FileNotFoundError:
        return None


def _stamp(out: Path):
    try:
        return tuple((st.st_mtime_ns, st.st_size) for st in (os.stat(out / n) for n in ("runs.csv", "metrics.csv")))
    except FileNotFoundError:
        return None


def _wait_until(child: Child, out: Path, cond, what: str) -> None:
    """Poll the folder (parsing it only when it changed) until ``cond(runs, metrics)``."""
    deadline, seen = time.monotonic() + TIMEOUT, None
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            pytest.fail(f"initlab exited before {what}\n{child.describe()}")
        stamp = _stamp(out)
        if stamp is not None and stamp != seen:
            seen = stamp
            state = _read(out)
            if state is not None and cond(*state):
                return
        time.sleep(0.02)
    child.kill()
    pytest.fail(f"timed out waiting for {what}\n{child.describe()}")


def _epoch_rows(metrics: pd.DataFrame, status: str, runs: pd.DataFrame) -> pd.Series:
    """Epoch rows (epoch > 0) per run with ``status`` in runs.csv."""
    keys = set(zip(runs.loc[runs["status"] == status, "init"], runs.loc[runs["status"] == status, "seed"]))
    m = metrics[metrics["epoch"] > 0]
    m = m[np.array([k in keys for k in zip(m["init"], m["seed"])], dtype=bool)]
    return m.groupby(["init", "seed"]).size()


def all_running_for(epochs: int):
    """Every run started and has at least ``epochs`` epochs on disk (one batched group)."""
    def cond(runs, metrics):
        n = _epoch_rows(metrics, "running", runs)
        return len(n) == len(KEYS) and n.min() >= epochs
    return cond


def done_and_running(done: int, epochs: int):
    """Exactly ``done`` runs done and every running run has at least ``epochs`` epochs on disk."""
    def cond(runs, metrics):
        if (runs["status"] == "done").sum() != done or not (runs["status"] == "running").any():
            return False
        n = _epoch_rows(metrics, "running", runs)
        return len(n) == (runs["status"] == "running").sum() and n.min() >= epochs
    return cond


def _key_rows(frame: pd.DataFrame, keys) -> pd.DataFrame:
    keys = set(keys)
    return frame[np.array([k in keys for k in zip(frame["init"], frame["seed"])], dtype=bool)].reset_index(drop=True)


def _csv_lines(path: Path, keys) -> list[str]:
    """The text lines of a CSV that belong to the runs ``keys`` (init and seed are its first columns)."""
    frame = pd.read_csv(path)
    lines = path.read_text().splitlines()[1:]
    return [line for line, k in zip(lines, zip(frame["init"], frame["seed"])) if k in set(keys)]


def check_runs_and_metrics(out: Path, allowed: set[str], epochs: int):
    """One row per (init, seed) with an allowed status; metrics.csv: whole epochs 1..epochs_done
    of every run, each row with its run's status."""
    runs, metrics = _read(out)
    assert len(runs) == len(KEYS) and set(zip(runs["init"], runs["seed"])) == KEYS, runs
    assert set(runs["status"]) <= allowed, runs
    for r in runs.itertuples():
        m = metrics[(metrics["init"] == r.init) & (metrics["seed"] == r.seed)]
        assert list(m["epoch"]) == list(range(1, r.epochs_done + 1)), (r, m)
        assert (m["status"] == r.status).all(), (r, m)
        if r.status in ("done", "interrupted", "running"):
            assert np.isfinite(m[NUMERIC].to_numpy()).all(), m
            assert not m["diverged"].any(), m
        if r.status == "done":
            assert r.epochs_done == epochs, r
        if r.status == "queued":
            assert r.epochs_done == 0, r
    assert len(metrics) == runs["epochs_done"].sum()
    return runs, metrics


def check_clean_stop(child: Child, out: Path, code: int, epochs: int):
    """What SIGINT/SIGTERM must leave: exit code, one true line on stderr, a consistent folder."""
    rc = child.wait()
    assert rc == code, child.describe()
    runs, metrics = check_runs_and_metrics(out, {"done", "diverged", "interrupted", "queued"}, epochs)
    assert (runs["status"] == "interrupted").any(), runs  # it was stopped mid-run

    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, child.describe()
    msg = lines[0]
    assert "Traceback" not in child.stderr
    word = "terminated" if code == 143 else "interrupted"
    assert msg.startswith(word + ":"), msg
    st = runs["status"]
    done, div = int((st == "done").sum()), int((st == "diverged").sum())
    assert f": {done + div} of {len(runs)} runs finished ({done} done, {div} diverged)" in msg, msg
    cut = runs[st == "interrupted"]
    lo, hi = int(cut["epochs_done"].min()), int(cut["epochs_done"].max())
    span = str(lo) if lo == hi else f"{lo}–{hi}"
    assert f"{len(cut)} interrupted after {span} of {epochs} epochs" in msg, msg
    queued = int((st == "queued").sum())
    assert (f"{queued} not started" in msg) == bool(queued), msg
    assert "--resume" in msg, msg

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert [(r["init"], r["seed"], r["status"], r["epochs_done"]) for r in summary["runs"]] == \
        list(zip(runs["init"], runs["seed"], runs["status"], runs["epochs_done"]))
    return runs, metrics


def check_killed(out: Path, epochs: int):
    """After SIGKILL: every file parses; statuses as a crash leaves them; metrics match runs.csv."""
    for name in (".initlab.json", "config.json", "summary.json"):
        if (out / name).exists():
            json.loads((out / name).read_text())
    for name in ("runs.csv", "metrics.csv", "steps.csv", "probe.csv"):
        if (out / name).exists():
            pd.read_csv(out / name)
    assert not (out / "summary.json").exists()  # written only when the comparison ends or stops cleanly
    runs, metrics = check_runs_and_metrics(out, {"done", "diverged", "running", "queued"}, epochs)
    assert (runs["status"] == "running").any(), runs
    return runs, metrics


def resume(config: str, out: Path, logs: Path) -> None:
    child = Child(_argv(config, out, "--resume"), logs)
    assert child.wait() == 0, child.describe()


def kept_text(out: Path, runs: pd.DataFrame) -> list[list[str]]:
    """The metrics.csv and steps.csv lines of the runs that are done, as text."""
    kept = list(zip(runs.loc[runs["status"] == "done", "init"], runs.loc[runs["status"] == "done", "seed"]))
    return [_csv_lines(out / name, kept) for name in ("metrics.csv", "steps.csv")]


def check_resumed(out: Path, ref: Path, before: pd.DataFrame, before_runs: pd.DataFrame, epochs: int,
                  text_before: list[list[str]]):
    """Resume finished exactly the missing runs and the result is the uninterrupted one."""
    runs, metrics = check_runs_and_metrics(out, {"done"}, epochs)
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    kept = list(zip(before_runs.loc[before_runs["status"] == "done", "init"],
                    before_runs.loc[before_runs["status"] == "done", "seed"]))
    rerun = [k for k in zip(runs["init"], runs["seed"]) if k not in set(kept)]
    # done runs keep their rows, as values and as text
    pd.testing.assert_frame_equal(_key_rows(metrics, kept), _key_rows(before, kept), check_exact=True)
    assert kept_text(out, before_runs) == text_before

    ref_runs, ref_metrics = _read(ref)
    assert (ref_runs["status"] == "done").all()
    for keys, exact in ((kept, True), (rerun, False)):
        got, want = _key_rows(metrics, keys), _key_rows(ref_metrics, keys)
        assert list(zip(got["init"], got["seed"], got["epoch"])) == list(zip(want["init"], want["seed"], want["epoch"]))
        if exact:
            np.testing.assert_array_equal(got[NUMERIC].to_numpy(), want[NUMERIC].to_numpy())
        else:
            np.testing.assert_allclose(got[NUMERIC].to_numpy(), want[NUMERIC].to_numpy(), rtol=1e-5)
    steps, ref_steps = pd.read_csv(out / "steps.csv"), pd.read_csv(ref / "steps.csv")
    assert len(steps) == len(ref_steps)
    np.testing.assert_allclose(steps["train_loss"], ref_steps["train_loss"], rtol=1e-5)


_REFERENCES: dict[str, Path] = {}


@pytest.fixture
def reference(tmp_path_factory, monkeypatch):
    """Uninterrupted result folder of a configuration, computed in-process once per session."""
    def get(config: str) -> Path:
        if config not in _REFERENCES:
            engine, epochs, group = CONFIGS[config]
            out = tmp_path_factory.mktemp("reference") / config
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the children (OMP_NUM_THREADS=1)
            try:
                with monkeypatch.context() as m:
                    if group is not None:
                        m.setattr(initlab.training.mlp_engine, "default_max_models", lambda *a, **k: group)
                    initlab.compare(inits=",".join(INITS), dataset="digits", epochs=epochs, seeds=SEEDS,
                                    hidden="32", engine=engine, out=out)
            finally:
                torch.set_num_threads(threads)
            _REFERENCES[config] = out
        return _REFERENCES[config]
    return get


def _agree(runs: pd.DataFrame, metrics: pd.DataFrame) -> bool:
    """metrics.csv has epochs 1..epochs_done of every run in runs.csv, with the run's status."""
    for r in runs.itertuples():
        m = metrics[(metrics["init"] == r.init) & (metrics["seed"] == r.seed)]
        if list(m["epoch"]) != list(range(1, r.epochs_done + 1)) or not (m["status"] == r.status).all():
            return False
    return True


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _kill_9_between_writes(child: Child, out: Path) -> None:
    """SIGKILL at a moment when metrics.csv and runs.csv agree.

    The process is stopped (SIGSTOP) and killed only if the two files agree; otherwise it goes on
    and is tried again a little later. The moment between the two files' writes, when they do
    not agree, is covered on its own by test_kill_9_between_metrics_csv_and_runs_csv.
    """
    pid = child.proc.pid
    for _ in range(500):
        child.proc.send_signal(signal.SIGSTOP)
        while (st := _proc_state(pid)) not in "Tt":
            assert st not in "ZXx", f"initlab exited before kill -9\n{child.describe()}"
            time.sleep(0.001)
        state = _read(out)
        if _agree(*state):
            child.proc.send_signal(signal.SIGKILL)
            assert child.proc.wait(TIMEOUT) == -signal.SIGKILL
            return
        child.proc.send_signal(signal.SIGCONT)
        time.sleep(0.003)
    pytest.fail("metrics.csv and runs.csv never agreed while initlab ran")


def _interrupt(config: str, tmp_path: Path, cond, what: str, sig: int) -> tuple[Child, Path]:
    out = tmp_path / "out"
    child = Child(_argv(config, out), tmp_path / "first")
    try:
        _wait_until(child, out, cond, what)
        child.proc.send_signal(sig)
        child.wait()
    finally:
        child.kill()
    return child, out


def test_sigint_batched_one_group_nothing_finished_then_resume(tmp_path, reference):
    """All four runs train as one group: Ctrl-C leaves four interrupted runs and says 0 finished."""
    epochs = CONFIGS["batched"][1]
    child, out = _interrupt("batched", tmp_path, all_running_for(3), "every run has 3 epochs", signal.SIGINT)
    runs, metrics = check_clean_stop(child, out, 130, epochs)
    assert (runs["status"] == "interrupted").all(), runs
    assert ": 0 of 4 runs finished (0 done, 0 diverged)" in child.stderr
    text = kept_text(out, runs)
    assert text == [[], []]
    resume("batched", out, tmp_path / "resume")
    check_resumed(out, reference("batched"), metrics, runs, epochs, text)


def test_sigterm_batched_groups_then_resume(tmp_path, reference):
    """Groups of two runs: SIGTERM in the second group leaves 2 done and 2 interrupted runs."""
    epochs = CONFIGS["batched-groups-of-2"][1]
    child, out = _interrupt("batched-groups-of-2", tmp_path, done_and_running(2, 2),
                            "the first group done and the second under way", signal.SIGTERM)
    runs, metrics = check_clean_stop(child, out, 143, epochs)
    assert list(runs["status"]) == ["done", "done", "interrupted", "interrupted"], runs
    text = kept_text(out, runs)
    assert len(text[0]) == 2 * epochs and text[1]
    resume("batched-groups-of-2", out, tmp_path / "resume")
    check_resumed(out, reference("batched-groups-of-2"), metrics, runs, epochs, text)


def test_sigint_single_engine_then_resume(tmp_path, reference):
    """One run at a time: Ctrl-C in the second run leaves one done, one interrupted, two not started."""
    epochs = CONFIGS["single"][1]
    child, out = _interrupt("single", tmp_path, done_and_running(1, 3), "run 1 done and run 2 under way",
                            signal.SIGINT)
    runs, metrics = check_clean_stop(child, out, 130, epochs)
    st = list(runs["status"])  # normally done, interrupted, queued, queued
    k = st.count("done")
    assert k >= 1 and st == ["done"] * k + ["interrupted"] + ["queued"] * (3 - k), runs
    text = kept_text(out, runs)
    assert len(text[0]) == k * epochs and text[1]
    resume("single", out, tmp_path / "resume")
    check_resumed(out, reference("single"), metrics, runs, epochs, text)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the child stopped")
@pytest.mark.parametrize("config, done", [("batched-groups-of-2", 2), ("single", 1)])
def test_kill_9_then_resume(tmp_path, reference, config, done):
    """SIGKILL leaves no clean-up: runs stay "running", but every file is whole and resume finishes."""
    epochs = CONFIGS[config][1]
    out = tmp_path / "out"
    child = Child(_argv(config, out), tmp_path / "first")
    try:
        _wait_until(child, out, done_and_running(done, 2), f"{done} runs done, next under way")
        _kill_9_between_writes(child, out)
    finally:
        child.kill()
    runs, metrics = check_killed(out, epochs)
    assert (runs["status"] == "done").sum() == done
    text = kept_text(out, runs)
    assert len(text[0]) == done * epochs and text[1]
    resume(config, out, tmp_path / "resume")
    check_resumed(out, reference(config), metrics, runs, epochs, text)


# Kills initlab right after the first metrics.csv write for which CONDITION holds, i.e. between the
# writes of metrics.csv and runs.csv in RunBook.write.
KILL_AFTER_METRICS = """
import os, signal, sys
import initlab.store as store
condition = sys.argv.pop(1)
write = store.atomic_write_csv
def atomic_write_csv(path, frame):
    write(path, frame)
    if path.name == "metrics.csv" and eval(condition, {"frame": frame}):
        os.kill(os.getpid(), signal.SIGKILL)
store.atomic_write_csv = atomic_write_csv
from initlab.cli import main
main()
"""


@pytest.mark.parametrize("condition, epochs", [('(frame["epoch"] >= 2).any()', 3),
                                               ('(frame["status"] == "done").any()', 2)])
def test_kill_9_between_metrics_csv_and_runs_csv(tmp_path, condition, epochs):
    """kill -9 between the two writes: runs.csv lags metrics.csv by one update, never more, never
    ahead; resume reads metrics.csv and finishes every run."""
    out = tmp_path / "out"
    args = ["compare", *BASE, "--epochs", str(epochs), "--engine", "single", "--out", str(out)]
    child = Child([sys.executable, "-c", KILL_AFTER_METRICS, condition, *args], tmp_path / "first")
    assert child.wait() == -signal.SIGKILL, child.describe()
    json.loads((out / "config.json").read_text())
    runs, metrics = _read(out)
    first = metrics[(metrics["init"] == INITS[0]) & (metrics["seed"] == 0)]
    r0 = runs.iloc[0]
    assert r0["status"] == "running"
    assert len(first) == r0["epochs_done"] + (1 if "epoch" in condition else 0)  # one epoch ahead at most
    if "done" in condition:  # the run's last write: metrics says done, runs.csv not yet
        assert set(first["status"]) == {"done"} and len(first) == epochs
    child = Child([sys.executable, "-m", "initlab.cli", *args, "--resume"], tmp_path / "resume")
    assert child.wait() == 0, child.describe()
    check_runs_and_metrics(out, {"done"}, epochs)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the child stopped")
@pytest.mark.parametrize("config", ["batched", "single"])
def test_kill_9_keeps_the_step_rows_of_every_epoch_on_disk(tmp_path, config):
    """Per-step losses reach steps.csv every epoch, before the epoch's metrics row: after kill -9 every
    epoch that metrics.csv records has its steps on disk (steps.csv held only its header before)."""
    out = tmp_path / "out"
    child = Child(_argv(config, out), tmp_path / "first")
    try:
        cond = all_running_for(5) if config == "batched" else done_and_running(0, 5)
        _wait_until(child, out, cond, "runs under way with 5 epochs on disk")
        _kill_9_between_writes(child, out)
    finally:
        child.kill()
    runs, metrics = check_killed(out, CONFIGS[config][1])
    steps = pd.read_csv(out / "steps.csv")
    per_epoch = -(-1437 // 64)  # digits: 1437 training examples, batch 64
    running = runs[runs["status"] == "running"]
    assert len(running)
    for r in running.itertuples():
        s = steps[(steps["init"] == r.init) & (steps["seed"] == r.seed)]
        on_disk = int(((metrics["init"] == r.init) & (metrics["seed"] == r.seed)).sum())
        assert on_disk >= 5
        assert len(s) >= on_disk * per_epoch, (r, len(s), on_disk)
        assert list(s["step"]) == list(range(len(s)))  # whole epochs, in order, no gap
        assert np.isfinite(s["train_loss"]).all()
