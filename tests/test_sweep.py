import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from initlab.cli import app
from initlab.experiments.depth import depth_sweep, parse_depths

runner = CliRunner()


def test_depth_sweep_writes_every_depth(tmp_path):
    seen = []

    def on_depth(depth, res):  # each depth is on disk before the next starts
        seen.append(depth)
        m = pd.read_csv(tmp_path / "depth_metrics.csv")
        assert sorted(m["depth"].unique()) == seen
        assert (tmp_path / f"depth_{depth:02d}" / "metrics.csv").exists()

    r = depth_sweep(depths=(1, 3), inits=("zero", "he"), epochs=1, seeds=2, width=8, device="cpu",
                    out=tmp_path, on_depth=on_depth)
    assert seen == [1, 3]
    assert list(r.table().index) == ["zero", "he"] and list(r.table().columns) == [1, 3]
    assert len(r.metrics) == 2 * 2 * 2 * 1  # depths x inits x seeds x epochs
    s = pd.read_csv(tmp_path / "depth_summary.csv")
    assert set(zip(s["depth"], s["init"])) == {(1, "zero"), (1, "he"), (3, "zero"), (3, "he")}
    # Zero init cannot learn at any depth: it predicts one class.
    assert (s[s["init"] == "zero"]["final_test_acc_mean"] < 0.2).all()
    assert (tmp_path / "depth_acc.png").stat().st_size > 0
    cfg = json.loads((tmp_path / "sweep.json").read_text())
    assert cfg["finished_depths"] == [1, 3] and cfg["width"] == 8
    # The models really are that deep: hidden widths (8,)*3 in the per-depth config.
    assert json.loads((tmp_path / "depth_03" / "config.json").read_text())["hidden"] == [8, 8, 8]


@pytest.mark.parametrize("bad, message", [
    ("2,x", "comma-separated positive integers"), ("0", "positive integer"), ("", "no depths"),
    ("2,2", "listed twice"), ((2, -1), "positive integer"), ((1.5,), "positive integer"),
])
def test_parse_depths_rejects(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_depths(bad)


def test_depth_cli_end_to_end(tmp_path):
    out = tmp_path / "d"
    r = runner.invoke(app, ["depth", "--depths", "1,2", "--inits", "zero,he", "--epochs", "1", "--width", "8",
                            "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "depth 1" in r.output and "depth 2" in r.output and "he" in r.output
    assert (out / "depth_summary.csv").exists() and (out / "depth_acc.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--depths", "2,x"], "comma-separated positive integers"),
    (["--depths", "0,3"], "positive integer"),
    (["--width", "0"], "--width must be a positive integer"),
    (["--inits", "he,bogus"], "unknown init scheme 'bogus'"),
    (["--epochs", "0"], "epochs must be a positive integer"),
])
def test_depth_cli_bad_input(tmp_path, args, message):
    r = runner.invoke(app, ["depth", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_depth_sweep_resume_keeps_finished_depths(tmp_path):
    from initlab.experiments.compare import Reporter

    class StopInDepth3(Reporter):
        def start(self, spec, total_runs):
            self.depth = len(spec.hidden)

        def epoch_end(self, init, seed, row):
            if self.depth == 3 and init == "he" and row["epoch"] == 1:
                raise KeyboardInterrupt

    kw = dict(depths=(1, 3), inits=("zero", "he"), epochs=2, width=8, device="cpu", out=tmp_path)
    with pytest.raises(KeyboardInterrupt) as exc:
        depth_sweep(**kw, reporter=StopInDepth3())
    assert exc.value.finished_depths == [1]
    assert json.loads((tmp_path / "depth_03" / "summary.json").read_text())["status"] == "interrupted"
    before = pd.read_csv(tmp_path / "depth_01" / "metrics.csv")
    with pytest.raises(ValueError, match="differs in width"):
        depth_sweep(**{**kw, "width": 9}, resume=True)
    with pytest.raises(ValueError, match="--overwrite .*--resume"):
        depth_sweep(**kw)
    r = depth_sweep(**kw, resume=True)
    assert set(r.summary["depth"]) == {1, 3} and (r.summary["done"] == 1).all()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "depth_01" / "metrics.csv"), before)
    ref = depth_sweep(**{**kw, "out": tmp_path / "ref"})
    pd.testing.assert_series_equal(r.metrics["test_loss"], ref.metrics["test_loss"], rtol=1e-5)


def test_depth_cli_records_an_exploding_init_as_diverged(tmp_path):
    out = tmp_path / "d"
    r = runner.invoke(app, ["depth", "--depths", "2,40", "--inits", "he,normal(std=4)", "--epochs", "1",
                            "--width", "64", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    runs = pd.read_csv(out / "depth_40" / "runs.csv").set_index("init")
    assert runs.loc["normal(std=4)", "status"] == "diverged" and runs.loc["normal(std=4)", "diverged_epoch"] == 0
    assert runs.loc["he", "status"] == "done"
    assert "1/1 div." in r.output
