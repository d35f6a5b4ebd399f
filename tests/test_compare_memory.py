"""Memory bounded for many seeds: with a result folder a finished run's rows live on disk only, the
result's frames are read from the folder (equal to an in-memory comparison's), runs train in chunks
of at most CHUNK_MAX_MODELS, and the plan shows the estimate (issue 18)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import initlab.experiments.compare as ex
from initlab.cli import app
from initlab.experiments.compare import CompareSpec, Deferred, Reporter, run_compare
from initlab.experiments.runbook import RunBook
from initlab.training.loop import TrainConfig

INITS = ("zero", "he", "normal(std=1e+20)")  # the last one diverges at init: an epoch-0 row, a reason


def _spec(seeds, **kw):
    return CompareSpec(inits=kw.pop("inits", INITS), dataset="digits", hidden=(8,), seeds=seeds, device="cpu",
                       engine=kw.pop("engine", "batched"), train=TrainConfig(epochs=kw.pop("epochs", 2), **kw))


@pytest.fixture
def books(monkeypatch):
    """Every RunBook run_compare makes, with the most rows it held in memory after any write."""
    made = []

    class Spy(RunBook):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.most = 0
            made.append(self)

        def write(self, **k):
            super().write(**k)
            self.most = max(self.most, self.rows_in_memory())

    monkeypatch.setattr(ex, "RunBook", Spy)
    monkeypatch.setattr(ex, "CHUNK_MAX_MODELS", 3)  # chunks of three runs
    return made


@pytest.mark.parametrize("engine", ["batched", "single"])
def test_rows_in_memory_do_not_grow_with_seeds(books, digits, tmp_path, engine):
    for seeds in (1, 4):
        run_compare(_spec(seeds, engine=engine, epochs=1), data=digits, out=tmp_path / f"{engine}{seeds}")
    small, large = books
    assert small.rows_in_memory() == large.rows_in_memory() == 0  # every finished run's rows are on disk only
    assert large.most == small.most > 0  # at most one chunk's rows at any write, whatever the seeds
    assert all(r.on_disk and r.finished for r in large)
    # without a folder every row is kept, to be returned
    run_compare(_spec(4, engine=engine, epochs=1), data=digits)
    assert books[-1].rows_in_memory() > 4 * large.most


@pytest.mark.parametrize("engine", ["batched", "single"])
def test_frames_read_from_the_folder_equal_an_in_memory_compare(digits, tmp_path, engine, monkeypatch):
    monkeypatch.setattr(ex, "CHUNK_MAX_MODELS", 4)  # several chunks: lines of retired runs are copied
    spec = _spec(3, engine=engine)
    mem = run_compare(spec, data=digits)
    disk = run_compare(spec, data=digits, out=tmp_path / "o")
    assert isinstance(disk.__dict__["_steps_value"], Deferred)  # not read until asked
    assert isinstance(disk.__dict__["_probe_value"], Deferred)
    for name in ("metrics", "steps", "probe", "runs", "summary"):
        pd.testing.assert_frame_equal(getattr(disk, name), getattr(mem, name), check_exact=True, obj=name)
    assert disk.steps is disk.steps  # read once, then kept
    # the files are what a whole-frame write gives
    for name, frame in (("metrics", mem.metrics), ("steps", mem.steps), ("probe", mem.probe), ("runs", mem.runs)):
        assert (tmp_path / "o" / f"{name}.csv").read_text() == frame.to_csv(index=False), name
    # diverged runs, inf/NaN and quoted scheme names survive the trip
    diverged = _spec(2, inits=("he", "normal(mean=0,std=1e+20)"), lr=1e8, epochs=1)
    mem, disk = run_compare(diverged, data=digits), run_compare(diverged, data=digits, out=tmp_path / "d")
    assert set(mem.runs["status"]) == {"diverged"}
    for name in ("metrics", "steps", "probe", "runs", "summary"):
        pd.testing.assert_frame_equal(getattr(disk, name), getattr(mem, name), check_exact=True, obj=name)


class StopAfter(Reporter):
    """Ctrl-C once ``n`` epochs have been reported."""

    def __init__(self, n):
        self.n = n

    def epoch_end(self, init, seed, row):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def test_resume_with_rows_on_disk_is_exact(digits, tmp_path, monkeypatch):
    """Interrupted in the second chunk (where a run diverged at init finished beside interrupted ones), then
    resumed: the finished runs' lines are copied from the old files in run order and the result equals an
    uninterrupted comparison."""
    monkeypatch.setattr(ex, "CHUNK_MAX_MODELS", 2)
    spec = _spec(3, inits=("he", "normal(std=1e+20)"))
    ref = run_compare(spec, data=digits, out=tmp_path / "ref")
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt) as e:
        run_compare(spec, data=digits, out=out, reporter=StopAfter(3))  # epoch 1 of run (he, 1)
    runs = e.value.result.runs
    assert list(runs["status"]) == ["done", "diverged", "interrupted", "diverged", "queued", "queued"]
    kept = (out / "metrics.csv").read_text().splitlines()[:3]
    res = run_compare(spec, data=digits, out=out, resume=True)
    assert (out / "metrics.csv").read_text().splitlines()[:3] == kept
    for name in ("metrics", "steps", "probe", "runs"):
        a, b = getattr(res, name), getattr(ref, name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, obj=name)
        assert pd.read_csv(out / f"{name}.csv").shape == b.shape
    pd.testing.assert_frame_equal(res.summary, ref.summary, check_exact=False, rtol=1e-5)


def test_chunks_are_capped_and_the_estimate_is_flat_in_seeds(digits):
    small, large = (ex.estimate_memory(_spec(s, inits=("he",)), digits) for s in (200, 800))
    assert small["group_size"] == large["group_size"] == ex.CHUNK_MAX_MODELS
    assert small["group"] == large["group"]
    assert large["results_on_disk"] - small["results_on_disk"] == 600 * small["per_run"]
    assert small["per_run"] < large["results"] / 800  # per run: bookkeeping, not its step rows


def test_dry_run_prints_the_memory_estimate(digits):
    plan = ex.plan_compare(_spec(100), digits)
    memory = next(line for line in plan.lines() if line.startswith("memory:"))
    assert "peak ~" in memory and "data " in memory and f"one chunk of {ex.CHUNK_MAX_MODELS} models" in memory
    assert "per run, rows of finished runs in the folder" in memory
    in_memory = ex.plan_compare(_spec(100), digits, on_disk=False)
    assert "every row kept in memory" in " ".join(in_memory.lines())
    r = CliRunner().invoke(app, ["compare", "--dataset", "digits", "--epochs", "1", "--seeds", "300", "--hidden", "8",
                                 "--engine", "batched", "--dry-run"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and f"one chunk of {ex.CHUNK_MAX_MODELS} models training at once" in text, r.output


def test_steps_for_plot_is_the_plot_of_the_whole_frame(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    loss = rng.random(3 * 4 * 50) + 0.1
    loss[[7, 8, 300]] = [np.inf, np.nan, np.nan]
    steps = pd.DataFrame({"init": np.repeat(["a", "b,c", "d"], 200), "seed": np.tile(np.repeat([0, 1, 2, 3], 50), 3),
                          "step": np.tile(np.arange(50), 12), "train_loss": loss})
    steps.to_csv(tmp_path / "steps.csv", index=False)
    monkeypatch.setattr(ex, "PLOT_CHUNK_ROWS", 64)  # several chunks
    small = ex.steps_for_plot(tmp_path / "steps.csv")
    assert len(small) < len(steps) / 3
    for init, sub in steps.groupby("init"):
        got = small[small["init"] == init]
        finite = np.isfinite(sub["train_loss"])
        want = sub[finite].groupby("step")["train_loss"].mean()
        have = got[np.isfinite(got["train_loss"])].groupby("step")["train_loss"].mean()
        np.testing.assert_allclose(have.to_numpy(), want.to_numpy(), rtol=1e-12)
        assert _first_bad(got) == _first_bad(sub)


def _first_bad(frame):
    return frame[~np.isfinite(frame["train_loss"])].groupby("seed")["step"].min().to_dict()


def test_result_fields_keep_their_dataclass_form():
    names = [f.name for f in dataclasses.fields(ex.CompareResult)]
    assert names[:7] == ["spec", "metrics", "steps", "summary", "out", "seconds", "probe"]
    r = ex.CompareResult(None, pd.DataFrame({"a": [1]}), pd.DataFrame(), pd.DataFrame())
    assert r.probe is None and list(r.metrics["a"]) == [1]
