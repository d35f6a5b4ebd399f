"""Experiments meant to go wrong: the divergence rule, run statuses, interrupts and resume, memory
refusal and API input forms (issue 7). Everything runs on the bundled digits set."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import initlab
from initlab.training.mlp_engine import Population
from initlab.experiments.compare import CompareSpec, Reporter, build_model, run_compare, summarize
from initlab.schemes import SchemeSpec, parse_scheme
from initlab.training.loop import DIVERGE_LOSS, TrainConfig, check_init

ENGINES = ("batched", "single")


@pytest.mark.parametrize("engine", ENGINES)
def test_huge_lr_is_diverged_by_the_loss_bound(engine):
    # lr 1e6 leaves finite but absurd losses (~1e28 per step, ~3.6e5 test loss at chance accuracy):
    # non-finite checks alone call that "trained"; the bound relative to ln(C) does not.
    res = initlab.compare(inits="he", dataset="digits", epochs=2, lr=1e6, engine=engine, device="cpu", probe=False)
    run = res.runs.iloc[0]
    assert run["status"] == "diverged" and run["diverged_epoch"] == 1
    assert run["diverge_reason"].startswith("test loss") and f"{DIVERGE_LOSS:g}·ln 10" in run["diverge_reason"]
    row = res.metrics.iloc[0]
    assert row["diverged"] and row["test_loss"] > DIVERGE_LOSS * math.log(10)  # the measured value is kept
    s = res.summary.iloc[0]
    assert (s["done"], s["diverged"]) == (0, 1) and math.isnan(s["epochs_to_95"])
    assert math.isnan(s["final_test_acc_mean"])  # a diverged run is never averaged in


def test_large_init_that_recovers_is_not_diverged():
    # normal(std=2), two hidden layers: first step losses ~4e3 (≈ 1900·ln 10), yet it trains to ~0.9.
    # The bound applies to end-of-epoch test loss, not to steps, so this run is "done".
    res = initlab.compare(inits="normal(std=2.0)", dataset="digits", epochs=3, hidden="128,128", device="cpu",
                          probe=False)
    assert res.steps["train_loss"].iloc[0] > DIVERGE_LOSS * math.log(10)
    assert res.runs["status"].tolist() == ["done"]
    assert res.summary["final_test_acc_mean"].iloc[0] > 0.5


def test_bound_is_configurable_and_can_be_turned_off():
    cfg = TrainConfig(diverge_loss=math.inf)
    assert cfg.loss_bound(10) == math.inf
    for bad in (1, 0.5, -3, math.nan, "x", True):
        with pytest.raises(ValueError, match="diverge_loss must be a number > 1"):
            TrainConfig(diverge_loss=bad)
    res = initlab.compare(inits="he", dataset="digits", epochs=1, lr=1e6, diverge_loss=1e12, device="cpu",
                          probe=False)
    assert res.runs["status"].tolist() == ["done"]  # 3.6e5 < 1e12·ln 10


@pytest.mark.parametrize("engine", ENGINES)
def test_overflow_at_init_is_diverged_at_init_and_others_train(engine):
    """The issue's case: depth 40, width 256, normal(std=1) next to he."""
    res = initlab.compare(inits="he,normal(std=1)", dataset="digits", epochs=1, hidden=(256,) * 40,
                          engine=engine, device="cpu", probe=engine == "batched")  # probing 81 layers is slow
    runs = res.runs.set_index("init")
    bad = runs.loc["normal(std=1)"]
    assert bad["status"] == "diverged" and bad["diverged_epoch"] == 0 and pd.isna(bad["diverged_step"])
    assert bad["diverge_reason"].startswith("non-finite activation (fc")
    assert runs.loc["he", "status"] == "done"
    m = res.metrics
    assert m[m["init"] == "normal(std=1)"]["epoch"].tolist() == [0]
    assert not res.steps["init"].eq("normal(std=1)").any()  # it never took a step
    if res.probe is not None:  # the overflow is data: recorded at init, not an exception
        p = res.probe
        at_init = p[(p["init"] == "normal(std=1)") & (p["epoch"] == 0)]
        assert len(at_init) and not np.isfinite(at_init["out_std"].to_numpy(dtype=float)).all()


