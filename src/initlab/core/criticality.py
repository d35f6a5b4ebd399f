"""Automatic initialization at the edge of chaos: σ_w², σ_b² for any elementwise activation.

The math behind ``initialize(model, "auto")``. Mean field (Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos", eq. 3 and 7): with weights
N(0, σ_w²/fan_in) and biases N(0, σ_b²), pre-activations are ≈ N(0, q) with

    q_{l+1} = V(q_l) = σ_w² m(q_l) + σ_b²,   m(q) = E[φ(√q z)²],   z ~ N(0, 1)
    χ_1     = σ_w² d(q*),                    d(q) = E[φ'(√q z)²]
    V'(q*)  = σ_w² s(q*),                    s(q) = m'(q) = E[z φ φ'(√q z)] / √q   (Stein)

χ_1 is the per-layer factor of squared gradient norms (Schoenholz et al. 2017, "Deep Information
Propagation", §4, eq. 13; Pennington et al. 2017, "Resurrecting the sigmoid", §2: the mean
squared singular value of the input-output Jacobian is χ_1^L). A depth-stable init needs both
χ_1 = 1 (gradients) and a fixed point q* that attracts the forward variance, V'(q*) <= 1.

**The critical line.** Solving χ_1 = 1 and V(q) = q for the scales gives, for every q > 0, the
unique pair that makes q a critical fixed point:

    σ_w²(q) = 1 / d(q),   σ_b²(q) = q - m(q) / d(q),   V'(q) = s(q) / d(q)

so choosing an init is choosing q* on this line. :func:`auto_init_params` takes the *admissible*
q nearest ``target_q`` (log scale, searched in [target/100, target·100]) and reports
``mode="critical"``. A q is admissible when

1. 0 <= σ_b²(q) <= ``max_sigma_b2`` (a real bias variance, and a small one: biases are shared by
   all inputs, so they add σ_b²/q* to every pair's correlation);
2. the forward map holds a finite-width error: started at q*·2 and q*/2, ``depth`` iterations of
   V stay within q*·4^±1 (pre-activation RMS within ×2). A 50-layer width-256 MLP drifts ×2 in q
   from finite width alone (Var log q ≈ 2·depth/width); V'(q*) alone is not enough, because V'
   grows away from q* (a check on V' admitted a shifted softplus that then exploded);
3. the activations' second moment m(q*) is within ×10 of the inputs' (E[x²] = 1): a weight
   gradient is ∝ its layer's input, so otherwise the first layer's and the hidden layers'
   gradients differ by more than √10 from scale alone.

Examples (depth 50):

* ReLU and every degree-1 homogeneous φ: σ_b²(q) = 0, V' = 1 for all q; σ_w² = 1/E[φ'(z)²]
  (ReLU: 2, He et al. 2015), no bias, q* = target.
* tanh, sin, SELU, ELU, GELU, SiLU, Mish: σ_b²(q) > 0 for every q > 0 — without bias the only
  critical point is q* → 0 (tanh at σ_w² = 1: q_l ~ 1/(2l), the signal fades polynomially). A small
  bias variance is what makes an order-1 critical fixed point exist (tanh, q* = 1: σ_w² = 2.15,
  σ_b² = 0.151; sin: 1.76, 0.238). SELU's own point (σ_w² = 1, q* = 1, Klambauer et al. 2017,
  "Self-Normalizing Neural Networks") has χ_1 = 1.07; the critical point at q* = 1 is σ_w² = 0.933,
  σ_b² = 0.067.
* GELU, SiLU, Mish, x·tanh x: convex near 0, so E[φφ''] > 0 and V' > 1 at small q: a critical
  point at q = 1 repels the forward variance (the 30× growth of a variance-preserving SiLU init).
  Test 2 moves q* up: GELU 2.2, SiLU 8.0, Mish 1.3, x·tanh x 2.5.
* sigmoid: φ' <= 1/4 and E[φ] = 1/2, so σ_b²(q) < 0 below q ≈ 45: an order-1 critical point would
  need a negative bias variance. The nearest is saturated: q* = 45.6, σ_w² = 103, σ_b² = 0. The
  mean does not change the q-map (pre-activations stay zero-mean because the weights are; E[φ]²
  enters through m = Var φ + E[φ]²), but σ_w² E[φ]² (56% of q*) is a per-unit offset shared by all
  inputs, reported with σ_b² as ``shared_fraction``.

When no q is admissible, ``mode="variance"``: q* = ``target_q`` is kept as a fixed point with the
largest σ_w² (at most critical) whose map passes test 2, and χ_1 < 1 says how fast gradients fade
(softplus − ln 2: χ_1 = 0.90). ``stable`` is the mean-field verdict over ``depth`` layers: test 2
passes and χ_1^depth is within [1e-2, 1e2] (gradient norms within 10×).

**Homogeneous φ** (φ(λx) = λ^k φ(x) for λ > 0) has m(q) = q^k m(1), d(q) = q^(k-1) d(1), and
χ_1 = V'(q*) · k/(2k - 1) at every fixed point (E|z|^(2k)/E|z|^(2k-2) = 2k - 1). For k > 1 (relu²)
χ_1 = 1 forces V' = (2k-1)/k > 1 (the forward variance explodes or vanishes), and a stable forward
map forces χ_1 < 1: no scalar init is depth-stable. :func:`homogeneity_degree` finds k numerically.

Assumptions: wide layers (mean field), i.i.d. zero-mean weights and biases, standardized inputs
(per-feature E[x²] = 1) for the first layer's scale, the gradient-independence assumption. Finite
width adds log-normal fluctuations of the forward and gradient norms (Hanin & Rolnick 2018) that
no init removes.
"""
from __future__ import annotations

