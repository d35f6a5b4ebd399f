import math
import statistics

import pytest
import torch
from torch import nn

from initlab.core import criticality as C, theory as T
from initlab.models import mlp

DEPTH, WIDTH, BATCH, SEEDS = 50, 256, 256, (0, 1, 2)


class Elementwise(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def x_tanh_x(x):  # a user-defined activation: even, x² near 0, |x| far out (not homogeneous)
    return x * torch.tanh(x)


def relu_squared(x):
    return torch.relu(x) ** 2


def deep_mlp(activation):
    if isinstance(activation, str):
        return mlp(WIDTH, [WIDTH] * DEPTH, 10, activation)
    layers = []
    for _ in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH), Elementwise(activation)]
    return nn.Sequential(*layers, nn.Linear(WIDTH, 10))


def measured(activation, params):
    """Median over SEEDS of (forward RMS ratio last/first hidden, ‖∇W_1‖/‖∇W_50‖), mean cross-entropy loss."""
    fwd, grad = [], []
    for seed in SEEDS:
        model = C.init_mlp_(deep_mlp(activation), params, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(1000 + seed)
        x, y = torch.randn(BATCH, WIDTH, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
        f, r = C.measure_ratios(model, x, y)
        fwd.append(f if math.isfinite(f) else math.inf)
        grad.append(r if math.isfinite(r) else math.inf)
    return statistics.median(fwd), statistics.median(grad)


TARGETS = {"relu": "relu", "tanh": "tanh", "gelu": "gelu", "silu": "silu", "selu": "selu", "elu": "elu",
           "sigmoid": "sigmoid", "sin": torch.sin, "x_tanh_x": x_tanh_x, "mish": nn.Mish()}


@pytest.mark.parametrize("name", list(TARGETS))
def test_auto_init_keeps_50_layer_signals_within_targets(name):
    params = C.auto_init_params(TARGETS[name], depth=DEPTH)
    assert params.stable and params.mode == "critical", params.verdict
    fwd, grad = measured(TARGETS[name], params)
    assert 0.5 <= fwd <= 2.0, (fwd, params)
    assert 0.1 <= grad <= 10.0, (grad, params)


def test_relu_squared_is_declared_impossible_and_is():
    params = C.auto_init_params(relu_squared, depth=DEPTH)
    assert params.degree == 2.0 and params.mode == "variance" and not params.stable
    assert params.verdict.startswith("homogeneous of degree 2: no depth-stable scalar init exists")
    assert "normalization, another activation, or less depth" in params.verdict
    fwd, grad = measured(relu_squared, params)
    assert not (0.5 <= fwd <= 2.0 and 0.1 <= grad <= 10.0)  # the verdict is right: the targets fail


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "linear"])
def test_degree_one_activations_are_critical_everywhere_without_bias(name):
    p = C.auto_init_params(name)
    slope = {"relu": 0.0, "leaky_relu": 0.01, "linear": 1.0}[name]
    assert p.sigma_w2 == pytest.approx(2 / (1 + slope ** 2), rel=1e-12)  # relu: He's 2
    assert (p.sigma_b2, p.q_star, p.degree, p.mode, p.stable) == (0.0, 1.0, 1.0, "critical", True)
    assert p.chi1 == pytest.approx(1.0, abs=1e-12) and p.slope == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "gelu", "silu", "selu", "elu", "sigmoid", torch.sin, x_tanh_x])
def test_chosen_point_solves_both_mean_field_equations(activation):
    p = C.auto_init_params(activation)
    assert T.variance_map(C._as_phi(activation), p.q_star, p.sigma_w2, p.sigma_b2) == pytest.approx(p.q_star, rel=1e-9)
    assert T.chi1(C._as_phi(activation), p.sigma_w2, p.sigma_b2, q=p.q_star) == pytest.approx(1.0, abs=1e-9)
    assert 0.0 <= p.sigma_b2 <= 0.5 and p.sigma_w2_input == pytest.approx(p.q_star - p.sigma_b2)
    if p.slope < 1:  # an attracting fixed point: the existing machinery finds the same init
        assert T.fixed_point(C._as_phi(activation), p.sigma_w2, p.sigma_b2, q0=2 * p.q_star) == pytest.approx(p.q_star, rel=1e-8)
        if activation in ("tanh", "selu", "sigmoid", torch.sin):  # (elu's χ_1(σ_w²) also crosses 1 at q* = ∞)
            assert T.critical_sigma_w2(C._as_phi(activation), p.sigma_b2) == pytest.approx(p.sigma_w2, rel=1e-6)


def test_tanh_needs_a_small_bias_variance_for_an_order_one_critical_point():
    p = C.auto_init_params("tanh")
    assert (p.q_star, p.sigma_w2, p.sigma_b2) == pytest.approx((1.0, 2.1533, 0.1510), abs=1e-4)
    assert "without bias the only critical point is q* → 0" in p.verdict
    q = 1.0  # σ_w² = 1, σ_b² = 0 is critical at q* = 0: the variance fades like 1/(2l)
    for _ in range(DEPTH):
        q = T.variance_map("tanh", q, 1.0, 0.0)
    assert q < 0.25 * 1.0


def test_selu_own_fixed_point_is_slightly_chaotic_and_auto_corrects_it():
    assert T.fixed_point("selu", 1.0, 0.0) == pytest.approx(1.0, rel=1e-6)  # Klambauer et al.'s q* = 1
    assert T.chi1("selu", 1.0, 0.0, q=1.0) == pytest.approx(1.0716, abs=1e-4)
    p = C.auto_init_params("selu")
    assert (p.q_star, p.sigma_w2, p.sigma_b2) == pytest.approx((1.0, 0.9332, 0.0668), abs=1e-4)


