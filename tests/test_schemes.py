"""Tests for initlab.schemes: statistics against the formulas, parity with torch.nn.init,
reproducibility with generators, the registry, specs and error messages."""

from __future__ import annotations

import inspect
import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from initlab import schemes as S
from initlab.schemes import registry as R
from initlab.schemes import (
    SchemeSpec,
    calculate_gain,
    fan_in_and_fan_out,
    get_scheme,
    initialize,
    list_aliases,
    list_schemes,
    parse_scheme,
    parse_scheme_list,
    register_scheme,
    split_top_level,
    variance_scaling_,
)

LAYERS = {
    "linear_784_128": lambda: nn.Linear(784, 128),
    "linear_128_10": lambda: nn.Linear(128, 10),
    "linear_256_256": lambda: nn.Linear(256, 256),
    "conv2d_3_16_3": lambda: nn.Conv2d(3, 16, 3),
    "conv2d_16_32_5": lambda: nn.Conv2d(16, 32, 5),
    "conv1d_8_16_5": lambda: nn.Conv1d(8, 16, 5),
    "conv3d_4_8_3": lambda: nn.Conv3d(4, 8, 3),
}
SHAPES = {name: tuple(make().weight.shape) for name, make in LAYERS.items()}
# schemes that need a parameter to run at all
REQUIRED = {"constant": {"value": 0.5}}
# "auto" initializes a whole model from its graph and an example batch (tests/test_auto.py), so the
# per-layer smoke tests here run over every other scheme
WHOLE_MODEL = {n for n in list_schemes() if get_scheme(n).whole_model}  # auto, lsuv, fixup, ...: own test files
ALL_NAMES = [n for n in list_schemes() + list(list_aliases()) if n not in WHOLE_MODEL]
# only schemes that consume randomness can differ between seeds
DETERMINISTIC = {"zero", "zeros", "constant", "eye", "dirac", "partial_identity", "zero_hadamard"}
# schemes for one kind of weight (tests/test_identity_schemes.py checks their errors on the others)
ONLY = {"eye": "linear", "dirac": "conv", "delta_orthogonal": "conv"}


def applicable(name: str, layer: str) -> bool:
    kind = ONLY.get(get_scheme(name).name)
    return kind is None or layer.startswith(kind)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fans(shape, mode):
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


def assert_std(w: torch.Tensor, std: float, kurtosis: float, mean: float = 0.0, k: float = 5.0):
    """Sample mean and std within k standard errors of the truth.

    SE(mean) = std/sqrt(n); SE(sample std) ≈ std·sqrt((kurtosis - 1) / (4n)) by the delta
    method (kurtosis 3 for a normal, 9/5 for a uniform, <3 for a truncated normal).
    """
    x = w.detach().double().flatten()
    n = x.numel()
    assert abs(x.mean().item() - mean) <= k * std / math.sqrt(n)
    se = std * math.sqrt((kurtosis - 1) / (4 * n))
    assert abs(x.std().item() - std) <= k * se, (x.std().item(), std, se)


# --------------------------------------------------------------------------- smoke


@pytest.mark.parametrize("layer", ["linear_784_128", "conv2d_3_16_3", "conv1d_8_16_5", "conv3d_4_8_3"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_scheme_applies(name, layer):
    if not applicable(name, layer):
        with pytest.raises(ValueError):
            initialize(LAYERS[layer](), name, generator=gen())
        return
    m = LAYERS[layer]()
    out = initialize(m, name, generator=gen(), **REQUIRED.get(get_scheme(name).name, {}))
    assert out is m
    assert torch.isfinite(m.weight).all() and torch.isfinite(m.bias).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_same_seed_same_weights_different_seed_differs(name):
    def build(seed):
        m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 4))
        kind = ONLY.get(get_scheme(name).name)
        rules = name if kind is None else {"Conv2d" if kind == "conv" else "Linear": name, "*": "he"}
        return initialize(m, rules, generator=gen(seed), **REQUIRED.get(get_scheme(name).name, {}))

    a, b, c = build(1), build(1), build(2)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    if name not in DETERMINISTIC:
        w = a[2].weight if ONLY.get(get_scheme(name).name) == "linear" else a[0].weight
        w_c = c[2].weight if ONLY.get(get_scheme(name).name) == "linear" else c[0].weight
        assert not torch.equal(w, w_c)


