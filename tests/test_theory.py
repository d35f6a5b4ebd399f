import math

import pytest
import torch

from initlab import schemes
from initlab.core import theory as T
from initlab.schemes import variance as V


@pytest.mark.parametrize("q", [0.3, 1.0, 7.0])
def test_relu_closed_forms(q):
    assert T.gauss_expect(lambda t: torch.relu(t) ** 2, q) == pytest.approx(q / 2, rel=1e-13)
    assert T.gauss_expect(torch.relu, q) == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=1e-13)
    assert T.chi1("relu", 3.0, q=q) == pytest.approx(3.0 / 2, rel=1e-13)  # σ_w² E[φ'²] = σ_w²/2


def test_split_and_hermite_rules_agree_on_smooth_functions():
    for f in (lambda t: torch.tanh(t) ** 2, torch.nn.functional.gelu, torch.sigmoid):
        assert T.gauss_expect(f, 1.7, rule="hermite") == pytest.approx(T.gauss_expect(f, 1.7), abs=1e-7)
    with pytest.raises(ValueError, match="unknown quadrature rule 'simpson'"):
        T.gauss_expect(torch.tanh, 1.0, rule="simpson")


@pytest.mark.parametrize("name, q", [("tanh", 2.0), ("gelu", 0.7), ("elu", 1.3)])
def test_quadrature_agrees_with_monte_carlo(name, q):
    phi = T._phi(name)
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sample = phi(math.sqrt(q) * z) ** 2
    se = float(sample.std()) / math.sqrt(len(sample))
    assert abs(T.gauss_expect(lambda t: phi(t) ** 2, q) - float(sample.mean())) < 5 * se


def test_fixed_points():
    assert T.fixed_point("relu", 1.9) == 0.0  # each layer multiplies q by 0.95
    assert T.fixed_point("relu", 2.1) == math.inf
    assert T.fixed_point("relu", 2.0, q0=3.0) == 3.0  # every q is fixed at criticality
    assert T.fixed_point("relu", 1.0, 0.1) == pytest.approx(0.2, rel=1e-10)  # q = q/2 + 0.1
    assert T.fixed_point("tanh", 0.9) == 0.0
    q = T.fixed_point("tanh", 2.0, 0.1)
    assert T.variance_map("tanh", q, 2.0, 0.1) == pytest.approx(q, rel=1e-10)


def test_critical_points():
    assert T.critical_sigma_w2("tanh") == pytest.approx(1.0, abs=1e-6)
    assert T.critical_sigma_w2("relu") == pytest.approx(2.0, abs=1e-9)
    s = T.critical_sigma_w2("tanh", 0.05)
    assert s > 1.0 and T.chi1("tanh", s, 0.05) == pytest.approx(1.0, abs=1e-9)


def test_depth_scale_finite_off_criticality_and_large_near_it():
    s = T.critical_sigma_w2("tanh", 0.05)
    far = T.depth_scale("tanh", 0.5, 0.05)
    assert 0 < far < 5
    # ξ_c = -1/ln χ and χ - 1 = O(σ_w² - σ*²): a 0.1% step from criticality gives ξ in the hundreds.
    assert T.depth_scale("tanh", s * (1 - 1e-3), 0.05) > 100
    assert T.depth_scale("tanh", s * (1 + 1e-3), 0.05) > 100
    assert math.isfinite(T.depth_scale("tanh", 4.0, 0.0))  # chaotic side: c* < 1
    assert T.depth_scale("tanh", 1.0, 0.0) == math.inf
    # ordered phase: c* = 1, so ξ = -1/ln χ_1 exactly
    assert T.depth_scale("relu", 1.0, 0.1) == pytest.approx(-1 / math.log(0.5), rel=1e-12)


@pytest.mark.parametrize("c", [-0.9, 0.0, 0.5, 0.99])
def test_relu_correlation_map_matches_arc_cosine_kernel(c):
    # Cho & Saul 2009: E[relu(u1) relu(u2)] = q/(2π) (√(1-c²) + (π - arccos c) c); q' = q at σ_w² = 2
    expected = 2 / (2 * math.pi) * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c)
    assert T.correlation_map("relu", c, q=1.0, sigma_w2=2.0) == pytest.approx(expected, abs=1e-12)
    assert T.correlation_map("tanh", 1.0, sigma_w2=1.5, sigma_b2=0.05) == pytest.approx(1.0, abs=1e-12)


