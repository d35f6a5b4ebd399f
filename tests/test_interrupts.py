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

Both engines are covered. The batched engine normally trains all four runs here as one group, so
one test also runs it with groups of two runs (``default_max_models`` patched in the child
process, and in the reference run) to have done runs next to interrupted ones.
"""
from __future__ import annotations

import json
import os
import re
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
import initlab.engine

INITS, SEEDS = ("he", "xavier"), 2
KEYS = {(i, s) for i in INITS for s in range(SEEDS)}
BASE = ["--dataset", "digits", "--inits", ",".join(INITS), "--seeds", str(SEEDS), "--hidden", "32"]
# name -> (engine, epochs, group size forced on the batched engine or None)
CONFIGS = {
    "batched": ("batched", 60, None),
    "batched-groups-of-2": ("batched", 60, 2),
    "single": ("single", 30, None),
}
NUMERIC = ["train_loss", "test_loss", "test_acc"]
# Runs `initlab` with the batched engine's group size fixed to argv[1] (then dropped from argv).
GROUP_LAUNCHER = ("import sys, initlab.engine as e; n = int(sys.argv.pop(1)); "
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


def _wait_until(child: Child, out: Path, cond, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            pytest.fail(f"initlab exited before {what}\n{child.describe()}")
        state = _read(out)
        if state is not None and cond(*state):
            return
        time.sleep(0.01)
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
    assert "not started" in msg or not queued
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


def check_resumed(out: Path, ref: Path, before: pd.DataFrame, before_runs: pd.DataFrame, epochs: int,
                  steps_before: list[str]):
    """Resume finished exactly the missing runs and the result is the uninterrupted one."""
    runs, metrics = check_runs_and_metrics(out, {"done"}, epochs)
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    kept = list(zip(before_runs.loc[before_runs["status"] == "done", "init"],
                    before_runs.loc[before_runs["status"] == "done", "seed"]))
    rerun = [k for k in zip(runs["init"], runs["seed"]) if k not in set(kept)]
    # done runs keep their rows, as values and as text
    pd.testing.assert_frame_equal(_key_rows(metrics, kept), _key_rows(before, kept), check_exact=True)
    assert _csv_lines(out / "steps.csv", kept) == steps_before

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
                        m.setattr(initlab.engine, "default_max_models", lambda *a, **k: group)
                    initlab.compare(inits=",".join(INITS), dataset="digits", epochs=epochs, seeds=SEEDS,
                                    hidden="32", engine=engine, out=out)
            finally:
                torch.set_num_threads(threads)
            _REFERENCES[config] = out
        return _REFERENCES[config]
    return get


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


def test_python_m_initlab_cli_runs():
    r = subprocess.run([sys.executable, "-m", "initlab.cli", "compare", "--help"], capture_output=True,
                       text=True, env=_env(), timeout=TIMEOUT)
    assert r.returncode == 0 and "--resume" in r.stdout, r.stderr


def test_sigint_batched_one_group_nothing_finished_then_resume(tmp_path, reference):
    """All four runs train as one group: Ctrl-C leaves four interrupted runs and says 0 finished."""
    epochs = CONFIGS["batched"][1]
    child, out = _interrupt("batched", tmp_path, all_running_for(3), "every run has 3 epochs", signal.SIGINT)
    runs, metrics = check_clean_stop(child, out, 130, epochs)
    assert (runs["status"] == "interrupted").all(), runs
    assert ": 0 of 4 runs finished (0 done, 0 diverged)" in child.stderr
    resume("batched", out, tmp_path / "resume")
    check_resumed(out, reference("batched"), metrics, runs, epochs, [])


def test_sigterm_batched_groups_then_resume(tmp_path, reference):
    """Groups of two runs: SIGTERM in the second group leaves 2 done and 2 interrupted runs."""
    epochs = CONFIGS["batched-groups-of-2"][1]
    child, out = _interrupt("batched-groups-of-2", tmp_path, done_and_running(2, 2),
                            "the first group done and the second under way", signal.SIGTERM)
    runs, metrics = check_clean_stop(child, out, 143, epochs)
    assert list(runs["status"]) == ["done", "done", "interrupted", "interrupted"], runs
    kept = list(zip(runs["init"][:2], runs["seed"][:2]))
    steps_before = _csv_lines(out / "steps.csv", kept)
    assert steps_before
    resume("batched-groups-of-2", out, tmp_path / "resume")
    check_resumed(out, reference("batched-groups-of-2"), metrics, runs, epochs, steps_before)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_single_engine_then_resume(tmp_path, reference, sig, code):
    """One run at a time: stopped in the second run, one done, one interrupted, two not started."""
    epochs = CONFIGS["single"][1]
    child, out = _interrupt("single", tmp_path, done_and_running(1, 3), "run 1 done and run 2 under way", sig)
    runs, metrics = check_clean_stop(child, out, code, epochs)
    assert list(runs["status"]) == ["done", "interrupted", "queued", "queued"], runs
    assert "2 not started" in child.stderr
    kept = [(runs["init"][0], runs["seed"][0])]
    steps_before = _csv_lines(out / "steps.csv", kept)
    resume("single", out, tmp_path / "resume")
    check_resumed(out, reference("single"), metrics, runs, epochs, steps_before)


@pytest.mark.parametrize("config, done", [("batched-groups-of-2", 2), ("single", 1)])
def test_kill_9_then_resume(tmp_path, reference, config, done):
    """SIGKILL leaves no clean-up: runs stay "running", but every file is whole and resume finishes."""
    epochs = CONFIGS[config][1]
    child, out = _interrupt(config, tmp_path, done_and_running(done, 2), f"{done} runs done, next under way",
                            signal.SIGKILL)
    assert child.proc.returncode == -signal.SIGKILL
    runs, metrics = check_killed(out, epochs)
    assert (runs["status"] == "done").sum() == done
    kept = list(zip(runs.loc[runs["status"] == "done", "init"], runs.loc[runs["status"] == "done", "seed"]))
    steps_before = _csv_lines(out / "steps.csv", kept)
    resume(config, out, tmp_path / "resume")
    check_resumed(out, reference(config), metrics, runs, epochs, steps_before)
