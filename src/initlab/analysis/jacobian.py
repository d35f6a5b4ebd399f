"""Singular values of a model's input-output Jacobian: ``jacobian_spectrum``.

Dynamical isometry (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017, "Resurrecting the
sigmoid in deep learning through dynamical isometry: theory and practice") asks for more than a
preserved mean: *all* singular values of J = ∂f(x)/∂x should sit near 1. Pennington et al. track
the mean squared singular value χ = tr(JJᵀ)/N (≈ 1 at criticality) and the spread of the
distribution around it; Xiao et al. 2018 use the same spectrum for CNNs (delta-orthogonal vs
Gaussian kernels).

What is measured. ``example`` is a batch ``(N, *input_shape)``; the first ``max_examples``
examples are fed one at a time (a batch of one), so J_i is the ``(out_dim, in_dim)`` Jacobian of
the flattened output with respect to the flattened input of example i. The model runs as it is
(train or eval mode): call ``model.eval()`` first for BatchNorm or Dropout. Each example
contributes k = min(in_dim, out_dim) singular values (the others are structurally zero); the
spectra of the examples are pooled with equal mass.

How. Exactly, when in_dim·out_dim <= ``exact_max``: J is built from min(in, out) vector-Jacobian
(or Jacobian-vector) products, ``chunk`` of them per backward pass of the replicated example (see
``_Maps``), and its singular values taken in float64. Otherwise by stochastic Lanczos quadrature
(Golub & Meurant; Ubaru, Chen & Saad 2017, "Fast estimation of tr(f(A)) via stochastic Lanczos
quadrature"): ``n_vectors`` Lanczos runs of ``n_steps`` steps, with full reorthogonalization, on
the smaller Gram matrix G (JJᵀ or JᵀJ, k × k), from Gaussian start vectors drawn from
``generator``. Each run gives Ritz values θ_j with weights τ_j (the squared first components of
the tridiagonal's eigenvectors, summing to 1): an n_steps-node Gauss quadrature of the spectral
distribution of G. Σ τ_j θ_j = v̂ᵀGv̂ exactly, an unbiased estimate of tr(G)/k with variance
2(k·Σλ² − (Σλ)²)/(k²(k + 2)) per run; the largest Ritz value converges to λ_max from below within
a few dozen steps, the smallest approaches λ_min from above (so ``condition`` is then a lower
bound); interior quantiles are exact in law when n_steps = k and smeared by the quadrature when
n_steps << k, most for spectra spread over decades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

PERCENTILES = (0.05, 0.95)  # the quantiles whose ratio ``decades`` measures


@dataclass(frozen=True)
class JacobianSpectrum:
    """The pooled singular-value distribution of input-output Jacobians, and its summaries.

    Spread statistics (``min``, ``condition``, ``p5``, ``p95``, ``decades``) are over the
    non-negligible part of the spectrum, σ > ``threshold`` = rtol·σ_max; ``negligible`` says how
    much mass lies at or below it (a collapsed direction, or float round-off).
    """

    singular_values: Tensor  # float64, 1-D, descending: exact σ of every example, or Ritz values' sqrt
    weights: Tensor  # float64, same length, sums to 1: each value's mass in the pooled distribution
    mean_sq: float  # χ = Σ w σ²: mean squared singular value, tr(JJᵀ)/min(in, out) averaged over examples
    max: float  # largest σ (Lanczos: a lower bound that converges fast)
    min: float  # smallest non-negligible σ (Lanczos: an upper bound)
    condition: float  # max / min
    p5: float  # weighted 5th percentile of the non-negligible σ
    p95: float  # weighted 95th percentile of the non-negligible σ
    decades: float  # log10(p95 / p5): width of the middle 90% of the spectrum, in decades
    negligible: float  # fraction of the mass with σ <= threshold
    threshold: float  # rtol · max
    method: str  # "exact" | "lanczos"
    n_examples: int
    in_dim: int
    out_dim: int
    per_example_mean_sq: tuple[float, ...]  # χ of each example

    def as_dict(self) -> dict[str, float | int | str]:
        """The scalar fields (no tensors), for a table row or JSON."""
        return {
            "mean_sq": self.mean_sq, "max": self.max, "min": self.min, "condition": self.condition,
            "p5": self.p5, "p95": self.p95, "decades": self.decades, "negligible": self.negligible,
            "method": self.method, "n_examples": self.n_examples, "in_dim": self.in_dim, "out_dim": self.out_dim,
        }


# --------------------------------------------------------------------------- linear maps of one example


class _Maps:
    """Batches of Jᵀu and Jv for one example x, from one forward pass.

    The example is replicated ``batch`` times and run as one batch, so ``batch`` products cost
    one ordinary backward pass with the model's own batched kernels (vmap's batching rules are
    missing or slow for several conv ops). That needs the batch rows not to interact: checked
    once (``independent``); a model that couples them (BatchNorm in train mode) is rebuilt with
    batch 1 and the products then run one at a time. J·v uses the double-backward trick:
    g(d) = Jᵀd is linear in d, so ∂(g·v)/∂d = Jv.
    """

    def __init__(self, model: nn.Module, x: Tensor, batch: int) -> None:
        self.model, self.batch = model, batch
        self.x = x.detach().expand(batch, *x.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            y = model(self.x)
        if not isinstance(y, Tensor):
            raise ValueError(f"jacobian_spectrum needs a model returning one tensor, got {type(y).__name__}")
        if y.dim() == 0 or y.shape[0] != batch:
            raise ValueError(f"jacobian_spectrum needs a model whose output keeps the batch dimension first; "
                             f"a batch of {batch} gave output shape {tuple(y.shape)}")
        self.y = y.reshape(batch, -1)
        self.in_dim, self.out_dim = self.x[0].numel(), self.y.shape[1]
        self.dtype = y.dtype
        self._g: Tensor | None = None
        self._dummy: Tensor | None = None

    def _apply(self, fn: Callable[[Tensor], Tensor | None], rows: Tensor, out_dim: int) -> Tensor:
        """``fn`` on ``rows`` (n, d) in padded batches of ``self.batch``; (n, out_dim)."""
        results = []
        for i in range(0, len(rows), self.batch):
            part = rows[i:i + self.batch].to(self.dtype)
            padded = torch.zeros(self.batch, part.shape[1], dtype=self.dtype, device=self.x.device)
            padded[:len(part)] = part
            got = fn(padded)
            zeros = torch.zeros(len(part), out_dim, dtype=self.dtype, device=self.x.device)
            results.append(zeros if got is None else got.reshape(self.batch, -1)[:len(part)])
        return torch.cat(results)

    def vjp(self, u: Tensor) -> Tensor:
        """Jᵀu for each row of ``u`` (n, out_dim); returns (n, in_dim)."""
        def one(c: Tensor) -> Tensor | None:
            if not self.y.requires_grad:
                return None
            with torch.enable_grad():
                return torch.autograd.grad(self.y, self.x, c, retain_graph=True, allow_unused=True)[0]
        return self._apply(one, u, self.in_dim)

    def jvp(self, v: Tensor) -> Tensor:
        """Jv for each row of ``v`` (n, in_dim); returns (n, out_dim)."""
        if self._g is None and self.y.requires_grad:
            with torch.enable_grad():
                self._dummy = torch.zeros_like(self.y, requires_grad=True)
                g = torch.autograd.grad(self.y, self.x, self._dummy, create_graph=True, allow_unused=True)[0]
                self._g = g.reshape(self.batch, -1) if g is not None else None

        def one(c: Tensor) -> Tensor | None:
            if self._g is None or not self._g.requires_grad:
                return None
            with torch.enable_grad():
                return torch.autograd.grad(self._g, self._dummy, c, retain_graph=True, allow_unused=True)[0]
        return self._apply(one, v, self.out_dim)

    def independent(self) -> bool:
        """True if a cotangent on batch row 0 leaves the other rows' input gradients exactly zero."""
        if self.batch == 1:
            return True
        u = torch.zeros(self.batch, self.out_dim, dtype=self.dtype, device=self.x.device)
        u[0] = torch.linspace(-1.0, 1.0, self.out_dim, dtype=self.dtype, device=self.x.device) + 0.5
        if not self.y.requires_grad:
            return True
        with torch.enable_grad():
            g = torch.autograd.grad(self.y, self.x, u, retain_graph=True, allow_unused=True)[0]
        return g is None or not bool(g[1:].any())