import copy
import functools
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from scipy import optimize
from torch import Tensor, nn

from initlab.core import theory

__all__ = [
    "AutoParams", "auto_init_params", "critical_point", "homogeneity_degree",
    "init_linear_", "init_mlp_", "measure_ratios",
]

# Admissibility of an init, from the mean-field maps (see the module docstring for why):
Q_ERROR = 2.0  # a finite-width error in q the forward map must absorb: q* × 2^±1 ...
Q_WINDOW = 4.0  # ... must stay within q* × 4^±1 (pre-activation RMS within ×2) for `depth` layers
GRADIENT_WINDOW = 100.0  # χ_1^depth within [1/100, 100]: gradient norms within 10×
BALANCE = 10.0  # hidden activations' second moment m(q*) within [1/10, 10] of the inputs' (1)
Q_SPAN = 100.0  # q* is searched in [target_q / 100, target_q * 100]
_GRID_PER_DECADE = 24


def _as_phi(activation) -> Callable[[Tensor], Tensor]:
    """A float64 elementwise callable from a name, torch function, nn.Module (instance or class) or callable."""
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        activation = activation()
    if isinstance(activation, nn.Module):  # a copy in float64: never touch the caller's module
        activation = copy.deepcopy(activation).to(torch.float64)
    phi = theory._phi(activation)
    probe = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    try:
        out = phi(probe)
    except Exception as e:  # noqa: BLE001 - user code: any failure is a bad activation
        raise ValueError(f"activation {activation!r} failed on a float64 tensor: {e}") from e
    if not isinstance(out, Tensor) or out.shape != probe.shape:
        raise ValueError(f"activation {activation!r} must map a tensor to a tensor of the same shape (elementwise)")
    if not torch.isfinite(out).all():
        raise ValueError(f"activation {activation!r} is not finite on [-3, 3]")
    with torch.enable_grad():
        if not phi(probe.clone().requires_grad_(True)).requires_grad:
            raise ValueError(f"activation {activation!r} does not depend on its input through autograd; no gradient flows")
    return phi


def _moments(phi, qs: np.ndarray) -> dict[str, np.ndarray]:
    """m, d, s and the mean E[φ] at each variance in ``qs``, in one vectorized quadrature call."""
    x, w = theory._rule(theory.DEGREE)
    qs = np.asarray(qs, dtype=np.float64)
    z = torch.as_tensor(np.sqrt(qs)[:, None] * x[None, :]).requires_grad_(True)
    with torch.enable_grad():
        y = phi(z)
        (g,) = torch.autograd.grad(y.sum(), z)
    y, g = y.detach().numpy(), g.numpy()
    return dict(m=(y * y) @ w, d=(g * g) @ w, s=(x[None, :] * y * g) @ w / np.sqrt(qs), mean=y @ w)


