"""Tests for initlab.schemes.identity: eye / dirac (torch.nn.init semantics and torch's own init
tests), ZerO's zero_hadamard / partial_identity, delta_orthogonal; through initialize and rules."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab.schemes import get_scheme, initialize, list_schemes, parse_scheme
from initlab.schemes.identity import (
    delta_orthogonal_,
    dirac_,
    eye_,
    hadamard_block,
    partial_identity_,
    zero_hadamard_,
)

NEW = ("eye", "dirac", "partial_identity", "zero_hadamard", "delta_orthogonal")
DETERMINISTIC = (eye_, dirac_, partial_identity_, zero_hadamard_)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sylvester(m: int) -> torch.Tensor:
    """H_m by the recursion of ZerO's Definition 2, independently of hadamard_block."""
    h = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(m):
        h = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64), h)
    return h


def one_line_value_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- registry


def test_registered_with_zero_bias_and_documented():
    for name in NEW:
        assert name in list_schemes()
        sch = get_scheme(name)
        assert sch.bias == "zeros"
        assert sch.fn.__doc__.strip().splitlines()[0].endswith(".")
    assert get_scheme("dirac").params == {"groups": 1}
    assert get_scheme("delta_orthogonal").params == {"gain": 1.0}
    assert get_scheme("eye").params == get_scheme("zero_hadamard").params == {}


# --------------------------------------------------------------------------- eye (torch's test_eye*)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (5, 3), (4, 4), (2, 1)])
def test_eye_identity_where_possible(shape):
    w = torch.randn(shape)
    eye_(w)
    for i in range(shape[0]):
        for j in range(shape[1]):
            assert w[i, j] == (1 if i == j else 0)
    assert torch.equal(w, nn.init.eye_(torch.empty(shape)))


@pytest.mark.parametrize("dims", [1, 3])
def test_eye_only_works_on_2d(dims):
    one_line_value_error(eye_, torch.zeros((3,) * dims), match="2-D")


# --------------------------------------------------------------------------- dirac (torch's test_dirac*)


@pytest.mark.parametrize("dims", [3, 4, 5])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_dirac_properties(dims, groups):
    rng = random.Random(123 + 10 * dims + groups)
    for _ in range(5):
        a, c, d, e = (rng.randint(1, 5) for _ in range(4))
        b = rng.randint(1, 5 * groups)
        w = torch.randn((a * groups, b, c, d, e)[:dims])
        dirac_(w, groups)
        min_d = min(a, b)  # out channels per group vs in channels
        assert torch.nonzero(w).size(0) == min_d * groups
        assert w.sum() == min_d * groups
        assert torch.equal(w, nn.init.dirac_(torch.empty(w.shape), groups))


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("conv,dims", [(F.conv1d, 1), (F.conv2d, 2), (F.conv3d, 3)])
def test_dirac_identity(groups, conv, dims):
    batch, in_c, out_c, size, k = 8, 3, 9, 5, 3
    eff_out = out_c // groups
    x = torch.randn(batch, in_c, *(size,) * dims, generator=gen(1))
    w = torch.zeros(out_c, in_c, *(k,) * dims)
    dirac_(w, groups)
    y = conv(x, w)
    inner = (slice(None), slice(None), *(slice(1, -1),) * dims)
    for g in range(groups):
        assert torch.equal(y[:, eff_out * g:eff_out * g + in_c], x[inner])  # in_c channels pass through
        assert not y[:, eff_out * g + in_c:eff_out * (g + 1)].any()  # the rest of the group is 0


@pytest.mark.parametrize("dims", [1, 2, 6])
def test_dirac_only_works_on_3_4_5d(dims):
    one_line_value_error(dirac_, torch.zeros((3,) * dims), match="3 to 5 dimensions")


def test_dirac_groups_errors():
    one_line_value_error(dirac_, torch.zeros(4, 2, 3), 3, match="divisible by groups")
    for bad in (0, -1, 1.5, True):
        one_line_value_error(dirac_, torch.zeros(4, 2, 3), bad, match="positive integer")


# --------------------------------------------------------------------------- ZerO


@pytest.mark.parametrize("m", range(7))
def test_hadamard_block_is_sylvester_and_orthogonal(m):
    h = hadamard_block(2**m, 2**m, dtype=torch.float64)
    assert torch.equal(h, sylvester(m))
    torch.testing.assert_close(h @ h.T, 2.0**m * torch.eye(2**m, dtype=torch.float64), rtol=0, atol=0)
    assert torch.equal(hadamard_block(3, 5, dtype=torch.float64), sylvester(3)[:3, :5])