def _maps(model: nn.Module, x: Tensor, batch: int) -> _Maps:
    maps = _Maps(model, x, batch)
    return maps if maps.independent() else _Maps(model, x, 1)


def _exact(model: nn.Module, x: Tensor, chunk: int, probe: _Maps) -> Tensor:
    """σ of J in float64, from min(in, out) products, ``chunk`` per backward pass."""
    n = min(probe.in_dim, probe.out_dim)
    maps = _maps(model, x, min(chunk, n)) if n > 1 else probe
    reverse = maps.out_dim <= maps.in_dim
    eye = torch.eye(n, dtype=maps.dtype, device=maps.x.device)
    rows = maps.vjp(eye) if reverse else maps.jvp(eye)  # J (out × in) or Jᵀ (in × out)
    return torch.linalg.svdvals(rows.to(torch.float64))


def _lanczos(gram: Callable[[Tensor], Tensor], n: int, steps: int, starts: Tensor) -> tuple[Tensor, Tensor]:
    """Ritz values and Gauss-quadrature weights of the PSD operator ``gram`` (n × n), one run per start.

    ``gram`` maps a batch (r, n) of vectors to (r, n); the r runs advance in lockstep. Returns
    (r, m) Ritz values and weights; a run whose Krylov space closes early (β ≈ 0, the quadrature
    is then exact) gets zero weight on its unused slots.
    """
    m = min(steps, n)
    r = len(starts)
    basis = torch.zeros(r, m, n, dtype=torch.float64, device=starts.device)
    basis[:, 0] = starts / starts.norm(dim=1, keepdim=True)
    alpha = torch.zeros(r, m, dtype=torch.float64)
    beta = torch.zeros(r, max(m - 1, 0), dtype=torch.float64)
    length = torch.full((r,), m, dtype=torch.long)  # steps each run keeps
    live = torch.ones(r, dtype=torch.bool)
    for k in range(m):
        w = gram(basis[:, k])
        alpha[:, k] = (w * basis[:, k]).sum(1).cpu()
        if k == m - 1:
            break
        q = basis[:, :k + 1]  # (r, k+1, n): full reorthogonalization (holds the α, β terms), twice
        for _ in range(2):
            w = w - torch.einsum("rkn,rk->rn", q, torch.einsum("rkn,rn->rk", q, w))
        b = w.norm(dim=1).cpu()
        scale = alpha[:, :k + 1].abs().amax(1).clamp_min(1e-300)
        closing = live & (b <= 1e-10 * scale)
        length[closing] = k + 1
        live &= ~closing
        if not bool(live.any()):
            break
        beta[:, k] = torch.where(live, b, torch.zeros_like(b))
        basis[:, k + 1] = torch.where(live.to(w.device)[:, None], w / b.to(w.device).clamp_min(1e-300)[:, None], 0.0)
    thetas, weights = torch.zeros(r, m, dtype=torch.float64), torch.zeros(r, m, dtype=torch.float64)
    for i in range(r):
        j = int(length[i])
        t = torch.diag(alpha[i, :j])
        if j > 1:
            t = t + torch.diag(beta[i, :j - 1], 1) + torch.diag(beta[i, :j - 1], -1)
        theta, vecs = torch.linalg.eigh(t)
        thetas[i, :j], weights[i, :j] = theta.clamp_min(0.0), vecs[0] ** 2
    return thetas, weights