def critical_point(activation, q: float) -> tuple[float, float, float]:
    """(σ_w², σ_b², V'(q)) of the init that makes ``q`` a fixed point with χ_1 = 1.

    σ_w² = 1/E[φ'(√q z)²], σ_b² = q - σ_w² E[φ(√q z)²] (negative: unreachable with real biases),
    V'(q) = E[z φ φ'(√q z)] / (√q E[φ'²]) (> 1: the fixed point repels the forward variance).
    """
    q = float(q)
    if not q > 0 or math.isinf(q):
        raise ValueError(f"q must be a positive finite variance, got {q!r}")
    r = _moments(_as_phi(activation), np.array([q]))
    sw = 1.0 / r["d"][0]
    return sw, q - sw * r["m"][0], r["s"][0] * sw


def homogeneity_degree(activation, *, rtol: float = 1e-6) -> Optional[float]:
    """k such that φ(λx) = λ^k φ(x) for all λ > 0, or None if φ is not positively homogeneous.

    Fits log|φ(λx)| against log λ on each half line (x = ±0.5, ±1, ±2; λ from 1e-2 to 1e2): φ is
    homogeneous when every local slope agrees to ``rtol`` and φ keeps its sign along each ray; a
    half line where φ ≡ 0 (ReLU's) fits any k. Integer degrees come back exact (relu → 1.0,
    relu² → 2.0); tanh, sigmoid, GELU, x·tanh x → None.
    """
    phi = _as_phi(activation)
    lam = torch.logspace(-2, 2, 17, dtype=torch.float64)
    slopes = []
    for side in (1.0, -1.0):
        x = side * torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
        with torch.no_grad():
            y = phi(lam[:, None] * x[None, :])
        scale = float(y.abs().max())
        if scale == 0.0:
            continue
        if not torch.isfinite(y).all() or (y.abs() <= 1e-300).any() or not ((y > 0).all(0) | (y < 0).all(0)).all():
            return None  # a zero or a sign change along a ray: not λ^k φ(x)
        ly = torch.log(y.abs())
        slopes.append(((ly[1:] - ly[:-1]) / (torch.log(lam[1:]) - torch.log(lam[:-1]))[:, None]).reshape(-1))
    if not slopes:
        raise ValueError("activation is zero on both half lines; it passes no signal")
    s = torch.cat(slopes)
    k = float(s.median())
    if float((s - k).abs().max()) > rtol * max(1.0, abs(k)):
        return None
    return float(round(k)) if abs(k - round(k)) < rtol * max(1.0, abs(k)) else k


@dataclass(frozen=True)
class AutoParams:
    """The init chosen for one activation; hidden layers draw W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²)."""

    sigma_w2: float  # fan_in · Var(W) of hidden layers
    sigma_b2: float  # Var(b) of hidden layers and of the first layer
    q_star: float  # the fixed point of the variance map the hidden pre-activations sit at
    chi1: float  # σ_w² E[φ'(√q* z)²]: 1 = critical, < 1 gradients fade, > 1 they grow
    mode: str  # "critical" (χ_1 = 1 at q*) or "variance" (q* kept, χ_1 as close to 1 as allowed)
    stable: bool  # mean-field forward and gradient norms stay within bounds over `depth` layers
    verdict: str  # one sentence for humans
    degree: Optional[float]  # positive-homogeneity degree of φ; None when not homogeneous
    slope: float  # V'(q*) = σ_w² dE[φ²]/dq: per-layer growth of a relative error in q (<= 1 attracts)
    mean: float  # E[φ(√q* z)], the activations' mean
    shared_fraction: float  # (σ_w² E[φ]² + σ_b²) / q*: part of q* shared by all inputs (correlation floor)
    depth: int  # the depth `stable` refers to
    target_q: float  # the q* asked for

    @property
    def sigma_w2_input(self) -> float:
        """fan_in · Var(W) of the first layer: lands standardized inputs (E[x²] = 1) on q*."""
        return self.q_star - self.sigma_b2


def _check_positive(name: str, value, integer: bool = False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'finite number'}, got {value!r}")
    return int(value) if integer else float(value)