def test_initialize_is_independent_of_global_rng():
    torch.manual_seed(0)
    a = initialize(nn.Linear(20, 10), "xavier_normal", generator=gen(3))
    torch.manual_seed(99)
    b = initialize(nn.Linear(20, 10), "xavier_normal", generator=gen(3))
    assert torch.equal(a.weight, b.weight)


# --------------------------------------------------------------------------- statistics


VARIANCE_CASES = [
    (scale, mode, dist)
    for scale in (1.0, 2.0)
    for mode in ("fan_in", "fan_out", "fan_avg")
    for dist in ("truncated_normal", "normal", "uniform")
]


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("scale,mode,dist", VARIANCE_CASES)
def test_variance_scaling_std_matches_formula(shape, scale, mode, dist):
    w = torch.empty(shape)
    variance_scaling_(w, scale, mode, dist, generator=gen(7))
    std = math.sqrt(scale / fans(shape, mode))
    kurtosis = {"normal": 3.0, "truncated_normal": 3.0, "uniform": 9 / 5}[dist]
    assert_std(w, std, kurtosis)
    if dist == "uniform":
        assert w.abs().max() <= math.sqrt(3) * std * (1 + 1e-6)
    if dist == "truncated_normal":
        assert w.abs().max() <= 2 * std / S.TRUNCATED_NORMAL_STD * (1 + 1e-6)


def test_truncated_normal_constant_is_std_of_cut_normal():
    # std of N(0,1) truncated to [-2, 2]: 1 - 2·2·φ(2) / (2Φ(2) - 1)
    phi = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert math.isclose(math.sqrt(1 - 4 * phi / mass), S.TRUNCATED_NORMAL_STD, rel_tol=1e-12)


# case id → (params, std as a function of the shape, kurtosis, is uniform); the scheme is
# the case id up to "/"
def _xavier(shape, gain=1.0):
    fi, fo = fan_in_and_fan_out(shape)
    return gain * math.sqrt(2 / (fi + fo))


NAMED_CASES = {
    "xavier_uniform": ({}, _xavier, 9 / 5, True),
    "xavier_uniform/gain": ({"gain": 2.0}, lambda s: _xavier(s, 2.0), 9 / 5, True),
    "xavier_normal": ({}, _xavier, 3.0, False),
    "kaiming_uniform": ({}, lambda s: math.sqrt(2 / fans(s, "fan_in")), 9 / 5, True),
    "kaiming_uniform/fan_out": ({"mode": "fan_out"}, lambda s: math.sqrt(2 / fans(s, "fan_out")), 9 / 5, True),
    "kaiming_normal": ({}, lambda s: math.sqrt(2 / fans(s, "fan_in")), 3.0, False),
    "kaiming_normal/tanh": (
        {"nonlinearity": "tanh", "mode": "fan_out"},
        lambda s: (5 / 3) / math.sqrt(fans(s, "fan_out")),
        3.0,
        False,
    ),
    "lecun_uniform": ({}, lambda s: math.sqrt(1 / fans(s, "fan_in")), 9 / 5, True),
    "lecun_normal": ({}, lambda s: math.sqrt(1 / fans(s, "fan_in")), 3.0, False),
    "pytorch_default": ({}, lambda s: 1 / math.sqrt(3 * fans(s, "fan_in")), 9 / 5, True),
    "normal": ({"std": 0.05}, lambda s: 0.05, 3.0, False),
    "random": ({}, lambda s: 0.01, 3.0, False),
    "uniform": ({"a": 0.2}, lambda s: 0.2 / math.sqrt(3), 9 / 5, True),
}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("case", list(NAMED_CASES))
def test_named_scheme_std_matches_formula(case, shape):
    params, std_of, kurtosis, is_uniform = NAMED_CASES[case]
    name = case.split("/")[0]
    w = torch.empty(shape)
    get_scheme(name)(w, generator=gen(11), **params)
    std = std_of(shape)
    assert_std(w, std, kurtosis)
    if is_uniform:
        assert w.abs().max() <= math.sqrt(3) * std * (1 + 1e-6)


