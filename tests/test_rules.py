"""Rules mapping names, globs and module types to schemes: precedence, bias policies, layer options,
the report, warnings and strictness, atomic failure, reproducibility."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from initlab import schemes as S
from initlab.schemes import registry as R
from initlab.schemes import (
    REPORT_COLUMNS,
    Rule,
    declared_fans,
    fan_in_and_fan_out,
    get_scheme,
    initialize,
    initialize_with_report,
    kaiming_uniform_,
    register_scheme,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def c(v) -> str:
    return f"constant(value={v})"


def net():
    return nn.Sequential(OrderedDict(
        enc=nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),
        emb=nn.Embedding(5, 4),
        norm=nn.LayerNorm(4),
        head=nn.Linear(4, 2),
    ))


def values(m) -> dict[str, set[float]]:
    return {n: set(p.detach().flatten().tolist()) for n, p in m.named_parameters()}


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cases below must not warn
        return fn(*a, **kw)


# --------------------------------------------------------------------------- precedence


def test_precedence_exact_glob_type_star_layer_default():
    m = net()
    rules = {"*": c(1), "Linear": c(2), "enc.*": c(3), "enc.1.*": c(4), "enc.1.weight": c(5)}
    _, report = quiet(initialize_with_report, m, rules)
    v = values(m)
    assert v["enc.1.weight"] == {5}  # exact name
    assert v["enc.1.bias"] == {4}  # the more specific glob, acting on the bias itself
    assert v["enc.0.weight"] == {3} and v["enc.0.bias"] == {3}
    assert v["head.weight"] == {2} and v["head.bias"] == {0}  # type rule; bias by policy
    assert v["emb.weight"] == {1}  # "*"
    assert v["norm.weight"] == {1} and v["norm.bias"] == {0}  # layer default, "*" does not apply
    rule = dict(zip(report.parameter, report.rule))
    assert rule == {"enc.0.weight": "enc.*", "enc.0.bias": "enc.*", "enc.1.weight": "enc.1.weight",
                    "enc.1.bias": "enc.1.*", "emb.weight": "*", "norm.weight": "(layer default)",
                    "norm.bias": "(layer default)", "head.weight": "Linear", "head.bias": "Linear"}


@pytest.mark.parametrize("first", ["enc.0.w*", "enc.?.we*"])
def test_glob_ties_go_to_insertion_order(first):
    # both have 7 literal characters ("enc.0.w", "enc..we")
    other = {"enc.0.w*": "enc.?.we*", "enc.?.we*": "enc.0.w*"}[first]
    m = net()
    quiet(initialize, m, {first: c(1), other: c(2), "*": "zero"})
    assert values(m)["enc.0.weight"] == {1}


def test_longer_literal_beats_insertion_order():
    m = net()
    quiet(initialize, m, {"*weight": c(1), "enc.0.weight*": c(2), "*": "zero"})
    assert values(m)["enc.0.weight"] == {2} and values(m)["enc.1.weight"] == {1}


def test_type_rules_follow_the_mro():
    class MyLinear(nn.Linear):
        pass

    m = nn.Sequential(MyLinear(3, 3), nn.Linear(3, 3))
    quiet(initialize, m, {"Linear": c(1), "MyLinear": c(2)})
    assert values(m)["0.weight"] == {2} and values(m)["1.weight"] == {1}
    quiet(initialize, m, {"Linear": c(3)})
    assert values(m)["0.weight"] == {3}


def test_type_rule_covers_norms_and_bias_follows_policy():
    m = net()
    quiet(initialize, m, {"LayerNorm": c(0.5), "*": "he"}, generator=gen())
    assert values(m)["norm.weight"] == {0.5} and values(m)["norm.bias"] == {0}


def test_rules_name_the_effective_weight_of_a_parametrization():
    m = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)))
    quiet(initialize, m, {"0.weight": c(0.5)})
    assert torch.allclose(m[0].weight, torch.full((4, 4), 0.5))


# --------------------------------------------------------------------------- biases


def test_bias_policies():
    m = quiet(initialize, nn.Linear(100, 50), "he", generator=gen())
    assert not m.bias.any()
    m = quiet(initialize, nn.Linear(100, 50), "pytorch_default", generator=gen())
    assert m.bias.abs().max() <= 0.1 and m.bias.abs().sum() > 0
    m = quiet(initialize, nn.Sequential(nn.Linear(100, 50)), {"*": "he", "*.bias": c(0.1)}, generator=gen())
    assert torch.allclose(m[0].bias, torch.full((50,), 0.1))
    m = quiet(initialize, nn.Linear(100, 50), {"*": "he", "bias": c(0.1)}, generator=gen())  # no prefix at the top
    assert torch.allclose(m.bias, torch.full((50,), 0.1))


def test_fan_based_scheme_on_bias_fails_and_changes_nothing():
    m = net()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with pytest.raises(ValueError, match=r"'enc\.0\.bias' \(Linear\) with he \(rule 'enc\.\*'\): .*no fan_in/fan_out"):
        initialize(m, {"enc.*": "he", "*": "he"}, generator=gen())
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n]), n


def test_custom_bias_policy_sees_the_weight_block_and_its_fans():
    seen = []

    def record(bias, weight, *, generator=None):
        seen.append((tuple(weight.shape), fan_in_and_fan_out(weight)))
        bias.fill_(0.5)

    saved = dict(R._SCHEMES), dict(R._ALIASES)
    try:
        register_scheme("rec", bias=record)(S.zeros_)
        m = quiet(initialize, nn.LSTMCell(3, 5), "rec")
    finally:
        R._SCHEMES.clear(), R._SCHEMES.update(saved[0])
        R._ALIASES.clear(), R._ALIASES.update(saved[1])
    assert seen == [((5, 3), (3, 5))] * 4 + [((5, 5), (5, 5))] * 4
    assert torch.equal(m.bias_ih, torch.full((20,), 0.5))


def test_declared_fans_apply_to_that_tensor_only():
    w = torch.empty(6, 4)
    with declared_fans(w, 2.5, 7):
        assert fan_in_and_fan_out(w) == (2.5, 7)
        assert fan_in_and_fan_out(w.view(6, 4)) == (4, 6)  # another tensor object
        assert fan_in_and_fan_out(w.shape) == (4, 6)
    assert fan_in_and_fan_out(w) == (4, 6)


# --------------------------------------------------------------------------- options


def test_rule_options_win_over_keyword_options():
    m = nn.ModuleDict({"lstm": nn.LSTM(4, 6), "gru": nn.GRU(4, 6)})
    rules = {"LSTM": Rule("xavier", recurrent="zero", forget_bias=2.0), "GRU": "xavier"}
    _, report = quiet(initialize_with_report, m, rules, recurrent=c(0.25), forget_bias=1.0, generator=gen())
    assert not m["lstm"].weight_hh_l0.any()
    assert torch.equal(m["gru"].weight_hh_l0, torch.full((18, 6), 0.25))
    assert torch.equal(m["lstm"].bias_ih_l0[6:12], torch.full((6,), 2.0))
    assert not m["lstm"].bias_hh_l0.any()
    rows = report.set_index("parameter")
    assert rows.loc["lstm.weight_hh_l0[gate f]", "rule"] == "LSTM (recurrent)"
    assert rows.loc["lstm.weight_hh_l0[gate f]", "note"] == "recurrent: option of rule 'LSTM'"
    assert rows.loc["gru.weight_hh_l0[gate z]", "note"] == "recurrent: option of initialize"
    assert rows.loc["lstm.bias_hh_l0[gate f]", "rule"] == "LSTM (recurrent) (forget_bias)"
    assert rows.loc["lstm.bias_ih_l0[gate f]", "scheme"] == "constant(value=2)"
    assert rows.loc["lstm.bias_ih_l0[gate i]", "scheme"] == "zeros (bias policy of xavier)"


def test_a_name_rule_beats_the_recurrent_option():
    m = quiet(initialize, nn.GRU(4, 6), {"*": "xavier", "weight_hh_l0": c(0.5)}, recurrent="zero", generator=gen())
    assert torch.equal(m.weight_hh_l0, torch.full((18, 6), 0.5))


def test_forget_bias_needs_biases():
    with pytest.raises(ValueError, match=r"forget_bias=1.0 needs LSTM biases, but '1' has bias=False"):
        initialize(nn.Sequential(nn.Linear(2, 2), nn.LSTM(2, 2, bias=False)), "he", forget_bias=1.0)
    initialize(nn.GRU(2, 2, bias=False), "he", forget_bias=1.0)  # only LSTMs have a forget gate


def test_rule_round_trips_and_dict_forms():
    rule = Rule("normal(std=0.1)", recurrent="orthogonal", forget_bias=1)
    assert Rule.from_dict(rule.to_dict()) == rule and rule.forget_bias == 1.0
    m = quiet(initialize, nn.LSTM(3, 4), {"LSTM": {"scheme": "xavier", "forget_bias": 3}}, generator=gen())
    assert torch.equal(m.bias_ih_l0[4:8], torch.full((4,), 3.0))
    m = quiet(initialize, nn.Linear(3, 4), {"name": "constant", "params": {"value": 2}})
    assert values(m)["weight"] == {2}
    m = quiet(initialize, nn.Linear(3, 4), {"*": get_scheme("zeros")})
    assert not m.weight.any()
    with pytest.raises(ValueError, match="rule dict needs key 'scheme'"):
        Rule.from_dict({"scheme": "he", "forgetbias": 1})
    with pytest.raises(ValueError, match="forget_bias must be a finite number"):
        Rule("he", forget_bias=float("nan"))


# --------------------------------------------------------------------------- coverage, warnings, strict


def test_uncovered_parameters_warn_once_and_are_reported():
    m = net()
    emb = m.emb.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"no rule covers 1 parameter\(s\), left as they are: emb\.weight") as rec:
        _, report = initialize_with_report(m, {"Linear": "he"}, generator=gen())
    assert len(rec) == 1
    assert torch.equal(m.emb.weight, emb)
    row = report[report.parameter == "emb.weight"].iloc[0]
    assert row.rule is None and row.scheme is None and row.std_before == row.std_after
    with pytest.raises(ValueError, match="no rule covers 1 parameter"):
        initialize(net(), {"Linear": "he"}, strict=True)


def test_rules_that_match_nothing_warn():
    with pytest.warns(UserWarning, match=r"rule\(s\) 'Lienar', '\*\.nothing' matched no parameter"):
        initialize(net(), {"*": "he", "Lienar": "xavier", "*.nothing": "zero"}, generator=gen())
    with pytest.raises(ValueError, match="'Lienar'"):
        initialize(net(), {"*": "he", "Lienar": "xavier"}, strict=True)


def test_nothing_to_initialize():
    with pytest.raises(ValueError, match="Sequential has no parameters the rules apply to"):
        initialize(nn.Sequential(nn.LayerNorm(3)), {"Linear": "he"})
    with pytest.raises(ValueError, match="no layers to initialize"):
        initialize(nn.Sequential(nn.ReLU()), "he")


@pytest.mark.parametrize("rules,kw,match", [
    ({"Linear": "he"}, {"std": 1.0}, r"scheme parameters \['std'\] as keyword arguments need a single scheme"),
    (["he"], {}, "rules must be a scheme or a mapping"),
    ({"": "he"}, {}, "rule keys must be non-empty strings"),
    ({"Linear": 3}, {}, "rule value must be a scheme name"),
    ({"Linear": "nope"}, {}, "unknown init scheme 'nope'"),
    ({"Linear": "normal(sd=1)"}, {}, "unexpected parameter 'sd'"),
])
def test_bad_rules(rules, kw, match):
    m = net()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=match):
        initialize(m, rules, **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_report_columns_and_blocks():
    m = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2), "lstm": nn.LSTMCell(3, 4)})
    _, report = quiet(initialize_with_report, m, "he", generator=gen())
    assert tuple(report.columns) == REPORT_COLUMNS
    assert list(report.parameter[:6]) == ["attn.in_proj_weight[q]", "attn.in_proj_weight[k]",
                                         "attn.in_proj_weight[v]", "attn.in_proj_bias[q]",
                                         "attn.in_proj_bias[k]", "attn.in_proj_bias[v]"]
    assert "lstm.weight_hh[gate f]" in set(report.parameter)
    w = report.set_index("parameter").loc["attn.out_proj.weight"]
    assert w.module_type == "NonDynamicallyQuantizableLinear" and w.rule == "*" and w.scheme == "he"
    # SE of a sample std: σ·sqrt((kurtosis - 1) / 4n), uniform kurtosis 9/5, n = 64
    assert w.std_after == pytest.approx(math.sqrt(2 / 8), rel=5 * math.sqrt(0.8 / (4 * 64)))
    assert report.fan_in.isna().sum() == (report.scheme.str.contains("bias policy")).sum()


# --------------------------------------------------------------------------- reproducibility


def test_same_generator_bit_identical_and_global_rng_unused():
    def build(seed):
        torch.manual_seed(seed)  # only the construction depends on it
        m = nn.ModuleDict({"emb": nn.Embedding(7, 4), "rnn": nn.GRU(4, 5), "lin": nn.Linear(5, 3)})
        torch.manual_seed(99 + seed)
        return quiet(initialize, m, "xavier", generator=gen(1))

    a, b = build(0), build(1)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n


def test_linear_conv_model_draws_as_before():
    # the Linear/Conv-only behaviour: each weight in modules() order, then its bias; norms draw nothing
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 5), nn.LayerNorm(5))
    quiet(initialize, m, "he", generator=gen(7))
    g = gen(7)
    for layer in (m[0], m[3]):
        want = kaiming_uniform_(torch.empty_like(layer.weight), generator=g)
        assert torch.equal(layer.weight, want)


def test_tied_parameters_are_initialized_once():
    emb, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    m = nn.ModuleDict({"emb": emb, "head": head})
    # planned once, as the output projection (the Linear's fans and type rule), with the tie in the report
    _, report = quiet(initialize_with_report, m, {"Embedding": "zero", "Linear": "normal(std=0.02)"}, generator=gen())
    assert list(report.parameter) == ["head.weight"]
    assert "tied with emb.weight" in report.note[0] and "output projection" in report.note[0]
    assert report.fan_in[0] == 4 and report.fan_out[0] == 10
    assert m.head.weight is m.emb.weight and float(m.head.weight.detach().std()) == pytest.approx(0.02, rel=5 / math.sqrt(2 * 40))
    # a rule naming the tensor by either of its names applies
    for name in ("emb.weight", "head.weight"):
        quiet(initialize, m, {name: "constant(value=0.5)", "*": "zero"}, generator=gen(), strict=True)
        assert bool((m.emb.weight == 0.5).all())