def auto_init_params(activation, *, max_sigma_b2: float = 0.5, target_q: float = 1.0, depth: int = 50) -> AutoParams:
    """Weight and bias variances that put φ at the edge of chaos (χ_1 = 1) at a stable, finite q*.

    See the module docstring for the formulas (Poole et al. 2016; Schoenholz et al. 2017;
    Pennington et al. 2017; Klambauer et al. 2017 for SELU). Named activations are memoized.

    Args:
        activation: a name from ``initlab.models.ACTIVATIONS``, a torch function (``torch.sin``),
            an ``nn.Module`` instance or class (``nn.Mish()``), or any elementwise callable on
            tensors (evaluated in float64, differentiated by autograd).
        max_sigma_b2: largest bias variance allowed. Biases are shared by all inputs, so σ_b² is
            kept below half the standardized data's variance; criticality needs 0.38 for SiLU
            (q* = 8), 0.24 for sin and 0.15 for tanh (q* = 1) at depth 50.
        target_q: the pre-activation variance to aim at; q* is the admissible value nearest to it.
        depth: number of hidden layers the init must carry signals through (the forward-error
            test and the ``stable`` verdict refer to it).

    Example: ``auto_init_params("tanh")`` → σ_w² 2.15, σ_b² 0.151, q* 1, χ_1 1, critical.
    """
    ok = isinstance(max_sigma_b2, numbers.Real) and not isinstance(max_sigma_b2, bool)
    max_b = float(max_sigma_b2) if ok else math.nan
    if not (math.isfinite(max_b) and max_b >= 0):
        raise ValueError(f"max_sigma_b2 must be a finite number >= 0, got {max_sigma_b2!r}")
    target = _check_positive("target_q", target_q)
    depth = _check_positive("depth", depth, integer=True)
    if isinstance(activation, str):
        return _auto_named(activation, max_b, target, depth)
    return _auto(activation, max_b, target, depth)


@functools.lru_cache(maxsize=256)
def _auto_named(name: str, max_b: float, target: float, depth: int) -> AutoParams:
    return _auto(name, max_b, target, depth)


def _auto(activation, max_b: float, target: float, depth: int) -> AutoParams:
    phi = _as_phi(activation)
    k = homogeneity_degree(phi)
    if k == 1.0:  # every q is a critical fixed point: no search, no bias
        d = _moments(phi, np.array([1.0]))["d"][0]
        return _finish(phi, 1.0 / d, 0.0, target, "critical", k, target, depth,
                       "φ is homogeneous of degree 1, so σ_b² = 0 keeps every q fixed and critical")
    if k is not None and k <= 0.5:  # E[φ'²] = 0 (k = 0) or diverges at the origin (k <= 1/2): no χ_1 = 1
        m = _second_moment(phi, np.array([target]))[0]
        return _finish(phi, target / m, 0.0, target, "variance", k, target, depth, "", chi1=0.0 if k == 0 else math.inf)
    if k is None or 0.5 < k < 1.0:  # 1/2 < k < 1 has a stable critical line (V' = (2k-1)/k < 1)
        q, why, zero_bias = _critical_q(phi, max_b, target, depth)
        if q is not None:
            sw, sb, _ = critical_point(phi, q)
            if sb > 0 and not zero_bias:
                why = "; ".join(filter(None, [why, "without bias the only critical point is q* → 0"]))
            return _finish(phi, sw, max(0.0, sb), q, "critical", k, target, depth, why)
    sw, sb = _variance_scales(phi, max_b, target, depth)
    return _finish(phi, sw, sb, target, "variance", k, target, depth, _no_critical_reason(phi, k, max_b, target, depth))


def _second_moment(phi, qs: np.ndarray) -> np.ndarray:
    x, w = theory._rule(theory.DEGREE)
    with torch.no_grad():
        y = phi(torch.as_tensor(np.sqrt(qs)[:, None] * x[None, :]))
    return (y * y).numpy() @ w


