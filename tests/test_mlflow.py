"""MLflow export (initlab.trackers.mlflow, `initlab compare --mlflow`): logged to a local store, read back."""

import json
import os
import sys

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings from the test suite
pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from typer.testing import CliRunner  # noqa: E402

from initlab.trackers import mlflow as mx  # noqa: E402
from initlab.cli import app  # noqa: E402
from initlab.experiments.compare import compare  # noqa: E402
from initlab.report import write_report  # noqa: E402

INITS = ("zero", "normal(std=0.05)")
SEEDS = (0, 1)
PLOTS = ["plots/probe.png", "plots/steps.png", "plots/test_acc.png", "plots/train_loss.png"]


def runs_by_name(client, experiment="initlab"):
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=1000)}


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("mlflow")
    result = compare(inits=list(INITS), dataset="digits", epochs=2, seeds=2, hidden=(8,), device="cpu",
                     out=root / "res")
    write_report(root / "res")
    ids = mx.export(result, root / "store", data=digits)
    client, _ = mx.client(root / "store")
    return result, root, ids, client


def test_one_run_per_init_and_seed(exported):
    result, root, ids, client = exported
    runs = runs_by_name(client)
    assert len(ids) == 4 and set(r.info.run_id for r in runs.values()) == set(ids)
    assert set(runs) == {f"{i} seed {s}" for i in INITS for s in SEEDS}
    assert (root / "store" / "mlflow.db").is_file() and (root / "store" / "artifacts").is_dir()
    for init in INITS:
        for seed in SEEDS:
            run = runs[f"{init} seed {seed}"]
            assert run.info.status == "FINISHED"
            assert run.data.params == {
                "init": init, "seed": str(seed), "dataset": "digits", "model": "mlp", "hidden": "8",
                "activation": "relu", "optimizer": "sgd", "lr": "0.01", "momentum": "0.0", "batch_size": "64",
                "epochs": "2"}
            assert run.data.tags["status"] == "done" and run.data.tags["epochs_done"] == "2"
            assert "diverged_epoch" not in run.data.tags  # NaN for a run that did not diverge


def test_metrics_match_the_result(exported):
    result, root, ids, client = exported
    runs = runs_by_name(client)
    for init in INITS:
        for seed in SEEDS:
            rid = runs[f"{init} seed {seed}"].info.run_id
            m = result.metrics[(result.metrics.init == init) & (result.metrics.seed == seed)].sort_values("epoch")
            for col in ("train_loss", "test_loss", "test_acc"):
                h = history(client, rid, f"epoch.{col}")
                assert [s for s, _ in h] == [1, 2]
                assert [v for _, v in h] == pytest.approx(list(m[col]), abs=1e-6)
            assert history(client, rid, "epoch.diverged") == [(1, 0.0), (2, 0.0)]
            s = result.steps[(result.steps.init == init) & (result.steps.seed == seed)].sort_values("step")
            h = history(client, rid, "step.train_loss")
            assert [k for k, _ in h] == list(s.step) and len(h) == len(s) > 2
            assert [v for _, v in h] == pytest.approx(list(s.train_loss), rel=1e-6, abs=1e-6)
            p = result.probe[(result.probe.init == init) & (result.probe.seed == seed)]
            keys = set(runs[f"{init} seed {seed}"].data.metrics)
            for stat, layer in (("out_std", "fc1"), ("dead_frac", "act1"), ("grad_out_norm", "fc2"),
                                ("eff_rank", "fc1")):
                h = history(client, rid, f"probe.{stat}.{layer}")
                rows = p[p.name == layer].sort_values("epoch")
                assert [k for k, _ in h] == [0, 1, 2]
                assert [v for _, v in h] == pytest.approx(list(rows[stat]), rel=1e-6, abs=1e-6)
            assert "probe.dead_frac.fc1" not in keys  # NaN for linear layers: not logged
            run = result.runs[(result.runs.init == init) & (result.runs.seed == seed)].iloc[0]
            assert history(client, rid, "final_test_acc") == [(2, pytest.approx(run.final_test_acc, abs=1e-6))]


def test_artifacts(exported):
    result, root, ids, client = exported
    for rid in ids:
        assert sorted(a.path for a in client.list_artifacts(rid)) == ["plots", "report.html"]
        assert sorted(a.path for a in client.list_artifacts(rid, "plots")) == PLOTS
        assert all(a.file_size > 0 for a in client.list_artifacts(rid, "plots"))


