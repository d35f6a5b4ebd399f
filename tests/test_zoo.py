"""The model zoo, models by spec, and the user's own models (factories, outputs, layouts)."""
import json
import math
import warnings

import pytest
import torch
from torch import nn

import initlab
from initlab.data import Dataset
from initlab.experiments.compare import CompareSpec, prepare_data, run_compare
from initlab.models import (
    ResidualInfo,
    Scalar,
    call_factory,
    check_output,
    get_model,
    input_shape_of,
    list_models,
    make_model,
    model_text,
    parse_model,
    residual_info,
)
from initlab.training.loop import TrainConfig

ZOO = ["mlp", "cnn", "resmlp", "resnet", "transformer"]
SMALL = {"mlp": "mlp(depth=2,width=16)", "cnn": "cnn(depth=3,channels=4)", "resmlp": "resmlp(blocks=2,width=16)",
         "resnet": "resnet(blocks=2,width=4)", "transformer": "transformer(depth=2,width=16,heads=2)"}


def test_every_zoo_model_is_listed():
    assert list_models()[:5] == ZOO


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (1, 8, 8)])
def test_zoo_models_return_logits_for_their_declared_layout(name, in_shape):
    model = make_model(name, in_shape, 7)
    shape = tuple(model.input_shape)
    assert math.prod(shape) == math.prod(in_shape)
    assert (len(shape) == 3) == (get_model(name).layout == "image")
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resmlp", "resnet"])
@pytest.mark.parametrize("blocks,m", [(1, 1), (3, 2), (5, 3)])
def test_residual_info_names_real_layers_in_forward_order(name, blocks, m):
    model = make_model(f"{name}(blocks={blocks},m={m})", (1, 8, 8), 10)
    info = residual_info(model)
    assert isinstance(info, ResidualInfo) and info.num_branches == blocks and info.branch_depth == m
    modules = dict(model.named_modules())
    kind = nn.Linear if name == "resmlp" else nn.Conv2d
    for branch in info.branches:
        assert len(branch) == m and all(isinstance(modules[n], kind) for n in branch)
    order = [n for n, _ in model.named_modules()]
    finals = [order.index(n) for n in info.branch_final]
    assert finals == sorted(finals)
    assert info.classifier == "head" and isinstance(modules["head"], nn.Linear)


def test_transformer_residual_projections_follow_gpt2_names():
    model = make_model("transformer(depth=3)", (1, 28, 28), 10)
    info = residual_info(model)
    assert info.kind == "transformer" and info.num_branches == 6
    assert all(n.endswith("c_proj") for n in info.branch_final)
    names = {n for n, _ in model.named_modules()}
    assert set(info.branch_final) <= names
    assert isinstance(dict(model.named_modules())["wpe"], nn.Embedding)


def test_plain_models_have_no_residual_info():
    assert residual_info(make_model("cnn", (1, 8, 8), 10)) is None
    assert residual_info(make_model("mlp", (1, 8, 8), 10)) is None


@pytest.mark.parametrize("name", ["resmlp", "resnet"])
def test_gates_and_fixup_scalars_start_neutral(name):
    """gate=1 and Fixup biases 0 leave the function of the ungated network unchanged."""
    torch.manual_seed(0)
    plain = make_model(f"{name}(blocks=3,norm=none)", (1, 8, 8), 10)
    torch.manual_seed(0)
    gated = make_model(f"{name}(blocks=3,norm=none,fixup=true)", (1, 8, 8), 10)
    gated.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(4, *plain.input_shape)
    torch.testing.assert_close(gated(x), plain(x))
    info = residual_info(gated)
    modules = dict(gated.named_modules())
    assert all(isinstance(modules[g], Scalar) and modules[g].op == "mul" for g in info.gates)
    assert all(len(b) == 2 * 2 for b in info.biases)  # m=2 layers, a bias before and after each


