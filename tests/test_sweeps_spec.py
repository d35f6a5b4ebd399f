"""Sweep specs: product, zip groups, ranges, canonical runs and hashes, TOML loading, one-line errors."""
import pytest
import torch
from typer.testing import CliRunner

from initlab.cli import app
from initlab.experiments.sweeps import SweepSpec, group_key, load_spec, make_plan, run_hash
from initlab.experiments.sweeps.spec import expand_range


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared machine: one thread is fastest (conftest restores the count afterwards)
    torch.set_num_threads(1)


def test_product_of_axes_and_canonical_runs():
    spec = SweepSpec({"inits": ["xavier", "he"], "lr": [0.01, 0.1, 1], "seeds": 2, "width": 16})
    runs = spec.runs()
    assert len(runs) == 12
    assert {(r["init"], r["lr"], r["seed"]) for r in runs} == {
        (i, lr, s) for i in ("xavier", "he") for lr in (0.01, 0.1, 1.0) for s in (0, 1)}
    r = runs[0]
    assert r["model"] == "mlp(depth=1,width=16,activation=relu)" and r["dataset"] == "digits"
    assert isinstance(r["lr"], float) and r["val_fraction"] == 0.1
    # init, seed, lr, momentum vary inside one engine group: one group here
    assert len({group_key(r) for r in runs}) == 1
    assert len({run_hash(r) for r in runs}) == 12
    # seed-major inside the group, then init, then lr
    assert [(r["seed"], r["init"][:2], r["lr"]) for r in runs[:3]] == [(0, "xa", 0.01), (0, "xa", 0.1), (0, "xa", 1.0)]


def test_zip_moves_axes_together_and_groups_split_by_architecture():
    spec = SweepSpec({"depth": [1, 2], "width": [16, 32], "lr": [0.01, 0.1]}, zip=(("depth", "width"),))
    runs = spec.runs()
    assert len(runs) == 4
    assert {(r["depth"], r["width"]) for r in runs} == {(1, 16), (2, 32)}
    assert len({group_key(r) for r in runs}) == 2
    unzipped = SweepSpec({"depth": [1, 2], "width": [16, 32]})
    assert len(unzipped.runs()) == 4 and len({group_key(r) for r in unzipped.runs()}) == 4


def test_hash_is_stable_and_ignores_device_and_spelling():
    a = SweepSpec({"init": "he", "width": 16}, device="cpu").runs()[0]
    b = SweepSpec({"inits": ["he"], "model": "mlp(width=16)"}, device="auto").runs()[0]
    assert run_hash(a) == run_hash(b)
    assert run_hash(dict(reversed(list(a.items())))) == run_hash(a)
    assert run_hash({**a, "lr": 0.02}) != run_hash(a)
    # a float grid value that is not exactly representable hashes like its short form
    assert expand_range("lr", {"start": 0.1, "stop": 0.3, "num": 3}) == [0.1, 0.2, 0.3]
    assert expand_range("lr", {"start": 1e-3, "stop": 1e-1, "num": 3, "log": True}) == [0.001, 0.01, 0.1]


def test_zoo_model_depth_axis_sets_its_depth_parameter():
    runs = SweepSpec({"model": "cnn(channels=4)", "depth": [1, 2]}).runs()
    assert [r["model"] for r in runs] == ["cnn(channels=4,depth=1)", "cnn(channels=4,depth=2)"]
    assert runs[0]["width"] is None and runs[0]["activation"] is None


def test_load_toml_with_overrides(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "t"\ninits = ["xavier", "he"]\nlr = { start = 0.01, stop = 1.0, num = 3, log = true }\n'
                 'seeds = 2\nepochs = 1\nwidth = [16, 32]\ndepth = [1, 2]\nzip = ["depth", "width"]\n')
    spec = load_spec(f)
    assert spec.name == "t" and len(spec.runs()) == 2 * 3 * 2 * 2
    spec2 = load_spec(f, {"lr": [0.5], "seeds": 1})
    assert len(spec2.runs()) == 2 * 1 * 1 * 2
    # [sweep] table form
    g = tmp_path / "g.toml"
    g.write_text("[sweep]\ninit = 'he'\nlr = 0.1\n")
    assert len(load_spec(g).runs()) == 1


@pytest.mark.parametrize("text, message", [
    ("lrr = [0.1]\n", "unknown key 'lrr'"),
    ("lr = [0.1, -1]\n", "lr must be a positive number"),
    ("inits = ['hee']\n", "unknown init scheme 'hee'"),
    ("lr = [\n", "not valid TOML"),
    ("depth = [1, 2]\nwidth = [8]\nzip = [['depth', 'width']]\n", "as many values"),
    ("model = 'cnn'\nwidth = 8\n", "apply to the MLP only"),
    ("lr = [0.1, 0.1]\n", "lists one run twice"),
    ("dataset = 'cifar'\n", "unknown dataset 'cifar'"),
    ("lr = { start = 1, stop = 2 }\n", "a range is"),
    ("val_fraction = 1.5\n", "val_fraction must be"),
    ("zip = [['depth', 'lr']]\n", "which the sweep does not set"),
])
def test_bad_specs_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        load_spec(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_cli_bad_spec_exits_2_with_one_line(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("lrr = 1\n")
    res = CliRunner().invoke(app, ["sweep", str(f), "--store", str(tmp_path / "s.db")])
    assert res.exit_code == 2
    assert "unknown key 'lrr'" in res.output
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "cannot read sweep spec" in res.output
    assert not (tmp_path / "s.db").exists()


def test_dry_run_prints_plan_and_writes_nothing(tmp_path):
    store = tmp_path / "s.db"
    res = CliRunner().invoke(app, ["sweep", "--inits", "xavier,he", "--lr", "0.01,0.1", "--seeds", "3",
                                   "--depth", "1,2", "--width", "16", "--dry-run", "--store", str(store)],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "24 runs in 2 engine groups" in res.output.replace("\n", " ")
    assert "dry run" in res.output and not store.exists()


def test_plan_groups_memory_and_engine():
    spec = SweepSpec({"inits": ["zero", "random", "xavier", "he"], "lr": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3],
                      "seeds": 3, "dataset": "fashion-mnist", "epochs": 10})
    plan = make_plan(spec, gflops=50.0)
    assert len(plan.groups) == 1
    g = plan.groups[0]
    assert len(g.runs) == 72 and g.engine == "mlp" and g.cap >= 72  # the 72 runs train as one computation
    assert 0 < plan.memory < 2 << 30 and plan.seconds > 0
    assert SweepSpec({"model": "cnn(channels=4,depth=1)"}).runs()  # zoo models plan too
    p2 = make_plan(SweepSpec({"model": "cnn(channels=4,depth=1)", "lr": [0.1, 0.2]}), gflops=50.0)
    assert p2.groups[0].engine == "func"
