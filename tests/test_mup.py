"""μP (Tensor Programs V): layer kinds, init stds, lr multipliers, attention scale, coordinate check."""
import math

import pytest
import torch
from typer.testing import CliRunner

from initlab.cli import app
from initlab.data import load_dataset
from initlab.models import make_model
from initlab.analysis.coordcheck import coord_check, growth, output_layer
from initlab.training.mup import mup_parametrize, restore_attention

torch.set_num_threads(1)
DIGITS = (1, 8, 8)


def mlp(width, depth=2):
    return make_model(f"mlp(depth={depth},width={width})", DIGITS, 10)


def transformer(width, heads=4):
    return make_model(f"transformer(depth=1,width={width},heads={heads})", DIGITS, 10)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_mlp_kinds():
    plan = mup_parametrize(mlp(256), 64)
    kinds = {n: p.kind for n, p in plan.params.items()}
    assert kinds == {"fc1.weight": "input", "fc1.bias": "input", "fc2.weight": "hidden", "fc2.bias": "input",
                     "fc3.weight": "output", "fc3.bias": "fixed"}
    assert plan.width == 256 and plan.base_width == 64
    assert plan.params["fc3.weight"].ratio == 4.0 and plan.params["fc3.bias"].ratio == 1.0


def test_transformer_kinds():
    plan = mup_parametrize(transformer(128), 32)
    k = {n: p.kind for n, p in plan.params.items()}
    assert k["embed.weight"] == k["wpe.weight"] == k["embed.bias"] == "input"
    for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert k[f"blocks.0.{layer}.weight"] == "hidden"
        assert k[f"blocks.0.{layer}.bias"] == "input"
    assert k["blocks.0.ln_1.weight"] == k["ln_f.bias"] == "input"
    assert k["head.weight"] == "output" and k["head.bias"] == "fixed"
    assert plan.params["ln_f.weight"].init_std is None  # norm layers keep 1 / 0


def test_base_model_gives_the_same_plan_as_base_width():
    by_width = mup_parametrize(mlp(256), 64, attention=False)
    by_model = mup_parametrize(mlp(256), mlp(64), attention=False)
    assert by_model.params == by_width.params
    t_width = mup_parametrize(transformer(128), 32, attention=False)
    t_model = mup_parametrize(transformer(128), transformer(32), attention=False)
    assert {n: (p.kind, p.init_std, p.lr_mult) for n, p in t_model.params.items()} == \
        {n: (p.kind, p.init_std, p.lr_mult) for n, p in t_width.params.items()}


@pytest.mark.parametrize("readout_zero", [False, True])
def test_init_std_follows_the_formula(readout_zero):
    n, n0, g = 1024, 64, math.sqrt(2)
    model = mlp(n)
    plan = mup_parametrize(model, n0, readout_zero=readout_zero)
    plan.initialize(generator=torch.Generator().manual_seed(0))
    expected = {"fc1.weight": g / math.sqrt(64),           # fan_in = 64 pixels: SP (He)
                "fc2.weight": g / math.sqrt(n),            # hidden: SP (He)
                "fc3.weight": 0.0 if readout_zero else g / math.sqrt(n0) / (n / n0)}  # readout: SP at base / r
    for name, std in expected.items():
        w = dict(model.named_parameters())[name].detach()
        assert plan.params[name].init_std == pytest.approx(std)
        # the sample std of m normal draws has relative standard error 1/√(2m); 6 of them is far out
        tol = 6 / math.sqrt(2 * w.numel())
        assert w.std().item() == pytest.approx(std, rel=tol, abs=1e-12)
    for name in ("fc1.bias", "fc2.bias", "fc3.bias"):
        assert dict(model.named_parameters())[name].abs().max() == 0


def test_adam_and_sgd_lr_multipliers():
    adam = mup_parametrize(mlp(512), 64, optimizer="adam")
    sgd = mup_parametrize(mlp(512), 64, optimizer="sgd")
    r = 8.0
    want_adam = {"fc1.weight": 1, "fc1.bias": 1, "fc2.weight": 1 / r, "fc2.bias": 1, "fc3.weight": 1 / r, "fc3.bias": 1}
    want_sgd = {"fc1.weight": r, "fc1.bias": r, "fc2.weight": 1, "fc2.bias": r, "fc3.weight": 1 / r, "fc3.bias": 1}
    assert {n: p.lr_mult for n, p in adam.params.items()} == pytest.approx(want_adam)
    assert {n: p.lr_mult for n, p in sgd.params.items()} == pytest.approx(want_sgd)


@pytest.mark.parametrize("make", [mlp, transformer])
def test_param_groups_cover_every_parameter_once(make):
    model = make(128)
    plan = mup_parametrize(model, 32)
    groups = plan.param_groups(0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))
    for g in groups:
        assert g["lr"] == pytest.approx(0.01 * g["lr_mult"])
        assert all(plan.params[n].lr_mult == g["lr_mult"] for n in g["names"])
    torch.optim.Adam(groups)  # torch accepts them (extra keys kept)


