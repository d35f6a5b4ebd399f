"""initialize(model, "auto", example=...): per-layer scales from the model's graph and the
activation each layer feeds (initlab.schemes.auto), on MLPs and on the issue's other model families."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import initlab
from initlab.analysis.audit import audit
from initlab.core.criticality import measure_ratios
from initlab.schemes import check_scheme, initialize, initialize_with_report

X = torch.randn(256, 64, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (256,), generator=torch.Generator().manual_seed(2))


def xtanh(x):
    return x * torch.tanh(x)


class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def deep(act, depth=50, width=256):
    layers = [nn.Linear(64, width)]
    for _ in range(depth - 1):
        layers += [act() if isinstance(act, type) else Lambda(act), nn.Linear(width, width)]
    layers += [act() if isinstance(act, type) else Lambda(act), nn.Linear(width, 10)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.SELU, nn.ELU, nn.Sigmoid, torch.sin, xtanh])
def test_auto_keeps_forward_and_backward_signal_over_50_layers(act):
    """The issue's targets: forward RMS ratio (last/first hidden pre-activation) in [0.5, 2] and
    first/last weight-gradient ratio in [0.1, 10], median of 3 seeds (a width-256 net's log
    variance fluctuates by ≈ √(2L/n) ≈ 0.6 over 50 layers, so one seed alone is noisy)."""
    fwd, grad = [], []
    for seed in range(3):
        m = deep(act)
        initialize(m, "auto", example=X, generator=torch.Generator().manual_seed(seed))
        f, g = measure_ratios(m, X, Y)
        fwd.append(f)
        grad.append(g)
    f, g = float(np.median(fwd)), float(np.median(grad))
    assert 0.5 <= f <= 2 and 0.1 <= g <= 10, (act, fwd, grad)


def test_auto_says_when_no_scalar_init_exists():
    m = deep(lambda x: torch.relu(x) ** 2, depth=10, width=64)
    with pytest.warns(UserWarning, match="homogeneous of degree 2"):
        _, rep = initialize_with_report(m, "auto", example=X, generator=torch.Generator().manual_seed(0))
    assert rep["verdict"].str.contains("degree 2").any()


def test_auto_report_reads_roles_and_is_reproducible():
    m = deep(nn.Tanh, depth=4, width=32)
    _, rep = initialize_with_report(m, "auto", example=X, generator=torch.Generator().manual_seed(0))
    roles = rep.drop_duplicates("layer").set_index("layer")["role"]
    assert roles.iloc[0] == "input" and roles.iloc[-1] == "output (linear)" and (roles.iloc[1:-1] == "hidden").all()
    assert rep["rule"].notna().all() and rep.attrs["graph_method"] == "fx"
    assert (rep.loc[rep["parameter"].str.endswith("bias") & (rep["role"] == "hidden"), "sigma_b2"] > 0).all()
    again = deep(nn.Tanh, depth=4, width=32)
    initialize(again, "auto", example=X, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), again.parameters()))


def test_empirical_mode_hits_the_targets_on_the_example():
    m = deep(nn.GELU, depth=12, width=64)
    _, rep = initialize_with_report(m, "auto(mode=empirical,tol=0.05)", example=X,
                                    generator=torch.Generator().manual_seed(0))
    hidden = rep[rep["role"].isin(["input", "hidden"])].drop_duplicates("layer")
    assert (hidden["iterations"] >= 1).all()
    assert np.allclose(hidden["measured_var"] / hidden["q_star"], 1, atol=0.05 + 1e-9) or \
        (hidden["iterations"] == 10).any()


class Res(nn.Module):
    def __init__(self, d=128, n=20):
        super().__init__()
        self.inp = nn.Linear(64, d)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)) for _ in range(n))
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)


class Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 96), nn.Linear(64, 32)
        self.fc, self.head = nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))))


class Trans(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(8, 64)
        layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.enc(self.emb(x.view(x.shape[0], 8, 8))).mean(1))


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 64, batch_first=True, num_layers=2)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        out, _ = self.lstm(x.view(x.shape[0], 8, 8))
        return self.head(out[:, -1])


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.f(x.view(x.shape[0], 1, 8, 8))


@pytest.mark.parametrize("cls, bounded", [(Res, True), (Cat, True), (Trans, True), (CNN, True), (LSTMNet, False)])
def test_auto_covers_every_parameter_of_other_model_families(cls, bounded):
    """No parameter left uncovered; forward/backward bounded where the theory applies (not to the
    LSTM's gated recurrence, which mean-field theory of feed-forward nets does not describe)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an uncovered parameter warns: make it fail
        _, rep = initialize_with_report(cls(), "auto", example=X, generator=torch.Generator().manual_seed(0))
    assert rep["rule"].notna().all()
    if bounded:
        a = audit(cls(), X, ["auto"]).candidates["auto"]
        assert 0.5 <= a.forward_ratio <= 2 and 0.1 <= a.grad_ratio <= 10, (a.forward_ratio, a.grad_ratio)


def test_residual_branches_are_scaled_by_their_count():
    _, rep = initialize_with_report(Res(n=20), "auto", example=X, generator=torch.Generator().manual_seed(0))
    final = rep[rep["parameter"] == "blocks.0.2.weight"].iloc[0]
    assert "÷20" in final["role"] and final["sigma_w2"] == pytest.approx(1 / 20)


def test_auto_errors_are_one_line():
    with pytest.raises(ValueError, match="pass example="):
        initialize(deep(nn.ReLU, 2, 8), "auto")
    with pytest.raises(ValueError, match="unknown auto mode 'fast'"):
        check_scheme("auto(mode=fast)")
    with pytest.raises(ValueError, match="unknown parameter for auto"):
        check_scheme("auto(speed=1)")
    with pytest.raises(ValueError, match="not inside a rules mapping"):
        initialize(deep(nn.ReLU, 2, 8), {"Linear": "auto"})
    assert "auto" in initlab.list_schemes()


def test_compare_runs_auto_on_the_probe_batch():
    res = initlab.compare(inits="auto,he", dataset="digits", epochs=1, hidden="32,32", activation="tanh",
                          device="cpu", probe=False)
    assert (res.runs["status"] == "done").all() and math.isfinite(res.summary["final_test_acc_mean"].iloc[0])
