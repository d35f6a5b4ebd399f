"""Honest selection: a seeded, stratified validation split; best lr chosen on validation, reported on test."""
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from initlab.cli import app
from initlab.data import split_validation
from initlab.experiments.sweeps import SweepSpec, run_sweep
from initlab.experiments.sweeps.plots import plot_heatmap, plot_lr_sensitivity
from initlab.experiments.sweeps.select import best_lr, fixed_lr_table, paired_comparison


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared machine: one thread is fastest (conftest restores the count afterwards)
    torch.set_num_threads(1)


def _rows(x):
    return {tuple(r) for r in x.tolist()}


def test_validation_split_is_disjoint_stratified_and_fixed_by_seed(digits):
    train, (x_val, y_val) = split_validation(digits, 0.1, seed=0)
    n = digits.x_train.shape[0]
    assert train.x_train.shape[0] + x_val.shape[0] == n
    assert abs(x_val.shape[0] - round(0.1 * n)) <= digits.num_classes
    assert torch.equal(train.x_test, digits.x_test)  # the test set is untouched
    # disjoint, and together exactly the training set (rows are distinct images here)
    tr, va, full = _rows(train.x_train), _rows(x_val), _rows(digits.x_train)
    assert not tr & va and tr | va == full
    # stratified: every class keeps ~10% of its examples in validation
    counts = torch.bincount(y_val, minlength=10).double() / torch.bincount(digits.y_train, minlength=10).double()
    assert torch.all((counts - 0.1).abs() < 0.03)
    again = split_validation(digits, 0.1, seed=0)[1][0]
    other = split_validation(digits, 0.1, seed=1)[1][0]
    assert torch.equal(again, x_val) and not torch.equal(other, x_val)
    same, (x0, _) = split_validation(digits, 0.0)
    assert same is digits and x0.shape[0] == 0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_validation(digits, 1.0)


def _synthetic():
    # xavier: validation prefers lr 0.1, test would prefer lr 1.0; he: lr 1.0 diverges for one seed
    rows = []
    for seed in range(3):
        for lr, val, test in ((0.01, 0.80, 0.79), (0.1, 0.90, 0.85), (1.0, 0.88, 0.95)):
            rows.append(dict(init="xavier", lr=lr, seed=seed, status="done", final_val_acc=val + 0.001 * seed,
                             final_test_acc=test + 0.001 * seed))
        for lr, val, test in ((0.01, 0.70, 0.70), (0.1, 0.86, 0.84), (1.0, 0.97, 0.97)):
            diverged = lr == 1.0 and seed == 2
            rows.append(dict(init="he", lr=lr, seed=seed, status="diverged" if diverged else "done",
                             final_val_acc=np.nan if diverged else val, final_test_acc=np.nan if diverged else test))
    frame = pd.DataFrame(rows)
    frame["model"], frame["dataset"] = "mlp", "digits"
    return frame


def test_best_lr_is_chosen_on_validation_not_test():
    best = best_lr(_synthetic()).set_index("init")
    assert best.loc["xavier", "best_lr"] == 0.1 and best.loc["xavier", "test_pick_lr"] == 1.0
    assert best.loc["xavier", "test_mean"] == pytest.approx(0.851)  # reported on test, at the val-chosen lr
    assert best.loc["xavier", "at_edge"] == False  # noqa: E712
    # he at lr 1: validation 0.97, 0.97 and a diverged run counting 0 -> 0.647 < 0.86 at lr 0.1
    assert best.loc["he", "best_lr"] == 0.1
    with pytest.raises(ValueError, match="test set"):
        best_lr(_synthetic(), metric="final_test_acc")


def test_paired_comparison_at_each_inits_best_lr():
    runs = _synthetic()
    paired = paired_comparison(runs).set_index("init")
    assert (paired["reference"] == "xavier").all()  # best validation score
    assert paired.loc["he", "diff_mean"] == pytest.approx(0.84 - 0.851)
    assert paired.loc["he", "wins"] == 0 and paired.loc["he", "pairs"] == 3
    fixed = fixed_lr_table(runs, 1.0).set_index("init")
    assert fixed.loc["xavier", "test_mean"] == pytest.approx(0.951)
    with pytest.raises(ValueError, match="not in the sweep"):
        fixed_lr_table(runs, 0.5)


def test_tuned_sweep_end_to_end_with_plots(tmp_path, digits):
    spec = SweepSpec({"inits": ["random", "he"], "lr": [0.01, 0.1, 0.5], "seeds": 2, "epochs": 1, "width": 16},
                     name="tuned")
    res = run_sweep(spec, tmp_path / "s.db", data=digits)
    best = best_lr(res.runs)
    assert set(best["init"]) == {"random", "he"} and best["best_lr"].isin([0.01, 0.1, 0.5]).all()
    # the chosen lr maximizes mean validation accuracy over seeds
    fin = res.runs.groupby(["init", "lr"])["final_val_acc"].mean()
    for r in best.itertuples():
        assert fin[r.init].idxmax() == r.best_lr
    png = plot_lr_sensitivity(res.runs, tmp_path / "lr.png")
    assert png.stat().st_size > 1000
    table = plot_heatmap(res.runs, "lr", "init", "final_test_acc", tmp_path / "hm.png")
    assert table.shape == (2, 3) and (tmp_path / "hm.png").exists()
    with pytest.raises(ValueError, match="no column 'depthh'"):
        plot_heatmap(res.runs, "depthh", "init", "final_test_acc", tmp_path / "x.png")
    r = CliRunner().invoke(app, ["runs", "best", "--store", str(tmp_path / "s.db"), "--plot", str(tmp_path / "b.png"),
                                 "--fixed-lr", "0.01"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "own best lr" in r.output and "fixed lr 0.01" in r.output and (tmp_path / "b.png").exists()
    r = CliRunner().invoke(app, ["runs", "heatmap", "--x", "lr", "--y", "init", "--metric", "final_val_acc",
                                 "--out", str(tmp_path / "h2.png"), "--store", str(tmp_path / "s.db")])
    assert r.exit_code == 0 and (tmp_path / "h2.png").exists()