@pytest.mark.parametrize("shape", [(8, 8), (5, 12), (12, 5), (64, 10), (100, 30), (3, 2), (2, 1), (256, 255)])
def test_zero_hadamard_is_algorithm_1(shape):
    p, q = shape
    w = zero_hadamard_(torch.randn(shape))
    if p <= q:  # identity / partial identity
        assert torch.equal(w, torch.eye(p, q))
        return
    m = math.ceil(math.log2(p))
    c = 2.0 ** (-(m - 1) / 2)
    torch.testing.assert_close(w.double(), c * sylvester(m)[:p, :q], rtol=0, atol=1e-7)
    assert torch.allclose(w.abs(), torch.full(shape, c))  # zeros and ones up to the factor c
    if p == 2**m:  # the Hadamard part has orthogonal columns: WᵀW = c²·2^m·I = 2I
        torch.testing.assert_close(w.double().T @ w.double(), 2 * torch.eye(q, dtype=torch.float64),
                                   rtol=0, atol=1e-6)
    assert torch.linalg.matrix_rank(w.double()) == q  # no input direction is lost


def test_zero_hadamard_first_column_and_dims_doubling():
    # the first column of H is all ones: every output unit sees input 0 with weight +c
    w = zero_hadamard_(torch.empty(48, 3))
    assert torch.all(w[:, 0] == w[0, 0]) and w[0, 0] > 0
    # m = ceil(log2 48) = 6, c = 2^(-5/2)
    assert w[0, 0].item() == pytest.approx(2 ** -2.5)


@pytest.mark.parametrize("fn", DETERMINISTIC, ids=lambda f: f.__name__)
def test_deterministic_ignore_generator(fn):
    shape = (6, 4, 3) if fn is dirac_ else (12, 5)
    g = gen(7)
    before = g.get_state()
    a = fn(torch.randn(shape), generator=g)
    b = fn(torch.randn(shape), generator=gen(99))
    c = fn(torch.randn(shape))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(g.get_state(), before)  # no random number was drawn


