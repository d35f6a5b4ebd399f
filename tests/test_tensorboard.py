"""TensorBoard export (initlab.trackers.tensorboard, `initlab compare --tensorboard`): written, then read back."""

import json
import sys

import numpy as np
import pandas as pd

import pytest
import torch

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from initlab.trackers import tensorboard as tb  # noqa: E402
from initlab.cli import app  # noqa: E402
from initlab.experiments.compare import build_model, compare, prepare_data  # noqa: E402
from initlab.schemes import parse_scheme  # noqa: E402

INITS = ("zero", "normal(std=0.05)")
SEEDS = (0, 1)


def load(path):
    ea = EventAccumulator(str(path), size_guidance={k: 0 for k in (
        "scalars", "histograms", "tensors", "images", "audio", "compressedHistograms")})
    ea.Reload()
    return ea


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("tb")
    result = compare(inits=list(INITS), dataset="digits", epochs=2, seeds=2, hidden=(8,), device="cpu",
                     out=root / "res")
    dirs = tb.export(result, root / "logs", data=digits)
    return result, root, dirs


def test_one_run_per_init_and_seed(exported):
    result, root, dirs = exported
    expected = {root / "logs" / name / f"seed{s}" for name in ("zero", "normal_std=0.05_") for s in SEEDS}
    assert set(dirs) == expected and len(dirs) == 4
    for d in dirs:
        assert len(list(d.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (root / "logs").iterdir()) == ["normal_std=0.05_", "zero"]


def test_scalars_match_the_result(exported):
    result, root, dirs = exported
    for init in INITS:
        for seed in SEEDS:
            ea = load(root / "logs" / tb.sanitize(init) / f"seed{seed}")
            m = result.metrics[(result.metrics.init == init) & (result.metrics.seed == seed)].sort_values("epoch")
            for col in ("train_loss", "test_loss", "test_acc"):
                ev = ea.Scalars(f"epoch/{col}")
                assert [e.step for e in ev] == [1, 2]
                assert [e.value for e in ev] == pytest.approx(list(m[col]), abs=1e-6)
            assert [e.value for e in ea.Scalars("epoch/diverged")] == [0.0, 0.0]
            s = result.steps[(result.steps.init == init) & (result.steps.seed == seed)]
            ev = ea.Scalars("step/train_loss")
            assert [e.step for e in ev] == list(s.step) and len(ev) == len(s) > 2
            assert [e.value for e in ev] == pytest.approx(list(s.train_loss), rel=1e-6, abs=1e-6)
            p = result.probe[(result.probe.init == init) & (result.probe.seed == seed)]
            tags = ea.Tags()["scalars"]
            for stat, layer in (("out_std", "fc1"), ("dead_frac", "act1"), ("grad_out_norm", "fc2"),
                                ("eff_rank", "fc1")):
                ev = ea.Scalars(f"probe/{stat}/{layer}")
                rows = p[p.name == layer].sort_values("epoch")
                assert [e.step for e in ev] == [0, 1, 2]
                assert [e.value for e in ev] == pytest.approx(list(rows[stat]), rel=1e-6, abs=1e-6)
            assert "probe/dead_frac/fc1" not in tags  # NaN for linear layers: not logged
            run = result.runs[(result.runs.init == init) & (result.runs.seed == seed)].iloc[0]
            assert ea.Scalars("hparam/final_test_acc")[0].value == pytest.approx(run.final_test_acc, abs=1e-6)
            assert ea.Scalars("hparam/final_test_loss")[0].value == pytest.approx(run.final_test_loss, abs=1e-6)
            text = ea.Tensors("run/status/text_summary")[0].tensor_proto.string_val[0].decode()
            assert text.startswith("status: done")


def test_init_weight_histograms(exported, digits):
    result, root, dirs = exported
    data = prepare_data(result.spec, digits)
    for init in INITS:
        ea = load(root / "logs" / tb.sanitize(init) / "seed1")
        model = build_model(result.spec, data, parse_scheme(init), 1, "cpu")
        assert sorted(ea.Tags()["histograms"]) == sorted(f"weights/{n}" for n, _ in model.named_parameters())
        w = model.fc1.weight.detach()
        (h,) = ea.Histograms("weights/fc1.weight")
        assert h.step == 0 and h.histogram_value.num == w.numel()
        assert h.histogram_value.min == pytest.approx(float(w.min())) and h.histogram_value.max == pytest.approx(float(w.max()))


def test_hparams(exported):
    from tensorboard.plugins.hparams import plugin_data_pb2

    result, root, dirs = exported
    ea = load(root / "logs" / "normal_std=0.05_" / "seed1")
    content = ea.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(content)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert hp["init"] == "normal(std=0.05)" and hp["seed"] == 1 and hp["lr"] == pytest.approx(0.01)
    assert hp["optimizer"] == "sgd" and hp["hidden"] == "8" and hp["batch_size"] == 64 and hp["status"] == "done"
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} == {"hparam/final_test_acc", "hparam/final_test_loss"}