def test_named_schemes_are_variance_scaling_specializations():
    shape = (64, 32, 3, 3)
    pairs = [
        ("xavier_uniform", (1.0, "fan_avg", "uniform")),
        ("xavier_normal", (1.0, "fan_avg", "normal")),
        ("kaiming_uniform", (2.0, "fan_in", "uniform")),
        ("kaiming_normal", (2.0, "fan_in", "normal")),
        ("lecun_uniform", (1.0, "fan_in", "uniform")),
        ("lecun_normal", (1.0, "fan_in", "truncated_normal")),
    ]
    for name, args in pairs:
        a, b = torch.empty(shape), torch.empty(shape)
        get_scheme(name)(a, generator=gen(5))
        variance_scaling_(b, *args, generator=gen(5))
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0, msg=name)


def test_trunc_normal_torch_semantics():
    w = torch.empty(200, 200)
    S.trunc_normal_(w, mean=0.0, std=1.0, a=-1.0, b=1.0, generator=gen(0))
    assert w.min() >= -1 and w.max() <= 1
    # uncorrected: std of N(0,1) cut at ±1 is about 0.538, well below 1
    assert abs(w.std().item() - 0.5379) < 0.01


@pytest.mark.parametrize("shape", [(128, 784), (10, 128), (256, 256), (128, 10), (16, 3, 3, 3), (32, 16, 5, 5)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_orthogonal(shape, gain):
    w = torch.empty(shape)
    S.orthogonal_(w, gain, generator=gen(3))
    m = w.flatten(1).double()
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    eye = torch.eye(min(rows, cols), dtype=torch.double)
    torch.testing.assert_close(gram, gain**2 * eye, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- torch parity


TORCH_PARITY = [
    ("xavier_uniform", {"gain": 1.5}, lambda w, g: nn.init.xavier_uniform_(w, gain=1.5, generator=g)),
    ("xavier_normal", {}, lambda w, g: nn.init.xavier_normal_(w, generator=g)),
    # torch's default nonlinearity is leaky_relu with a=0: same gain sqrt(2) as relu
    ("kaiming_uniform", {}, lambda w, g: nn.init.kaiming_uniform_(w, generator=g)),
    ("kaiming_uniform", {"mode": "fan_out", "nonlinearity": "relu"},
     lambda w, g: nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu", generator=g)),
    ("kaiming_normal", {"a": 0.2, "nonlinearity": "leaky_relu"},
     lambda w, g: nn.init.kaiming_normal_(w, a=0.2, nonlinearity="leaky_relu", generator=g)),
    ("kaiming_normal", {}, lambda w, g: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)),
    ("normal", {"mean": 0.1, "std": 0.3}, lambda w, g: nn.init.normal_(w, 0.1, 0.3, generator=g)),
    ("uniform", {"a": 0.1}, lambda w, g: nn.init.uniform_(w, -0.1, 0.1, generator=g)),
    ("orthogonal", {"gain": 2.0}, lambda w, g: nn.init.orthogonal_(w, 2.0, generator=g)),
    ("trunc_normal", {"std": 0.02}, lambda w, g: nn.init.trunc_normal_(w, std=0.02, generator=g)),
    ("trunc_normal", {"mean": 0.5, "std": 1.0, "a": 0.0, "b": 0.7},
     lambda w, g: nn.init.trunc_normal_(w, 0.5, 1.0, 0.0, 0.7, generator=g)),
    ("pytorch_default", {}, lambda w, g: nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)),
]


@pytest.mark.parametrize("shape", [(128, 784), (10, 128), (16, 3, 3, 3)])
@pytest.mark.parametrize("name,params,ref", TORCH_PARITY, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(TORCH_PARITY)])
def test_bit_identical_to_torch_nn_init(name, params, ref, shape):
    ours, theirs = torch.empty(shape), torch.empty(shape)
    get_scheme(name)(ours, generator=gen(42), **params)
    ref(theirs, gen(42))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("make", [lambda: nn.Linear(784, 128), lambda: nn.Conv2d(16, 32, 5)])
def test_pytorch_default_matches_fresh_layer(make):
    with torch.random.fork_rng():
        torch.manual_seed(123)
        fresh = make()
    ours = initialize(make(), "pytorch_default", generator=gen(123))
    # nn.Linear/Conv draw weight then bias from the global generator; same stream here
    assert torch.equal(ours.weight, fresh.weight)
    assert torch.equal(ours.bias, fresh.bias)
    bound = 1 / math.sqrt(fan_in_and_fan_out(ours.weight)[0])
    assert ours.weight.abs().max() <= bound and ours.bias.abs().max() <= bound
    assert ours.bias.abs().sum() > 0


@pytest.mark.parametrize(
    "name,param",
    [(n, None) for n in S.NONLINEARITIES] + [("leaky_relu", 0.2), ("leaky_relu", 1), ("leaky_relu", 0.0)],
)
def test_calculate_gain_equals_torch(name, param):
    assert calculate_gain(name, param) == nn.init.calculate_gain(name, param)


def test_calculate_gain_unknown():
    with pytest.raises(ValueError, match=r"'gelu'.*relu"):
        calculate_gain("gelu")


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_fans_match_torch_convention(shape):
    assert fan_in_and_fan_out(shape) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


# --------------------------------------------------------------------------- biases


@pytest.mark.parametrize("name", ["zero", "zeros"])
def test_zero_scheme_zeroes_everything(name):
    m = initialize(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Conv1d(4, 3, 2)), name)
    for p in m.parameters():
        assert not p.any()


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if get_scheme(n).name != "pytorch_default"])
def test_biases_zero_except_pytorch_default(name):
    layer = nn.Conv2d(16, 32, 3) if ONLY.get(get_scheme(name).name) == "conv" else nn.Linear(32, 16)
    m = initialize(layer, name, generator=gen(), **REQUIRED.get(get_scheme(name).name, {}))
    assert not m.bias.any()