@pytest.mark.parametrize("fn", [zero_hadamard_, partial_identity_], ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(16, 4, 3), (4, 16, 5), (16, 4, 3, 3), (8, 8, 3, 1), (12, 3, 3, 3, 3)])
def test_zero_schemes_on_conv_sit_at_the_centre(fn, shape):
    w = fn(torch.randn(shape))
    centre = (slice(None), slice(None), *(k // 2 for k in shape[2:]))
    expected = fn(torch.empty(shape[:2]))  # Algorithm 2: the 2-D rule at K[:, :, n, n]
    assert torch.equal(w[centre], expected)
    w[centre] = 0
    assert not w.any()


@pytest.mark.parametrize("fn", [zero_hadamard_, partial_identity_], ids=lambda f: f.__name__)
def test_zero_schemes_shape_errors(fn):
    name = fn.__name__.rstrip("_")
    one_line_value_error(fn, torch.zeros(4, 4, 2), match="odd kernel")
    one_line_value_error(fn, torch.zeros(4, 4, 3, 4), match="odd kernel")
    one_line_value_error(fn, torch.zeros(4), match=name)
    one_line_value_error(fn, torch.zeros(2, 2, 3, 3, 3, 3), match=name)


def test_partial_identity_is_eye_and_dirac():
    assert torch.equal(partial_identity_(torch.empty(5, 7)), eye_(torch.empty(5, 7)))
    assert torch.equal(partial_identity_(torch.empty(6, 4, 3, 5)), dirac_(torch.empty(6, 4, 3, 5)))


def test_partial_identity_leaves_extra_units_dead_zero_hadamard_does_not():
    # ZerO's Theorem 1 at init: a dimension-increasing layer with I* gives out − in zero units
    x = torch.rand(32, 4, generator=gen(2))
    pi = initialize(nn.Linear(4, 16), "partial_identity")
    zh = initialize(nn.Linear(4, 16), "zero_hadamard")
    assert not pi(x)[:, 4:].any()
    assert (zh(x) != 0).all()


# --------------------------------------------------------------------------- delta-orthogonal


@pytest.mark.parametrize("shape", [(8, 8, 3), (16, 4, 5), (8, 8, 3, 3), (32, 16, 3, 5), (6, 6, 3, 3, 3), (5, 1, 1, 1)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_delta_orthogonal_centre_orthogonal_zeros_elsewhere(shape, gain):
    w = delta_orthogonal_(torch.randn(shape), gain, generator=gen(3))
    centre = (slice(None), slice(None), *(k // 2 for k in shape[2:]))
    h = w[centre].double()  # (out, in), torch's layout
    torch.testing.assert_close(h.T @ h, gain**2 * torch.eye(shape[1], dtype=torch.float64), rtol=0, atol=1e-5)
    w[centre] = 0
    assert not w.any()


def test_delta_orthogonal_errors():
    one_line_value_error(delta_orthogonal_, torch.zeros(8, 8, 3, 4), match="odd kernel")
    one_line_value_error(delta_orthogonal_, torch.zeros(8, 8, 2), match="odd kernel")
    one_line_value_error(delta_orthogonal_, torch.zeros(4, 8, 3, 3), match="in_channels <= out_channels.*out=4, in=8")
    one_line_value_error(delta_orthogonal_, torch.zeros(8, 8), match="Conv1d/2d/3d")
    one_line_value_error(delta_orthogonal_, torch.zeros(2, 2, 3, 3, 3, 3), match="Conv1d/2d/3d")
    one_line_value_error(delta_orthogonal_, torch.zeros(8, 8, 3), 0.0, match="gain")
    with pytest.raises(ValueError, match="delta_orthogonal needs"):
        initialize(nn.Linear(4, 8), "delta_orthogonal")


def test_delta_orthogonal_generator_reproducible():
    a = delta_orthogonal_(torch.empty(16, 8, 3, 3), generator=gen(5))
    torch.manual_seed(0)
    b = delta_orthogonal_(torch.empty(16, 8, 3, 3), generator=gen(5))
    c = delta_orthogonal_(torch.empty(16, 8, 3, 3), generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("cin,cout", [(8, 8), (4, 12)])
def test_delta_orthogonal_conv_is_an_isometry(cin, cout):
    # circular padding, stride 1: y(p) = H x(p) at every pixel, so ‖y‖ = ‖x‖ per example
    conv = initialize(nn.Conv2d(cin, cout, 3, padding=1, padding_mode="circular"), "delta_orthogonal",
                      generator=gen(4)).double()
    x = torch.randn(3, cin, 6, 6, generator=gen(5), dtype=torch.float64)
    torch.testing.assert_close(conv(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
    assert not conv.bias.any()


# --------------------------------------------------------------------------- through initialize and rules


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def test_initialize_dirac_conv_model_passes_input_through():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 5, padding=2))
    initialize(model, "dirac")
    x = torch.randn(2, 4, 6, 6, generator=gen(1))
    assert torch.equal(model(x), torch.relu(x))


@pytest.mark.parametrize("rules", [{"conv*.weight": "dirac", "*": "he"}, {"Conv2d": "dirac", "*": "he"}],
                         ids=["glob", "type"])
def test_rules_dirac_for_convs_he_elsewhere(rules):
    model = initialize(Net(), rules, generator=gen(0))
    for conv in (model.conv1, model.conv2):
        assert torch.equal(conv.weight, nn.init.dirac_(torch.empty(4, 4, 3, 3)))
        assert not conv.bias.any()  # dirac's bias policy
    fc = model.fc.weight
    assert fc.abs().max() <= math.sqrt(6 / 100) and fc.std() > 0.05  # He uniform, fan_in 100


def test_rule_glob_covering_biases_names_the_bias():
    # "conv*" matches the biases too (rules.py): dirac then fails on a 1-D bias, with a clear message
    with pytest.raises(ValueError, match=r"conv1\.bias.*dirac needs"):
        initialize(Net(), {"conv*": "dirac", "*": "he"})


def test_scheme_strings_with_parameters():
    assert parse_scheme("dirac(groups=2)").params == {"groups": 2}
    conv = initialize(nn.Conv2d(4, 8, 3), "dirac(groups=2)")
    assert torch.equal(conv.weight, nn.init.dirac_(torch.empty(8, 4, 3, 3), 2))
    conv = initialize(nn.Conv1d(3, 6, 3), "delta_orthogonal(gain=2)", generator=gen(0))
    h = conv.weight[:, :, 1].double()
    torch.testing.assert_close(h.T @ h, 4 * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-5)


def test_zero_hadamard_whole_mlp():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 40), nn.ReLU(), nn.Linear(40, 3))
    initialize(model, "zero_hadamard", generator=gen(0))
    assert torch.equal(model[0].weight, torch.eye(10))
    assert torch.equal(model[4].weight, torch.eye(3, 40))
    torch.testing.assert_close(model[2].weight.unique(), torch.tensor([-(2 ** -2.5), 2 ** -2.5]))  # m = 6
    assert all(not m.bias.any() for m in (model[0], model[2], model[4]))