def test_he_relu_predicts_constant_variance_and_gradients():
    df = V.predicted_variances("relu", "he", [64] + [256] * 10 + [10], input_var=0.7)
    assert df["pre_var"].tolist() == pytest.approx([2 * 0.7] * 11, rel=1e-12)
    assert df["pre_grad_rel"].tolist() == pytest.approx([1.0] * 11, rel=1e-12)


def test_small_normal_tanh_predicts_geometric_decay():
    df = V.predicted_variances("tanh", "normal(std=0.01)", [64] + [256] * 9 + [10])
    ratios = (df["pre_var"].iloc[2:] / df["pre_var"].iloc[1:-1].values).tolist()
    # tanh is linear near 0, so each layer multiplies q by fan_in · std² = 256e-4
    assert ratios == pytest.approx([256e-4] * len(ratios), rel=1e-3)


def test_variance_preserving_gain():
    assert T.variance_preserving_gain("relu") == pytest.approx(math.sqrt(2), rel=1e-13)
    assert T.variance_preserving_gain("linear") == pytest.approx(1.0, rel=1e-13)
    for name in ("tanh", "gelu", "silu", "elu", "selu"):
        g = T.variance_preserving_gain(name)
        assert T.variance_map(name, 1.0, g * g) == pytest.approx(1.0, rel=1e-12)
    assert T.variance_preserving_gain("tanh") == pytest.approx(1.5925, abs=1e-4)


@pytest.mark.parametrize("scheme", ["zero", "normal(std=0.05)", "uniform(a=0.1)", "trunc_normal(std=0.5,a=-0.4,b=0.6)",
                                    "variance_scaling(scale=2.0,mode=fan_avg,distribution=uniform)", "xavier",
                                    "xavier_normal(gain=2.0)", "he", "kaiming_normal(mode=fan_out)", "lecun_normal",
                                    "orthogonal", "pytorch_default"])
def test_weight_variance_matches_sampled_weights(scheme):
    for fan_out, fan_in in ((300, 200), (200, 300)):
        w = torch.empty(fan_out, fan_in, dtype=torch.float64)
        sch, params = schemes.as_spec(scheme)
        sch(w, generator=torch.Generator().manual_seed(0), **params)
        w2 = w.pow(2).reshape(-1)
        expected = V.weight_variance(scheme, fan_in, fan_out)
        if scheme in ("zero", "orthogonal"):  # exact, not random
            assert float(w2.mean()) == pytest.approx(expected, rel=1e-9, abs=1e-15)
            continue
        se = float(w2.std()) / math.sqrt(w2.numel())
        assert abs(float(w2.mean()) - expected) < 5 * se


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        T.variance_map("swish", 1.0, 1.0)
    with pytest.raises(ValueError, match="no analytic weight variance"):
        V.weight_variance("constant(value=1)" if False else schemes.Scheme("custom", lambda w, *, generator=None: w), 4, 4)
    with pytest.raises(ValueError, match="correlation c must be in"):
        T.correlation_map("tanh", 1.5, q=1.0)


@pytest.mark.parametrize("call", [
    lambda: T.variance_map("relu", 1.0, -1.0),
    lambda: T.variance_map("relu", 1.0, 2.0, -0.5),
    lambda: T.fixed_point("tanh", -1.0),
    lambda: T.chi1("tanh", 1.0, -0.1),
    lambda: T.depth_scale("tanh", float("nan")),
    lambda: T.correlation_map("tanh", 0.5, sigma_w2=-2.0),
    lambda: T.critical_sigma_w2("tanh", -0.01),
])
def test_negative_or_non_finite_variances_are_refused(call):
    with pytest.raises(ValueError, match="is a variance: it must be a finite number >= 0"):
        call()


@pytest.mark.parametrize("fans", [(0, 10), (10, 0), (-3, 3)])
def test_weight_variance_refuses_empty_fans(fans):
    with pytest.raises(ValueError, match="fans must be positive"):
        V.weight_variance("he", *fans)


def test_theory_knows_every_activation_initlab_knows():
    from initlab.core.activations import ACTIVATIONS

    assert "mish" in ACTIVATIONS
    for name in ACTIVATIONS:
        assert math.isfinite(T.variance_map(name, 1.0, 1.0)), name
    # mish: E[mish(z)²] by quadrature equals a Monte Carlo estimate
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = float(torch.nn.functional.mish(z).pow(2).mean())
    assert abs(T.variance_map("mish", 1.0, 1.0) - mc) < 5 * float(torch.nn.functional.mish(z).pow(2).std()) / 2_000_000 ** 0.5
