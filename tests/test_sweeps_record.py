"""compare --store: a comparison's finished runs go into the run store under the hashes a sweep of
the same runs uses, so the sweep skips them and `initlab runs` sees them."""
import numpy as np
import pytest
from typer.testing import CliRunner

from initlab.cli import app
from initlab.experiments.compare import CompareSpec, run_compare
from initlab.experiments.sweeps import run_sweep
from initlab.experiments.sweeps.record import compare_sweep, record_compare
from initlab.training.loop import TrainConfig


@pytest.fixture(scope="module")
def compared():
    spec = CompareSpec(inits=("he", "xavier", "normal(std=1e6)"), dataset="digits", hidden=(16, 16), seeds=2,
                       train=TrainConfig(epochs=2), probe=False)
    return run_compare(spec)


def test_recorded_runs_equal_a_sweep_of_them_and_the_sweep_skips_them(compared, tmp_path):
    n = record_compare(compared, tmp_path / "s.db")
    assert n == {"recorded": 6, "kept": 0, "unfinished": 0}
    sweep = compare_sweep(compared.spec)
    again = run_sweep(sweep, tmp_path / "s.db")
    assert again.trained == 0 and again.complete
    fresh = run_sweep(sweep, tmp_path / "fresh.db")  # the same runs trained by the sweep itself
    a = again.epochs.sort_values(["hash", "epoch"]).reset_index(drop=True)
    b = fresh.epochs.sort_values(["hash", "epoch"]).reset_index(drop=True)
    assert list(a["hash"]) == list(b["hash"])
    for col in ("train_loss", "test_loss", "test_acc"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-5, atol=1e-6, err_msg=col)
    st = again.runs.set_index("hash")["status"]
    assert st.to_dict() == fresh.runs.set_index("hash")["status"].to_dict() and (st == "diverged").any()
    assert record_compare(compared, tmp_path / "s.db") == {"recorded": 0, "kept": 6, "unfinished": 0}


def test_what_the_store_cannot_express_is_refused():
    with pytest.raises(ValueError, match="one width"):
        compare_sweep(CompareSpec(inits="he", dataset="digits", hidden=(16, 8)))
    with pytest.raises(ValueError, match="not a Python callable"):
        compare_sweep(CompareSpec(inits="he", dataset="digits", model=lambda: None.__class__))


def test_cli_compare_store(tmp_path):
    r = CliRunner().invoke(app, ["compare", "--dataset", "digits", "--epochs", "1", "--inits", "he", "--hidden", "8",
                                 "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s.db")])
    assert r.exit_code == 0, r.output
    assert "1 runs recorded" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["compare", "--dataset", "digits", "--hidden", "8,4", "--out", str(tmp_path / "p"),
                                 "--store", str(tmp_path / "s.db")])
    assert r.exit_code == 2 and "one width" in r.output and not (tmp_path / "p").exists()


def test_cli_depth_store(tmp_path):
    r = CliRunner().invoke(app, ["depth", "--depths", "1,2", "--epochs", "1", "--inits", "he,xavier", "--width", "8",
                                 "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s.db")])
    assert r.exit_code == 0, r.output
    assert "4 runs recorded" in " ".join(r.output.split())
    from initlab.experiments.sweeps.runstore import RunStore

    with RunStore(tmp_path / "s.db") as st:
        runs = st.runs()
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
