"""Structured (identity-like) schemes: ``eye_``, ``dirac_``, ZerO's ``zero_hadamard_`` and
``partial_identity_``, and ``delta_orthogonal_``.

Shapes are read in torch's layout ``(out, in, *kernel)``; a ConvTranspose weight is stored
``(in, out/groups, *kernel)``, so there the roles of the two channel dimensions swap (a square
layer is unaffected). A grouped conv's weight ``(out, in/groups, *kernel)`` is treated as one
``(out, in/groups)`` matrix per tap, except by ``dirac_`` which takes ``groups`` explicitly.

``eye_``, ``dirac_``, ``partial_identity_`` and ``zero_hadamard_`` are deterministic: they accept a
``generator`` so every scheme has the same signature, and ignore it. ``delta_orthogonal_`` draws
its orthogonal matrix from the generator. Every function modifies its argument in place under
``torch.no_grad()`` and raises a one-line ValueError for shapes it does not define.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from initlab.schemes.functions import check_number, orthogonal_
from initlab.schemes.registry import register_scheme


def _kernel_centre(weight: Tensor, scheme: str) -> tuple[int, ...]:
    """Index of the spatial centre of an odd kernel ``(out, in, *kernel)``; ValueError otherwise."""
    if weight.dim() not in (3, 4, 5):
        raise ValueError(
            f"{scheme} needs a Conv1d/2d/3d weight (out, in, *kernel) with 3 to 5 dimensions, "
            f"got shape {tuple(weight.shape)}"
        )
    kernel = tuple(weight.shape[2:])
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"{scheme} needs odd kernel sizes (a centre tap), got kernel {kernel}")
    return tuple(k // 2 for k in kernel)


def _matrix_or_centre(weight: Tensor, scheme: str, matrix: Tensor) -> Tensor:
    """Write the ``(out, in)`` ``matrix`` into a 2-D weight, or at the centre tap of a conv weight."""
    with torch.no_grad():
        if weight.dim() == 2:
            return weight.copy_(matrix)
        centre = _kernel_centre(weight, scheme)
        weight.zero_()
        weight[(slice(None), slice(None), *centre)] = matrix.to(weight.dtype)
        return weight


def _channels(weight: Tensor, scheme: str) -> tuple[int, int]:
    """(out, in) of a 2-D weight or of a conv weight with odd kernel sizes; ValueError otherwise."""
    if weight.dim() not in (2, 3, 4, 5):
        raise ValueError(f"{scheme} needs a 2-D weight (out, in) or a Conv1d/2d/3d weight (out, in, *kernel), "
                         f"got shape {tuple(weight.shape)}")
    if weight.dim() > 2:
        _kernel_centre(weight, scheme)
    return int(weight.shape[0]), int(weight.shape[1])


def _partial_identity(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """I* of ZerO's Definition 1: (I, 0), I, or (I, 0)ᵀ, i.e. ones on the main diagonal."""
    return torch.eye(rows, cols, dtype=dtype, device=device)


