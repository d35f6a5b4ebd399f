"""initlab.analysis.audit: per-scheme signal profile, flags, recommendation, and the `initlab audit` command."""
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import initlab
from initlab.analysis.audit import audit, pick_logits
from initlab.cli import app

X = torch.randn(128, 32, generator=torch.Generator().manual_seed(0))


def deep_relu(depth=20, width=128):
    return initlab.mlp(32, [width] * depth, 10, activation="relu")


def test_deep_relu_flags_xavier_and_recommends_he():
    # Var(W) = 1/n (Xavier on square layers) halves a ReLU net's signal variance per layer:
    # 20 layers → std ratio ≈ 2^-10; He (2/n) keeps it ≈ 1 (He et al. 2015, §2.2).
    r = audit(deep_relu(), X, ["xavier", "he"])
    x, h = r.candidates["xavier"], r.candidates["he"]
    assert x.forward_ratio < 0.01 and any(f.startswith("vanishing") for f in x.flags)
    assert 0.5 <= h.forward_ratio <= 2 and 0.1 <= h.grad_ratio <= 10 and h.healthy
    assert r.recommended == "he" and "he keeps both signals bounded" in r.reason
    r.assert_healthy("he")
    with pytest.raises(AssertionError, match="under xavier: vanishing"):
        r.assert_healthy("xavier")


def test_zero_init_is_symmetric_and_silent():
    r = audit(deep_relu(3, 16), X, ["zero", "he"])
    flags = r.candidates["zero"].flags
    assert any(f.startswith("symmetric") for f in flags) and any(f.startswith("no signal") for f in flags)
    assert r.recommended == "he"


def test_large_init_is_flagged_non_finite_not_raised():
    r = audit(deep_relu(40, 64), X, ["normal(std=4)", "he"])
    assert "non-finite" in r.candidates["normal(std=4)"].flags and r.recommended == "he"


def test_the_callers_model_is_never_touched():
    m = deep_relu(2, 8)
    before = [p.detach().clone() for p in m.parameters()]
    audit(m, X, ["zero", "he"])
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = initlab.mlp(32, [16, 16], 10)

    def forward(self, x):
        return self.body(x), {"aux": x.mean()}


class DictOut(TupleOut):
    def forward(self, x):
        return {"hidden": x, "logits": self.body(x)}


@pytest.mark.parametrize("cls", [TupleOut, DictOut])
def test_tuple_and_dict_outputs_are_handled(cls):
    r = audit(cls(), X, ["he"])
    assert r.candidates["he"].error is None and len(r.candidates["he"].layers) == 3
    assert set(r.candidates["he"].layers["name"]) == {"body.fc1", "body.fc2", "body.fc3"}


def test_pick_logits_errors_in_one_line():
    with pytest.raises(ValueError, match="cannot find logits"):
        pick_logits(("text", 3))


def test_model_failing_on_the_example_is_one_line():
    with pytest.raises(ValueError, match=r"fails on the example input of shape \(128, 32\): RuntimeError"):
        audit(initlab.mlp(7, [4], 2), X, ["he"])


def test_cli_audit_end_to_end_and_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "mlp(depth=12,width=64,activation=relu)", "--inits", "xavier,he",
                            "--batch", "64", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "recommended: he" in r.output and "vanishing" in r.output
    s = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert list(s["scheme"]) == ["xavier", "he"] and s.loc[s["scheme"] == "he", "recommended"].item()
    assert (tmp_path / "a" / "audit_forward.png").stat().st_size > 0
    for args, msg in ((["vgg"], "unknown model 'vgg'"), (["mlp(depht=3)"], "mlp takes depth, width"),
                      (["mlp", "--input-shape", "0,3"], "--input-shape must be positive"),
                      (["nosuchmod:f"], "cannot import module"), (["mlp", "--inits", "bogus"], "unknown init scheme")):
        r = runner.invoke(app, ["audit", *args, "--out", str(tmp_path / "b")])
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_audit_reports_the_jacobian_spectrum_of_each_candidate():
    """A linear MLP 64→16→16→10 under orthogonal init is a product of matrices with orthonormal rows,
    so J Jᵀ = I: every singular value is 1 (mean square 1, zero decades); Xavier's is not isometric."""
    from initlab.models import make_model

    model = make_model("mlp(depth=2,width=16,activation=linear)", (1, 8, 8), 10)
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    s = initlab.audit(model, x, ["orthogonal", "xavier"], jacobian=True).summary().set_index("scheme")
    assert s.loc["orthogonal", "jac_mean_sq"] == pytest.approx(1.0, abs=1e-5)
    assert s.loc["orthogonal", "jac_decades"] == pytest.approx(0.0, abs=1e-5)
    assert s.loc["xavier", "jac_decades"] > 0.1
    # opt-in: by default the spectrum (seconds to minutes on a real convnet) is not taken
    assert initlab.audit(model, x, ["orthogonal"]).summary()["jac_mean_sq"].isna().all()


def test_audit_plots_say_only_what_they_draw(monkeypatch, tmp_path):
    """A residual net has no mean-field prediction: no 'dotted' in the title; layer ticks are whole numbers."""
    import initlab.analysis.audit as audit_module
    from initlab import make_model

    figures = {}

    def keep(fig, path):
        figures[path.name] = fig
        return path

    monkeypatch.setattr(audit_module, "save_figure", keep)
    net = make_model("resnet(blocks=8,norm=none)", (1, 8, 8), 10)
    report = audit_module.audit(net, torch.randn(16, 1, 8, 8), ["he"])
    audit_module.plot_audit(report, tmp_path)
    forward = figures["audit_forward.png"].axes[0]
    assert "dotted" not in forward.get_title()
    assert not any(line.get_linestyle() == ":" for line in forward.get_lines())
    forward.figure.canvas.draw()
    ticks = [t for t in forward.get_xticks() if forward.get_xlim()[0] <= t <= forward.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    mlp_report = audit_module.audit(initlab_mlp(), torch.randn(16, 64), ["he"])
    audit_module.plot_audit(mlp_report, tmp_path)
    assert "dotted" in figures["audit_forward.png"].axes[0].get_title()  # an MLP has the prediction, drawn dotted


def initlab_mlp():
    from initlab import mlp

    return mlp(64, [32, 32, 32], 10)
