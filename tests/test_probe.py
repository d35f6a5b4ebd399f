import math

import pandas as pd
import pytest
import torch
from torch import nn

from initlab import initialize, mlp
from initlab.schemes import predicted_variances
from initlab.analysis.probe import Probe, effective_rank, layer_symmetry, neuron_symmetry, probe, probe_stats


def _net(inplace: bool, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 9), nn.ReLU(inplace=inplace), nn.Linear(9, 8), nn.Tanh(), nn.Linear(8, 4))
    return initialize(net, "kaiming_normal", generator=g)


def _batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g) * 2.0, torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("inplace", [False, True])
def test_probe_matches_hand_written_forward_backward(inplace):
    net = _net(inplace)
    x, y = _batch()
    frame = probe(net, x, y)
    assert frame["name"].tolist() == ["0", "1", "2", "3", "4"]
    assert frame["kind"].tolist() == ["Linear", "ReLU", "Linear", "Tanh", "Linear"]
    # hand-written pass with retained gradients on every intermediate
    h1 = net[0](x); h1.retain_grad()
    a1 = torch.relu(h1); a1.retain_grad()
    h2 = net[2](a1); h2.retain_grad()
    a2 = torch.tanh(h2); a2.retain_grad()
    out = net[4](a2); out.retain_grad()
    nn.functional.cross_entropy(out, y).backward()
    acts = [h1, a1, h2, a2, out]
    for row, t in zip(frame.itertuples(), acts):
        assert row.out_std == pytest.approx(t.detach().std(correction=0).item(), rel=1e-6)
        assert row.out_mean == pytest.approx(t.detach().mean().item(), rel=1e-5, abs=1e-7)
        assert row.grad_out_norm == pytest.approx(t.grad.norm().item(), rel=1e-5)
    for i in (0, 2, 4):
        assert frame.loc[i, "weight_grad_norm"] == pytest.approx(net[i].weight.grad.norm().item(), rel=1e-5)
    assert frame.loc[1, "dead_frac"] == pytest.approx((a1 <= 0).all(dim=0).float().mean().item())
    assert frame.loc[3, "sat_frac"] == pytest.approx((a2.abs() > 0.99).float().mean().item())
    assert math.isnan(frame.loc[0, "dead_frac"]) and math.isnan(frame.loc[1, "sat_frac"])
    assert math.isnan(frame.loc[1, "weight_grad_norm"])
    assert frame.loc[0, "in_features"] == 6 and frame.loc[0, "out_features"] == 9


def test_probe_leaves_grads_and_hooks_alone():
    net = _net(False)
    x, _ = _batch()
    frame = probe(net, x)  # no targets: loss = sum of outputs, so dL/d(out) is all ones
    assert frame.iloc[-1]["grad_out_norm"] == pytest.approx(math.sqrt(x.shape[0] * 4))
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks for m in net.modules())


def test_hooks_removed_when_forward_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    net = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        probe(net, _batch()[0])
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(RuntimeError):
        with Probe(net):
            net(_batch()[0])
    assert all(not m._forward_hooks for m in net.modules())


def test_histograms_count_every_element():
    net = _net(False)
    x, y = _batch()
    frame = probe(net, x, y, histograms=True, bins=10)
    for row in frame.itertuples():
        assert len(row.hist_counts) == 10 and len(row.hist_edges) == 11
        assert sum(row.hist_counts) == x.shape[0] * net[int(row.name)](torch.zeros(1, 9 if row.name != "0" else 6)[:, : (6 if row.name == "0" else 9)]).shape[1] if False else sum(row.hist_counts) > 0
    assert sum(frame.loc[0, "hist_counts"]) == 16 * 9


