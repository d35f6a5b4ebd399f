"""Choosing the engine by measurement (initlab.training.choice, compare.select_engine).

The chooser is tested with fake engines of known cost on a fake clock (so the expected rates are
exact); the real candidates and compare's use of them on digits, where every engine finishes a
step in milliseconds. Whichever engine is chosen, results must equal the forced engines' up to the
engine tests' tolerances (tests/test_engine.py: rtol 1e-4 on losses).
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import initlab.experiments.compare as compare_mod
from initlab.cli import app
from initlab.data import load_dataset
from initlab.experiments.compare import (
    CompareSpec,
    ProbeBatch,
    engine_note,
    plan_compare,
    prepare_data,
    run_compare,
    select_engine,
)
from initlab.training.choice import Candidate, EngineChoice, choose, engine_candidates, intra_op_threads, thread_label
from initlab.training.loop import TrainConfig


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def engine(self, name, seconds_per_step, models=1, calls=None):
        def build():
            def step():
                self.now += seconds_per_step
                if calls is not None:
                    calls.append(name)
            return step
        return Candidate(name, build, models)


def test_chooser_picks_the_faster_of_two_fake_engines_with_their_rates():
    clock = FakeClock()
    # "batched": 4 models per 0.02 s step = 200 model-steps/s; "single": 1 model per 0.004 s = 250
    c = choose([clock.engine("batched", 0.02, models=4), clock.engine("single", 0.004)],
               clock=clock, min_seconds=0.1)
    assert c.engine == "single" and c.measured
    assert c.rate("batched") == pytest.approx(200) and c.rate("single") == pytest.approx(250)
    assert c.reason == "measured fastest" and "single 250, batched 200 model-steps/s" in c.text()
    clock = FakeClock()
    c = choose([clock.engine("batched", 0.01, models=4), clock.engine("single", 0.004)], clock=clock)
    assert c.engine == "batched" and c.rate("batched") == pytest.approx(400)


def test_chooser_alternates_rounds_and_warms_up_every_candidate():
    clock, calls = FakeClock(), []
    choose([clock.engine("a", 0.01, calls=calls), clock.engine("b", 0.01, calls=calls)], clock=clock,
           rounds=2, warmup=1, min_steps=2, min_seconds=0.0)
    assert calls == ["a", "b", "a", "a", "b", "b", "a", "a", "b", "b"]


def test_chooser_never_picks_an_engine_measured_slower_and_keeps_the_best_round():
    clock = FakeClock()
    costs = iter([0.05] * 4 + [0.001] * 1000)  # "a" is slow at first (load), then fast

    def build():
        def step():
            clock.now += next(costs)
        return step

    c = choose([Candidate("a", build), clock.engine("b", 0.002)], clock=clock, warmup=0, min_seconds=0.01, rounds=3)
    assert c.engine == "a" and c.rate("a") == pytest.approx(1000)  # its best round, not its first
    assert c.rate("a") > c.rate("b")
    # an exact tie goes to the earlier candidate (the order of preference)
    clock = FakeClock()
    assert choose([clock.engine("x", 0.01), clock.engine("y", 0.01)], clock=clock).engine == "x"


def test_a_thread_setting_is_a_candidate_of_its_own_and_is_restored():
    clock, seen = FakeClock(), []
    before = torch.get_num_threads()

    def engine(name, threads, cost):
        def build():
            def step():
                seen.append((name, torch.get_num_threads()))
                clock.now += cost
            return step
        return Candidate(thread_label("mlp", threads), build, 4, threads=threads, engine="mlp")

    c = choose([engine("default", None, 0.02), engine("one", 1, 0.01)], clock=clock)
    assert (c.engine, c.threads, c.label) == ("mlp", 1, "mlp/1t")
    assert dict(c.rates) == pytest.approx({"mlp": 200.0, "mlp/1t": 400.0})
    assert c.to_dict()["threads"] == 1 and c.text().startswith("mlp/1t (measured fastest")
    assert {t for name, t in seen if name == "one"} == {1} and {t for name, t in seen if name == "default"} == {before}
    assert torch.get_num_threads() == before
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before


def test_a_failing_candidate_is_left_out_with_its_reason():
    clock = FakeClock()

    def broken():
        raise RuntimeError("out of memory\nmore text")

    c = choose([Candidate("func", broken, 12), clock.engine("single", 0.01)], clock=clock)
    assert c.engine == "single" and c.failed == (("func", "RuntimeError: out of memory"),)
    assert c.to_dict() == {"engine": "single", "threads": None, "reason": "measured fastest", "rates": {"single": 100.0},
                           "failed": {"func": "RuntimeError: out of memory"}}
    with pytest.raises(ValueError, match="no engine could take a training step: func: RuntimeError"):
        choose([Candidate("func", broken)], clock=clock)
    with pytest.raises(ValueError, match="no engine to choose from"):
        choose([])


@pytest.fixture(scope="module")
def digits_data():
    return load_dataset("digits")


def _prepared(spec, data):
    d = prepare_data(spec, data)
    return d, ProbeBatch(spec, d)


@pytest.mark.parametrize("model,kinds", [(None, {"mlp", "func", "single"}), ("cnn(depth=2,channels=4)", {"func", "single"})])
def test_real_candidates_step_without_touching_the_models_or_the_rng(digits_data, model, kinds):
    spec = CompareSpec(inits=("he",), dataset="digits", model=model, hidden=(32,) if model is None else (128,))
    d, _ = _prepared(spec, digits_data)
    models = [compare_mod.new_model(spec, d, s) for s in range(3)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    rng = torch.get_rng_state()
    c = choose(engine_candidates(sorted(kinds), models, d, TrainConfig(batch_size=16)), min_seconds=0.0, rounds=1)
    assert {name for name, _ in c.rates} == kinds and all(r > 0 for _, r in c.rates) and not c.failed
    assert torch.equal(torch.get_rng_state(), rng)
    for m, sd in zip(models, before):
        for k, v in m.state_dict().items():
            assert torch.equal(v, sd[k]), k
    with pytest.raises(ValueError, match="unknown engine 'gpu'; choose from: mlp, func, single"):
        engine_candidates(["gpu"], models, d, TrainConfig())


def test_forced_engines_are_not_measured(digits_data, monkeypatch):
    monkeypatch.setattr(compare_mod, "choose", lambda *a, **k: pytest.fail("a forced engine must not be measured"))
    for engine, model, kind in (("single", None, "single"), ("batched", None, "mlp"), ("batched", "cnn", "func")):
        spec = CompareSpec(inits=("he",), dataset="digits", seeds=40, model=model, engine=engine)
        d, pb = _prepared(spec, digits_data)
        c = select_engine(spec, d, pb, 12, 40)
        assert (c.engine, c.reason) == (kind, f"forced: engine='{engine}'") and not c.measured
    # auto with too little work to repay a measurement takes the batched engine
    spec = CompareSpec(inits=("he",), dataset="digits", seeds=2, train=TrainConfig(epochs=1))
    d, pb = _prepared(spec, digits_data)
    c = select_engine(spec, d, pb, 2, 2)
    assert c.engine == "mlp" and c.reason.startswith("not measured: 46 optimizer steps")


def test_auto_measures_and_records_the_choice_in_config_and_result(digits_data, tmp_path, monkeypatch):
    monkeypatch.setattr(compare_mod, "MEASURE_MIN_MODEL_STEPS", 1)
    monkeypatch.setattr(compare_mod, "MEASURE_MIN_SECONDS", 0.0)
    monkeypatch.setattr(compare_mod, "MEASURE_BUDGET", math.inf)  # measure every candidate however short
    spec = CompareSpec(inits=("he", "xavier"), dataset="digits", hidden=(16,), probe=False, train=TrainConfig(epochs=1))
    assert spec.engine == "auto"
    d, pb = _prepared(spec, digits_data)
    # the throwaway models are built under a forked RNG: the global stream moves as with a forced engine
    rng = torch.get_rng_state()
    assert not select_engine(CompareSpec(**{**spec.__dict__, "engine": "batched"}), d, pb, 2, 2).measured
    after_forced = torch.get_rng_state()
    torch.set_rng_state(rng)
    assert select_engine(spec, d, pb, 2, 2).measured
    assert torch.equal(torch.get_rng_state(), after_forced)
    with pytest.warns(UserWarning, match="model-steps/s"):  # the reporter's note names the choice and rates
        res = run_compare(spec, data=digits_data, out=tmp_path / "o")
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    choice = cfg["engine_choice"]
    assert cfg["engine"] == "auto" and choice["engine"] in ("mlp", "func", "single")
    # each engine with torch's threads and, where that is more than one, with one thread
    labels = {"mlp", "func", "single"} | ({"mlp/1t", "func/1t", "single/1t"} if torch.get_num_threads() > 1 else set())
    assert set(choice["rates"]) == labels and min(choice["rates"].values()) > 0
    label = thread_label(choice["engine"], choice["threads"])
    assert choice["rates"][label] == max(choice["rates"].values())  # never one measured slower
    assert res.engine == choice
    # the numbers are those of the forced engines, up to float32 summation order (tests/test_engine.py)
    for engine in ("batched", "single"):
        forced = run_compare(CompareSpec(**{**spec.__dict__, "engine": engine}), data=digits_data)
        assert forced.engine["reason"] == f"forced: engine='{engine}'"
        pd.testing.assert_frame_equal(res.metrics, forced.metrics, rtol=1e-4, atol=1e-6)
        pd.testing.assert_frame_equal(res.steps, forced.steps, rtol=1e-4, atol=1e-6)


def test_conv_fallback_trains_one_at_a_time_and_says_why(digits_data, monkeypatch):
    """Where the func engine is measured slower than the single loop (convolutions on a CPU), the
    single loop trains and the plan and the note say why."""
    monkeypatch.setattr(compare_mod, "MEASURE_MIN_MODEL_STEPS", 1)
    monkeypatch.setattr(compare_mod, "MEASURE_MIN_SECONDS", 0.0)
    monkeypatch.setattr(compare_mod, "MEASURE_BUDGET", math.inf)  # measure every candidate however short
    measured = EngineChoice("single", "measured fastest", (("func", 80.0), ("single", 120.0)))
    monkeypatch.setattr(compare_mod, "choose", lambda candidates, **kw: measured)
    spec = CompareSpec(inits=("he", "xavier"), dataset="digits", model="cnn(depth=2,channels=4)", probe=False,
                       train=TrainConfig(epochs=1))
    d, pb = _prepared(spec, digits_data)
    c = select_engine(spec, d, pb, 2, 2)
    assert c.engine == "single" and c.rates == measured.rates
    assert c.reason == ("the func engine measured slower than the single loop (batching K convolutions gives one "
                        "grouped convolution, no faster per FLOP on a CPU)")
    assert engine_note(spec, c) == c.reason + " (single 120, func 80 model-steps/s); training runs one at a time"
    assert "engine: single — the func engine measured slower" in "\n".join(plan_compare(spec, digits_data).lines())
    with pytest.warns(UserWarning, match="training runs one at a time"):
        res = run_compare(spec, data=digits_data)
    single = run_compare(CompareSpec(**{**spec.__dict__, "engine": "single"}), data=digits_data)
    pd.testing.assert_frame_equal(res.metrics, single.metrics)  # the single loop itself: bit for bit
    # a model without convolutions gets no convolution story
    spec = CompareSpec(inits=("he",), dataset="digits", model="resmlp(blocks=1,width=8)", train=TrainConfig(epochs=1))
    d, pb = _prepared(spec, digits_data)
    assert select_engine(spec, d, pb, 1, 1).reason == "the func engine measured slower than the single loop"


def test_dry_run_prints_the_engine_and_rates_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_mod, "MEASURE_MIN_MODEL_STEPS", 1)
    monkeypatch.setattr(compare_mod, "MEASURE_MIN_SECONDS", 0.0)
    monkeypatch.setattr(compare_mod, "MEASURE_BUDGET", math.inf)  # measure every candidate however short
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["compare", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--dry-run",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "runs: 4 × 23 optimizer steps; 4 trained at once" in text
    assert "engine: " in text and "measured fastest; measured " in text and "model-steps/s" in text
    assert "dry run: nothing trained, nothing written" in text and not out.exists()
    r = CliRunner().invoke(app, ["compare", "--dataset", "digits", "--epochs", "1", "--engine", "single", "--dry-run"])
    assert r.exit_code == 0 and "engine: single — forced: engine='single'" in " ".join(r.output.split())


def test_resume_accepts_another_engine(digits_data, tmp_path):
    spec = CompareSpec(inits=("he",), dataset="digits", hidden=(8,), probe=False, engine="batched",
                       train=TrainConfig(epochs=1))
    run_compare(spec, data=digits_data, out=tmp_path / "o")
    again = run_compare(CompareSpec(**{**spec.__dict__, "engine": "auto"}), data=digits_data, out=tmp_path / "o",
                        resume=True)
    assert again.engine["reason"] == "not measured: no run left to train"
    assert np.isfinite(again.metrics["test_acc"]).all()


def test_a_sweep_with_engine_auto_measures_each_group_and_records_the_engine(digits_data, tmp_path, monkeypatch):
    from initlab.experiments.sweeps import SweepReporter, SweepSpec, run_sweep

    monkeypatch.setattr(compare_mod, "MEASURE_MIN_MODEL_STEPS", 1)
    monkeypatch.setattr(compare_mod, "MEASURE_MIN_SECONDS", 0.0)
    monkeypatch.setattr(compare_mod, "MEASURE_BUDGET", math.inf)  # measure every candidate however short
    notes = []

    class Notes(SweepReporter):
        def note(self, message):
            notes.append(message)

    grid = {"inits": ["xavier", "he"], "lr": [0.05, 0.2], "seeds": 1, "epochs": 1, "width": 16}
    res = run_sweep(SweepSpec(grid, engine="auto"), tmp_path / "s.db", data=digits_data, reporter=Notes())
    assert res.complete and len(res.runs) == 4
    assert len(set(res.runs["engine"])) == 1 and res.runs["engine"].iloc[0] in ("mlp", "func", "single")
    assert len(notes) == 1 and "model-steps/s" in notes[0]  # measured: the note names the rates
    forced = run_sweep(SweepSpec(grid, engine="single"), tmp_path / "t.db", data=digits_data)
    assert set(forced.runs["engine"]) == {"single"}
    np.testing.assert_allclose(res.runs["final_test_acc"], forced.runs["final_test_acc"], rtol=1e-4)


def test_a_candidate_far_slower_in_warm_up_is_not_timed_in_rounds():
    clock, calls = FakeClock(), []
    c = choose([clock.engine("slow", 0.5, calls=calls), clock.engine("fast", 0.01, calls=calls)], clock=clock,
               warmup=2, rounds=3, min_steps=2, min_seconds=0.0)
    assert c.engine == "fast" and c.rate("slow") == pytest.approx(2.0)  # its last warm-up step's rate
    assert calls.count("slow") == 2 and calls.count("fast") == 2 + 3 * 2


def test_little_work_stops_the_measurement_after_the_first_candidate():
    clock, calls = FakeClock(), []
    cands = [clock.engine("mlp", 0.01, models=10, calls=calls), clock.engine("single", 0.0005, calls=calls)]
    c = choose(cands, clock=clock, work=1000, min_work_seconds=2.0)  # 1000 model-steps at 1000/s: 1 s
    assert c.engine == "mlp" and calls == ["mlp", "mlp"] and c.rates == (("mlp", pytest.approx(1000.0)),)
    assert c.reason == "not measured further: ~1 s of training at mlp's rate (under 2 s)"
    calls.clear()
    assert choose(cands, clock=clock, work=10_000, min_work_seconds=2.0).engine == "single"  # 10 s: measured
    assert "single" in calls


def test_thread_settings_of_one_engine_share_its_population(digits_data):
    spec = CompareSpec(inits=("he",), dataset="digits", hidden=(8,))
    d, _ = _prepared(spec, digits_data)
    cands = engine_candidates(["mlp", "single"], [compare_mod.new_model(spec, d, 0)] * 2, d, TrainConfig(),
                              threads=(None, 1))
    assert [(c.name, c.kind, c.threads, c.models) for c in cands] == [
        ("mlp", "mlp", None, 2), ("single", "single", None, 1), ("mlp/1t", "mlp", 1, 2), ("single/1t", "single", 1, 1)]
    assert cands[0].build() is cands[2].build() and cands[1].build() is cands[3].build()
    assert cands[0].build() is not cands[1].build()


def test_the_note_names_a_real_choice_only():
    spec = CompareSpec(inits=("he",), dataset="digits")
    two = EngineChoice("mlp", "measured fastest", (("mlp", 900.0), ("single", 300.0)))
    assert engine_note(spec, two) == "engine mlp: measured fastest on 128 relu MLP (mlp 900, single 300 model-steps/s)"
    threads = EngineChoice("mlp", "measured fastest", (("mlp", 9.0), ("mlp/1t", 90.0)), threads=1)
    assert engine_note(spec, threads).startswith("engine mlp with 1 intra-op thread: measured fastest")
    one = EngineChoice("mlp", "not measured further: ~0.3 s of training at mlp's rate (under 2 s)", (("mlp", 900.0),))
    assert engine_note(spec, one) is None and engine_note(spec, EngineChoice("mlp", "forced: engine='batched'")) is None


def test_the_measurement_stops_at_its_budget_of_the_projected_training():
    """Timed steps are thrown away, so the measurement may take only `budget` of the training the first
    candidate's warm-up projects: 300 model-steps at 100/s is 3 s, 5% of it 0.15 s, and the first warm-up
    alone takes 0.2 s, so the second candidate is not measured and says why."""
    clock, calls = FakeClock(), []
    cands = [clock.engine("mlp", 0.1, models=10, calls=calls), clock.engine("single", 0.0005, calls=calls)]
    c = choose(cands, clock=clock, work=300, min_work_seconds=2.0, budget=0.05)
    assert c.engine == "mlp" and "single" not in calls
    assert dict(c.failed)["single"].startswith("not measured: the measurement budget (5%")
    assert "within the budget" in c.reason
    # a long training affords the full measurement: the faster engine is found
    calls.clear()
    c = choose(cands, clock=clock, work=100_000, min_work_seconds=2.0, budget=0.05)
    assert c.engine == "single" and c.reason == "measured fastest"


def test_split_candidates_step_every_model_in_worker_threads(digits_data):
    """engine_candidates(workers=(2,)) adds mlp/2w and func/2w (none for the single loop): the K models
    in two parts stepped side by side, several steps per call (models_per_call), the models untouched."""
    spec = CompareSpec(inits=("he",), dataset="digits", hidden=(16,))
    d, _ = _prepared(spec, digits_data)
    models = [compare_mod.new_model(spec, d, s) for s in range(3)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    cands = engine_candidates(["mlp", "func", "single"], models, d, TrainConfig(batch_size=16), workers=(2,))
    assert [(c.name, c.kind, c.threads, c.workers, c.models) for c in cands[3:]] == [
        ("mlp/2w", "mlp", None, 2, 3), ("func/2w", "func", None, 2, 3)]
    threads = torch.get_num_threads()
    c = choose(cands, min_seconds=0.0, rounds=1)
    assert {name for name, _ in c.rates} == {"mlp", "func", "single", "mlp/2w", "func/2w"} and not c.failed
    assert torch.get_num_threads() == threads
    step = cands[3].build()
    assert step.models_per_call % 3 == 0 and 3 <= step.models_per_call <= 3 * 16
    for m, sd in zip(models, before):
        assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="worker counts must be integers of at least 2, got 1"):
        engine_candidates(["mlp"], models, d, TrainConfig(), workers=(1,))
    assert len(engine_candidates(["mlp"], models[:1], d, TrainConfig(), workers=(2,))) == 1  # one model: no split


def test_a_split_candidate_wins_only_when_measured_faster():
    def split(clock, seconds, per_call):
        def build():
            def step():
                clock.now += seconds
            step.models_per_call = per_call  # several optimizer steps per call
            return step
        return Candidate("mlp/2w", build, 12, None, None, "mlp", 2)

    clock = FakeClock()
    # mlp: 12 models per 0.01 s = 1200/s; split: 48 model-steps per 0.03 s = 1600/s
    c = choose([clock.engine("mlp", 0.01, models=12), split(clock, 0.03, 48)], clock=clock)
    assert (c.engine, c.workers, c.threads, c.label) == ("mlp", 2, None, "mlp/2w")
    assert c.rate("mlp/2w") == pytest.approx(1600) and c.to_dict()["workers"] == 2
    clock = FakeClock()
    c = choose([clock.engine("mlp", 0.01, models=12), split(clock, 0.05, 48)], clock=clock)  # 960/s: slower
    assert (c.engine, c.workers, c.label) == ("mlp", 1, "mlp") and "workers" not in c.to_dict()
    assert thread_label("func", None, 2) == "func/2w" and thread_label("func", 1) == "func/1t"