def test_sigmoid_is_critical_only_in_saturation_and_says_what_its_mean_does():
    p = C.auto_init_params("sigmoid")
    assert p.sigma_b2 == 0.0 and 30 < p.q_star < 60 and p.mode == "critical"
    assert C.critical_point("sigmoid", 1.0)[1] < 0  # an order-1 critical point needs σ_b² < 0
    assert p.mean == pytest.approx(0.5, abs=1e-12) and p.shared_fraction > 0.5
    assert "needs σ_b² = -5.54 < 0" in p.verdict and "per-unit offset shared by all inputs" in p.verdict


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_convex_near_zero_activations_move_q_star_up_where_the_forward_map_holds(name):
    assert C.critical_point(name, 1.0)[2] > 1.05  # V'(1) > 1: a critical point at q = 1 repels
    p = C.auto_init_params(name)
    assert p.q_star > 1.5 and "repels the forward variance" in p.verdict


def test_depth_changes_what_is_admissible():
    assert C.auto_init_params("silu", depth=10).q_star < C.auto_init_params("silu", depth=50).q_star


def test_shifted_softplus_has_no_admissible_critical_point():
    p = C.auto_init_params(lambda x: nn.functional.softplus(x) - math.log(2))
    assert p.mode == "variance" and p.q_star == 1.0 and p.chi1 < 1
    assert p.verdict.startswith("variance: no critical point in q ∈ [0.01, 100] is admissible")


@pytest.mark.parametrize("activation, degree", [
    ("relu", 1.0), ("leaky_relu", 1.0), ("linear", 1.0), (torch.abs, 1.0), (relu_squared, 2.0),
    (lambda x: torch.relu(x) ** 3, 3.0), (torch.sign, 0.0), (lambda x: torch.sign(x) * x.abs() ** 0.75, 0.75),
    ("tanh", None), ("sigmoid", None), ("gelu", None), (x_tanh_x, None), (torch.sin, None),
])
def test_homogeneity_degree(activation, degree):
    k = C.homogeneity_degree(activation)
    assert k == (None if degree is None else pytest.approx(degree, abs=1e-9))


def test_every_form_of_an_activation_gives_the_same_init():
    ref = C.auto_init_params("gelu")
    for form in (nn.GELU, nn.GELU(), nn.functional.gelu, lambda x: nn.functional.gelu(x)):
        p = C.auto_init_params(form)
        assert (p.sigma_w2, p.sigma_b2, p.q_star) == pytest.approx((ref.sigma_w2, ref.sigma_b2, ref.q_star), rel=1e-9)
    prelu = nn.PReLU()  # float32 parameters: evaluated on a float64 copy, the module is left alone
    assert C.auto_init_params(prelu).degree == 1.0 and prelu.weight.dtype == torch.float32


def test_named_activations_are_memoized():
    assert C.auto_init_params("tanh") is C.auto_init_params("tanh")
    assert C.auto_init_params("tanh", depth=20) is not C.auto_init_params("tanh")


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        C.auto_init_params("swish")
    with pytest.raises(ValueError, match="elementwise"):
        C.auto_init_params(lambda x: x.sum())
    with pytest.raises(ValueError, match="no gradient flows"):
        C.auto_init_params(lambda x: torch.ones_like(x))
    with pytest.raises(ValueError, match="zero on both half lines"):
        C.auto_init_params(lambda x: 0 * x)
    for kwargs, match in (({"target_q": 0}, "target_q"), ({"depth": 0}, "depth"), ({"depth": 2.5}, "depth"),
                          ({"max_sigma_b2": -1}, "max_sigma_b2")):
        with pytest.raises(ValueError, match=match):
            C.auto_init_params("tanh", **kwargs)
    with pytest.raises(ValueError, match="unknown role 'middle'"):
        C.init_linear_(torch.empty(3, 3), None, C.auto_init_params("tanh"), role="middle")


@pytest.mark.parametrize("role", ["input", "hidden", "output"])
def test_init_linear_draws_the_stated_variances(role):
    p = C.auto_init_params("tanh")
    w, b = torch.empty(600, 50, 2, 2), torch.empty(20_000)  # fan_in = 50·2·2 (torch layout)
    C.init_linear_(w, b, p, role=role, generator=torch.Generator().manual_seed(0), input_var=2.0)
    s2 = {"input": (p.q_star - p.sigma_b2) / 2.0, "hidden": p.sigma_w2, "output": 1.0}[role]
    w2 = w.double().pow(2).reshape(-1)
    assert abs(float(w2.mean()) * 200 - s2) < 5 * float(w2.std()) * 200 / math.sqrt(w2.numel())
    if role == "output":
        assert b.eq(0).all()
    else:
        b2 = b.double().pow(2)
        assert abs(float(b2.mean()) - p.sigma_b2) < 5 * float(b2.std()) / math.sqrt(b2.numel())


def test_init_mlp_uses_input_hidden_output_roles_and_is_reproducible():
    p = C.auto_init_params("tanh")
    model = C.init_mlp_(mlp(20, [30, 30], 5, "tanh"), p, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    for name, role in (("fc1", "input"), ("fc2", "hidden"), ("fc3", "output")):
        w, b = torch.empty_like(model.get_submodule(name).weight), torch.empty_like(model.get_submodule(name).bias)
        C.init_linear_(w, b, p, role=role, generator=g)
        assert torch.equal(w, model.get_submodule(name).weight) and torch.equal(b, model.get_submodule(name).bias)
