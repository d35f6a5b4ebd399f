"""What a model declares about its own structure for the whole-model schemes that read it.

A model carries a :class:`ResidualInfo` as ``model.residual`` (the zoo's residual models do; your own
can too), and ``fixup``, ``skipinit``, ``rezero`` and ``gpt2`` (:mod:`initlab.schemes.residual`) read it
through :func:`residual_info`. It lives with the schemes, below the models that fill it in.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResidualInfo:
    """Where the residual branches of a model are.

    ``branches[i]`` lists the qualified names (``named_modules``) of the weight layers of branch
    i in forward order; its last entry is the branch-final layer. ``gates[i]`` is branch i's
    scalar multiplier (a :class:`Scalar`) or None; ``biases[i]`` Fixup's scalar biases of branch
    i (empty unless built with ``fixup=True``); ``classifier`` is the output layer. ``kind``
    names the residual sum: "block" (one branch per block) or "transformer" (attention and MLP
    branches, GPT-2's ``c_proj`` layers being branch-final).
    """

    branches: tuple[tuple[str, ...], ...]
    gates: tuple[str | None, ...]
    biases: tuple[tuple[str, ...], ...]
    classifier: str
    kind: str = "block"

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def branch_final(self) -> tuple[str, ...]:
        return tuple(b[-1] for b in self.branches)

    @property
    def branch_depth(self) -> int:
        """m, the weight layers per branch (the largest, if branches differ)."""
        return max((len(b) for b in self.branches), default=0)


def residual_info(model) -> ResidualInfo | None:
    """The model's :class:`ResidualInfo` (zoo residual models carry one as ``model.residual``), or None."""
    info = getattr(model, "residual", None)
    return info if isinstance(info, ResidualInfo) else None
