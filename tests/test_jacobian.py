"""Tests for initlab.jacobian_spectrum: exact spectra against closed forms, the Lanczos path against
the exact one (tolerances from the estimator's own variance), pooling, errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import initlab
from initlab import JacobianSpectrum, jacobian_spectrum
from initlab.schemes import initialize


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear(n_in: int, n_out: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out).double()


def tanh_net(width: int = 48, depth: int = 4, seed: int = 0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return initialize(nn.Sequential(*layers), "xavier_normal", generator=gen(seed)).double()


def x64(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- exact


@pytest.mark.parametrize("n_in,n_out", [(20, 12), (12, 20), (16, 16)])
def test_linear_spectrum_is_svd_of_weight(n_in, n_out):
    model = linear(n_in, n_out)
    spec = jacobian_spectrum(model, x64(3, n_in), max_examples=2)
    truth = torch.linalg.svdvals(model.weight.detach())
    assert spec.method == "exact" and spec.n_examples == 2 and (spec.in_dim, spec.out_dim) == (n_in, n_out)
    # two examples pooled, each with the min(in, out) singular values of W, each with mass 1/(2k)
    torch.testing.assert_close(spec.singular_values, truth.repeat_interleave(2), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(spec.weights, torch.full((2 * len(truth),), 1 / (2 * len(truth)), dtype=torch.float64))
    assert spec.mean_sq == pytest.approx(float((truth**2).mean()), rel=1e-10)
    assert spec.max == pytest.approx(float(truth[0])) and spec.min == pytest.approx(float(truth[-1]))
    assert spec.condition == pytest.approx(float(truth[0] / truth[-1]))
    assert spec.per_example_mean_sq == pytest.approx([spec.mean_sq] * 2)


def test_orthogonal_deep_linear_net_is_an_isometry():
    net = initialize(nn.Sequential(*[nn.Linear(32, 32, bias=False) for _ in range(8)]), "orthogonal",
                     generator=gen(2))
    spec = jacobian_spectrum(net, torch.randn(2, 32, generator=gen(3)))
    torch.testing.assert_close(spec.singular_values, torch.ones(64, dtype=torch.float64), rtol=0, atol=1e-5)
    assert spec.mean_sq == pytest.approx(1.0, abs=1e-5)
    assert spec.decades == pytest.approx(0.0, abs=1e-5) and spec.condition == pytest.approx(1.0, abs=1e-4)
    assert spec.negligible == 0.0
    # Lanczos on JᵀJ = I: the Krylov space closes after one step and the quadrature is exact
    lz = jacobian_spectrum(net, torch.randn(2, 32, generator=gen(3)), exact_max=0)
    assert lz.method == "lanczos"
    torch.testing.assert_close(lz.singular_values, torch.ones_like(lz.singular_values), rtol=0, atol=1e-5)
    assert lz.mean_sq == pytest.approx(1.0, abs=1e-5)


def test_conv_input_flattened_and_delta_orthogonal_isometry():
    conv = initialize(nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"), "delta_orthogonal",
                      generator=gen(0)).double()
    spec = jacobian_spectrum(conv, x64(1, 4, 5, 5))
    assert (spec.in_dim, spec.out_dim) == (100, 150)
    # the kernel was drawn in float32, so its orthogonality holds to ~1e-7
    torch.testing.assert_close(spec.singular_values, torch.ones(100, dtype=torch.float64), rtol=0, atol=1e-6)


def test_rank_deficient_map_counts_negligible_mass():
    model = nn.Linear(8, 8, bias=False).double()
    u, v = torch.randn(8, 3, generator=gen(4), dtype=torch.float64), torch.randn(3, 8, generator=gen(5), dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(u @ v)  # rank 3
    spec = jacobian_spectrum(model, x64(1, 8))
    truth = torch.linalg.svdvals(u @ v)
    assert spec.negligible == pytest.approx(5 / 8)
    assert spec.min == pytest.approx(float(truth[2]))  # the smallest *non-negligible* value
    assert spec.threshold == pytest.approx(8 * torch.finfo(torch.float64).eps * float(truth[0]))
    assert math.isfinite(spec.decades) and spec.mean_sq == pytest.approx(float((truth**2).sum() / 8))


def test_batch_coupling_model_falls_back_to_one_example_at_a_time():
    class Coupled(nn.Module):  # y = x + 0.1·mean over the batch: rows interact
        def forward(self, x):
            return x + 0.1 * x.mean(0, keepdim=True)

    spec = jacobian_spectrum(Coupled(), x64(2, 6))
    # as a batch of one, y = 1.1·x; a replicated batch would have given other values
    torch.testing.assert_close(spec.singular_values, torch.full((12,), 1.1, dtype=torch.float64))


# --------------------------------------------------------------------------- Lanczos


def test_lanczos_with_full_krylov_space_recovers_the_exact_spectrum():
    model = linear(30, 20, seed=3)
    truth = torch.linalg.svdvals(model.weight.detach())
    spec = jacobian_spectrum(model, x64(1, 30), exact_max=0, n_vectors=2, n_steps=20)
    assert spec.method == "lanczos"
    # every Ritz value is a true singular value, and every true value is found
    dist = (spec.singular_values[:, None] - truth[None, :]).abs()
    assert float(dist.min(1).values.max()) < 1e-7 and float(dist.min(0).values.max()) < 1e-7
    assert spec.max == pytest.approx(float(truth[0]), rel=1e-9) and spec.min == pytest.approx(float(truth[-1]), rel=1e-7)


def test_lanczos_agrees_with_exact_within_its_own_error():
    net, x = tanh_net(), x64(2, 48, seed=7)
    exact = jacobian_spectrum(net, x)
    n_vectors = 16
    lz = jacobian_spectrum(net, x, exact_max=0, n_vectors=n_vectors, n_steps=16, generator=gen(11))
    # mean σ² per example is v̂ᵀGv̂ with v̂ uniform on the sphere of R^k, whose variance is
    # 2(k·Σλ² − (Σλ)²) / (k²(k + 2)); averaged over n_vectors starts and the examples
    k = 48
    var = 0.0
    for i in range(2):
        lam = jacobian_spectrum(net, x[i:i + 1]).singular_values ** 2
        var += 2 * (k * float((lam**2).sum()) - float(lam.sum()) ** 2) / (k**2 * (k + 2)) / n_vectors
    se = math.sqrt(var) / 2
    assert abs(lz.mean_sq - exact.mean_sq) <= 5 * se, (lz.mean_sq, exact.mean_sq, se)
    # the largest Ritz value converges fastest (Kaniel–Paige); 16 steps on a k = 48 spectrum
    assert lz.max <= exact.max * (1 + 1e-9) and lz.max == pytest.approx(exact.max, rel=1e-3)
    assert lz.min >= exact.min * (1 - 1e-9)  # Ritz values lie inside the spectrum


def test_lanczos_quantiles_with_full_krylov_space():
    # With n_steps = k the nodes are the exact σ and a run's mass below t is v̂ᵀP_t v̂, P_t the
    # projector on the r eigenvalues <= t: Beta(r/2, (k−r)/2), mean r/k, variance
    # 2(r/k)(1 − r/k)/(k + 2). So the exact CDF at the estimated quantile p̂ lies within
    # 5 SE (+ one value's mass 1/k) of p. Quantiles in log space carry no such guarantee, nor
    # do those of short runs (n_steps << k): few quadrature nodes smear a spectrum spread over decades.
    net, x = tanh_net(), x64(2, 48, seed=7)
    exact = jacobian_spectrum(net, x)
    runs, k = 2 * 16, 48
    lz = jacobian_spectrum(net, x, exact_max=0, n_vectors=16, n_steps=k, generator=gen(12))
    for p, estimate in ((0.05, lz.p5), (0.95, lz.p95)):
        cdf = float((exact.singular_values <= estimate * (1 + 1e-9)).double().mean())
        se = math.sqrt(2 * p * (1 - p) / (k + 2) / runs)
        assert abs(cdf - p) <= 5 * se + 1 / k, (p, cdf, se)


def test_lanczos_generator_reproducible():
    net, x = tanh_net(width=24, depth=2), x64(1, 24)
    a = jacobian_spectrum(net, x, exact_max=0, n_steps=6, generator=gen(1))
    b = jacobian_spectrum(net, x, exact_max=0, n_steps=6, generator=gen(1))
    c = jacobian_spectrum(net, x, exact_max=0, n_steps=6, generator=gen(2))
    d = jacobian_spectrum(net, x, exact_max=0, n_steps=6)  # None: seeded with 0
    e = jacobian_spectrum(net, x, exact_max=0, n_steps=6, generator=gen(0))
    assert torch.equal(a.singular_values, b.singular_values)
    assert not torch.equal(a.singular_values, c.singular_values)
    assert torch.equal(d.singular_values, e.singular_values)


# --------------------------------------------------------------------------- API


def test_result_is_frozen_and_exported():
    spec = initlab.jacobian_spectrum(nn.Linear(4, 3), torch.randn(2, 4))
    assert isinstance(spec, JacobianSpectrum)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.mean_sq = 0.0
    row = spec.as_dict()
    assert set(row) == {"mean_sq", "max", "min", "condition", "p5", "p95", "decades", "negligible", "method",
                        "n_examples", "in_dim", "out_dim"}
    assert all(not isinstance(v, torch.Tensor) for v in row.values())


def test_does_not_touch_parameter_grads_or_mode():
    net = tanh_net(width=8, depth=2).eval()
    jacobian_spectrum(net, x64(2, 8))
    assert all(p.grad is None for p in net.parameters()) and not net.training


@pytest.mark.parametrize("example,match", [
    (torch.tensor(1.0), "batch tensor"),
    (torch.zeros(0, 4), "batch tensor"),
    (torch.ones(2, 4, dtype=torch.long), "floating point"),
    ([1.0, 2.0], "batch tensor"),
])
def test_bad_examples(example, match):
    with pytest.raises(ValueError, match=match):
        jacobian_spectrum(nn.Linear(4, 2), example)


@pytest.mark.parametrize("kwargs,bad", [({"n_vectors": 0}, "n_vectors"), ({"n_steps": 1.5}, "n_steps"),
                                        ({"max_examples": True}, "max_examples"), ({"rtol": 2.0}, "rtol"),
                                        ({"exact_max": -1}, "exact_max")])
def test_bad_parameters(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        jacobian_spectrum(nn.Linear(4, 2), torch.randn(1, 4), **kwargs)


def test_output_without_batch_dimension():
    class Summed(nn.Module):
        def forward(self, x):
            return x.sum()

    with pytest.raises(ValueError, match="batch dimension first"):
        jacobian_spectrum(Summed(), torch.randn(2, 3))
