"""Claims turned into experiments with verdicts: the seed notebook's (Parts 1–2, :mod:`.seed`) and the
papers behind the modern inits (:mod:`.papers`: LSUV, Fixup, GPT-2, ZerO, delta-orthogonal, μP).

Every :class:`Claim` quotes its source verbatim and owns a check that runs in seconds (the bundled
8×8 digits set or Gaussian inputs, fixed ``torch.Generator`` seeds) and returns a
:class:`ClaimResult`: ``confirmed`` / ``refuted`` / ``depends`` (with the condition), one summary
sentence, the measured numbers and, where a picture helps, a PNG. Verdicts are computed from
the measurements against thresholds stated next to each check; nothing is hard-coded.

Registry in timm style (:mod:`.registry`): ``@register_claim(...)`` fills ``CLAIMS``; ``list_claims``
/ ``get_claim`` look them up; ``run_claims`` runs some or all of them and writes ``claims.json`` and
``claims.md`` (atomically, after every claim) plus the plots into ``out``. Imports flow one way:
the check modules import the registry, this package imports both (seed claims first, in seed order).
"""
from initlab.claims.registry import (  # noqa: F401
    CLAIMS,
    VERDICTS,
    CheckContext,
    Claim,
    ClaimResult,
    ClaimResults,
    get_claim,
    resolve_claims,
    list_claims,
    register_claim,
    run_claims,
    write_report,
)
from initlab.claims import seed  # noqa: E402,F401  (registers the seed's claims, in seed order)
from initlab.claims import papers  # noqa: E402,F401  (then the papers' claims)