def test_constant_sets_weights_and_zero_bias():
    m = initialize(nn.Conv2d(2, 3, 3), "constant(value=0.25)")
    assert torch.all(m.weight == 0.25) and not m.bias.any()


def test_layer_without_bias_and_nested_modules():
    m = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Sequential(nn.Conv2d(1, 2, 3, bias=False)), nn.BatchNorm1d(4))
    bn_before = m[2].weight.clone()
    initialize(m, "he", generator=gen())
    assert torch.equal(m[2].weight, bn_before)  # only Linear/Conv are touched


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "text,name,params",
    [
        ("he", "he", {}),
        ("normal(std=0.05)", "normal", {"std": 0.05}),
        (
            "variance_scaling(scale=2.0,mode=fan_in,distribution=truncated_normal)",
            "variance_scaling",
            {"scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal"},
        ),
        ("kaiming_normal(mode=fan_out,nonlinearity=relu)", "kaiming_normal", {"mode": "fan_out", "nonlinearity": "relu"}),
        (" kaiming_uniform( a = 1 , mode=fan_in ) ", "kaiming_uniform", {"a": 1, "mode": "fan_in"}),
        ("custom(flag=true,other=False,s='x,y',n=-3e-2)", "custom", {"flag": True, "other": False, "s": "x,y", "n": -0.03}),
        ("normal()", "normal", {}),
    ],
)
def test_parse_scheme(text, name, params):
    spec = parse_scheme(text)
    assert spec == SchemeSpec(name, params)
    assert parse_scheme(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "normal(", "normal(std=)", "normal(std=1,,)", "normal(std=1,)", "1abc", "a(b)", "x(a=1,a=2)"])
