"""What the mean-field theory needs from a scheme: E[W²] of one weight entry, and an MLP's predicted profile.

Each registered scheme declares its own second moment (``register_scheme(..., second_moment=)``;
the built-in ones in :mod:`initlab.schemes.registry`), so the theory in :mod:`initlab.core.theory`
stays free of scheme names: :func:`predicted_variances` hands it ``weight_variance`` for one scheme.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import pandas as pd

from initlab.core import theory
from initlab.schemes.registry import get_scheme, list_schemes
from initlab.schemes.specs import as_spec


def weight_variance(scheme, fan_in: int, fan_out: int) -> float:
    """E[W²] of one weight entry under ``scheme`` (a name, spec text, ``SchemeSpec``, dict or ``Scheme``),
    analytically, torch layout, fans as given: the scheme's declared ``second_moment`` with its defaults
    merged under the given parameters. It is the second moment, which is what the variance map needs.

    Raises:
        ValueError: a fan that is not a positive integer, or a scheme without a closed form.
    """
    if isinstance(fan_in, bool) or isinstance(fan_out, bool) or not (fan_in > 0 and fan_out > 0):
        raise ValueError(f"fans must be positive, got fan_in={fan_in!r}, fan_out={fan_out!r}")
    sch, params = as_spec(scheme)
    if sch.second_moment is None:
        known = ", ".join(n for n in list_schemes() if get_scheme(n).second_moment is not None)
        raise ValueError(f"no analytic weight variance for scheme {sch.name!r}; known: {known}")
    p = {k: v for k, v in sch.params.items() if v is not inspect.Parameter.empty}
    p.update(sch.resolve_params(params))
    return float(sch.second_moment(p, fan_in, fan_out))


def predicted_variances(activation: theory.Activation, scheme, widths: Sequence[int], input_var: float = 1.0,
                        sigma_b2: float = 0.0) -> pd.DataFrame:
    """Mean-field forward variances and relative gradient norms of an MLP initialized by ``scheme``:
    :func:`initlab.core.theory.mlp_variances` with E[W²] = :func:`weight_variance` per layer (see there
    for the formulas and the columns)."""
    as_spec(scheme)  # an unknown scheme fails here, before any quadrature
    return theory.mlp_variances(activation, lambda fan_in, fan_out: weight_variance(scheme, fan_in, fan_out),
                                widths, input_var=input_var, sigma_b2=sigma_b2)