def test_check_init_names_the_first_overflowing_layer():
    model = initlab.mlp(8, [16, 16], 3, activation="tanh")
    initlab.initialize(model, "normal(std=1e38)", generator=torch.Generator().manual_seed(0))
    # tanh(±inf) = ±1 is finite: only a per-layer check sees that fc1 overflowed
    assert torch.isfinite(model(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)))).any()
    assert check_init(model, torch.randn(4, 8, generator=torch.Generator().manual_seed(1))) == \
        "non-finite activation (fc1)"
    initlab.initialize(model, "he", generator=torch.Generator().manual_seed(0))
    assert check_init(model, torch.randn(4, 8)) is None


def test_engine_evaluation_flags_non_finite_layers_per_model():
    data = initlab.load_dataset("digits")
    spec = CompareSpec(inits=("he",), dataset="digits", hidden=(16,), activation="tanh", device="cpu")
    good = build_model(spec, data, parse_scheme("he"), 0, "cpu")
    bad = build_model(spec, data, parse_scheme("normal(std=1e38)"), 1, "cpu")
    pop = Population([good, bad], TrainConfig(), [0, 1])
    loss, acc, first_bad = pop.evaluate(data.x_test, data.y_test)
    assert first_bad == [None, "fc1"] and np.isfinite(loss[0])


def test_summary_never_credits_diverged_or_chance_runs():
    rows = []
    for init, accs, div in (("good", [0.5, 0.9], False), ("chance", [0.1, 0.1], False), ("boom", [0.95], True)):
        for seed in (0, 1):
            for e, a in enumerate(accs, start=1):
                last = e == len(accs)
                rows.append(dict(init=init, seed=seed, epoch=e, train_loss=1.0, test_loss=1.0, test_acc=a,
                                 diverged=div and last))
    m = pd.DataFrame(rows)
    runs = pd.DataFrame([dict(init=i, seed=s, status="diverged" if i == "boom" else "done")
                         for i in ("good", "chance", "boom") for s in (0, 1)])
    s = summarize(m, ["good", "chance", "boom"], runs=runs, chance=0.15).set_index("init")
    assert s.loc["good", "epochs_to_95"] == 2  # best = 0.9 (boom's 0.95 is a diverged run's, not counted)
    assert s.loc["chance", "at_chance"] and math.isnan(s.loc["chance", "epochs_to_95"])
    assert math.isnan(s.loc["boom", "final_test_acc_mean"]) and math.isnan(s.loc["boom", "epochs_to_95"])
    # all at chance: nothing is "95% of best"
    s2 = summarize(m[m["init"] == "chance"], ["chance"], runs=runs[runs["init"] == "chance"], chance=0.15)
    assert math.isnan(s2["epochs_to_95"].iloc[0])


def test_zero_init_is_at_chance_and_never_ranked():
    res = initlab.compare(inits="zero,he", dataset="digits", epochs=2, hidden="16", device="cpu", probe=False)
    s = res.summary.set_index("init")
    assert s.loc["zero", "at_chance"] and math.isnan(s.loc["zero", "epochs_to_95"])
    assert res.chance["rate"] == pytest.approx(37 / 360, abs=0.01) and res.chance["threshold"] > res.chance["rate"]


class StopAt(Reporter):
    """Raise KeyboardInterrupt when (init, seed) reports epoch ``epoch``: a Ctrl-C mid-comparison."""

    def __init__(self, init, seed, epoch):
        self.at = (init, seed, epoch)

    def epoch_end(self, init, seed, row):
        if (init, seed, row["epoch"]) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("engine", ENGINES)
def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, engine):
    spec = CompareSpec(inits=("he", "xavier"), dataset="digits", hidden=(16,), seeds=2, device="cpu",
                       engine=engine, train=TrainConfig(epochs=3))
    ref = run_compare(spec, out=tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt) as exc:
        run_compare(spec, out=tmp_path / "o", reporter=StopAt("xavier", 0, 2))
    part = exc.value.result
    assert not part.complete
    runs = pd.read_csv(tmp_path / "o" / "runs.csv")
    assert set(runs["status"]) <= {"done", "interrupted", "queued"} and "interrupted" in set(runs["status"])
    m = pd.read_csv(tmp_path / "o" / "metrics.csv")
    got = m.groupby(["init", "seed"]).size().to_dict()
    for r in runs.itertuples():  # metrics hold exactly the epochs runs.csv says finished
        assert got.get((r.init, r.seed), 0) == r.epochs_done
        assert (m[(m["init"] == r.init) & (m["seed"] == r.seed)]["status"] == r.status).all()
    assert pd.read_json(tmp_path / "o" / "summary.json", typ="series")["status"] == "interrupted"
    done_before = m[m["status"] == "done"]
    with pytest.raises(ValueError, match="differs in train.epochs"):
        run_compare(CompareSpec(**{**spec.__dict__, "train": TrainConfig(epochs=4)}), out=tmp_path / "o", resume=True)
    res = run_compare(spec, out=tmp_path / "o", resume=True)
    assert res.complete and (res.runs["status"] == "done").all()
    a, b = res.metrics, ref.metrics
    assert list(a[["init", "seed", "epoch"]].itertuples(index=False)) == list(b[["init", "seed", "epoch"]].itertuples(index=False))
    np.testing.assert_allclose(a["test_loss"], b["test_loss"], rtol=1e-5)
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    kept = a.merge(done_before, on=["init", "seed", "epoch"], suffixes=("", "_before"))
    assert len(kept) == len(done_before) and (kept["test_loss"] == kept["test_loss_before"]).all()
    assert len(res.steps) == len(ref.steps) and len(res.probe) == len(ref.probe)


