"""Residual inits (fixup, skipinit, rezero, gpt2): rules from the zoo's branch metadata.

Statistical checks use the sampling law of the standard deviation: the sample std of n i.i.d.
normal draws has relative standard deviation ≈ 1/√(2n), so every std is checked within 5 of
those (a false failure is a < 1e-6 event).
"""
import math

import pytest
import torch
from torch import nn

import initlab
from initlab.models import make_model, residual_info
from initlab.schemes import (
    check_scheme,
    fixup_rules,
    get_scheme,
    gpt2_rules,
    initialize,
    initialize_with_report,
    list_schemes,
    parse_scheme_list,
)

NAMES = ("fixup", "skipinit", "rezero", "gpt2")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pooled(model: nn.Module, names) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().flatten().double() for n in names])


def assert_std(x: torch.Tensor, std: float, k: float = 5.0) -> None:
    """Sample std within k sampling sds (relative sd 1/√(2n)) of ``std``; mean within k·std/√n of 0."""
    n = x.numel()
    assert abs(x.mean().item()) <= k * std / math.sqrt(n), (x.mean().item(), std, n)
    assert abs(x.std().item() / std - 1) <= k / math.sqrt(2 * n), (x.std().item(), std, n)


def resmlp(**kw) -> nn.Module:
    spec = ",".join(f"{k}={str(v).lower()}" for k, v in kw.items())
    return make_model(f"resmlp({spec})", (64,), 10)


def scramble(model: nn.Module) -> nn.Module:
    """Every parameter random, so a test sees what the scheme wrote, not the constructor's values."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(generator=gen(123))
    return model


def stream_after_blocks(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(stem output, residual stream after the last block) on ``x``."""
    seen = {}
    h1 = model.stem.register_forward_hook(lambda m, i, o: seen.__setitem__("stem", o.detach()))
    h2 = model.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("last", o.detach()))
    with torch.no_grad():
        out = model(x)
    h1.remove(), h2.remove()
    return seen["stem"], seen["last"], out


# --------------------------------------------------------------------------- registry


def test_registered_as_model_level_with_docstrings():
    for name in NAMES:
        assert name in list_schemes()
        sch = get_scheme(name)
        assert sch.model_level and sch.whole_model and not sch.needs_example
        assert sch.fn.__doc__.strip().splitlines()[0].endswith(".")
    assert not get_scheme("he").whole_model and get_scheme("lsuv").whole_model


def test_specs_parse_check_and_round_trip():
    texts = parse_scheme_list("pytorch_default,he,fixup,fixup(base=xavier_uniform,mode=fan_out),"
                              "skipinit(base=he),rezero,gpt2(std=0.01),fixup(base='normal(std=0.1)')")
    assert texts[2:5] == ("fixup", "fixup(base=xavier_uniform,mode=fan_out)", "skipinit(base=he)")
    assert texts[-1] == "fixup(base='normal(std=0.1)')"
    for bad, word in [("fixup(base=auto)", "whole-model"), ("fixup(base=nope)", "nope"),
                      ("fixup(mode=fan_avg)", "fan_avg"), ("gpt2(std=-1)", "-1"), ("gpt2(sd=1)", "sd"),
                      ("rezero(base=gpt2)", "whole-model")]:
        with pytest.raises(ValueError, match=word) as info:
            check_scheme(bad)
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- fixup


def test_fixup_zeros_gates_and_scalar_biases():
    model = scramble(resmlp(blocks=6, width=32, fixup=True))
    info = residual_info(model)
    initialize(model, "fixup", generator=gen())
    p = dict(model.named_parameters())
    assert not p["head.weight"].any() and not p["head.bias"].any()
    for branch, gate, biases in zip(info.branches, info.gates, info.biases):
        assert not p[f"{branch[-1]}.weight"].any() and not p[f"{branch[-1]}.bias"].any()
        assert p[f"{branch[0]}.weight"].std() > 0 and not p[f"{branch[0]}.bias"].any()
        assert p[f"{gate}.value"].item() == 1.0
        assert len(biases) == 4 and all(p[f"{b}.value"].item() == 0.0 for b in biases)
    assert not p["stem.bias"].any()


