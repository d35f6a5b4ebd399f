"""The tensors ``initialize`` plans: every module with parameters of its own, tied tensors once.

Shared by :mod:`initlab.schemes.apply` (which draws them) and :mod:`initlab.schemes.residual` (whose
model-level schemes name them in rules), so both read a model the same way.
"""

from __future__ import annotations

from torch import nn

from initlab.schemes.layers import Target, handler_for, is_lazy, layer_targets
from initlab.schemes.parametrized import Slot, is_parametrization_list, module_slots


def collect_units(module: nn.Module) -> tuple[list[tuple[str, nn.Module, dict[str, Slot], list[Target]]], dict[str, list[str]]]:
    """Every module with tensors to plan, its slots and targets; and the other names of tied tensors.

    A tensor shared by several modules (tied weights) is planned once. Its owner is the first layer of
    a known type holding it (else the first module), except that an embedding tied to an output projection (GPT-2's ``lm_head.weight`` is
    ``transformer.wte.weight``) is planned as the projection: its fans are the projection's, so that
    a fan-based scheme keeps the initial logits O(1) (as an embedding, fan_in = 1, they would be
    ~sqrt(width) times too large). Rules naming any of its names apply.
    """
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    named = []
    for mname, m in module.named_modules():
        if is_parametrization_list(m):
            continue  # its original* belong to the owner's parametrized slot
        if is_lazy(m):
            raise ValueError(
                f"{type(m).__name__} {mname or '(the model)'!r} has uninitialized lazy parameters; "
                "run one forward pass with a sample input before initialize"
            )
        slots = module_slots(m)
        named.append((mname, m, slots))
        for n, s in slots.items():
            for p in s.params:
                owners.setdefault(id(p), []).append((f"{mname}.{n}" if mname else n, m))
    chosen: dict[int, str] = {}  # id(param) -> the qualified name it is planned under
    aliases: dict[str, list[str]] = {}
    for pid, who in owners.items():
        pick = who[0]
        if len(who) > 1:  # a known layer over a raw holder (BERT's cls.predictions.bias is decoder.bias), and
            known = [w for w in who if handler_for(w[1]) is not None] or who  # a projection over an embedding
            pick = next((w for w in known if not isinstance(w[1], EMBEDDINGS)), known[0])
        chosen[pid] = pick[0]
        if len(who) > 1:
            aliases[pick[0]] = [q for q, _ in who if q != pick[0]]
    units = []
    for mname, m, slots in named:
        own = {n: s for n, s in slots.items()
               if all(chosen.get(id(p)) == (f"{mname}.{n}" if mname else n) for p in s.params)}
        if own:
            units.append((mname, m, own, layer_targets(m, own, mname.rpartition(".")[2])))
    return units, aliases


EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