def hadamard_block(rows: int, cols: int, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Tensor:
    """The top-left ``rows × cols`` block of a Sylvester Hadamard matrix, entries ±1.

    H_0 = [1], H_m = [[H_{m-1}, H_{m-1}], [H_{m-1}, -H_{m-1}]] (ZerO's Definition 2), whose entry
    (i, j) is (-1)^popcount(i AND j); only the block is built, so a 3000 × 20 block costs 3000·20
    entries, not 4096². H_m H_mᵀ = 2^m I.

    Args:
        rows, cols: block size, >= 0.
        dtype, device: of the result.
    """
    i = torch.arange(rows, device=device).unsqueeze(1)
    j = torch.arange(cols, device=device).unsqueeze(0)
    both = i & j
    parity = torch.zeros_like(both)
    while bool(both.any()):
        parity ^= both & 1
        both = both >> 1
    return (1 - 2 * parity).to(dtype)


# --------------------------------------------------------------------------- torch's identities


def eye_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Identity matrix, as far as the shape allows: W[i, i] = 1, zeros elsewhere.

    ``torch.nn.init.eye_`` semantics (2-D only): a Linear(n, n) passes its input through, a
    Linear(in, out) keeps the first min(in, out) coordinates. For conv weights use ``dirac``.

    Args:
        weight: 2-D tensor modified in place.
        generator: ignored (deterministic); accepted so every scheme has the same signature.
    """
    if weight.dim() != 2:
        raise ValueError(f"eye needs a 2-D weight (a Linear's (out, in)), got shape {tuple(weight.shape)}; "
                         "for conv weights use dirac")
    with torch.no_grad():
        return weight.copy_(_partial_identity(*weight.shape, weight.dtype, weight.device))


def dirac_(weight: Tensor, groups: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Dirac delta at the kernel centre: a Conv that passes its input channels through.

    ``torch.nn.init.dirac_(tensor, groups)`` semantics: the weight ``(out, in, *kernel)`` is split
    into ``groups`` blocks of out/groups rows; in each block W[g·o + d, d, centre] = 1 for
    d < min(out/groups, in), zeros elsewhere, centre = kernel // 2 per dimension (for an even
    kernel, the tap right of the middle). With zero padding and stride 1 the conv is then the
    identity on the first min(out/groups, in) channels of each group (Zagoruyko & Komodakis 2017,
    "DiracNets").

    Args:
        weight: 3-, 4- or 5-D tensor (Conv1d/2d/3d) modified in place.
        groups: number of output blocks, > 0, dividing ``out``.
        generator: ignored (deterministic); accepted so every scheme has the same signature.
    """
    if weight.dim() not in (3, 4, 5):
        raise ValueError(f"dirac needs a Conv1d/2d/3d weight (out, in, *kernel) with 3 to 5 dimensions, "
                         f"got shape {tuple(weight.shape)}; for Linear weights use eye")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
        raise ValueError(f"dirac groups must be a positive integer, got {groups!r}")
    out, cin = int(weight.shape[0]), int(weight.shape[1])
    if out % groups:
        raise ValueError(f"dirac needs out channels divisible by groups, got out={out}, groups={groups}")
    per_group = out // groups
    n = min(per_group, cin)
    centre = tuple(k // 2 for k in weight.shape[2:])
    with torch.no_grad():
        weight.zero_()
        d = torch.arange(n, device=weight.device)
        for g in range(groups):
            weight[(g * per_group + d, d, *centre)] = 1
        return weight


# --------------------------------------------------------------------------- ZerO


def partial_identity_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Partial identity I* (ZerO's baseline): ones on the diagonal of (out, in), at the kernel centre.

    I* = (I, 0) if out < in, I if out = in, (I, 0)ᵀ if out > in (Zhao, Schäfer & Anandkumar 2022,
    "ZerO Initialization", Definition 1). On a conv weight I* sits at the centre tap of an odd
    kernel, zeros elsewhere. A dimension-increasing layer (out > in) leaves out − in units at zero
    forever with ReLU: ZerO's Theorem 1 ("training degeneracy"), which ``zero_hadamard`` avoids.

    Args:
        weight: 2-D weight, or a Conv1d/2d/3d weight with odd kernel sizes; modified in place.
        generator: ignored (deterministic); accepted so every scheme has the same signature.
    """
    out, cin = _channels(weight, "partial_identity")
    return _matrix_or_centre(weight, "partial_identity", _partial_identity(out, cin, weight.dtype, weight.device))


def zero_hadamard_(weight: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """ZerO: identity, partial identity, or a scaled Hadamard block for dimension-increasing layers.

    Zhao, Schäfer & Anandkumar 2022, "ZerO Initialization: Initializing Neural Networks with only
    Zeros and Ones" (TMLR), Algorithm 1, for W of shape (P, Q) = (out, in):

    * P = Q: W = I;   P < Q: W = I* (the first P inputs pass through);
    * P > Q: W = c · I*_{P×2^m} H_m I*_{2^m×Q} = c · H_m[:P, :Q], m = ceil(log2 P),
      c = 2^{-(m-1)/2}, H_m the Sylvester Hadamard matrix of size 2^m.

    c² H_m H_mᵀ = 2 I, so when P = 2^m the columns are orthogonal with WᵀW = 2 I; for other P
    they are only nearly so. (The authors' MNIST notebook scales by 2^{-m/2} instead, i.e.
    WᵀW = I; this follows the paper.) On a conv weight the matrix sits at the centre tap of an
    odd kernel, zeros elsewhere (Algorithm 2). Fully deterministic: no random numbers.

    Args:
        weight: 2-D weight, or a Conv1d/2d/3d weight with odd kernel sizes; modified in place.
        generator: ignored (deterministic); accepted so every scheme has the same signature.
    """
    p, q = _channels(weight, "zero_hadamard")
    if p <= q:
        matrix = _partial_identity(p, q, weight.dtype, weight.device)
    else:
        m = math.ceil(math.log2(p))
        c = 2.0 ** (-(m - 1) / 2)
        matrix = c * hadamard_block(p, q, dtype=torch.float64, device=weight.device)
    return _matrix_or_centre(weight, "zero_hadamard", matrix.to(weight.dtype))


# --------------------------------------------------------------------------- delta-orthogonal


def delta_orthogonal_(weight: Tensor, gain: float = 1.0, *, generator: torch.Generator | None = None) -> Tensor:
    """Delta-orthogonal: a random orthogonal (out, in) matrix at the kernel centre, zeros elsewhere.

    Xiao, Bahri, Sohl-Dickstein, Schoenholz & Pennington 2018, "Dynamical Isometry and a Mean
    Field Theory of CNNs: How to Train 10,000-Layer Vanilla Convolutional Neural Networks",
    Algorithm 2: K[:, :, centre] = gain · H with HᵀH = I (Haar-distributed, from the QR of a
    Gaussian matrix: see ``orthogonal_``), so the conv is an isometry times ``gain`` on the
    centre tap and the input-output Jacobian of a deep tanh CNN at σ_w² = gain² = 1 stays well
    conditioned. Needs in <= out and odd kernel sizes; torch stores the weight as
    (out, in, *kernel), so WᵀW = gain² I over the centre slice.

    Args:
        weight: Conv1d/2d/3d weight (out, in, *kernel), modified in place.
        gain: multiplier, > 0 (σ_w = gain).
        generator: source of randomness.
    """
    gain = check_number("gain", gain, positive=True)
    centre = _kernel_centre(weight, "delta_orthogonal")
    out, cin = int(weight.shape[0]), int(weight.shape[1])
    if cin > out:
        raise ValueError(f"delta_orthogonal needs in_channels <= out_channels (an (out, in) matrix with "
                         f"orthonormal columns), got out={out}, in={cin}")
    if weight.numel() == 0:
        return weight
    with torch.no_grad():
        matrix = orthogonal_(torch.empty(out, cin, dtype=weight.dtype, device=weight.device), gain,
                             generator=generator)
        weight.zero_()
        weight[(slice(None), slice(None), *centre)] = matrix
        return weight


register_scheme("eye")(eye_)
register_scheme("dirac")(dirac_)
register_scheme("partial_identity")(partial_identity_)
register_scheme("zero_hadamard")(zero_hadamard_)
register_scheme("delta_orthogonal")(delta_orthogonal_)
