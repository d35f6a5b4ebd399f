"""Mean-field signal propagation: what a random deep network does to variances and gradients.

Framework-independent math in one place (DeepMind dks style): every function takes an
activation (a name from ``initlab.models.ACTIVATIONS`` or an elementwise torch callable) and
numbers, and returns numbers. torch is used only to evaluate φ and, by autograd, φ'.

In a wide network with i.i.d. weights of variance σ_w²/fan_in and biases of variance σ_b²,
each pre-activation is ≈ N(0, q_l) (Poole et al. 2016, "Exponential expressivity in deep neural
networks through transient chaos", §2, eq. 3):

    q_l = σ_w² E_z[φ(√q_{l-1} z)²] + σ_b²,            z ~ N(0, 1)         (variance map)
    χ_1 = σ_w² E_z[φ'(√q* z)²]                                            (Poole eq. 7)
    c_l = (σ_w² E[φ(u_1) φ(u_2)] + σ_b²) / q*,  (u_1, u_2) ~ N(0, q*[[1, c], [c, 1]])  (Poole eq. 5)
    ξ_c = -1 / ln χ_c,  χ_c = σ_w² E[φ'(u_1) φ'(u_2)] at the stable c*   (Schoenholz et al. 2017,
          "Deep Information Propagation", §3, eq. 9-10; χ_c = χ_1 when c* = 1)

χ_1 is also the per-layer factor of the squared gradient norm under the gradient-independence
assumption (Schoenholz et al. §4, eq. 13): χ_1 < 1 vanishing, > 1 exploding, = 1 critical.

Quadrature (float64): ``gauss_expect`` defaults to a *split* Gaussian rule, Gauss–Legendre on
[-12, 0] and [0, 12] (50 nodes each) against the N(0, 1) density, because ReLU-family φ have a
kink at 0 that a Gauss–Hermite rule (``numpy.polynomial.hermite_e.hermegauss``) straddles:
at degree 100 Hermite gets E[relu(z)] wrong by 1.6e-3 (it converges only algebraically), the
split rule is exact to 1e-15 and agrees with Hermite to ~1e-11 on smooth φ (tests check both,
and ``rule="hermite"`` is available). Closed forms the tests hold it to: ReLU E[φ(√q z)²] = q/2,
E[φ'²] = 1/2. The 2-D expectations of the correlation map use polar coordinates split along
the kink rays (see ``_pair_expect``), accurate to ~1e-12 against the ReLU arc-cosine kernel.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Sequence, Union

import numpy as np
import pandas as pd
import torch
from scipy import optimize
from torch import Tensor

from initlab.core.activations import activation_fn

__all__ = [
    "DEGREE", "gauss_expect", "variance_map", "fixed_point", "chi1",
    "correlation_map", "depth_scale", "critical_sigma_w2",
    "mlp_variances", "variance_preserving_gain",
]

DEGREE = 100  # nodes of the 1-D rule; see the module docstring
Z_MAX = 12.0  # the split rules integrate |z| <= 12; P(|z| > 12) = 4e-33
# q* of 0 or ∞ is a limit, not a number φ can be evaluated at; χ_1 is taken at these stand-ins.
_Q_TINY, _Q_HUGE = 1e-200, 1e200
_Q_FLOOR, _Q_CEIL = 1e-30, 1e30  # below / above: the fixed point is reported as 0 / inf

Activation = Union[str, Callable[[Tensor], Tensor]]


def _phi(activation: Activation) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        return activation_fn(activation)
    if callable(activation):
        return activation
    raise ValueError(f"activation must be a name or a callable Tensor -> Tensor, got {activation!r}")


@functools.lru_cache(maxsize=8)
def _hermite(degree: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 2:
        raise ValueError(f"quadrature degree must be an integer >= 2, got {degree!r}")
    x, w = np.polynomial.hermite_e.hermegauss(degree)
    return x, w / math.sqrt(2 * math.pi)  # weights of N(0, 1): they sum to 1


@functools.lru_cache(maxsize=8)
def _legendre(n: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) * (b - a) / 2 + a, w * (b - a) / 2


@functools.lru_cache(maxsize=8)
def _split(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre on [-Z_MAX, 0] and [0, Z_MAX], degree/2 nodes each, times the N(0, 1) density."""
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 2:
        raise ValueError(f"quadrature degree must be an integer >= 2, got {degree!r}")
    z, w = _legendre(degree // 2, 0.0, Z_MAX)
    w = w * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return np.concatenate([-z[::-1], z]), np.concatenate([w[::-1], w])


def _rule(degree: int, rule: str = "split") -> tuple[np.ndarray, np.ndarray]:
    if rule == "split":
        return _split(degree)
    if rule == "hermite":
        return _hermite(degree)
    raise ValueError(f"unknown quadrature rule {rule!r}; choose from: split, hermite")


def _values(f: Callable[[Tensor], Tensor], x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return f(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _derivative(f: Callable[[Tensor], Tensor], x: np.ndarray) -> np.ndarray:
    """φ'(x) at each point, by autograd (φ must be elementwise)."""
    t = torch.as_tensor(x, dtype=torch.float64).clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(t).sum(), t)
    return g.numpy()


def _check_variances(sigma_w2: float, sigma_b2: float) -> tuple[float, float]:
    """σ_w² and σ_b² are variances: finite and ≥ 0 (a negative one has no meaning, and no error downstream says so)."""
    for name, v in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v < math.inf:
            raise ValueError(f"{name} is a variance: it must be a finite number >= 0, got {v!r}")
    return float(sigma_w2), float(sigma_b2)


def _check_q(q: float) -> float:
    q = float(q)
    if not q >= 0:
        raise ValueError(f"variance q must be >= 0, got {q!r}")
    return q


def gauss_expect(f: Callable[[Tensor], Tensor], q: float = 1.0, degree: int = DEGREE,
                 rule: str = "split") -> float:
    """E_{z~N(0,1)}[f(√q z)] by Gaussian quadrature in float64.

    ``rule="split"`` (default): Gauss–Legendre on each half line [-12, 0], [0, 12] (the mass
    beyond |z| = 12 is 4e-33), so integrands with a kink at 0 (ReLU family) converge
    exponentially: E[relu(z)] is exact to 1e-15, where ``rule="hermite"``
    (``numpy.polynomial.hermite_e.hermegauss``) is off by 1.6e-3 at degree 100. For smooth
    integrands both agree to ~1e-11 (tests compare them).

    Args:
        f: elementwise torch function (it receives a float64 tensor of nodes).
        q: variance of the argument, >= 0.
        degree: total number of nodes (default 100).
        rule: "split" or "hermite".
    """
    x, w = _rule(degree, rule)
    return float(np.dot(w, _values(f, math.sqrt(_check_q(q)) * x)))


def _second_moment(phi, q: float, degree: int = DEGREE) -> float:
    return gauss_expect(lambda t: phi(t) ** 2, q, degree)


def _derivative_moment(phi, q: float, degree: int = DEGREE) -> float:
    """E[φ'(√q z)²]; q = 0 / ∞ are evaluated as limits (tiny / huge q)."""
    q = _Q_TINY if q == 0 else (_Q_HUGE if math.isinf(q) else q)
    x, w = _rule(degree)
    return float(np.dot(w, _derivative(phi, math.sqrt(q) * x) ** 2))


def variance_map(activation: Activation, q: float, sigma_w2: float, sigma_b2: float = 0.0) -> float:
    """One layer of the length map: q' = σ_w² E[φ(√q z)²] + σ_b² (Poole et al. 2016, eq. 3).

    Args:
        activation: name from ``ACTIVATIONS`` or an elementwise torch callable.
        q: pre-activation variance of the previous layer.
        sigma_w2: fan_in · Var(W).
        sigma_b2: Var(b).
    """
    sigma_w2, sigma_b2 = _check_variances(sigma_w2, sigma_b2)
    return sigma_w2 * _second_moment(_phi(activation), q) + sigma_b2


def _bisect_log(h: Callable[[float], float], lo: float, hi: float) -> float:
    """Root of h in [lo, hi] (h changes sign), searched in log q."""
    return math.exp(optimize.brentq(lambda s: h(math.exp(s)), math.log(lo), math.log(hi), xtol=1e-13, rtol=1e-13))


def fixed_point(activation: Activation, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0) -> float:
    """The q* that iterating the variance map from ``q0`` converges to.

    Instead of iterating (near criticality that takes millions of layers), this brackets the
    root of h(q) = V(q) - q the iteration runs into: if V(q0) < q0 the variance shrinks to the
    largest root below q0, else it grows to the smallest root above q0 (V is increasing). The
    search walks a log grid a quarter decade at a time and refines with Brent's method.

    Returns:
        q*; ``0.0`` when the variance vanishes (no root above 1e-30: e.g. ReLU with σ_w² < 2,
        σ_b² = 0, or tanh with σ_w² <= 1, σ_b² = 0) and ``math.inf`` when it explodes (no root
        below 1e30: e.g. ReLU with σ_w² > 2). When V(q0) = q0 (ReLU at σ_w² = 2, σ_b² = 0,
        where every q is fixed) q0 itself.
    """
    sigma_w2, sigma_b2 = _check_variances(sigma_w2, sigma_b2)
    phi = _phi(activation)
    q0 = _check_q(q0)
    if not q0 > 0:
        raise ValueError(f"q0 must be > 0, got {q0!r}")

    def h(q: float) -> float:
        return sigma_w2 * _second_moment(phi, q) + sigma_b2 - q

    h0 = h(q0)
    if abs(h0) <= 1e-13 * q0:
        return q0
    step = 10 ** (-0.25 if h0 < 0 else 0.25)
    q = q0
    while _Q_FLOOR <= q <= _Q_CEIL:
        nxt = q * step
        if (h(nxt) >= 0) if h0 < 0 else (h(nxt) <= 0):
            lo, hi = sorted((q, nxt))
            return _bisect_log(h, lo, hi)
        q = nxt
    return 0.0 if h0 < 0 else math.inf


def chi1(activation: Activation, sigma_w2: float, sigma_b2: float = 0.0, q: float | None = None) -> float:
    """χ_1 = σ_w² E[φ'(√q* z)²], the per-layer gain of squared gradient norms (Poole eq. 7).

    φ' comes from torch autograd at the quadrature nodes. At q* = 0 or ∞ (vanishing or
    exploding forward variance) the expectation is taken in the limit q → 0⁺ / ∞.

    Args:
        activation: name or elementwise torch callable.
        sigma_w2, sigma_b2: weight (fan_in · Var(W)) and bias variances.
        q: the variance to evaluate at; default the fixed point ``fixed_point(...)``.
    """
    sigma_w2, sigma_b2 = _check_variances(sigma_w2, sigma_b2)
    phi = _phi(activation)
    q = fixed_point(phi, sigma_w2, sigma_b2) if q is None else _check_q(q)
    return sigma_w2 * _derivative_moment(phi, q)


def _pair_expect(f, g, c: float, q: float, n_r: int = 50, n_theta: int = 24) -> float:
    """E[f(u1) g(u2)] for (u1, u2) ~ N(0, q[[1, c], [c, 1]]), in polar coordinates.

    With z = r(cos θ, sin θ), u1 = √q z1 and u2 = √q (c z1 + √(1-c²) z2), a kink of φ at 0 lies
    along the rays u1 = 0 and u2 = 0; the θ-range is split at those four angles (Gauss–Legendre
    with ``n_theta`` nodes per arc) and r uses Gauss–Legendre on [0, 12], so ReLU correlations
    are as accurate as smooth ones (~1e-12 against the arc-cosine kernel).
    """
    s = math.sqrt(max(0.0, 1 - c * c))
    cuts = np.mod([math.pi / 2, 3 * math.pi / 2, math.atan2(-c, s), math.atan2(-c, s) + math.pi], 2 * math.pi)
    edges = np.unique(np.concatenate([np.sort(cuts), [2 * math.pi + np.min(cuts)]]))
    th, wth = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        if b - a > 1e-15:
            x, w = _legendre(n_theta, float(a), float(b))
            th.append(x)
            wth.append(w)
    th, wth = np.concatenate(th), np.concatenate(wth)
    r, wr = _legendre(n_r, 0.0, Z_MAX)
    wr = wr * r * np.exp(-r * r / 2) / (2 * math.pi)
    R, TH = np.meshgrid(r, th, indexing="ij")
    z1, z2 = R * np.cos(TH), R * np.sin(TH)
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + s * z2)
    return float(np.einsum("i,j,ij->", wr, wth, f(u1) * g(u2)))


def correlation_map(activation: Activation, c: float, q: float | None = None,
                    sigma_w2: float = 1.0, sigma_b2: float = 0.0) -> float:
    """One layer of the correlation map (Poole et al. 2016, eq. 5; Schoenholz et al. 2017, eq. 4).

    c' = (σ_w² E[φ(u_1) φ(u_2)] + σ_b²) / q',  (u_1, u_2) ~ N(0, q [[1, c], [c, 1]]),
    q' = V(q). With ``q`` = q* (the default) q' = q*, the textbook form.

    Args:
        activation: name or elementwise torch callable.
        c: input correlation in [-1, 1].
        q: the common variance of both inputs; default the fixed point q*.
    """
    sigma_w2, sigma_b2 = _check_variances(sigma_w2, sigma_b2)
    if not -1.0 <= float(c) <= 1.0:
        raise ValueError(f"correlation c must be in [-1, 1], got {c!r}")
    phi = _phi(activation)
    q = fixed_point(phi, sigma_w2, sigma_b2) if q is None else _check_q(q)
    if q == 0 or math.isinf(q):
        raise ValueError(f"correlation map undefined at q = {q}; the forward variance vanishes or explodes")
    f = lambda u: _values(phi, u)  # noqa: E731
    q_next = sigma_w2 * _second_moment(phi, q) + sigma_b2
    return (sigma_w2 * _pair_expect(f, f, float(c), q) + sigma_b2) / q_next


def depth_scale(activation: Activation, sigma_w2: float, sigma_b2: float = 0.0) -> float:
    """ξ_c = -1 / ln χ_c: how many layers correlations survive (Schoenholz et al. 2017, §3, eq. 9-10).

    In the ordered phase (χ_1 <= 1) the stable correlation fixed point is c* = 1 and χ_c = χ_1;
    in the chaotic phase (χ_1 > 1) c* < 1 is found by Brent's method on c'(c) - c and
    χ_c = σ_w² E[φ'(u_1) φ'(u_2)] there. ξ_c = inf at criticality (χ_c = 1).
    """
    sigma_w2, sigma_b2 = _check_variances(sigma_w2, sigma_b2)
    phi = _phi(activation)
    q = fixed_point(phi, sigma_w2, sigma_b2)
    x1 = chi1(phi, sigma_w2, sigma_b2, q=q)
    if x1 <= 1 or q == 0 or math.isinf(q):
        chi_c = x1
    else:
        cmap = lambda c: correlation_map(phi, c, q, sigma_w2, sigma_b2) - c  # noqa: E731
        c_star = optimize.brentq(cmap, 0.0, 1 - 1e-6, xtol=1e-12) if cmap(0.0) > 0 else 0.0
        d = lambda u: _derivative(phi, u)  # noqa: E731
        chi_c = sigma_w2 * _pair_expect(d, d, c_star, q)
    if chi_c >= 1 - 1e-12 and chi_c <= 1 + 1e-12:
        return math.inf
    return -1.0 / math.log(chi_c) if chi_c < 1 else math.inf


def critical_sigma_w2(activation: Activation, sigma_b2: float = 0.0) -> float:
    """The σ_w² at which χ_1 = 1 (edge of chaos), by Brent's method on χ_1(σ_w²) - 1.

    Examples: ReLU (σ_b² = 0) → 2, He's gain² (He et al. 2015); tanh (σ_b² = 0) → 1
    (Poole et al. 2016, fig. 2). Raises ValueError if no σ_w² in [1e-4, 1e4] is critical.
    """
    _, sigma_b2 = _check_variances(1.0, sigma_b2)
    phi = _phi(activation)
    f = lambda s: chi1(phi, s, sigma_b2) - 1.0  # noqa: E731
    lo, hi = 0.5, 1.0
    while f(hi) < 0:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(f"no critical sigma_w2 below 1e4 for this activation at sigma_b2={sigma_b2}")
    while f(lo) > 0:
        lo /= 2
        if lo < 1e-4:
            raise ValueError(f"no critical sigma_w2 above 1e-4 for this activation at sigma_b2={sigma_b2}")
    return optimize.brentq(f, lo, hi, xtol=1e-13, rtol=1e-13)


def variance_preserving_gain(activation: Activation) -> float:
    """g = 1 / sqrt(E[φ(z)²]), z ~ N(0, 1): with Var(W) = g² / fan_in and no bias, q = 1 is fixed.

    This is He et al.'s (2015) derivation taken literally (second moment, not variance): relu → √2,
    linear → 1, selu → 1, tanh → 1.5927 (torch's ``calculate_gain('tanh')`` = 5/3 is a heuristic
    with no such property), and it is defined for gelu/silu/elu/... which torch lacks. Note that
    for tanh q = 1 is fixed but not stable: nearby q drift to tanh's own fixed point.
    """
    m = _second_moment(_phi(activation), 1.0)
    if not m > 0:
        raise ValueError("activation is zero on N(0, 1) inputs; no gain preserves variance")
    return 1.0 / math.sqrt(m)


# --------------------------------------------------------------------------- an MLP, layer by layer


def mlp_variances(activation: Activation, weight_variance: Callable[[int, int], float], widths: Sequence[int],
                  input_var: float = 1.0, sigma_b2: float = 0.0) -> pd.DataFrame:
    """Mean-field forward variances and relative gradient norms of an MLP, layer by layer.

    ``widths`` = (in_features, hidden_1, ..., out_features); layer l maps widths[l-1] → widths[l]
    with σ_w²(l) = widths[l-1] · E[W²], E[W²] = ``weight_variance(fan_in, fan_out)`` (so unequal fans
    are exact per layer; a scheme's is :func:`initlab.schemes.variance.weight_variance`, and
    :func:`initlab.schemes.variance.predicted_variances` calls this with it), and φ follows every
    layer but the last (``initlab.models.mlp``)::

        q_1 = σ_w²(1) · input_var + σ_b²          (input_var = mean over features of E[x²])
        q_l = σ_w²(l) · E[φ(√q_{l-1} z)²] + σ_b²

    Gradients (Schoenholz et al. 2017, §4, gradient independence): with g the L2 norm of the
    loss gradient over the batch, g(a_l) = g(h_{l+1}) · sqrt(σ_w²(l+1)) and
    g(h_l) = g(a_l) · sqrt(E[φ'(√q_l z)²]); both are reported relative to g(h_L) = 1 (the logits).

    Returns:
        One row per layer: layer, fan_in, fan_out, sigma_w2, pre_var (q_l), post_var
        (Var φ(h_l), NaN for the last layer), pre_grad_rel, post_grad_rel.
    """
    if not callable(weight_variance):
        raise TypeError(f"weight_variance must be a function (fan_in, fan_out) -> E[W²], got "
                        f"{type(weight_variance).__name__}; for a scheme use initlab.schemes.predicted_variances")
    phi = _phi(activation)
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) <= 0:
        raise ValueError(f"widths must be (in_features, ..., out_features) with positive entries, got {widths}")
    n_layers = len(widths) - 1
    rows, q = [], None
    for l in range(1, n_layers + 1):
        fan_in, fan_out = widths[l - 1], widths[l]
        s2 = fan_in * float(weight_variance(fan_in, fan_out))
        q = s2 * float(input_var) + sigma_b2 if l == 1 else s2 * _second_moment(phi, q) + sigma_b2
        last = l == n_layers
        post = math.nan
        if not last and q > 0 and math.isfinite(q):
            post = _second_moment(phi, q) - gauss_expect(phi, q) ** 2
        elif not last:
            post = 0.0 if q == 0 else math.inf
        rows.append(dict(layer=l, fan_in=fan_in, fan_out=fan_out, sigma_w2=s2, pre_var=q, post_var=post))
    g_pre = 1.0
    rows[-1].update(pre_grad_rel=1.0, post_grad_rel=math.nan)
    for l in range(n_layers - 1, 0, -1):  # 1-based layer l, its row is rows[l-1]
        g_post = g_pre * math.sqrt(rows[l]["sigma_w2"])
        q = rows[l - 1]["pre_var"]
        g_pre = g_post * math.sqrt(_derivative_moment(phi, q)) if math.isfinite(q) else math.nan
        rows[l - 1].update(pre_grad_rel=g_pre, post_grad_rel=g_post)
    return pd.DataFrame(rows)