@pytest.mark.parametrize("make", [mlp, transformer])
def test_mup_at_the_base_width_is_sp(make):
    mup = mup_parametrize(make(64), 64, attention=False)
    sp = mup_parametrize(make(64), 64, parametrization="sp", attention=False)
    assert {n: (p.init_std, p.lr_mult) for n, p in mup.params.items()} == \
        {n: (p.init_std, p.lr_mult) for n, p in sp.params.items()}
    assert all(p.lr_mult == 1 for p in mup.params.values())
    # SP at any width: He stds, lr multipliers 1, readout not shrunk
    wide = mup_parametrize(make(256), 64, parametrization="sp")
    assert all(p.lr_mult == 1 for p in wide.params.values())
    head = [p for p in wide.params.values() if p.kind == "output"][0]
    assert head.init_std == pytest.approx(math.sqrt(2 / head.fan_in))


def test_attention_scale_is_one_over_d_and_equals_sp_at_base():
    x = torch.randn(3, *DIGITS)
    model = transformer(32)
    before = model(x)
    plan = mup_parametrize(model, 32)  # base width: μP's √d0/d is SP's 1/√d
    assert plan.attention_scale == pytest.approx(1 / math.sqrt(8))
    torch.testing.assert_close(model(x), before)
    wide = transformer(128)
    assert mup_parametrize(wide, 32).attention_scale == pytest.approx(math.sqrt(8) / 32)  # d=32, d0=8
    assert wide.blocks[0].attn.mup_attn_scale == pytest.approx(math.sqrt(8) / 32)
    restore_attention(wide)
    assert "forward" not in vars(wide.blocks[0].attn)
    assert mup_parametrize(transformer(128), 32, parametrization="sp").attention_scale is None


def test_coord_check_shape_and_mup_keeps_the_logits_flat(digits):
    coords = coord_check("mlp(depth=2)", (32, 256), steps=2, seeds=1, data=digits)
    assert list(coords.columns) == ["parametrization", "width", "seed", "step", "layer", "l1"]
    assert len(coords) == 2 * 2 * 1 * 3 * 5  # parametrizations × widths × seeds × (steps + 1) × layers
    assert output_layer(coords) == "fc3"
    g = growth(coords).set_index(["parametrization", "layer"])["ratio"]
    sp, mup = g[("sp", "fc3")], g[("mup", "fc3")]
    assert sp > 3 and mup < 1.5 and sp > 3 * mup, (sp, mup)
    # at init (step 0) both parametrizations agree at the base width
    base = coords[(coords.width == 32) & (coords.step == 0)]
    assert base[base.parametrization == "sp"].l1.tolist() == pytest.approx(base[base.parametrization == "mup"].l1.tolist())


def test_coord_check_transformer_runs(digits):
    coords = coord_check("transformer(depth=1,heads=4)", (32, 128), steps=1, seeds=1, data=digits)
    g = growth(coords).set_index(["parametrization", "layer"])["ratio"]
    assert g[("mup", "head")] < 1.5 and g[("sp", "head")] > g[("mup", "head")]


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=(64,)), "at least two"),
    (dict(widths=(64, 64)), "distinct"),
    (dict(optimizer="adamw"), "optimizer"),
    (dict(steps=0), "steps"),
    (dict(lr=-1.0), "lr"),
    (dict(model="cnn"), "mlp or transformer"),
    (dict(model="mlp(width=64)"), "without width"),
    (dict(model="transformer(heads=3)"), "divisible"),
    (dict(parametrizations=("ntk",)), "parametrization"),
])
def test_coord_check_bad_inputs(kwargs, match, digits):
    args = dict(widths=(32, 64), steps=1, seeds=1, data=digits) | kwargs
    with pytest.raises(ValueError, match=match):
        coord_check(**args)


def test_mup_parametrize_bad_inputs():
    with pytest.raises(ValueError, match="optimizer"):
        mup_parametrize(mlp(64), 32, optimizer="rmsprop")
    with pytest.raises(ValueError, match="base width"):
        mup_parametrize(mlp(64), 0)
    with pytest.raises(ValueError, match="zoo mlp"):
        mup_parametrize(make_model("cnn", (1, 28, 28), 10), 16)
    with pytest.raises(ValueError, match=r"base model has parameter 'fc4\."):
        mup_parametrize(mlp(64), mlp(32, depth=3))
    with pytest.raises(ValueError, match="base model has no parameter 'fc4.weight'"):
        mup_parametrize(mlp(64, depth=3), mlp(32))
    with pytest.raises(ValueError, match="lr"):
        mup_parametrize(mlp(64), 32).param_groups(0)


def test_cli_coordcheck(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cc"
    r = runner.invoke(app, ["coordcheck", "--widths", "32,128", "--steps", "1", "--seeds", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {"coords.csv", "growth.csv", "coordcheck_sp.png", "coordcheck_mup.png", "config.json"} <= \
        {p.name for p in out.iterdir()}
    r = runner.invoke(app, ["coordcheck", "--widths", "32,128", "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output
    for bad in (["--widths", "32,x"], ["--widths", "32"], ["--optimizer", "lion"], ["--model", "resnet"]):
        r = runner.invoke(app, ["coordcheck", *bad, "--out", str(tmp_path / "bad")])
        assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
        assert not (tmp_path / "bad").exists()


def test_coord_check_leaves_the_global_rng_alone(digits):
    """Module construction is seeded inside fork_rng: a caller's torch.manual_seed stream is not moved."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    coord_check("mlp(depth=2)", (32, 64), steps=1, seeds=1, data=digits)
    assert torch.equal(torch.rand(3), expected)
