import pandas as pd
import pytest
from typer.testing import CliRunner

from initlab.cli import app

runner = CliRunner()
SMALL = ["--depth", "4", "--width", "32", "--batch", "64"]


def invoke(*args):
    return runner.invoke(app, ["probe", *args])


def test_probe_end_to_end(tmp_path):
    out = tmp_path / "probe"
    r = invoke(*SMALL, "--activations", "relu,tanh", "--inits", "zero,he", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "zero" in r.output and "he" in r.output
    frame = pd.read_csv(out / "probe.csv")
    # 2 activations × 2 inits × (5 Linear + 4 activations)
    assert len(frame) == 2 * 2 * 9
    assert {"out_std", "pred_std", "grad_out_norm", "pred_grad_norm", "dead_frac", "eff_rank"} <= set(frame)
    he_relu = frame[(frame["init"] == "he") & (frame["activation"] == "relu") & (frame["kind"] == "Linear")]
    v = he_relu["pred_std"].iloc[:4]
    assert v.max() - v.min() < 1e-12 * v.max()  # He + ReLU: constant predicted variance
    for name in ("summary.csv", "depth_std.png", "depth_grad.png", "hist_relu.png", "hist_tanh.png"):
        assert (out / name).stat().st_size > 0


def test_probe_user_model(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def small():\n    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n"
        "def conv():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))\n"
        "def broken():\n    raise RuntimeError('no weights today')\n"
        "def not_a_module():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for factory in ("small", "conv"):
        out = tmp_path / factory
        r = invoke("--model", f"mymodels:{factory}", "--inits", "none,he", "--batch", "32", "--out", str(out))
        assert r.exit_code == 0, r.output
        frame = pd.read_csv(out / "probe.csv")
        assert set(frame["init"]) == {"none", "he"} and (frame["activation"] == "model").all()
    for spec, message in [("mymodels", "unknown model 'mymodels'; choose from: mlp, cnn"), ("mymodels:", "must look like"),
                          ("a:b:c", "must look like"), ("nosuchmodule_xyz:f", "cannot import module 'nosuchmodule_xyz'"),
                          ("mymodels:missing", "has no callable 'missing'"),
                          ("mymodels:broken", "raised RuntimeError: no weights today"),
                          ("mymodels:not_a_module", "returned int, not an nn.Module")]:
        r = invoke("--model", spec, "--out", str(tmp_path / "bad"))
        assert r.exit_code == 2, (spec, r.output)
        assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("args, message", [
    (["--activations", "swish"], "unknown activation 'swish'"),
    (["--inits", "bogus"], "unknown init scheme 'bogus'"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--depth", "0"], "--depth must be a positive integer"),
    (["--inits", "none"], "unknown init scheme 'none'"),  # 'none' only means something with --model
])
def test_probe_bad_inputs_exit_2_one_line(tmp_path, args, message):
    r = invoke(*SMALL, *args, "--out", str(tmp_path / "o"))
    assert r.exit_code == 2
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_probe_user_model_from_working_directory(tmp_path, monkeypatch):
    """`initlab probe --model mod:fn` finds mod.py in the current directory, as `python -m` would."""
    import sys

    (tmp_path / "cwd_net_for_probe.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    r = invoke("--model", "cwd_net_for_probe:make", "--inits", "he", "--batch", "32", "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "o" / "probe.csv")) == 3  # fc, relu, fc


def test_probe_exploding_init_is_data(tmp_path):
    from initlab.cli import app

    r = CliRunner().invoke(app, ["probe", "--activations", "relu", "--inits", "he,normal(std=4)", "--depth", "40",
                                 "--width", "64", "--batch", "32", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    s = pd.read_csv(tmp_path / "p" / "summary.csv").set_index("init")
    assert s.loc["normal(std=4)", "nonfinite_from"].startswith("fc") and s.loc["he", "std_last"] < 10


BAD_MODELS = '''
from torch import nn


def other_size(in_shape, num_classes):
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
    m.input_shape = (1, 28, 28)
    return m


class Tup(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x), x


def tuple_out():
    return Tup()


def few_logits():
    return nn.Sequential(nn.Linear(64, 3))


def tokens():
    return nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(64 * 16, 10))
'''


@pytest.mark.parametrize("command, factory, message", [
    ("probe", "other_size", "wants inputs of shape (1, 28, 28)"),
    ("probe", "tuple_out", "returns a tuple of 2 items"),
    ("probe", "few_logits", "returns logits of shape (8, 3)"),
    ("probe", "tokens", "takes integer token ids"),
    # audit reads any output itself (a tuple's first tensor; a bad one is that scheme's finding): the data side only
    ("audit", "other_size", "wants inputs of shape (1, 28, 28)"),
    ("audit", "tokens", "takes integer token ids"),
])
def test_a_user_model_that_does_not_fit_the_data_is_one_line(command, factory, message, tmp_path, monkeypatch):
    """The one user-model check (initlab.models.check_model / check_inputs) guards probe and audit as compare."""
    (tmp_path / "badmodels_cli.py").write_text(BAD_MODELS)
    monkeypatch.chdir(tmp_path)
    args = ["probe", "--model", f"badmodels_cli:{factory}"] if command == "probe" else ["audit", f"badmodels_cli:{factory}"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("inits", ["zero", "zero,none", "none,he"])
def test_probe_model_plots_without_warnings(inits, tmp_path, monkeypatch):
    """No matplotlib warning (e.g. a legend with no labelled lines when every init is all-zero) leaks out."""
    (tmp_path / "quietmodels.py").write_text(
        "from torch import nn\ndef small():\n    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["probe", "--model", "quietmodels:small", "--inits", inits, "--batch", "32",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output.lower()