def _holds_errors(phi, q, sw, sb, depth: int) -> np.ndarray:
    """Whether q* × 2^±1 stays within q* × 4^±1 for ``depth`` layers of the map (vectorized over inits)."""
    q, sw, sb = (np.broadcast_to(np.asarray(a, dtype=np.float64), np.broadcast(q, sw, sb).shape).ravel()
                 for a in (q, sw, sb))
    q2, sw2, sb2 = np.tile(q, 2), np.tile(sw, 2), np.tile(sb, 2)
    cur = q2 * np.repeat([Q_ERROR, 1 / Q_ERROR], len(q))
    ok = np.ones_like(cur, dtype=bool)
    lo, hi = q2 / Q_WINDOW, q2 * Q_WINDOW
    for _ in range(depth):
        cur = sw2 * _second_moment(phi, np.clip(np.where(ok, cur, q2), 1e-12, 1e12)) + sb2
        ok &= np.isfinite(cur) & (cur >= lo) & (cur <= hi)
    return ok[: len(q)] & ok[len(q):]


def _critical_q(phi, max_b: float, target: float, depth: int) -> tuple[Optional[float], str, bool]:
    """The admissible q on the critical line nearest ``target``, a clause saying why it moved, and
    whether some q in the searched range is critical without bias (σ_b²(q) <= 0).

    Smooth constraints (σ_b² in [0, max_b], m(q) within ``BALANCE``) are located on a log grid
    and refined by Brent's method; the forward-error test is checked on the grid and the
    refined points, then the gap toward the target is resolved on a 33-point sub-grid.
    """
    n = int(round(_GRID_PER_DECADE * math.log10(Q_SPAN)))
    grid = target * 10.0 ** (np.arange(-n, n + 1) / _GRID_PER_DECADE)

    def smooth(q):  # rows >= 0 when admissible
        r = _moments(phi, np.atleast_1d(q))
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(r["d"] > 0, q - r["m"] / r["d"], -np.inf)
            lm = np.log(np.maximum(r["m"], 1e-300))
        return np.stack([b, max_b - b, math.log(BALANCE) - np.abs(lm)])

    def admissible(qs):
        c = smooth(qs)
        ok = (c >= -1e-12).all(0) & np.isfinite(c).all(0)
        if ok.any():
            r = _moments(phi, qs[ok])
            ok[ok] = _holds_errors(phi, qs[ok], 1 / r["d"], np.maximum(0.0, qs[ok] - r["m"] / r["d"]), depth)
        return ok

    c = smooth(grid)
    zero_bias = bool((c[0] <= 0).any())
    cuts = [grid]
    for row in range(c.shape[0]):
        finite = np.isfinite(c[row])
        for i in np.nonzero(finite[:-1] & finite[1:] & (np.sign(c[row, :-1]) * np.sign(c[row, 1:]) < 0))[0]:
            f = lambda lq, row=row: float(smooth(math.exp(lq))[row, 0])  # noqa: E731
            root = math.exp(optimize.brentq(f, math.log(grid[i]), math.log(grid[i + 1]), xtol=1e-12))
            cuts.append(np.array([root * (1 - 1e-9), root * (1 + 1e-9)]))  # one on each side
    cand = np.unique(np.concatenate(cuts))
    ok = admissible(cand)
    if not ok.any():
        return None, "", zero_bias
    dist = np.abs(np.log(cand / target))
    best = cand[ok][np.argmin(dist[ok])]
    if abs(math.log(best / target)) > 1e-9:  # resolve the gap between best and the next candidate toward target
        i = int(np.nonzero(cand == best)[0][0])
        j = i + 1 if best < target else i - 1
        sub = np.exp(np.linspace(math.log(cand[i]), math.log(cand[j]), 33))
        sub_ok = admissible(sub)
        best = sub[np.nonzero(sub_ok)[0].max()] if sub_ok.any() else best
    if abs(math.log(best / target)) < 1e-9:
        return target, "", zero_bias
    return best, _why_not(phi, max_b, target, depth), zero_bias


def _why_not(phi, max_b: float, q: float, depth: int) -> str:
    """Why q is not an admissible critical point (the first failed test)."""
    sw, sb, v = critical_point(phi, q)
    m = float(_second_moment(phi, np.array([q]))[0])
    if sb < 0:
        return f"the critical point at q = {q:g} needs σ_b² = {sb:.3g} < 0"
    if sb > max_b:
        return f"the critical point at q = {q:g} needs σ_b² = {sb:.3g} > max_sigma_b2 = {max_b:g}"
    if not 1 / BALANCE <= m <= BALANCE:
        return f"at q = {q:g} the activations' second moment E[φ²] = {m:.3g} is over {BALANCE:g}× off the inputs' 1"
    return (f"the critical point at q = {q:g} repels the forward variance (V' = {v:.3g} per layer: a ×2 error in q "
            f"leaves ×4 within {depth} layers)")