def test_export_from_folder_matches(exported, tmp_path):
    result, root, dirs = exported
    tb.export(root / "res", tmp_path / "logs")
    for init in INITS:
        a = load(root / "logs" / tb.sanitize(init) / "seed0")
        b = load(tmp_path / "logs" / tb.sanitize(init) / "seed0")
        assert sorted(a.Tags()["scalars"]) == sorted(b.Tags()["scalars"])
        assert sorted(a.Tags()["histograms"]) == sorted(b.Tags()["histograms"])
        for tag in ("epoch/test_acc", "step/train_loss", "probe/out_std/fc1"):
            assert [e.value for e in a.Scalars(tag)] == [e.value for e in b.Scalars(tag)]


def test_used_logdir_is_refused(exported):
    result, root, dirs = exported
    with pytest.raises(ValueError, match="already holds a run"):
        tb.export(result, root / "logs", histograms=False)


def test_run_dir_names():
    assert tb.sanitize("normal(std=0.05)") == "normal_std=0.05_"
    assert tb.sanitize("../x y") == "_x_y"
    dirs = tb.run_dirs(["a(b)", "a_b_", "a(b)"], [3])
    assert dirs[("a(b)", 3)].as_posix() == "a_b_/seed3" and dirs[("a_b_", 3)].as_posix() == "a_b_-2/seed3"


ARGS = ["compare", "--dataset", "digits", "--inits", "zero,he", "--epochs", "1", "--seeds", "2",
        "--hidden", "8", "--device", "cpu"]


def test_cli_tensorboard(tmp_path):
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")])
    assert res.exit_code == 0, res.output
    assert "TensorBoard runs" in res.output
    runs = sorted(p.relative_to(tmp_path / "tb").as_posix() for p in (tmp_path / "tb").glob("*/seed*"))
    assert runs == ["he/seed0", "he/seed1", "zero/seed0", "zero/seed1"]
    ea = load(tmp_path / "tb" / "he" / "seed1")
    metrics = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    acc = next(r["final_test_acc"] for r in metrics if r["init"] == "he" and r["seed"] == 1)
    assert ea.Scalars("epoch/test_acc")[-1].value == pytest.approx(acc, abs=1e-6)
    assert "weights/fc1.weight" in ea.Tags()["histograms"]


def test_cli_without_tensorboard_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")])
    assert res.exit_code == 2
    assert "pip install 'initlab[tensorboard]'" in res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "tb").exists()


def test_cli_used_tensorboard_dir_fails_before_training(tmp_path):
    (tmp_path / "tb" / "he" / "seed0").mkdir(parents=True)
    (tmp_path / "tb" / "he" / "seed0" / "events.out.tfevents.x").write_text("old")
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")])
    assert res.exit_code == 2 and "already holds a run" in res.output
    assert not (tmp_path / "out").exists()


def test_cli_depth_tensorboard_one_folder_per_depth(tmp_path):
    from typer.testing import CliRunner

    from initlab.cli import app

    logs = tmp_path / "logs"
    args = ["depth", "--depths", "1,2", "--epochs", "2", "--inits", "he,xavier", "--width", "8",
            "--out", str(tmp_path / "out"), "--tensorboard", str(logs)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = pd.read_csv(tmp_path / "out" / "depth_metrics.csv")
    for d in (1, 2):
        for init in ("he", "xavier"):
            ea = load(logs / f"depth_{d:02d}" / init / "seed0")
            got = [e.value for e in ea.Scalars("epoch/test_acc")]
            want = metrics[(metrics["depth"] == d) & (metrics["init"] == init)].sort_values("epoch")["test_acc"]
            np.testing.assert_allclose(got, want.to_numpy(), atol=1e-6)
    again = CliRunner().invoke(app, [*args[:-4], "--out", str(tmp_path / "out2"), "--tensorboard", str(logs)])
    assert again.exit_code == 2 and "already holds a run" in again.output
    assert not (tmp_path / "out2").exists()