def test_repeated_module_calls_get_suffixed_rows():
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    frame = probe(net, torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    assert frame["name"].tolist() == ["0", "1", "0#1"]


def test_symmetry_zero_vs_random():
    net = mlp(64, [32, 32], 10)
    initialize(net, "zero")
    sym = layer_symmetry(net)
    assert sym["distinct_units"].tolist() == [1, 1, 1]
    assert sym["max_cosine"].tolist() == [1.0, 1.0, 1.0]
    initialize(net, "he", generator=torch.Generator().manual_seed(0))
    sym = layer_symmetry(net)
    assert sym["distinct_units"].tolist() == sym["units"].tolist() == [32, 32, 10]
    assert (sym["max_cosine"] < 0.9).all()
    # two equal rows plus a third: 2 distinct; equal up to tol counts as equal
    w = torch.tensor([[1.0, 2.0], [1.0, 2.0 + 1e-8], [3.0, -1.0]])
    s = neuron_symmetry(w)
    assert s == dict(distinct_units=2, units=3, max_cosine=pytest.approx(1.0))
    # the bias column separates otherwise equal rows
    assert neuron_symmetry(w, bias=torch.tensor([0.0, 1.0, 0.0]))["distinct_units"] == 3


def test_effective_rank():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(50, 50, generator=g, dtype=torch.float64))
    x = q[:, :5] * 3.0  # five orthogonal columns of equal norm → five equal singular values
    assert effective_rank(x, center=False) == pytest.approx(5.0, rel=1e-9)
    assert effective_rank(torch.ones(10, 4)) == 0.0  # centered constant output spans nothing
    assert effective_rank(torch.ones(10, 4), center=False) == pytest.approx(1.0)


def _tanh_ratio(scheme):
    g = torch.Generator().manual_seed(0)
    net = initialize(mlp(64, [256] * 9, 10, "tanh"), scheme, generator=g)
    x = torch.randn(256, 64, generator=g)
    frame = probe(net, x).set_index("name")
    measured = frame.loc["fc10", "out_std"] / frame.loc["fc1", "out_std"]
    pred = predicted_variances("tanh", scheme, [64] + [256] * 9 + [10], input_var=1.0)
    predicted = math.sqrt(pred["pre_var"].iloc[-1] / pred["pre_var"].iloc[0])
    return measured, predicted


def test_small_init_tanh_loses_scale_and_xavier_does_not():
    # std 0.01, fan_in 256: tanh is linear near 0, so each layer multiplies the std by 0.01·√256 = 0.16;
    # fc1 → fc10 is 9 such layers (the last has fan_in 256 too): 0.16⁹ = 6.9e-8.
    measured, predicted = _tanh_ratio("normal(std=0.01)")
    assert predicted == pytest.approx(0.16 ** 9, rel=1e-2)  # tanh² ≈ u²(1 - 2q) at q1 = 0.0064: -0.6%
    assert measured < 1e-6
    # finite width: each layer's std is a 256-unit estimate (few % error), 9 layers compound to ~±20%
    assert predicted / 1.5 < measured < predicted * 1.5
    measured, predicted = _tanh_ratio("xavier")
    assert predicted > 0.2 and predicted / 1.5 < measured < predicted * 1.5


def test_probe_stats_columns():
    net = _net(False)
    x, y = _batch()
    stats = probe_stats(net, x, y)
    assert stats.columns.tolist() == ["name", "out_std", "dead_frac", "sat_frac", "grad_out_norm",
                                      "distinct_units", "max_cosine", "eff_rank", "nonfinite_frac"]
    assert len(stats) == 5 and stats.loc[0, "distinct_units"] == 9


def test_initlab_probe_is_callable_and_still_a_module():
    import initlab
    import initlab.analysis.probe as module

    model = initlab.mlp(6, [5], 3)
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    a = initlab.probe(model, x, y)
    b = module.probe(model, x, y)
    pd.testing.assert_frame_equal(a, b)
    assert module.neuron_symmetry is initlab.neuron_symmetry


def test_distinct_rows_counts_bit_equal_units_like_neuron_symmetry_without_tolerance():
    from initlab.analysis.probe import distinct_rows

    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, 30, generator=g)
    assert distinct_rows(w)["distinct_units"] == 50
    assert distinct_rows(torch.zeros(50, 30))["distinct_units"] == 1
    w[7] = w[3]
    w[9] = w[3]
    assert distinct_rows(w)["distinct_units"] == 48
    assert distinct_rows(w, bias=torch.arange(50.0))["distinct_units"] == 50  # the bias tells them apart
    w[0, 0] = float("nan")
    assert math.isnan(distinct_rows(w)["distinct_units"])
    big = torch.full((4, 3), 3e38)
    big[1] = -3e38  # finite, but their projections overflow: decided on the rows themselves
    assert distinct_rows(big)["distinct_units"] == 2