def test_export_from_folder_into_the_same_store(exported):
    result, root, ids, client = exported
    more = mx.export(root / "res", root / "store", experiment="again")
    runs = runs_by_name(client, "again")
    assert len(more) == 4 and not set(more) & set(ids) and len(runs_by_name(client)) == 4
    a = runs_by_name(client)["normal(std=0.05) seed 1"]
    b = runs["normal(std=0.05) seed 1"]
    assert a.data.params == b.data.params and set(a.data.metrics) == set(b.data.metrics)
    for key in ("epoch.test_acc", "step.train_loss", "probe.out_std.fc1"):
        assert [v for _, v in history(client, a.info.run_id, key)] == \
            pytest.approx([v for _, v in history(client, b.info.run_id, key)], abs=1e-6)
    assert sorted(x.path for x in client.list_artifacts(b.info.run_id)) == ["plots", "report.html"]


def test_diverged_run_tags(tmp_path):
    result = compare(inits=["normal(std=30)"], dataset="digits", epochs=2, seeds=1, hidden=(64,), lr=50.0,
                     diverge_loss=1.01, device="cpu")
    assert result.runs.status.tolist() == ["diverged"]
    (rid,) = mx.export(result, tmp_path / "ml.db")
    client, _ = mx.client(tmp_path / "ml.db")
    run = client.get_run(rid)
    assert run.data.tags["status"] == "diverged" and run.data.tags["diverged_epoch"] == "1"
    assert run.data.tags["diverge_reason"].startswith("test loss")
    assert history(client, rid, "epoch.diverged") == [(1, 1.0)]
    assert client.list_artifacts(rid) == []  # no result folder: nothing to attach
    assert (tmp_path / "ml.db").is_file()


def test_names_and_uris(tmp_path):
    assert mx.sanitize("probe.out_std.blocks.0(conv)") == "probe.out_std.blocks.0_conv_"
    assert mx.sanitize("/a/../b") == "a/__/b"
    uri, art = mx.resolve(tmp_path / "s")
    assert uri == f"sqlite:///{tmp_path / 's' / 'mlflow.db'}" and art == (tmp_path / "s" / "artifacts").as_uri()
    assert mx.resolve(tmp_path / "x.db")[0] == f"sqlite:///{tmp_path / 'x.db'}"
    assert mx.resolve("http://localhost:5000") == ("http://localhost:5000", None)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        mx.resolve(tmp_path / "f")


ARGS = ["compare", "--dataset", "digits", "--inits", "zero,he", "--epochs", "1", "--seeds", "2",
        "--hidden", "8", "--device", "cpu"]


def test_cli_mlflow(tmp_path):
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out"), "--report", "--mlflow", str(tmp_path / "ml")])
    assert res.exit_code == 0, res.output
    assert "logged 4 MLflow runs" in res.output
    client, _ = mx.client(tmp_path / "ml")
    runs = runs_by_name(client)
    assert set(runs) == {"zero seed 0", "zero seed 1", "he seed 0", "he seed 1"}
    metrics = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    acc = next(r["final_test_acc"] for r in metrics if r["init"] == "he" and r["seed"] == 1)
    assert history(client, runs["he seed 1"].info.run_id, "epoch.test_acc") == [(1, pytest.approx(acc, abs=1e-6))]
    assert "report.html" in [a.path for a in client.list_artifacts(runs["he seed 1"].info.run_id)]


def test_cli_without_mlflow_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out"), "--mlflow", str(tmp_path / "ml")])
    assert res.exit_code == 2
    assert "pip install 'initlab[mlflow]'" in res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "ml").exists()


def test_cli_unusable_store_fails_before_training(tmp_path):
    (tmp_path / "ml").write_text("not a folder")
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out"), "--mlflow", str(tmp_path / "ml")])
    assert res.exit_code == 2 and "is a file" in res.output
    assert not (tmp_path / "out").exists()


def test_cli_store_inside_the_out_folder(tmp_path):
    """The pre-training check creates nothing, so a store inside --out does not make compare refuse
    its own (then non-empty) output folder."""
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [*ARGS, "--out", str(out), "--mlflow", str(out / "mlruns")])
    assert res.exit_code == 0, res.output
    assert (out / "mlruns" / "mlflow.db").is_file() and (out / "metrics.csv").is_file()