@pytest.mark.parametrize("m", [2, 3])
def test_fixup_branch_std_follows_the_formula(m):
    blocks, width = 8, 128
    model = resmlp(blocks=blocks, width=width, m=m)
    initialize(model, "fixup", generator=gen())
    info = residual_info(model)
    scaled = [f"{layer}.weight" for b in info.branches for layer in b[:-1]]
    assert len(scaled) == blocks * (m - 1)
    assert_std(pooled(model, scaled), math.sqrt(2 / width) * blocks ** (-1 / (2 * m - 2)))
    assert_std(pooled(model, ["stem.weight"]), math.sqrt(2 / 64))  # base: He normal, fan_in 64


def test_fixup_m1_has_no_scaled_layer_and_conv_fans():
    model = resmlp(blocks=4, width=16, m=1)
    initialize(model, "fixup", generator=gen())
    assert all(not model.blocks[i].layers[0].weight.any() for i in range(4))
    net = make_model("resnet(blocks=6,width=16,norm=none)", (1, 8, 8), 10)
    initialize(net, "fixup(mode=fan_out,base=xavier_normal)", generator=gen())
    info = residual_info(net)
    w = pooled(net, [f"{b[0]}.weight" for b in info.branches])
    assert_std(w, math.sqrt(2 / (16 * 9)) * 6 ** -0.5)  # fan_out = 16·3·3 (= fan_in for a square conv)
    assert_std(pooled(net, ["stem.weight"]), math.sqrt(2 / (1 * 9 + 16 * 9)))  # xavier_normal stem


@pytest.mark.parametrize("spec,scheme", [
    ("resmlp(blocks=10,width=32,fixup=true)", "fixup"),
    ("resnet(blocks=5,width=8,norm=none)", "fixup"),
    ("resmlp(blocks=10,width=32,gate=true)", "skipinit"),
    ("resnet(blocks=5,width=8,norm=none,gate=true)", "rezero"),
])
def test_at_init_the_network_is_its_stem_path(spec, scheme):
    in_shape = (1, 8, 8) if spec.startswith("resnet") else (64,)
    model = scramble(make_model(spec, in_shape, 10))
    initialize(model, scheme, generator=gen())
    x = torch.randn(16, *in_shape, generator=gen(5))
    stem, last, out = stream_after_blocks(model, x)
    assert torch.equal(last, stem)  # every branch contributes exactly 0
    if scheme == "fixup":
        assert not out.any()  # zero classifier
    else:
        with torch.no_grad():
            assert torch.allclose(out, model.head(model.pool(model.act(stem))))


def test_same_generator_same_parameters():
    def build(scheme, seed):
        model = make_model("transformer(depth=2,width=16)", (1, 8, 8), 10) if scheme == "gpt2" else \
            resmlp(blocks=3, width=16, gate=True)
        return dict(initialize(model, scheme, generator=gen(seed)).named_parameters())

    for scheme in NAMES:
        a, b, c = build(scheme, 1), build(scheme, 1), build(scheme, 2)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a)


# --------------------------------------------------------------------------- skipinit / rezero


@pytest.mark.parametrize("scheme,std", [("skipinit", lambda fi, fo: math.sqrt(2 / fi)),
                                        ("rezero", lambda fi, fo: math.sqrt(2 / (fi + fo)))])