def test_parse_scheme_malformed(text):
    with pytest.raises(ValueError, match="malformed init scheme"):
        parse_scheme(text)


def test_scheme_spec_json_round_trip_and_str():
    spec = SchemeSpec("variance_scaling", {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"})
    again = SchemeSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and hash(again) == hash(spec)
    assert str(SchemeSpec("normal", {"std": 0.01})) == "normal(std=0.01)"
    assert str(SchemeSpec("he")) == "he"
    with pytest.raises(Exception):
        spec.name = "other"  # frozen


def test_initialize_accepts_string_spec_and_dict_alike():
    specs = [
        "normal(std=0.05)",
        SchemeSpec("normal", {"std": 0.05}),
        {"name": "normal", "params": {"std": 0.05}},
    ]
    weights = [initialize(nn.Linear(10, 5), s, generator=gen(9)).weight for s in specs]
    weights.append(initialize(nn.Linear(10, 5), "normal", generator=gen(9), std=0.05).weight)
    for w in weights[1:]:
        assert torch.equal(w, weights[0])


# --------------------------------------------------------------------------- errors


def test_unknown_scheme_lists_names_and_aliases():
    with pytest.raises(ValueError) as info:
        initialize(nn.Linear(2, 2), "foo")
    msg = str(info.value)
    assert "'foo'" in msg and "\n" not in msg
    for name in ALL_NAMES:
        assert name in msg


@pytest.mark.parametrize(
    "scheme,params,bad",
    [
        ("normal", {"std": 0}, "0"),
        ("normal", {"std": -1.0}, "-1.0"),
        ("uniform", {"a": 0}, "0"),
        ("variance_scaling", {"mode": "fan_mid"}, "fan_mid"),
        ("variance_scaling", {"distribution": "cauchy"}, "cauchy"),
        ("variance_scaling", {"scale": -2.0}, "-2.0"),
        ("kaiming_uniform", {"mode": "fan_avg"}, "fan_avg"),
        ("kaiming_normal", {"nonlinearity": "gelu"}, "gelu"),
        ("xavier_uniform", {"gain": "big"}, "big"),
        ("normal", {"sd": 1.0}, "sd"),
        ("constant", {}, "value"),
    ],
)
def test_bad_params_raise_value_error_naming_value(scheme, params, bad):
    m = nn.Linear(3, 2)
    before = m.weight.clone()
    with pytest.raises(ValueError) as info:
        initialize(m, scheme, **params)
    assert bad in str(info.value)
    assert torch.equal(m.weight, before)  # nothing modified on failure


def test_valid_choices_named_in_errors():
    with pytest.raises(ValueError, match="fan_in, fan_out, fan_avg"):
        initialize(nn.Linear(3, 2), "variance_scaling(mode=x)")
    with pytest.raises(ValueError, match="truncated_normal, normal"):
        initialize(nn.Linear(3, 2), "variance_scaling(distribution=x)")


def test_module_without_layers_raises():
    with pytest.raises(ValueError, match="no layers"):
        initialize(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "he")


def test_fan_needs_two_dims():
    with pytest.raises(ValueError):
        fan_in_and_fan_out((5,))


# --------------------------------------------------------------------------- registry


def test_aliases_resolve():
    expected = {
        "random": "normal",
        "xavier": "xavier_uniform",
        "glorot": "xavier_uniform",
        "glorot_uniform": "xavier_uniform",
        "glorot_normal": "xavier_normal",
        "he": "kaiming_uniform",
        "kaiming": "kaiming_uniform",
        "he_uniform": "kaiming_uniform",
        "he_normal": "kaiming_normal",
        "lecun": "lecun_normal",
        "default": "pytorch_default",
    }
    for alias, name in expected.items():
        assert get_scheme(alias).name == name
    assert list_schemes() == sorted(list_schemes())
    assert get_scheme(get_scheme("he")) is get_scheme("he")


def test_every_scheme_has_a_docstring_summary_line():
    for name in list_schemes():
        doc = get_scheme(name).fn.__doc__
        assert doc and doc.strip().splitlines()[0].endswith(".")


@pytest.fixture
def clean_registry():
    saved = dict(R._SCHEMES), dict(R._ALIASES)
    yield
    R._SCHEMES.clear(), R._SCHEMES.update(saved[0])
    R._ALIASES.clear(), R._ALIASES.update(saved[1])


def test_register_user_scheme_and_duplicate_warns(clean_registry):
    @register_scheme("half_normal", aliases=("hn",), defaults={"std": 0.1}, bias="keep")
    def half_normal_(w, *, generator=None, std=1.0):
        """Absolute value of N(0, std²)."""
        with torch.no_grad():
            w.normal_(0, std, generator=generator).abs_()

    assert "half_normal" in list_schemes() and list_aliases()["hn"] == "half_normal"
    m = nn.Linear(400, 300)
    bias = m.bias.clone()
    initialize(m, "hn", generator=gen())
    assert (m.weight >= 0).all() and torch.equal(m.bias, bias)
    assert_std(m.weight, 0.1 * math.sqrt(1 - 2 / math.pi), kurtosis=3.87, mean=0.1 * math.sqrt(2 / math.pi))

    with pytest.warns(UserWarning, match="half_normal"):
        register_scheme("half_normal")(half_normal_)
    with pytest.raises(ValueError, match="bias policy"):
        register_scheme("x", bias="ones")


def test_no_warning_for_builtin_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        initialize(nn.Linear(4, 4), "he", generator=gen())


# --------------------------------------------------------------------------- lists of schemes (parse_scheme_list)

# Typical parameters of every registered scheme, including the defaults each one declares.
TYPICAL_PARAMS = {
    "constant": [{"value": 0.5}, {"value": -1}, {"value": 0}, {"value": 1e-5}],
    "normal": [{}, {"std": 0.05}, {"std": 0.01, "mean": 0.0}, {"mean": -0.25, "std": 1e-3}],
    "uniform": [{}, {"a": 0.05}, {"a": 1}],
    "trunc_normal": [{}, {"mean": 0, "std": 0.02, "a": -0.04, "b": 0.04}],
    "variance_scaling": [{}, {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"},
                         {"scale": 1, "mode": "fan_avg", "distribution": "untruncated_normal"}],
    "xavier_uniform": [{}, {"gain": 1.4142135623730951}, {"gain": 5 / 3}],
    "xavier_normal": [{}, {"gain": 0.5}],
    "kaiming_uniform": [{}, {"a": 0.01, "mode": "fan_out", "nonlinearity": "leaky_relu"}, {"nonlinearity": "tanh"}],
    "kaiming_normal": [{}, {"mode": "fan_in", "nonlinearity": "relu"}, {"a": 0.2, "nonlinearity": "leaky_relu"}],
    "orthogonal": [{}, {"gain": 2 ** 0.5}],
}


def _typical_specs():
    for name in ALL_NAMES:
        canonical = get_scheme(name).name
        defaults = {k: v for k, v in get_scheme(name).params.items() if v is not inspect.Parameter.empty}
        for params in [defaults, *TYPICAL_PARAMS.get(canonical, [{}])]:
            if canonical == "constant" and "value" not in params:
                continue
            yield SchemeSpec(name, params)


@pytest.mark.parametrize("spec", list(_typical_specs()), ids=str)
def test_scheme_list_canonical_text_round_trips(spec):
    (text,) = parse_scheme_list(spec)
    assert text == str(spec)
    assert parse_scheme(text) == spec
    assert parse_scheme_list(text) == (text,) == parse_scheme_list(spec.to_dict())


@pytest.mark.parametrize("inits, expected", [
    ("he", ("he",)),
    ("xavier", ("xavier",)),  # a bare string is never iterated char by char
    ("he,normal(std=0.1,mean=0)", ("he", "normal(std=0.1,mean=0)")),
    (" he , xavier ", ("he", "xavier")),
    ("normal( std = 0.10 )", ("normal(std=0.1)",)),
    ("variance_scaling(scale=2,mode='fan_out')", ("variance_scaling(scale=2,mode=fan_out)",)),
    (SchemeSpec("normal", {"std": 0.05}), ("normal(std=0.05)",)),
    ({"name": "normal", "params": {"std": 0.05}}, ("normal(std=0.05)",)),
    ({"name": "he"}, ("he",)),
    (["he", "xavier"], ("he", "xavier")),
    (("he", SchemeSpec("zero"), {"name": "lecun"}), ("he", "zero", "lecun")),
    (["he,xavier", "normal(std=0.2)"], ("he", "xavier", "normal(std=0.2)")),  # string items split too
    ((s for s in ["he", "orthogonal"]), ("he", "orthogonal")),
    (["he", "kaiming_uniform(mode=fan_out)"], ("he", "kaiming_uniform(mode=fan_out)")),  # aliases stay as written
    (SchemeSpec("normal", {"std": np.float64(0.05)}), ("normal(std=0.05)",)),
])
def test_parse_scheme_list_accepts(inits, expected):
    assert parse_scheme_list(inits) == expected


@pytest.mark.parametrize("inits, message", [
    ("he,kaiming_uniform", "init schemes 'he' and 'kaiming_uniform' are the same scheme"),  # one init, two names
    ("xavier,glorot_uniform(gain=1)", "init schemes 'xavier' and 'glorot_uniform(gain=1)' are the same scheme"),
    ("", "init scheme list is empty"),
    ("   ", "init scheme list is empty"),
    ([], "no init schemes given"),
    ((), "no init schemes given"),
    ("he,,xavier", "has an empty item"),
    ("he,", "has an empty item"),
    (",he", "has an empty item"),
    ("he, ,xavier", "has an empty item"),
    (["he", ""], "is empty"),
    (["he", "xavier,"], "has an empty item"),
    ("he(", "unbalanced parentheses"),
    ("he)", "unbalanced parentheses"),
    ("normal(std=0.1))", "unbalanced parentheses"),
    ("normal((std=0.1)", "unbalanced parentheses"),
    ("he,normal(std=0.1", "unbalanced parentheses"),
    ("custom(s='x)", "unclosed quote"),
    ("he,he", "'he' is listed twice"),
    ("he, he ", "'he' is listed twice"),
    ("normal(std=0.10),normal(std=0.1)", "'normal(std=0.1)' is listed twice"),
    (["he", SchemeSpec("he")], "'he' is listed twice"),
    ([SchemeSpec("normal", {"std": 0.1}), "normal(std=0.1)"], "listed twice"),
    (3, "got int 3"),
    (None, "got NoneType None"),
    (b"he", "got bytes"),
    (["he", 3], "init scheme must be a string, SchemeSpec or dict, got int 3"),
    (["he", None], "got NoneType"),
    (["he", ["xavier"]], "got list"),
    ([1.5], "got float"),
    ("bogus", "unknown init scheme 'bogus'"),
    ("he,bogus(x=1)", "unknown init scheme 'bogus'"),
    ("normal(std=-1)", "std must be > 0"),
    ("normal(sd=1)", "unexpected parameter 'sd'"),
    ({"nme": "he"}, "scheme dict needs keys"),
    ("he xavier", "malformed init scheme"),
])
def test_parse_scheme_list_rejects_with_one_line(inits, message):
    with pytest.raises(ValueError) as info:
        parse_scheme_list(inits)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_parse_scheme_list_rejects_params_that_do_not_survive_text(clean_registry):
    @register_scheme("anything_lf")
    def anything_(w, *, generator=None, **params):
        return w

    with pytest.raises(ValueError, match="cannot be written as text"):
        parse_scheme_list(SchemeSpec("anything_lf", {"shape": [1, 2]}))
    assert parse_scheme_list(SchemeSpec("anything_lf", {"tag": "a,b"})) == ("anything_lf(tag='a,b')",)


def test_parse_scheme_list_allow_passes_names_through():
    assert parse_scheme_list("none,he", allow={"none"}) == ("none", "he")
    with pytest.raises(ValueError, match="unknown init scheme 'none'"):
        parse_scheme_list("none,he")


def test_parse_scheme_list_is_exported():
    import initlab

    assert initlab.parse_scheme_list is parse_scheme_list


@pytest.mark.parametrize("text, expected", [
    ("he", ["he"]),
    ("he, normal(std=0.1,mean=0),xavier", ["he", "normal(std=0.1,mean=0)", "xavier"]),
    ("a(b(c,d),e),f", ["a(b(c,d),e)", "f"]),
    ("custom(s='x,)y'),he", ["custom(s='x,)y')", "he"]),
    ('custom(s="a\\"),b"),he', ['custom(s="a\\"),b")', "he"]),
    ("relu,tanh", ["relu", "tanh"]),
])
def test_split_top_level(text, expected):
    assert split_top_level(text) == expected
    assert split_top_level(text, keep_empty=True) == expected


@pytest.mark.parametrize("text, kept", [
    ("a,,b", ["a", "", "b"]), ("a,", ["a", ""]), (",a", ["", "a"]), ("", [""]), (" , ", ["", ""]),
])
def test_split_top_level_empty_items(text, kept):
    assert split_top_level(text, keep_empty=True) == kept
    with pytest.raises(ValueError, match=r"--activations .*(empty item|is empty)"):
        split_top_level(text, what="--activations")


@pytest.mark.parametrize("text", ["a(", "a)", "a(b))", "((a)", ")(", "a('b)", 'a("b'])
def test_split_top_level_unbalanced(text):
    for keep in (False, True):
        with pytest.raises(ValueError, match="unbalanced parentheses|unclosed quote"):
            split_top_level(text, keep_empty=keep)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_tensor_scheme_initializes_half_precision_weights(dtype):
    """Drawn in float32 and cast back: same values as a float32 draw from the same generator, rounded."""
    from initlab.schemes import get_scheme, initialize, list_schemes

    names = [n for n in list_schemes() if not get_scheme(n).whole_model]
    assert len(names) > 15
    needs = {"constant": "constant(value=0.5)"}
    conv_only = ("dirac", "delta_orthogonal")
    for name in names:
        scheme = needs.get(name, name)
        make = (lambda: torch.nn.Conv2d(8, 8, 3)) if name in conv_only else (lambda: torch.nn.Linear(32, 24))
        half = make().to(dtype)
        full = make()
        initialize(half, scheme, generator=torch.Generator().manual_seed(3))
        initialize(full, scheme, generator=torch.Generator().manual_seed(3))
        assert half.weight.dtype == dtype, name
        assert torch.isfinite(half.weight).all(), name
        torch.testing.assert_close(half.weight, full.weight.to(dtype), rtol=0, atol=0, msg=name)


def test_orthogonal_function_on_half_precision():
    from initlab.schemes import orthogonal_

    w = torch.empty(16, 16, dtype=torch.float16)
    orthogonal_(w, generator=torch.Generator().manual_seed(0))
    eye = (w.float() @ w.float().T)
    torch.testing.assert_close(eye, torch.eye(16), atol=5e-3, rtol=0)


@pytest.mark.parametrize("not_a_module", ["not a module", None, torch.zeros(3)])
def test_initialize_refuses_what_is_not_a_module(not_a_module):
    from initlab.schemes import initialize, initialize_with_report

    for fn in (initialize, initialize_with_report):
        with pytest.raises(TypeError, match=r"^module must be a torch.nn.Module, got \w+$"):
            fn(not_a_module, "he")
