"""The Ray backend on a real local Ray cluster (``ray.init(num_cpus=2)``): the same numbers as local,
every run exactly once, results committed by the driver; bad options are one-line errors."""
import numpy as np
import pytest
import ray  # noqa: F401  (in the dev extra: `make test` installs it; no skip)
from typer.testing import CliRunner

from initlab.cli import app
from initlab.experiments.sweeps import SweepSpec, run_sweep

AXES = {"inits": ["xavier", "he", "normal(std=1e6)"], "lr": [0.01, 0.1], "epochs": 2, "dataset": "digits",
        "seeds": 2, "width": [16], "depth": [1, 2]}


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _frame(result):
    e = result.epochs.merge(result.runs[["hash", "status"]], on="hash")
    return e.sort_values(["hash", "epoch"]).reset_index(drop=True)


def test_ray_backend_equals_local_and_runs_every_run_once(cluster, tmp_path):
    spec = SweepSpec(AXES)
    a = run_sweep(spec, tmp_path / "ray.db", backend="ray")
    b = run_sweep(spec, tmp_path / "local.db")
    assert a.complete and b.complete and len(a.runs) == len(b.runs) == 3 * 2 * 2 * 2
    assert a.counts == b.counts and a.counts["diverged"] > 0  # normal(std=1e6) diverges, recorded the same way
    assert (a.runs["attempts"] == 1).all()
    fa, fb = _frame(a), _frame(b)
    assert list(fa["hash"]) == list(fb["hash"]) and list(fa["status"]) == list(fb["status"])
    for col in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc"):
        np.testing.assert_allclose(fa[col].to_numpy(float), fb[col].to_numpy(float), rtol=0, atol=1e-9, err_msg=col)
    again = run_sweep(spec, tmp_path / "ray.db", backend="ray")  # resuming a finished sweep trains nothing
    assert again.trained == 0 and again.counts == a.counts


def test_cli_backend_options(cluster, tmp_path):
    r = CliRunner().invoke(app, ["sweep", "--inits", "he", "--epochs", "1", "--dataset", "digits", "--width", "8",
                                 "--store", str(tmp_path / "s.db"), "--backend", "ray"])
    assert r.exit_code == 0, r.output
    for args, msg in ((["--backend", "dask"], "unknown backend 'dask'; choose from: local, ray"),
                      (["--address", "ray://x:1"], "--address has no effect without --backend ray")):
        r = CliRunner().invoke(app, ["sweep", "--inits", "he", "--store", str(tmp_path / "t.db"), *args])
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