def test_gate_zero_makes_every_block_the_identity():
    model = make_model("resmlp(blocks=4,gate=true)", (1, 8, 8), 10)
    for g in residual_info(model).gates:
        dict(model.named_modules())[g].value.data.zero_()
    x = torch.randn(5, 64)
    h = model.stem(x)
    torch.testing.assert_close(model.head(model.act(h)), model(x))


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_parameter_is_covered_by_a_single_scheme(name):
    model = make_model(f"{name}" if name != "resnet" else "resnet(fixup=true,gate=true)", (1, 8, 8), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an uncovered parameter warns
        _, report = initlab.initialize_with_report(model, "he", generator=torch.Generator().manual_seed(0))
    # one row per tensor or block (a fused q, k, v projection is three blocks)
    assert report.parameter.str.replace(r"\[.*\]$", "", regex=True).nunique() == len(list(model.parameters()))


def test_scalars_are_reset_to_their_neutral_value_and_can_be_named_by_rules():
    model = make_model("resnet(blocks=2,gate=true)", (1, 8, 8), 10)
    gates = residual_info(model).gates
    for g in gates:
        dict(model.named_modules())[g].value.data.fill_(5.0)
    initlab.initialize(model, "he")
    assert all(float(dict(model.named_modules())[g].value.detach()) == 1.0 for g in gates)
    initlab.initialize(model, {"*": "he", "blocks.*.gate.value": "zeros"})
    assert all(float(dict(model.named_modules())[g].value.detach()) == 0.0 for g in gates)


@pytest.mark.parametrize("spec,msg", [
    ("resnet(wdth=8)", "has no parameter 'wdth'; choose from: blocks=4"),
    ("resnet(norm=group)", "unknown norm 'group'; choose from: none, batch, layer"),
    ("cnn(kernel=4)", "kernel must be odd"),
    ("cnn(depth=0)", "depth must be an integer from 1"),
    ("cnn(channels=2.5)", "channels must be an integer"),
    ("cnn(norm=layer)", "unknown norm 'layer'; choose from: none, batch"),
    ("transformer(width=30,heads=4)", "must be divisible by heads"),
    ("transformer(patch=5)", "patch (5) must divide the image size 28×28"),
    ("resmlp(gate=1)", "gate must be true or false"),
    ("mlp(activation=swish)", "unknown activation 'swish'"),
    ("vgg", "unknown model 'vgg'; choose from: mlp, cnn, resmlp, resnet, transformer"),
    ("resnet(blocks=", "malformed model spec"),
    ("", "a model spec is a zoo name"),
])
def test_bad_model_specs_are_one_line_errors(spec, msg):
    with pytest.raises(ValueError) as e:
        make_model(spec, (1, 28, 28), 10)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_model_specs_round_trip_and_none_reads_as_none():
    spec = parse_model("resnet(blocks=20, norm=none)")
    assert str(spec) == "resnet(blocks=20,norm=None)" or str(spec) == "resnet(blocks=20,norm=none)"
    assert parse_model(str(spec)) == spec
    assert make_model(spec, (1, 8, 8), 10).norm is None
    assert model_text("cnn") == "cnn" and model_text("pkg.mod:make") == "pkg.mod:make"


# ----------------------------------------------------------------------------- user models


def test_factory_gets_the_sizes_it_declares():
    seen = {}

    def a(in_shape, num_classes):
        seen["a"] = (in_shape, num_classes)
        return nn.Linear(math.prod(in_shape), num_classes)

    def b(in_features, out_features=3):
        seen["b"] = (in_features, out_features)
        return nn.Linear(in_features, out_features)

    def c():
        return nn.Linear(64, 10)

    def d(*, num_classes, width=8):
        seen["d"] = num_classes
        return nn.Linear(64, num_classes)

    call_factory(a, (1, 8, 8), 10)
    call_factory(b, (1, 8, 8), 10)
    call_factory(c, (1, 8, 8), 10)
    call_factory(d, (1, 8, 8), 4)
    assert seen == {"a": ((1, 8, 8), 10), "b": (64, 10), "d": 4}


def test_factory_errors_are_one_line():
    def boom(in_shape):
        raise RuntimeError("no GPU\nsecond line")

    with pytest.raises(ValueError, match="raised RuntimeError: no GPU$"):
        call_factory(boom, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="returned int, not an nn.Module"):
        call_factory(lambda: 3, (1, 8, 8), 10)


class _Out(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.fc = kind, nn.Linear(64, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return {"tuple": (y, y), "dict": {"logits": y}, "nologits": {"out": y}, "wide": torch.cat([y, y], 1),
                "int": y.argmax(1, keepdim=True).expand(-1, 10), "str": "y", "tensor": y}[self.kind]


@pytest.mark.parametrize("kind,msg", [
    ("tuple", "returns a tuple of 2 items; return the logits tensor, or a dict with key 'logits'"),
    ("nologits", "returns a dict with keys ['out']"),
    ("wide", "returns logits of shape (4, 20) for a batch of 4; expected (4, 10)"),
    ("int", "returns torch.int64 logits"),
    ("str", "returns a str"),
])
def test_unusable_outputs_are_one_line_errors(kind, msg):
    with pytest.raises(ValueError) as e:
        check_output(_Out(kind), torch.randn(4, 64), 10)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_model_failing_on_the_input_names_the_batch_shape():
    with pytest.raises(ValueError, match=r"fails on the dataset's input \(a batch of shape \(4, 1, 8, 8\)\): RuntimeError"):
        check_output(nn.Linear(10, 10), torch.randn(4, 1, 8, 8), 10)


def test_dict_logits_are_picked_without_renaming_parameters():
    model = initlab.models.pick_logits(_Out("dict"))
    out = model(torch.randn(2, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert [n for n, _ in model.named_parameters()] == ["fc.weight", "fc.bias"]


def test_input_layout_follows_declaration_then_first_layer():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(10))
    assert input_shape_of(conv, (8, 8)) == (1, 8, 8)
    assert input_shape_of(nn.Sequential(nn.Linear(64, 10)), (8, 8)) == (64,)
    m = nn.Linear(64, 10)
    m.input_shape = (4, 16)
    assert input_shape_of(m, (8, 8)) == (4, 16)


def _toy(n=120, shape=(8, 8), classes=10):
    g = torch.Generator().manual_seed(0)
    d = math.prod(shape)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)
    return Dataset("toy", x, y, x[:40], y[:40], classes, shape)


def test_dataset_shaped_is_a_view_and_checks_sizes():
    data = _toy()
    img = data.shaped((1, 8, 8))
    assert img.x_train.shape == (120, 1, 8, 8) and img.x_train.data_ptr() == data.x_train.data_ptr()
    assert img.in_features == 64 and img.shaped((64,)).x_train.shape == (120, 64)
    with pytest.raises(initlab.DataError, match=r"wants inputs of shape \(1, 28, 28\)"):
        data.shaped((1, 28, 28))


# ----------------------------------------------------------------------------- compare on any network

TRAIN = TrainConfig(epochs=1, batch_size=32)


def test_compare_spec_canonicalizes_the_model_and_refuses_mlp_options():
    spec = CompareSpec(inits="he", dataset="digits", model=" cnn(channels=8) ")
    assert spec.model == "cnn(channels=8)" and spec.to_dict()["model"] == "cnn(channels=8)"
    with pytest.raises(ValueError, match="no effect with a model"):
        CompareSpec(inits="he", dataset="digits", model="cnn", hidden=(64,))
    with pytest.raises(ValueError, match="no effect with a model"):
        CompareSpec(inits="he", dataset="digits", model="cnn", activation="tanh")
    with pytest.raises(ValueError, match="unknown init scheme 'none'|'none'"):
        CompareSpec(inits="none", dataset="digits", model="cnn")  # a zoo model has no init of its own


def _factory(in_shape, num_classes):
    return nn.Sequential(nn.Conv2d(in_shape[0], 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


def test_compare_with_a_callable_builds_a_fresh_seeded_model_per_run(tmp_path):
    spec = CompareSpec(inits=("none", "he"), dataset="digits", model=_factory, seeds=2, train=TRAIN, probe=False,
                       engine="single")
    res = run_compare(spec, out=tmp_path / "r")
    assert list(res.runs["status"]) == ["done"] * 4
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"].endswith("test_zoo:_factory")
    # "none" keeps the factory's own init, drawn under the run seed: reproducible, different per seed
    again = run_compare(spec)
    a = res.metrics.sort_values(["init", "seed"])["test_acc"].to_numpy()
    b = again.metrics.sort_values(["init", "seed"])["test_acc"].to_numpy()
    assert (a == b).all()


def test_prepare_data_gives_each_model_its_layout_and_checks_it():
    data = _toy()
    assert prepare_data(CompareSpec(inits="he", dataset="digits", model="cnn"), data).x_train.shape[1:] == (1, 8, 8)
    assert prepare_data(CompareSpec(inits="he", dataset="digits", model="resmlp"), data).x_train.shape[1:] == (64,)
    bad = CompareSpec(inits="he", dataset="digits", model=lambda: nn.Linear(64, 3))
    with pytest.raises(ValueError, match=r"returns logits of shape \(8, 3\)"):
        prepare_data(bad, data)


def test_depth_sweep_varies_the_zoo_models_depth_parameter():
    res = initlab.depth_sweep(depths=(1, 2), inits=("he",), dataset="digits", epochs=1,
                              model="resnet(width=4,norm=none)")
    assert res.model == "resnet(width=4,norm=None)" or res.model == "resnet(width=4,norm=none)"
    for d, r in res.results.items():
        assert f"blocks={d}" in r.spec.model
    with pytest.raises(ValueError, match="needs a zoo model"):
        initlab.depth_sweep(depths=(1,), inits=("he",), model="pkg:make")
    with pytest.raises(ValueError, match="no effect with a model"):
        initlab.depth_sweep(depths=(1,), inits=("he",), model="cnn", width=32)


# ----------------------------------------------------------------------------- command line

USER_MODULE = '''
import torch
from torch import nn

def make(in_shape, num_classes):
    return nn.Sequential(nn.Conv2d(in_shape[0], 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))

def wrong_classes():
    return nn.Linear(64, 3)

def pair(in_features, out_features):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
        def forward(self, x):
            return self.fc(x), x
    return Pair()

def conv_on_flat():
    return nn.Sequential(nn.Linear(64, 64), nn.Unflatten(1, (1, 64)), nn.Conv2d(3, 4, 3))

def broken(in_shape):
    raise RuntimeError("needs a GPU")

not_callable = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "zoo_user_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(*args):
    from typer.testing import CliRunner

    from initlab.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_compare_runs_a_user_factory_from_the_working_directory(user_module):
    r = _cli("compare", "--dataset", "digits", "--epochs", "1", "--model", "zoo_user_models:make",
             "--inits", "none,he", "--out", str(user_module / "out"))
    assert r.exit_code == 0, r.output
    assert "zoo_user_models:make" in r.output
    for f in ("metrics.csv", "probe.csv", "test_acc.png", "probe.png"):
        assert (user_module / "out" / f).exists()


@pytest.mark.parametrize("model,msg", [
    ("zoo_user_models:wrong_classes", "returns logits of shape (8, 3) for a batch of 8; expected (8, 10)"),
    ("zoo_user_models:pair", "returns a tuple of 2 items"),
    ("zoo_user_models:conv_on_flat", "fails on the dataset's input (a batch of shape (8, 64)): RuntimeError"),
    ("zoo_user_models:broken", "raised RuntimeError: needs a GPU"),
    ("zoo_user_models:not_callable", "has no callable 'not_callable'"),
    ("zoo_user_models:missing", "has no callable 'missing'"),
    ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
    ("resnet(wdth=3)", "model 'resnet' has no parameter 'wdth'"),
    ("vgg16", "unknown model 'vgg16'"),
])
def test_cli_bad_models_are_one_line_errors_before_training(user_module, model, msg):
    r = _cli("compare", "--dataset", "digits", "--epochs", "1", "--model", model, "--inits", "he",
             "--out", str(user_module / "out"))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and msg in " ".join(r.output.split()), r.output
    assert not (user_module / "out").exists()


def test_cli_model_with_mlp_options_is_refused(user_module):
    r = _cli("compare", "--dataset", "digits", "--model", "cnn", "--hidden", "64", "--out", str(user_module / "o"))
    assert r.exit_code == 2 and "no effect with a model" in r.output
    r = _cli("depth", "--model", "cnn", "--width", "8", "--out", str(user_module / "o"))
    assert r.exit_code == 2 and "no effect with --model" in r.output
    r = _cli("depth", "--model", "zoo_user_models:make", "--out", str(user_module / "o"))
    assert r.exit_code == 2 and "must be a zoo model" in r.output


def test_cli_models_lists_the_zoo():
    r = _cli("models")
    assert r.exit_code == 0
    for name in ZOO:
        assert name in r.output
