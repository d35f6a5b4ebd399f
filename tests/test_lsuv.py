"""LSUV (Mishkin & Matas 2016): initialize(model, "lsuv", example=...), lsuv_, rules, reports, errors.

Properties are checked by measuring the model afresh with our own hooks, not by reading back the
table LSUV wrote."""
import math

import pytest
import torch
from torch import nn

from initlab.schemes import (
    REPORT_COLUMNS,
    SchemeSpec,
    check_scheme,
    initialize,
    initialize_with_report,
    lsuv_,
    needs_example,
    parse_scheme_list,
)

X = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
IMG = torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(2))
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def mlp(act, depth=20, width=128):
    layers = [nn.Linear(32, width), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def output_stats(model, x):
    """(std, mean) of every weight layer's output on x, pooled over its calls, in eval mode."""
    outs = {}
    hooks = [m.register_forward_hook(lambda m, i, o: outs.setdefault(m, []).append(o.detach().double().flatten()))
             for m in model.modules() if isinstance(m, LAYERS)]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(was)
    for h in hooks:
        h.remove()
    return {m: (float(torch.cat(v).std()), float(torch.cat(v).mean())) for m, v in outs.items()}


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
def test_every_layer_of_a_deep_mlp_is_within_tol(act):
    m = mlp(act)
    table = lsuv_(m, X, generator=gen())
    stats = output_stats(m, X)
    assert len(stats) == 20 and len(table) == 20
    assert all(abs(s - 1) <= 0.1 for s, _ in stats.values()), stats
    assert table["within_tol"].all() and (table["iterations"] <= 10).all() and (table["calls"] == 1).all()
    assert list(table["layer"]) == [str(i) for i in range(0, 40, 2)]  # forward order
    # the table's final std is what the model now gives
    assert table["std_after"].tolist() == pytest.approx([stats[m[int(n)]][0] for n in table["layer"]], rel=1e-9)


def test_every_layer_of_a_cnn_is_within_tol_and_tol_target_come_from_the_scheme_text():
    m = cnn()
    _, rep = initialize_with_report(m, "lsuv(tol=0.02,target_std=2.0,max_iters=5)", example=IMG, generator=gen())
    stats = output_stats(m, IMG)
    assert len(stats) == 5
    assert all(abs(s - 2) <= 0.02 for s, _ in stats.values()), stats
    table = rep.attrs["lsuv"]
    assert table["within_tol"].all() and (table["iterations"] <= 5).all()
    assert list(table["module_type"]) == ["Conv2d", "Conv2d", "ConvTranspose2d", "Conv2d", "Linear"]


def test_same_generator_same_model_and_different_seed_differs():
    a, b, c = cnn(), cnn(), cnn()
    for model, seed in ((a, 3), (b, 3), (c, 4)):
        initialize(model, "lsuv", example=IMG, generator=gen(seed))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_weights_are_rescaled_orthonormal_matrices():
    """Orthogonal pre-init, then W ← c·W: W viewed as (dim 0, rest) has orthonormal rows (or
    columns when dim 0 is larger) times c = std_after / std_before of the layer's output (zero
    biases: the output is linear in W)."""
    m = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 16))
    table = lsuv_(m, X, generator=gen()).set_index("layer")
    for name in ("0", "2", "4"):
        w = m[int(name)].weight.detach().double()
        row = table.loc[name]
        assert row["iterations"] == 1  # zero bias: output linear in W, one rescaling is exact
        c = row["std_after"] / row["std_before"]
        gram = w.T @ w if w.shape[0] > w.shape[1] else w @ w.T
        assert torch.allclose(gram, c**2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5 * c**2)
    conv = cnn()
    table = lsuv_(conv, IMG, generator=gen()).set_index("layer")
    w = conv[0].weight.detach().double().flatten(1)  # (8, 9): orthonormal rows
    c = table.loc["0", "std_after"] / table.loc["0", "std_before"]
    assert torch.allclose(w @ w.T, c**2 * torch.eye(8, dtype=torch.float64), atol=1e-5 * c**2)


def test_mean_correction_centres_outputs_and_without_it_biases_are_untouched():
    m = initialize(mlp(nn.ReLU, depth=8, width=64), {"*": "orthogonal", "*.bias": "constant(value=0.5)"},
                   generator=gen())
    assert min(mu for _, mu in output_stats(m, X).values()) > 0.3  # off-centre by the biases
    table = lsuv_(m, X, pre_init="none", mean_correction=True)
    stats = output_stats(m, X)
    assert all(abs(mu) < 1e-6 and abs(s - 1) <= 0.1 for s, mu in stats.values()), stats
    assert table["within_tol"].all() and (table["mean_after"].abs() < 1e-6).all()

    plain = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    old = [p.detach().clone() for p in plain.parameters()]
    table = lsuv_(plain, X, pre_init="none")  # torch's own init, biases U(±1/sqrt(fan_in)) kept
    for (name, p), q in zip(plain.named_parameters(), old):
        if name.endswith("bias"):
            assert torch.equal(p, q)
        else:  # a positive multiple of the weight it had
            ratio = p / q
            assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio)) and ratio.flatten()[0] > 0
    assert table["within_tol"].all()


class Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc1 = nn.Linear(8 * 10 * 10, 32)
        self.fc_out = nn.Linear(32, 10)
        self.unused = nn.Linear(32, 32)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.fc_out(torch.tanh(self.fc1(h)))