def _variance_scales(phi, max_b: float, q: float, depth: int) -> tuple[float, float]:
    """Largest σ_w² (<= critical) with q a fixed point, 0 <= σ_b² <= max_b, that absorbs a ×2 error in q."""
    r = {key: v[0] for key, v in _moments(phi, np.array([q])).items()}
    if not r["m"] > 0:
        raise ValueError(f"activation is zero on N(0, {q:g}) inputs; no init passes a signal")
    lo, hi = max(0.0, (q - max_b) / r["m"]), q / r["m"]
    if r["d"] > 0:
        hi = max(lo, min(hi, 1.0 / r["d"]))
    sws = np.linspace(lo, hi, 65)[1:] if lo == 0 else np.linspace(lo, hi, 65)
    ok = _holds_errors(phi, q, sws, q - sws * r["m"], depth)
    sw = float(sws[np.nonzero(ok)[0].max()]) if ok.any() else float(sws[0])
    return sw, max(0.0, q - sw * r["m"])


def _no_critical_reason(phi, k, max_b, target, depth) -> str:
    if k is not None:
        return ""
    return (f"no critical point in q ∈ [{target / Q_SPAN:g}, {target * Q_SPAN:g}] is admissible "
            f"({_why_not(phi, max_b, target, depth)})")


def _homogeneous_reason(k: float) -> str:
    if k == 0:
        return "φ' = 0 almost everywhere, so no gradient flows"
    if k <= 0.5:
        return "E[φ'²] diverges at the origin, so χ₁ = ∞"
    return "χ₁ = V'·k/(2k-1) < V' at every fixed point, so gradients vanish wherever the forward variance is stable"


def _finish(phi, sw, sb, q, mode, k, target, depth, why, chi1=None) -> AutoParams:
    x1 = theory.chi1(phi, sw, sb, q=q) if chi1 is None else chi1
    r = {key: v[0] for key, v in _moments(phi, np.array([q])).items()}
    slope = sw * r["s"]
    fwd_ok = bool(_holds_errors(phi, q, sw, sb, depth)[0])
    grad_ok = abs(depth * math.log(x1)) <= math.log(GRADIENT_WINDOW) if 0 < x1 < math.inf else False
    stable = bool(fwd_ok and grad_ok)
    if mode == "critical":
        verdict = f"critical: χ₁ = 1 at q* = {q:.3g} with σ_b² = {sb:.3g} (σ_w² = {sw:.3g})"
        if why:
            verdict += f"; {why}"
        if r["mean"] ** 2 > 0.5 * r["m"]:
            verdict += (f"; E[φ] = {r['mean']:.3g} makes {sw * r['mean'] ** 2 / q:.0%} of q* a per-unit offset "
                        "shared by all inputs")
    elif k is not None and k != 1.0 and stable:
        verdict = (f"homogeneous of degree {k:g}: within bounds for {depth} layers (χ₁ = {x1:.3g}, V' = {slope:.3g}) "
                   f"but not depth-stable ({_homogeneous_reason(k)}); deeper stacks need normalization or "
                   "another activation")
    elif k is not None and k != 1.0:
        verdict = (f"homogeneous of degree {k:g}: no depth-stable scalar init exists ({_homogeneous_reason(k)}; "
                   f"at q* = {q:.3g}: χ₁ = {x1:.3g}, V' = {slope:.3g}); use normalization, another activation, "
                   "or less depth")
    else:
        verdict = (f"variance: {why}; q* = {q:.3g} kept with σ_w² = {sw:.3g}, σ_b² = {sb:.3g}, χ₁ = {x1:.3g} "
                   f"(gradient norms ×{x1 ** (depth / 2):.2g} over {depth} layers"
                   f"{'' if fwd_ok else ', forward variance not held'})")
    return AutoParams(sigma_w2=float(sw), sigma_b2=float(sb), q_star=float(q), chi1=float(x1), mode=mode,
                      stable=stable, verdict=verdict, degree=k, slope=float(slope), mean=float(r["mean"]),
                      shared_fraction=float((sw * r["mean"] ** 2 + sb) / q), depth=depth, target_q=target)