def test_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"runs × 10 epochs need ~.*free"):
        initlab.compare(inits="he", dataset="digits", seeds=10**9, device="cpu")
    with pytest.raises(ValueError, match=r"one 64-1048576×2-10 model needs ~.*(GiB|TiB)"):
        initlab.compare(inits="he", dataset="digits", hidden=(1 << 20, 1 << 20), device="cpu")


def test_models_are_built_per_engine_group(monkeypatch):
    import initlab.experiments.compare as ex

    built, live, peak = [], [], [0]
    real = ex.build_model

    def counting(*a, **k):
        m = real(*a, **k)
        built.append(1)
        return m

    monkeypatch.setattr(ex, "build_model", counting)
    monkeypatch.setattr(ex, "estimate_memory", lambda spec, data: {"per_model": 1, "group": 2, "group_size": 2,
                                                                    "results": 0, "total": 2})

    class Track(Reporter):
        def run_start(self, init, seed):
            live.append((init, seed))
            peak[0] = max(peak[0], len(live))

        def run_end(self, init, seed, diverged, reason=None):
            live.remove((init, seed))

    res = initlab.compare(inits="he,xavier", dataset="digits", seeds=3, epochs=1, hidden="8", device="cpu",
                          probe=False, reporter=Track())
    assert len(built) == 6 and peak[0] == 2 and (res.runs["status"] == "done").all()


@pytest.mark.parametrize("inits, expected", [
    ("he", ("he",)),
    ("he,normal(std=0.05)", ("he", "normal(std=0.05)")),
    (SchemeSpec("normal", {"std": 0.05}), ("normal(std=0.05)",)),
    ({"name": "orthogonal", "params": {"gain": 1.5}}, ("orthogonal(gain=1.5)",)),
    (["he", SchemeSpec("xavier_normal")], ("he", "xavier_normal")),
])
def test_compare_takes_every_scheme_form(inits, expected):
    assert CompareSpec(inits=inits, dataset="digits").inits == expected


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden="64,,64"), "empty item"),
    (dict(hidden=""), "no hidden"),
    (dict(data_dir="/tmp"), "--data-dir has no effect with dataset 'digits'"),
    (dict(inits="he,,xavier"), "empty item"),
    (dict(inits=""), "empty"),
    (dict(inits=[]), "no init schemes"),
    (dict(seeds=2 ** 64), "seeds must be a positive integer"),
    (dict(first_seed=2 ** 63), "first seed"),
])
def test_compare_spec_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompareSpec(dataset="digits", **kwargs)


def test_options_without_effect_are_errors():
    with pytest.raises(ValueError, match="momentum 0.9 has no effect with optimizer 'adam'"):
        TrainConfig(optimizer="adam", momentum=0.9)
    assert CompareSpec(dataset="digits", hidden="64,64").hidden == (64, 64)


def test_resume_of_a_folder_claimed_but_never_written_starts_it(tmp_path):
    """kill -9 right after start leaves only the marker: --resume has nothing to continue and starts."""
    from initlab import store

    store.claim_out_dir(tmp_path / "o", "compare")
    res = initlab.compare(inits="he", dataset="digits", epochs=1, hidden="8", probe=False, device="cpu",
                          out=tmp_path / "o", resume=True)
    assert res.runs["status"].tolist() == ["done"]
    with pytest.raises(ValueError, match="nothing to resume"):
        initlab.compare(inits="he", dataset="digits", epochs=1, hidden="8", out=tmp_path / "empty_dir_missing",
                        resume=True)
