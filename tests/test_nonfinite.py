"""Non-finite values are data (issue 7): statistics and plots take inf/NaN and never raise."""
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import initlab
import initlab.plots.compare as plots
import initlab.plots.probe as probe_plots
from initlab.analysis.diagnostics import depth_profile, profile_summary
from initlab.experiments.compare import CompareSpec
from initlab.analysis.probe import STATS_COLUMNS, effective_rank, neuron_symmetry, probe, probe_stats
from initlab.experiments.depth import plot_depth as sweep_plot_depth
from initlab.training.loop import TrainConfig

BAD = (math.inf, -math.inf, math.nan)


def _poison(t: torch.Tensor, value: float, g: torch.Generator) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[int(torch.randint(t.numel(), (1,), generator=g))] = value
    return t


# -- reference copies of the pre-issue-7 code: finite inputs must give exactly these results --------

def _effective_rank_v0(x, center=True):
    m = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if center:
        m = m - m.mean(dim=0, keepdim=True)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    total = s.sum()
    if not total > 1e-12 * max(1.0, float(x.detach().abs().max())) * math.sqrt(m.numel()):
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@pytest.mark.parametrize("seed", range(12))
def test_effective_rank_finite_unchanged_nonfinite_nan(seed):
    g = torch.Generator().manual_seed(seed)
    b, u = int(torch.randint(2, 40, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))
    rank = int(torch.randint(1, min(b, u) + 1, (1,), generator=g))
    x = torch.randn(b, rank, generator=g) @ torch.randn(rank, u, generator=g) * 10.0 ** float(torch.randint(-3, 4, (1,), generator=g))
    for center in (True, False):
        assert effective_rank(x, center=center) == _effective_rank_v0(x, center=center)
        for v in BAD:
            assert math.isnan(effective_rank(_poison(x, v, g), center=center))
    # beyond float64's Gram range: rescaled, same rank as the moderate copy (scale invariance)
    big = x.to(torch.float64) * 1e200 / x.abs().max()
    assert effective_rank(big) == pytest.approx(effective_rank(x.to(torch.float64)), rel=1e-6)


def test_effective_rank_edge_cases():
    assert math.isnan(effective_rank(torch.full((5, 3), math.nan)))
    assert math.isnan(effective_rank(torch.full((5, 3), math.inf)))
    assert effective_rank(torch.ones(10, 4)) == 0.0
    assert math.isnan(effective_rank(torch.zeros(0, 4)))


def _neuron_symmetry_reference(weight, tol=1e-6, bias=None):
    rows = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    if bias is not None:
        rows = torch.cat([rows, bias.detach().reshape(-1, 1).to(torch.float64)], dim=1)
    n = rows.shape[0]
    reps, seen = 0, [False] * n
    inf_norm = rows.abs().amax(dim=1)
    for i in range(n):  # greedy grouping, written out
        if seen[i]:
            continue
        for j in range(n):
            if not seen[j] and (rows[i] - rows[j]).abs().max() <= tol * max(1.0, float(inf_norm[i]), float(inf_norm[j])):
                seen[j] = True
        reps += 1
    return reps