def test_gated_schemes_zero_every_gate_and_draw_base(scheme, std):
    model = scramble(resmlp(blocks=6, width=128, gate=True))
    initialize(model, scheme, generator=gen())
    info = residual_info(model)
    p = dict(model.named_parameters())
    assert all(p[f"{g}.value"].item() == 0.0 for g in info.gates)
    assert_std(pooled(model, [f"{layer}.weight" for b in info.branches for layer in b]), std(128, 128))
    assert not any(p[f"{layer}.bias"].any() for b in info.branches for layer in b)
    initialize(model, f"{scheme}(base='normal(std=0.5)')", generator=gen())
    assert_std(pooled(model, ["stem.weight"]), 0.5)


# --------------------------------------------------------------------------- gpt2


def test_gpt2_on_the_zoo_transformer():
    depth, width = 4, 64
    model = scramble(make_model(f"transformer(depth={depth},width={width})", (1, 8, 8), 10))
    initialize(model, "gpt2", generator=gen())
    info = residual_info(model)
    assert info.num_branches == 2 * depth
    finals = [f"{n}.weight" for n in info.branch_final]
    assert all(n.endswith("c_proj.weight") for n in finals)
    assert_std(pooled(model, finals), 0.02 / math.sqrt(2 * depth))
    others = [n for n, p in model.named_parameters()
              if n.endswith("weight") and n not in finals and "ln_" not in n]
    assert_std(pooled(model, others), 0.02)
    for n, p in model.named_parameters():
        if "ln_" in n:
            assert torch.all(p == (1.0 if n.endswith("weight") else 0.0)), n
        elif n.endswith("bias"):
            assert not p.any(), n


class NanoBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.c_proj(torch.relu(self.c_fc(self.ln(x))))


class NanoGPT(nn.Module):
    """A user's model with GPT-2 names and no ResidualInfo."""

    def __init__(self, d=64, n=6):
        super().__init__()
        self.wte = nn.Embedding(50, d)
        self.h = nn.ModuleList([NanoBlock(d) for _ in range(n)])
        self.lm_head = nn.Linear(d, 50, bias=False)

    def forward(self, idx):
        x = self.wte(idx)
        for b in self.h:
            x = b(x)
        return self.lm_head(x)


def test_gpt2_falls_back_to_c_proj_names():
    model = NanoGPT(d=64, n=6)
    rules = gpt2_rules(model)
    projs = [f"h.{i}.c_proj.weight" for i in range(6)]
    assert all(rules[k] == f"normal(std={0.02 / math.sqrt(6)!r})" for k in projs)
    initialize(model, "gpt2(std=0.05)", generator=gen())
    assert_std(pooled(model, projs), 0.05 / math.sqrt(6))  # n = 6 parameters named *c_proj.weight
    assert_std(pooled(model, ["wte.weight", "lm_head.weight"] + [f"h.{i}.c_fc.weight" for i in range(6)]), 0.05)


def test_gpt2_needs_info_or_names():
    with pytest.raises(ValueError, match=r"no ResidualInfo .* '\*c_proj.weight'") as info:
        initialize(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "gpt2")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- errors and rules


@pytest.mark.parametrize("build,scheme,words", [
    (lambda: initlab.models.mlp(64, [32, 32], 10), "fixup", "fixup needs the model's residual branches"),
    (lambda: resmlp(blocks=3, width=8), "skipinit", "gate=true"),
    (lambda: resmlp(blocks=3, width=8), "rezero", "gates on 0 of 3 branches"),
    (lambda: make_model("transformer(depth=1,width=8)", (1, 8, 8), 10), "skipinit", "Transformer has gates on 0 of 2"),
    (lambda: resmlp(blocks=3, width=8), {"*": "he", "blocks.*": "fixup"}, "use it alone or as the value of '*'"),
    (lambda: resmlp(blocks=3, width=8), "fixup(base=lsuv)", "whole-model scheme"),
    (lambda: resmlp(blocks=3, width=8), "fixup(depth=3)", "unexpected parameter 'depth'"),
])
def test_one_line_errors_leave_the_model_unchanged(build, scheme, words):
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        initialize(model, scheme, generator=gen())
    assert words in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_other_whole_model_misuse():
    model = resmlp(blocks=2, width=8)
    with pytest.raises(ValueError, match="need a single scheme"):
        initialize(model, {"*": "fixup", "head.weight": "he"}, base="he")
    with pytest.raises(ValueError, match="whole models"):
        initialize(nn.LSTM(4, 4), "he", recurrent="fixup")