def test_rules_give_lsuv_its_layers_and_other_layers_their_own_scheme():
    m = Named()
    _, rep = initialize_with_report(m, {"*": "lsuv", "fc_out.*": "zeros"}, example=IMG, generator=gen())
    assert not m.fc_out.weight.any() and not m.fc_out.bias.any()
    stats = output_stats(m, IMG)
    assert abs(stats[m.conv][0] - 1) <= 0.1 and abs(stats[m.fc1][0] - 1) <= 0.1
    table = rep.attrs["lsuv"]
    assert list(table["layer"]) == ["conv", "fc1", "unused"]
    assert set(REPORT_COLUMNS) <= set(rep.columns)
    row = rep.set_index("parameter").loc["fc1.weight"]
    assert row["scheme"] == "lsuv" and row["lsuv_iterations"] == 1 and row["within_tol"] is True
    assert "pre-init orthogonal" in row["note"] and abs(row["output_std_after"] - 1) <= 0.1
    assert rep.set_index("parameter").loc["fc_out.weight", "scheme"] == "zeros"

    # each lsuv rule with its own parameters
    m = Named()
    initialize(m, {"Conv2d": "lsuv(target_std=0.5)", "Linear": "lsuv(tol=0.01)"}, example=IMG, generator=gen())
    stats = output_stats(m, IMG)
    assert abs(stats[m.conv][0] - 0.5) <= 0.1 and abs(stats[m.fc_out][0] - 1) <= 0.01


def test_a_layer_that_never_runs_keeps_its_pre_init_and_is_reported():
    m = Named()
    table = lsuv_(m, IMG, generator=gen()).set_index("layer")
    row = table.loc["unused"]
    assert row["calls"] == 0 and row["iterations"] == 0 and not row["within_tol"] and math.isnan(row["std_after"])
    assert "never ran" in row["note"]
    w = m.unused.weight.detach().double()  # orthogonal pre-init, not rescaled
    assert torch.allclose(w @ w.T, torch.eye(32, dtype=torch.float64), atol=1e-5)
    assert table.drop(index="unused")["within_tol"].all()


class Shared(nn.Module):
    """One Linear run three times per forward (weights shared across depth)."""

    def __init__(self):
        super().__init__()
        self.inp, self.block, self.out = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for _ in range(3):
            h = torch.tanh(self.block(self.drop(h)))
        return self.out(h)


def test_a_layer_run_several_times_is_measured_over_all_its_calls_in_eval_mode():
    m = Shared().train()
    table = lsuv_(m, X, generator=gen(), tol=0.02).set_index("layer")
    assert m.training and m.drop.training  # flags restored
    assert table.loc["block", "calls"] == 3 and "3 calls" in table.loc["block", "note"]
    stats = output_stats(m, X)  # pooled over the three calls
    assert all(abs(s - 1) <= 0.02 for s, _ in stats.values()), stats
    assert table["within_tol"].all()


def test_max_iters_bounds_the_rescalings_and_warns_when_tol_is_not_reached():
    m = nn.Sequential(nn.Linear(32, 64))
    with torch.no_grad():
        m[0].bias.normal_(0, 5.0, generator=gen())  # per-unit offsets alone have std ≈ 5 > target
    with pytest.warns(UserWarning, match="1 layer.* not within tol"):
        table = lsuv_(m, X, pre_init="none", max_iters=3)
    assert table.loc[0, "iterations"] == 3 and not table.loc[0, "within_tol"]


def test_errors_are_one_line_and_leave_the_model_as_it_was():
    cases = [
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv"), "pass example="),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), {"*": "lsuv", "Linear": "he"}), "pass example="),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv(tol=-1)", example=X), "tol must be a finite number > 0"),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv(max_iters=0)", example=X), "max_iters must be an integer"),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv", example=X, target_std=0), "target_std"),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv(speed=2)", example=X), "unexpected parameter 'speed'"),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv(pre_init=auto)", example=X), "pre_init='auto'"),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv(pre_init=foo)", example=X), "unknown init scheme 'foo'"),
        (lambda: initialize(nn.LSTM(4, 4), "he", recurrent="lsuv"), "not hidden-to-hidden"),
        (lambda: check_scheme("lsuv(tol=-1)"), "tol"),
        (lambda: initialize(mlp(nn.ReLU, 3, 8), "lsuv", example=torch.randn(4, 5)), "model failed on the example"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)

    m = nn.Sequential(nn.Linear(32, 16, bias=False), nn.ReLU(), nn.Linear(16, 4))
    old = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\) has output std 0 ") as info:
        initialize(m, "lsuv", example=torch.zeros(8, 32), generator=gen())
    assert "\n" not in str(info.value)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), old))


def test_needs_example_and_scheme_text_round_trip():
    for rules in ("lsuv", "lsuv(tol=0.05)", SchemeSpec("lsuv"), {"name": "lsuv", "params": {}},
                  {"*": "lsuv", "fc_out.*": "zeros"}, "auto", "auto(mode=empirical)"):
        assert needs_example(rules), rules
    for rules in ("he", {"*": "he", "Linear": "orthogonal"}, SchemeSpec("normal", {"std": 0.1})):
        assert not needs_example(rules), rules
    assert parse_scheme_list("lsuv(tol=0.05),he") == ("lsuv(tol=0.05)", "he")
    assert str(check_scheme("lsuv(mean_correction=true)")) == "lsuv(mean_correction=True)"
