import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import initlab
from initlab.experiments.compare import CompareSpec, Reporter, run_compare, summarize
from initlab.training.loop import TrainConfig


def test_compare_on_digits_writes_everything(tmp_path):
    res = initlab.compare(inits=["zero", "he"], dataset="digits", epochs=2, seeds=2, hidden=[16],
                          device="cpu", out=tmp_path)
    m = res.metrics
    for col in ["init", "seed", "epoch", "train_loss", "test_loss", "test_acc", "diverged"]:
        assert col in m.columns
    assert len(m) == 2 * 2 * 2
    assert set(m["init"]) == {"zero", "he"} and set(m["seed"]) == {0, 1}
    assert list(res.summary["init"]) == ["zero", "he"]
    he = res.summary.set_index("init").loc["he"]
    assert he["runs"] == 2 and he["diverged"] == 0
    assert he["final_test_acc_mean"] > res.summary.set_index("init").loc["zero"]["final_test_acc_mean"]
    for name in ["config.json", "metrics.csv", "steps.csv", "summary.json", "test_acc.png", "train_loss.png", "steps.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = pd.read_csv(tmp_path / "metrics.csv")
    assert len(on_disk) == len(m)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["dataset"] == "digits" and cfg["train"]["epochs"] == 2 and cfg["inits"] == ["zero", "he"]
    assert cfg["schemes"]["he"]["name"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["init"] for r in summary["per_init"]] == ["zero", "he"]
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left behind"


def test_compare_is_reproducible():
    kw = dict(inits=["he"], dataset="digits", epochs=1, seeds=1, hidden=[8], device="cpu")
    a, b = initlab.compare(**kw), initlab.compare(**kw)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)


def test_interrupt_keeps_finished_runs(tmp_path):
    """Single engine: runs finish one after another, each on disk before the next starts."""
    class StopAfterFirst(Reporter):
        def run_end(self, init, seed, diverged, reason=None):
            raise KeyboardInterrupt

    spec = CompareSpec(inits=("zero", "he"), dataset="digits", hidden=(8,), device="cpu",
                       train=initlab.TrainConfig(epochs=2), engine="single")
    with pytest.raises(KeyboardInterrupt):
        run_compare(spec, out=tmp_path, reporter=StopAfterFirst())
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert list(m["init"]) == ["zero", "zero"] and list(m["epoch"]) == [1, 2]


def test_divergent_run_does_not_stop_the_others():
    res = initlab.compare(inits=["normal(std=10.0)", "zero"], dataset="digits", epochs=2, hidden=[64, 64, 64],
                          lr=1.0, device="cpu")
    s = res.summary.set_index("init")
    assert s.loc["normal(std=10.0)", "diverged"] == 1
    assert s.loc["zero", "runs"] == 1 and s.loc["zero", "diverged"] == 0
    assert len(res.metrics[res.metrics["init"] == "zero"]) == 2  # trained on after the other diverged
    m = res.metrics
    bad = m[m["init"] == "normal(std=10.0)"]
    assert bad["diverged"].iloc[-1] and not np.isnan(bad["diverged_step"].iloc[-1])


def test_summary_epochs_to_95():
    rows = []
    for init, accs in {"a": [0.5, 0.9, 0.95], "b": [0.2, 0.3, 0.4]}.items():
        for seed in (0, 1):
            for e, acc in enumerate(accs, 1):
                rows.append(dict(init=init, seed=seed, epoch=e, train_loss=1.0, test_loss=1.0,
                                 test_acc=acc + 0.01 * seed, diverged=False))
    s = summarize(pd.DataFrame(rows), ["a", "b"]).set_index("init")
    assert s.loc["a", "final_test_acc_mean"] == pytest.approx(0.955)
    assert s.loc["a", "final_test_acc_std"] == pytest.approx(0.01 / math.sqrt(2))
    # 95% of the best final mean (0.955) is 0.90725: epoch 2's mean 0.905 misses it, epoch 3 reaches it
    assert s.loc["a", "epochs_to_95"] == 3
    assert math.isnan(s.loc["b", "epochs_to_95"])