def _weighted_quantile(values: Tensor, weights: Tensor, p: float) -> float:
    """Smallest value whose cumulative weight reaches p (the inverted-CDF quantile)."""
    order = torch.argsort(values)
    cum = torch.cumsum(weights[order], 0) / weights.sum()
    idx = int(torch.searchsorted(cum, torch.tensor(p - 1e-12, dtype=cum.dtype)))
    return float(values[order][min(idx, len(values) - 1)])


# --------------------------------------------------------------------------- public


def jacobian_spectrum(
    model: nn.Module,
    example: Tensor,
    *,
    max_examples: int = 4,
    exact_max: int = 1 << 22,
    n_vectors: int = 4,
    n_steps: int = 48,
    rtol: float | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 256,
) -> JacobianSpectrum:
    """Singular values of the input-output Jacobian of ``model`` at the first examples of a batch.

    χ = mean σ² (Pennington, Schoenholz & Ganguli 2017) and the spread of σ; see the module
    docstring for what is pooled and how the exact and Lanczos paths work.

    Args:
        model: maps a batch ``(1, *input_shape)`` to one tensor (any shape; flattened).
        example: floating-point batch ``(N, *input_shape)``, N >= 1.
        max_examples: use the first min(N, max_examples) examples, each as a batch of one.
        exact_max: compute J exactly when in_dim·out_dim <= this many entries (0 forces Lanczos).
        n_vectors: Lanczos start vectors per example.
        n_steps: Lanczos steps per start vector (capped at min(in_dim, out_dim)).
        rtol: σ <= rtol·σ_max counts as negligible; default max(in_dim, out_dim)·eps of the
            model's dtype (numpy's ``matrix_rank`` rule: the float round-off floor of J).
        generator: draws the Lanczos start vectors; None uses one seeded with 0 (reproducible).
        chunk: products batched at a time in the exact path (memory: chunk × activations).

    Returns:
        A frozen :class:`JacobianSpectrum`; ``.as_dict()`` gives its scalars.

    Example:
        >>> spec = jacobian_spectrum(nn.Linear(8, 8), torch.randn(2, 8))
        >>> spec.mean_sq, spec.decades
    """
    if not isinstance(example, Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise ValueError(f"example must be a batch tensor (N, *input_shape) with N >= 1, got "
                         f"{tuple(example.shape) if isinstance(example, Tensor) else type(example).__name__}")
    if not example.is_floating_point():
        raise ValueError(f"example must be floating point to differentiate through, got {example.dtype}")
    for name, value, least in (("max_examples", max_examples, 1), ("n_vectors", n_vectors, 1),
                               ("n_steps", n_steps, 1), ("chunk", chunk, 1), ("exact_max", exact_max, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if rtol is not None and (not isinstance(rtol, (int, float)) or not 0 <= rtol < 1):
        raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    values, weights, chis = [], [], []
    method, in_dim, out_dim, eps = "exact", 0, 0, 0.0
    n = min(int(example.shape[0]), max_examples)
    for i in range(n):
        x = example[i:i + 1]
        probe = _Maps(model, x, 1)
        in_dim, out_dim, dtype = probe.in_dim, probe.out_dim, probe.dtype
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps
        k = min(in_dim, out_dim)
        if k == 0:
            raise ValueError(f"the Jacobian is empty: input has {in_dim} and output {out_dim} elements")
        if in_dim * out_dim <= exact_max:
            s = _exact(model, x, chunk, probe)
            w = torch.full_like(s, 1.0 / len(s))
        else:
            method = "lanczos"
            maps = _maps(model, x, n_vectors)

            def gram(v: Tensor, maps: _Maps = maps) -> Tensor:
                if maps.out_dim <= maps.in_dim:  # JJᵀ (out × out)
                    return maps.jvp(maps.vjp(v)).to(torch.float64)
                return maps.vjp(maps.jvp(v)).to(torch.float64)  # JᵀJ (in × in)

            starts = torch.randn(n_vectors, k, generator=gen, dtype=torch.float64).to(probe.x.device)
            theta, tau = _lanczos(gram, k, n_steps, starts)
            s, w = theta.sqrt().flatten(), tau.flatten() / n_vectors
            s, w = s[w > 0], w[w > 0]
        s, w = s.cpu(), w.cpu()
        values.append(s)
        weights.append(w / n)
        chis.append(float((w * s**2).sum() / w.sum()))

    s, w = torch.cat(values), torch.cat(weights)
    order = torch.argsort(s, descending=True)
    s, w = s[order], w[order] / w.sum()
    top = float(s[0]) if len(s) else 0.0
    tol = rtol if rtol is not None else max(in_dim, out_dim) * eps
    threshold = tol * top
    keep = s > threshold
    negligible = float(w[~keep].sum())
    if bool(keep.any()):
        ks, kw = s[keep], w[keep]
        low = float(ks[-1])
        p5, p95 = (_weighted_quantile(ks, kw, p) for p in PERCENTILES)
        decades = math.log10(p95 / p5)
        condition = top / low
    else:  # J is zero (or below round-off) everywhere
        low = p5 = p95 = 0.0
        decades = condition = math.nan
    return JacobianSpectrum(
        singular_values=s, weights=w, mean_sq=float((w * s**2).sum()), max=top, min=low,
        condition=condition, p5=p5, p95=p95, decades=decades, negligible=negligible,
        threshold=threshold, method=method, n_examples=n, in_dim=in_dim, out_dim=out_dim,
        per_example_mean_sq=tuple(chis),
    )