ROLES = ("input", "hidden", "output")


@torch.no_grad()
def init_linear_(weight: Tensor, bias: Optional[Tensor], params: AutoParams, *, role: str = "hidden",
                 generator: Optional[torch.Generator] = None, input_var: float = 1.0) -> None:
    """Draw a layer's weights N(0, σ²/fan_in) and biases N(0, σ_b²) in place (torch layout).

    fan_in = weight[0].numel() (``(out, in, *kernel)``). By ``role``:
      * "hidden": σ² = ``params.sigma_w2``, Var(b) = ``params.sigma_b2``;
      * "input": σ² = (q* - σ_b²) / ``input_var``, Var(b) = σ_b²: inputs with per-feature second
        moment ``input_var`` land on q* at the first layer;
      * "output" (the classifier, no φ after it): σ² = 1 on its input (LeCun), bias 0.

    Example: ``init_linear_(fc.weight, fc.bias, auto_init_params("tanh"), generator=g)``.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose from: {', '.join(ROLES)}")
    if weight.dim() < 2:
        raise ValueError(f"weight must have at least 2 dimensions (out, in, ...), got shape {tuple(weight.shape)}")
    fan_in = weight[0].numel()
    if role == "hidden":
        s2, b2 = params.sigma_w2, params.sigma_b2
    elif role == "input":
        s2, b2 = params.sigma_w2_input / _check_positive("input_var", input_var), params.sigma_b2
    else:
        s2, b2 = 1.0, 0.0
    weight.normal_(0.0, math.sqrt(s2 / fan_in), generator=generator)
    if bias is not None:
        if b2 > 0:
            bias.normal_(0.0, math.sqrt(b2), generator=generator)
        else:
            bias.zero_()


def init_mlp_(model: nn.Module, params: AutoParams, *, generator: Optional[torch.Generator] = None,
              input_var: float = 1.0) -> nn.Module:
    """Initialize every ``nn.Linear`` of an MLP (e.g. ``initlab.mlp``) in place; returns the model.

    Layers in ``named_modules`` order: the first is "input", the last "output" (the classifier),
    the rest "hidden" (see :func:`init_linear_`). A single Linear is an output layer.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        role = "output" if i == len(linears) - 1 else ("input" if i == 0 else "hidden")
        init_linear_(lin.weight, lin.bias, params, role=role, generator=generator, input_var=input_var)
    return model


def measure_ratios(model: nn.Module, inputs: Tensor, labels: Tensor) -> tuple[float, float]:
    """(forward ratio, gradient ratio) of an MLP on one batch: the depth-stability targets.

    forward = RMS of the last hidden layer's pre-activations / RMS of the first layer's;
    gradient = ‖∂L/∂W‖ of the first Linear / that of the last hidden Linear (the one before the
    classifier), L = mean cross-entropy of ``labels`` (random labels make the per-example output
    gradients uncorrelated, unlike ``sum(outputs)``, whose identical output gradients add up
    coherently wherever the examples' activations are correlated). NaN when a value is not finite.
    Parameters' ``.grad`` are left untouched.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) < 3:
        raise ValueError(f"need an MLP with at least 2 hidden Linear layers and a classifier, got {len(linears)} Linear")
    first, last = linears[0], linears[-2]
    pre = {}
    hooks = [m.register_forward_hook(lambda mod, args, out: pre.__setitem__(mod, out)) for m in (first, last)]
    try:
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(inputs), labels)
            g_first, g_last = torch.autograd.grad(loss, [first.weight, last.weight])
    finally:
        for h in hooks:
            h.remove()
    rms = lambda t: t.detach().double().pow(2).mean().sqrt()  # noqa: E731
    ratios = float(rms(pre[last]) / rms(pre[first])), float(g_first.double().norm() / g_last.double().norm())
    return tuple(r if math.isfinite(r) else math.nan for r in ratios)