@pytest.mark.parametrize("seed", range(10))
def test_neuron_symmetry_finite_unchanged_nonfinite_nan(seed):
    g = torch.Generator().manual_seed(seed)
    n, k = int(torch.randint(2, 12, (1,), generator=g)), int(torch.randint(1, 8, (1,), generator=g))
    w = torch.randn(n, k, generator=g)
    w[torch.randint(n, (n // 2,), generator=g)] = w[0].clone()  # some duplicated units
    bias = torch.randn(n, generator=g)
    for b in (None, bias):
        s = neuron_symmetry(w, bias=b)
        assert s["distinct_units"] == _neuron_symmetry_reference(w, bias=b) and s["units"] == n
        assert -1.0 - 1e-12 <= s["max_cosine"] <= 1.0 + 1e-12
        for v in BAD:
            cases = [(_poison(w, v, g), b)] + ([(w, _poison(b, v, g))] if b is not None else [])
            for pw, pb in cases:
                r = neuron_symmetry(pw, bias=pb)
                assert math.isnan(r["distinct_units"]) and math.isnan(r["max_cosine"]) and r["units"] == n
    huge = w.to(torch.float64) * 1e300  # finite; row norms overflow float64 without rescaling
    assert neuron_symmetry(huge)["max_cosine"] == pytest.approx(neuron_symmetry(w)["max_cosine"], abs=1e-9)


def _small_net(seed=0):
    g = torch.Generator().manual_seed(seed)
    return initlab.initialize(nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 8), nn.Tanh(), nn.Linear(8, 4)),
                              "he", generator=g)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("where", ["input", "weight"])
def test_probe_takes_nonfinite_and_counts_it(value, where):
    g = torch.Generator().manual_seed(3)
    net = _small_net()
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
    clean = probe(net, x, y, histograms=True, bins=7)
    assert (clean["nonfinite_frac"] == 0).all()
    if where == "input":
        x = _poison(x, value, g)
    else:
        with torch.no_grad():
            net[2].weight[0, 0] = value
    frame = probe(net, x, y, histograms=True, bins=7)  # must not raise, also with a NaN loss
    stats = probe_stats(net, x, y)
    assert stats.columns.tolist() == STATS_COLUMNS and "nonfinite_frac" in STATS_COLUMNS
    assert len(frame) == 5 and frame["nonfinite_frac"].between(0, 1).all()
    assert (frame["nonfinite_frac"] > 0).any()
    for row in frame.itertuples():
        if row.nonfinite_frac > 0:
            assert math.isnan(row.eff_rank)
        counts = np.asarray(row.hist_counts)
        n_el = 16 * (row.out_features if row.kind == "Linear" else (9 if row.name == "1" else 8))
        assert len(counts) == 7 and counts.sum() == round(n_el * (1 - row.nonfinite_frac))  # finite values only
        assert np.isfinite(row.hist_edges).all()
    if where == "weight":
        assert math.isnan(frame.loc[2, "distinct_units"]) and math.isnan(frame.loc[2, "max_cosine"])
        assert frame.loc[0, "distinct_units"] == clean.loc[0, "distinct_units"]
    # layers before the poison are unchanged
    first = 0 if where == "input" else 2
    pd.testing.assert_frame_equal(frame.iloc[:first].drop(columns=["grad_out_norm", "weight_grad_norm"]),
                                  clean.iloc[:first].drop(columns=["grad_out_norm", "weight_grad_norm"]))


def test_deep_normal_init_overflows_and_probe_reports_it():
    model = initlab.mlp(64, [256] * 40, 10, "relu")
    initlab.initialize(model, "normal(std=1)", generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 64, generator=g), torch.randint(0, 10, (64,), generator=g)
    with torch.no_grad():  # it really overflows float32
        assert not torch.isfinite(model(x)).all()
    frame = probe(model, x, y, histograms=True)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 81
    assert (~np.isfinite(frame["out_std"])).any() and (frame["nonfinite_frac"] > 0).any()
    assert (frame["nonfinite_frac"].iloc[-1]) == 1.0
    bad = frame["nonfinite_frac"] > 0
    first_bad = int(np.argmax(bad.to_numpy()))
    assert bad.iloc[first_bad:].all() and (frame["nonfinite_frac"].iloc[:first_bad] == 0).all()
    assert frame["eff_rank"][bad].isna().all() and frame["eff_rank"].iloc[:first_bad].notna().all()
    assert np.isfinite(frame["out_std"].iloc[:first_bad]).all()
    stats = probe_stats(model, x, y)
    assert stats.columns.tolist() == STATS_COLUMNS and len(stats) == 81


def test_profile_summary_with_nonfinite_measurements():
    rows = []
    for init, stds, grads in (("ok", [1.0, 1.0, 1.0], [2.0, 1.5, 1.0]),
                              ("inf", [1.0, math.inf, math.nan], [math.inf, math.inf, math.inf]),
                              ("nan", [math.nan] * 3, [math.nan] * 3)):
        for i, (s, gr) in enumerate(zip(stds, grads), start=1):
            rows.append(dict(activation="relu", init=init, name=f"fc{i}", kind="Linear", out_std=s, pred_std=s,
                             grad_out_norm=gr, pred_grad_norm=gr, dead_frac=math.nan, sat_frac=math.nan,
                             distinct_units=math.nan if init == "nan" else 4.0,
                             nonfinite_frac=0.0 if math.isfinite(s) else 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        summ = profile_summary(pd.DataFrame(rows)).set_index("init")
    assert summ.loc["ok", "grad_first_over_last"] == 2.0 and summ.loc["ok", "nonfinite_from"] == ""
    assert math.isnan(summ.loc["inf", "grad_first_over_last"])  # inf / inf
    assert summ.loc["inf", "nonfinite_from"] == "fc2" and summ.loc["nan", "nonfinite_from"] == "fc1"
    assert math.isnan(summ.loc["nan", "std_first"]) and math.isnan(summ.loc["nan", "grad_first_over_last"])


@pytest.fixture
def captured(monkeypatch):
    """Figures passed to save_figure, by file name (the PNG is still written)."""
    figs = {}
    real = plots.save_figure

    def save(fig, path, *a, **k):
        texts = [fig._suptitle.get_text() if fig._suptitle else ""]
        for ax in fig.axes:
            texts += [ax.get_title(), *ax.get_legend_handles_labels()[1],
                      *(t.get_text() for t in ax.get_yticklabels())]
        figs[Path(path).name] = "\n".join(texts)
        return real(fig, path, *a, **k)

    monkeypatch.setattr(plots, "save_figure", save)
    monkeypatch.setattr(probe_plots, "save_figure", save)
    return figs


def test_depth_profile_overflowing_init_runs_and_plots(tmp_path, captured):
    frame = depth_profile(["relu"], ["he", "normal(std=1)"], depth=40, width=64, batch=64)
    assert len(frame) == 2 * 81 and profile_summary(frame)["init"].tolist() == ["he", "normal(std=1)"]
    # width 256: the same depth overflows float32
    wide = depth_profile(["relu"], ["he", "normal(std=1)"], depth=40, width=256, batch=64)
    normal = wide[wide["init"] == "normal(std=1)"]
    assert (normal["nonfinite_frac"] > 0).any() and (wide[wide["init"] == "he"]["nonfinite_frac"] == 0).all()
    summ = profile_summary(wide).set_index("init")
    assert summ.loc["normal(std=1)", "nonfinite_from"].startswith("fc") and summ.loc["he", "nonfinite_from"] == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        paths = probe_plots.plot_profile(wide, tmp_path, "digits 40x256")
        hist = probe_plots.plot_histograms(wide, "relu", tmp_path / "deep.png", layers=(1, 30, 38, 40))
    for p in paths + [hist]:
        assert p.stat().st_size > 0
    assert "non-finite (inf/NaN) from layer" in captured["depth_std.png"]
    assert "normal(std=1)" in captured["depth_std.png"].split("non-finite")[1]
    assert "all inf/NaN, not drawn" in captured["deep.png"]


def _fake_result(seeds=3, epochs=4, steps_per=10):
    """he fine; xavier seed 2 diverges in epoch 3; normal(std=1) diverges at init for every seed."""
    m, s, pr = [], [], []
    for init in ("he", "xavier", "normal(std=1)"):
        for seed in range(seeds):
            if init == "normal(std=1)":
                m.append(dict(init=init, seed=seed, epoch=0, train_loss=math.nan, test_loss=math.nan,
                              test_acc=math.nan, diverged=True, diverged_step=None))
            for e in range(epochs + 1):
                nan_run = init == "normal(std=1)"
                pr += [dict(init=init, seed=seed, epoch=e, name=n, out_std=math.nan if nan_run else 1.0,
                            dead_frac=0.2, sat_frac=math.nan, grad_out_norm=math.inf if nan_run else 0.1,
                            distinct_units=8.0, max_cosine=0.1, eff_rank=math.nan if nan_run else 5.0,
                            nonfinite_frac=1.0 if nan_run else 0.0) for n in ("fc1", "act1", "fc2")]
                if nan_run:
                    break
                if e == 0:
                    continue
                diverges = init == "xavier" and seed == 2 and e == 3
                for st in range(steps_per):
                    loss = [1e30, math.inf, math.nan][st % 3] if diverges and st >= 4 else 1.0 / e
                    s.append(dict(init=init, seed=seed, step=(e - 1) * steps_per + st, train_loss=loss))
                m.append(dict(init=init, seed=seed, epoch=e, train_loss=math.nan if diverges else 1.0 / e,
                              test_loss=math.nan if diverges else 1.0 / e,
                              test_acc=math.nan if diverges else 0.5 + 0.1 * e, diverged=diverges,
                              diverged_step=(e - 1) * steps_per + 5 if diverges else None))
                if diverges:
                    break
    spec = CompareSpec(inits=("he", "xavier", "normal(std=1)"), dataset="digits", hidden=(8, 8), seeds=seeds,
                       device="cpu", train=TrainConfig(epochs=epochs))
    return SimpleNamespace(spec=spec, metrics=pd.DataFrame(m), steps=pd.DataFrame(s), probe=pd.DataFrame(pr))


def test_compare_plots_mark_diverged_and_nonfinite(tmp_path, captured):
    res = _fake_result()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        paths = plots.plot_compare(res, tmp_path) + [plots.plot_probe(res, tmp_path)]
    for p in paths:
        assert p.stat().st_size > 0
    for name in ("test_acc.png", "train_loss.png"):
        text = captured[name]
        assert "he (n=3)" in text and "xavier (n=3, 1 diverged)" in text
        assert "normal(std=1) (n=3, 3 diverged)" in text  # every run diverged at init: still in the legend
        assert "diverged" in text.splitlines()  # the strip's tick label
    assert "normal(std=1) (n=3, 3 diverged, 3 at init)" in captured["steps.png"]
    assert "first inf/NaN loss" in captured["steps.png"]
    assert "inf/NaN, not drawn: normal(std=1) (from epoch 0)" in captured["probe.png"]
    # CSV round trip: "diverged" read back as strings must not count every run as diverged
    res.metrics = res.metrics.assign(diverged=res.metrics["diverged"].astype(str))
    plots.plot_compare(res, tmp_path)
    assert "he (n=3)" in captured["test_acc.png"]


def test_sweep_plot_depth_with_runs_diverged_at_init(tmp_path, captured):
    rows = []
    for depth in (2, 10, 40):
        for init in ("he", "normal(std=1)"):
            for seed in range(2):
                if init == "normal(std=1)" and depth >= 10:  # diverged at init: one epoch-0 row
                    rows.append(dict(depth=depth, init=init, seed=seed, epoch=0, train_loss=math.nan,
                                     test_loss=math.nan, test_acc=math.nan, diverged=True))
                    continue
                rows += [dict(depth=depth, init=init, seed=seed, epoch=e, train_loss=1.0, test_loss=1.0,
                              test_acc=0.8, diverged=False) for e in (1, 2)]
    metrics = pd.DataFrame(rows)
    for diverged in (metrics["diverged"], metrics["diverged"].astype(str)):
        out = sweep_plot_depth(metrics.assign(diverged=diverged), tmp_path / "depth_acc.png",
                               inits=("he", "normal(std=1)"), title="t", chance=0.1)
        assert out.stat().st_size > 0
        text = captured["depth_acc.png"]
        assert "normal(std=1) (4 of 6 runs diverged)" in text and "\nhe\n" in text
    everything_diverged = metrics[metrics["init"] == "normal(std=1)"].assign(diverged=True, epoch=0, test_acc=math.nan)
    sweep_plot_depth(everything_diverged, tmp_path / "all.png", inits=("normal(std=1)",))
    assert (tmp_path / "all.png").stat().st_size > 0
