"""The phase-diagram preset: the mean_field init (σ_w², σ_b²), a tiny phase sweep, its table and plot."""
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from initlab.cli import app
from initlab.schemes import initialize
from initlab.experiments.sweeps import run_sweep
from initlab.experiments.sweeps.phase import phase_spec, phase_table, plot_phase, six_xi


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared machine: one thread is fastest (conftest restores the count afterwards)
    torch.set_num_threads(1)


def test_mean_field_draws_weights_and_biases_at_the_given_variances():
    layer = nn.Linear(400, 300)
    g = torch.Generator().manual_seed(0)
    initialize(layer, "mean_field(sigma_w2=2.5,sigma_b2=0.05)", generator=g)
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2.5 / 400), rel=0.02)
    assert layer.weight.mean().abs().item() < 0.01
    assert layer.bias.std().item() == pytest.approx(math.sqrt(0.05), rel=0.15)
    initialize(layer, "mean_field(sigma_w2=1.0)", generator=g)
    assert torch.count_nonzero(layer.bias) == 0  # σ_b² = 0: zero biases
    with pytest.raises(ValueError, match="sigma_w2 must be"):
        initialize(layer, "mean_field(sigma_w2=-1)", generator=g)


def test_six_xi_is_smallest_away_from_the_critical_point():
    assert six_xi(1.0) == pytest.approx(21.8, abs=0.5)
    assert six_xi(4.0) == pytest.approx(41.9, abs=0.5)
    assert six_xi(1.75) > 1000  # near χ_1 = 1 (σ_w² ≈ 1.76 for σ_b² = 0.05) ξ_c diverges


def test_tiny_phase_sweep_table_and_plot(tmp_path, digits):
    spec = phase_spec((1.0, 1.75, 4.0), (2, 40), width=16, steps=40, lr=0.01)
    runs = spec.runs()
    assert len(runs) == 6 and runs[0]["activation"] == "tanh" and runs[0]["train_eval"] == "final"
    assert runs[0]["val_fraction"] == 0.0 and runs[0]["init"] == "mean_field(sigma_w2=1,sigma_b2=0.05)"
    res = run_sweep(spec, tmp_path / "s.db", data=digits)
    assert res.complete and res.runs["final_train_acc"].notna().all()
    table = phase_table(res.runs)
    cells = table.cells.set_index(["sigma_w2", "depth"])
    assert len(cells) == 6 and 0 <= table.agreement <= 1
    assert not cells.loc[(1.0, 40), "predicted"] and cells.loc[(1.0, 2), "predicted"]
    png = tmp_path / "phase.png"
    plot_phase(res.runs, png)
    assert png.stat().st_size > 5000


def test_cli_phase_dry_run_and_errors(tmp_path):
    r = CliRunner()
    out = r.invoke(app, ["phase", "--sigma-w2", "1:4:4", "--depths", "10,20", "--dry-run"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "8 runs in 2 engine groups" in out.output
    out = r.invoke(app, ["phase", "--sigma-w2", "1:4", "--dry-run"])
    assert out.exit_code == 2 and "start:stop:num" in out.output
    out = r.invoke(app, ["phase", "--depths", "10,x", "--dry-run"])
    assert out.exit_code == 2 and "not an integer" in out.output