def test_user_rules_override_generated_ones():
    model = resmlp(blocks=4, width=64, fixup=True)
    initialize(model, {"*": "fixup", "head.weight": "xavier_normal"}, generator=gen())
    assert_std(pooled(model, ["head.weight"]), math.sqrt(2 / (64 + 10)))
    assert not model.head.bias.any()  # named by fixup, not taken by the user: stays 0
    assert not model.blocks[0].layers[1].weight.any()

    model = scramble(resmlp(blocks=4, width=64, fixup=True))
    initialize(model, {"*": "fixup", "Linear": "pytorch_default", "blocks.0.gate.value": "constant(value=0.5)"},
               generator=gen())
    assert model.blocks[0].layers[1].weight.std() > 0  # the type rule took every Linear weight ...
    assert model.blocks[0].layers[1].bias.std() > 0  # ... and their biases follow its bias policy
    assert model.head.bias.std() > 0
    assert model.blocks[0].gate.value.item() == 0.5 and model.blocks[1].gate.value.item() == 1.0
    assert model.blocks[0].bias_in[0].value.item() == 0.0

    t = make_model("transformer(depth=2,width=32)", (1, 8, 8), 10)
    initialize(t, {"*": "gpt2", "*.mlp.c_proj.weight": "zero"}, generator=gen())
    assert not t.blocks[1].mlp.c_proj.weight.any() and t.blocks[1].attn.c_proj.weight.std() > 0


def test_report_shows_every_tensor_with_rule_and_note():
    model = resmlp(blocks=2, width=16, fixup=True)
    model, report = initialize_with_report(model, "fixup", generator=gen())
    assert report["rule"].notna().all()
    rows = report.set_index("parameter")
    assert rows.at["blocks.1.layers.1.weight", "scheme"] == "zero"
    assert "branch-final" in rows.at["blocks.1.layers.1.weight", "note"]
    assert rows.at["blocks.0.layers.0.weight", "scheme"].startswith("variance_scaling(scale=1.0,")  # 2·2^(-1)
    assert "scalar multiplier" in rows.at["blocks.0.gate.value", "note"]
    assert rows.at["stem.weight", "rule"] == "*" and "outside the residual branches" in rows.at["stem.weight", "note"]
    assert fixup_rules(model)["head.bias"] == "zero"


def test_kwargs_params_and_audit():
    model = resmlp(blocks=3, width=32, gate=True)
    initialize(model, "rezero", base="he", generator=gen())
    assert_std(pooled(model, ["stem.weight"]), math.sqrt(2 / 64))  # he = kaiming_uniform: std √2/√fan_in
    report = initlab.audit(resmlp(blocks=3, width=32, fixup=True), torch.randn(64, 64, generator=gen()),
                           ["fixup", "he"])
    summary = report.summary().set_index("scheme")
    assert set(summary.index) == {"fixup", "he"} and not summary.at["fixup", "flags"].startswith("error")


def test_compare_runs_fixup_next_to_the_default(digits):
    spec = initlab.CompareSpec(inits=("pytorch_default", "fixup"), dataset="digits",
                               model="resmlp(blocks=2,width=16,fixup=true)", probe=False,
                               train=initlab.TrainConfig(epochs=1, lr=0.1))
    result = initlab.run_compare(spec, data=digits)
    assert list(result.runs["status"]) == ["done", "done"]
    spec = initlab.CompareSpec(inits=("fixup",), dataset="digits", model="cnn(depth=1,channels=4)",
                               probe=False, train=initlab.TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="residual branches"):
        initlab.run_compare(spec, data=digits)