def test_interrupt_keeps_finished_epochs_batched(tmp_path):
    """Batched engine: all runs advance together; every epoch the reporter saw is already on disk."""
    class StopInEpoch2(Reporter):
        def epoch_end(self, init, seed, row):
            if row["epoch"] == 2:
                raise KeyboardInterrupt

    spec = CompareSpec(inits=("zero", "he"), dataset="digits", hidden=(8,), device="cpu", seeds=2,
                       train=initlab.TrainConfig(epochs=3))
    with pytest.raises(KeyboardInterrupt):
        run_compare(spec, out=tmp_path, reporter=StopInEpoch2())
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert list(zip(m["init"], m["seed"], m["epoch"])) == [
        ("zero", 0, 1), ("zero", 0, 2), ("he", 0, 1), ("he", 0, 2),
        ("zero", 1, 1), ("zero", 1, 2), ("he", 1, 1), ("he", 1, 2)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_batched_and_single_engines_agree():
    kw = dict(inits=["zero", "he", "normal(std=1e6)"], dataset="digits", epochs=2, seeds=2, hidden=[32, 32],
              lr=0.1, device="cpu")
    b, s = initlab.compare(**kw), initlab.compare(**kw, engine="single")
    assert list(b.metrics.columns) == list(s.metrics.columns)
    # same rows in the same order; numbers equal up to float32 summation order (see test_engine)
    pd.testing.assert_frame_equal(b.metrics, s.metrics, rtol=1e-4, atol=1e-6)
    pd.testing.assert_frame_equal(b.steps, s.steps, rtol=1e-4, atol=1e-6)
    assert b.metrics["diverged"].sum() == 2  # the std=1e6 runs diverge in both engines, at the same step


def test_unknown_engine_is_one_line_error():
    with pytest.raises(ValueError, match="unknown engine 'fast'; choose from: batched, single"):
        CompareSpec(engine="fast")


def test_compare_records_probe_statistics_every_epoch(tmp_path):
    res = initlab.compare(inits=["zero", "he"], dataset="digits", epochs=2, seeds=2, hidden=[16, 16],
                          device="cpu", out=tmp_path)
    p = res.probe
    assert set(p["epoch"]) == {0, 1, 2}  # epoch 0 is the model at init
    assert len(p) == 2 * 2 * 3 * 5  # inits x seeds x (init + 2 epochs) x leaf modules (fc, act, fc, act, fc)
    hidden = p[p["name"].isin(["fc1", "fc2"])]
    # zero init: every hidden layer is one distinct unit, at init and after training
    assert (hidden[hidden["init"] == "zero"]["distinct_units"] == 1).all()
    assert (hidden[hidden["init"] == "he"]["distinct_units"] == 16).all()
    dead = p[(p["init"] == "zero") & p["name"].str.startswith("act")]["dead_frac"]
    assert (dead == 1.0).all()  # relu(0) = 0 for every input: every unit dead
    on_disk = pd.read_csv(tmp_path / "probe.csv")
    assert len(on_disk) == len(p) and (tmp_path / "probe.png").stat().st_size > 0


def test_probe_is_the_same_for_both_engines():
    kw = dict(inits=["random", "he"], dataset="digits", epochs=2, seeds=1, hidden=[16], device="cpu")
    a = initlab.compare(engine="batched", **kw).probe
    b = initlab.compare(engine="single", **kw).probe
    assert list(a["name"]) == list(b["name"]) and list(a["epoch"]) == list(b["epoch"])
    num = ["out_std", "grad_out_norm", "distinct_units", "eff_rank"]
    # same models up to float32 summation order (see test_engine): relative 1e-4 is ample
    np.testing.assert_allclose(a[num].to_numpy(), b[num].to_numpy(), rtol=1e-4, atol=1e-7)


def test_no_probe(tmp_path):
    res = initlab.compare(inits=["he"], dataset="digits", epochs=1, hidden=[8], probe=False, out=tmp_path)
    assert res.probe is None and not (tmp_path / "probe.csv").exists()


def test_probe_size_must_be_positive():
    with pytest.raises(ValueError, match="probe size must be a positive integer"):
        CompareSpec(dataset="digits", probe_size=0)


def test_api_coerces_numbers_and_devices_in_one_place():
    """numpy integers are integers, bools are never numbers, a torch.device is a device."""
    import numpy as np

    spec = CompareSpec(inits="he", dataset="digits", seeds=np.int64(2), first_seed=np.int32(1),
                       train=TrainConfig(epochs=np.int64(1), lr=np.float32(0.05)), device=torch.device("cpu"))
    assert spec.seeds == 2 and type(spec.seeds) is int and type(spec.first_seed) is int
    assert type(spec.train.epochs) is int and type(spec.train.lr) is float
    assert spec.device == "cpu"
    json.dumps(spec.to_dict())  # numpy scalars would not serialize
    for bad in (dict(lr=True), dict(epochs=True), dict(momentum=False), dict(batch_size=2.0)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        CompareSpec(inits="he", dataset="digits", seeds=True)
    with pytest.raises(ValueError, match="probe must be true or false"):
        CompareSpec(inits="he", dataset="digits", probe=1)


def test_compare_takes_a_model(tmp_path):
    result = initlab.compare(inits="he", dataset="digits", epochs=1, model="cnn(channels=4)", probe=False)
    assert result.spec.model == "cnn(channels=4)" and result.complete
