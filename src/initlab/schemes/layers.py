"""Per-layer-type handling: which tensors of a layer get a scheme, in which blocks, with which fans.

A handler turns one module into ``Target``s: a tensor, or a block of its rows, with its role
(weight / bias / other), its fans, and the layer's own default for when no rule applies. Fan
conventions (fan_in preserves the forward variance, fan_out the backward one):

=====================  =========================================  =====================================
layer                  fan_in, fan_out                            vs ``torch.nn.init``'s reading
=====================  =========================================  =====================================
Linear                 in, out                                    same
Bilinear (out,i1,i2)   i1·i2, out·i2                              same (y_k = Σ x1_i W_kij x2_j sums
                                                                  i1·i2 terms; fan_out is the one
                                                                  of the gradient to input 1)
ConvNd (out,in/g,*k)   (in/g)·∏k, out·∏k                          same (fan_out ignores groups and
                                                                  stride, kept for parity)
ConvTransposeNd        (in/g)·∏(k/s), (out/g)·∏k                  differs: torch reads dim 1 as
(in,out/g,*k)                                                     fan_in, giving (out/g)·∏k and in·∏k;
                                                                  an output element sums over in/g
                                                                  channels and ∏(k/s) taps on
                                                                  average, an input's gradient over
                                                                  out/g channels and ∏k taps
Embedding(Bag)         1, embedding_dim                           differs (torch: dim, num): a lookup
(num, dim)                                                        copies one row, so Var(out) = Var(W);
                                                                  the padding row stays zero
RNN/LSTM/GRU + cells   each gate's (hidden, in) block: in, hidden differs: torch reads the stacked
                       (weight_ih, weight_hh, _reverse; also      (G·hidden, in) matrix, fan_out G·hidden
                       weight_hr (proj, hidden): hidden, proj)
MultiheadAttention     q, k, v blocks of in_proj_weight: E, E;    differs for in_proj_weight (torch:
                       q/k/v_proj_weight (E, kdim): kdim, E       E, 3E); out_proj is a child Linear
norms, PReLU           none (elementwise); layer default:         -
                       weight 1 (PReLU: its ``init``), bias 0
=====================  =========================================  =====================================

An EmbeddingBag's fans are per looked-up row: a ``mode="sum"`` bag of n rows has n·Var(W) (and
``"mean"`` Var(W)/n for distinct rows). ``pytorch_default`` alone reads shapes torch's way, by
design: it reproduces what Linear, ConvNd and ConvTransposeNd do at construction.

Gate order is torch's: LSTM i, f, g, o; GRU r, z, n. Biases have no fans; they follow the bias
policy of the scheme of the weight (block) they belong to (``Target.weight``): in_proj_bias's q/k/v
blocks follow q/k/v, ``bias_k`` / ``bias_v`` follow k / v, an LSTM's ``bias_ih[gate f]`` follows
``weight_ih[gate f]``. Parameters a handler does not claim (of an unknown module, or extra ones of
a subclass) become "other" targets with torch's fans: only a rule naming them covers them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from initlab.core.layer_kinds import RAW_ROLES, fused_blocks, is_norm_like, is_transposed_linear, raw_role
from initlab.schemes.functions import fan_in_and_fan_out
from initlab.schemes.parametrized import Slot

# Classes in torch.nn with parameters that initialize deliberately leaves to explicit rules.
# tests/test_coverage.py fails for any other class with parameters that ends up uncovered.
UNSUPPORTED: dict[str, str] = {
    "ParameterList": "holds raw parameters of unknown role; name them in a rule (e.g. 'params.0')",
    "ParameterDict": "holds raw parameters of unknown role; name them in a rule (e.g. 'params.key')",
}

ROLES = ("weight", "bias", "other")


@dataclass(frozen=True)
class Target:
    """One tensor of a layer, or a block of its rows, that gets its own scheme."""

    name: str  # the module's attribute (slot) name: "weight", "in_proj_weight", "bias_ih_l0"
    role: str  # "weight" | "bias" | "other"
    rows: tuple[int, int] | None = None  # [start, stop) of dim 0 for a block; None: whole tensor
    block: str = ""  # label of the block, shown as name[block]: "q", "gate f"
    fans: tuple[float, float] | None = None  # (fan_in, fan_out); None: has none (bias, scale)
    default: float | None = None  # the layer's own value when no rule applies (norm weight 1)
    star: bool = False  # the "*" default / single scheme covers it (a layer's main weight)
    weight: tuple[str, str] | None = None  # (name, block) of the weight whose bias policy applies
    recurrent: bool = False  # hidden-to-hidden weight: the ``recurrent`` option applies
    forget: str | None = None  # "ih" / "hh": an LSTM forget-gate bias block (``forget_bias``)
    padding_idx: int | None = None  # Embedding row kept at zero
    dim: int = 0  # the axis ``rows`` index: 1 for the column blocks of a transposed (in, out) weight
    default_scheme: str | None = None  # a scheme spec applied when no rule covers it (raw tokens: trunc_normal)
    keep: bool = False  # covered by keeping the model's own value (a layer scale)
    why: str = ""  # how the target was recognized, for the report ("transposed linear (in, out)")

    @property
    def label(self) -> str:
        return f"{self.name}[{self.block}]" if self.block else self.name


Handler = Callable[[nn.Module, dict[str, Slot]], list[Target]]
_HANDLERS: dict[type, Handler] = {}


def register_layer(*types: type) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler(module, slots) -> [Target, ...]`` for module classes.

    Lookup follows the MRO, so a subclass of ``nn.Linear`` gets the Linear handler; the
    subclass's extra parameters become "other" targets.
    """

    def decorator(fn: Handler) -> Handler:
        for t in types:
            _HANDLERS[t] = fn
        return fn

    return decorator


def handler_for(module: nn.Module) -> Handler | None:
    """The handler of the nearest class in ``type(module).__mro__`` that has one; for a class of another
    library, the handler of the layer it is recognized as (:mod:`initlab.core.layer_kinds`)."""
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    for recognize, handler in _RECOGNIZED:
        if recognize(module):
            return handler
    return None


def handled_types() -> tuple[type, ...]:
    """Module classes with a handler (their subclasses are handled too)."""
    return tuple(_HANDLERS)


def layer_targets(module: nn.Module, slots: dict[str, Slot], leaf: str = "") -> list[Target]:
    """Targets of every tensor in ``slots``: the handler's, then "other" for unclaimed ones.

    ``leaf`` is the module's own name in its parent (``"c_attn"``): a fused attention input projection
    by that name (:data:`initlab.core.layer_kinds.FUSED_QKV_NAMES`, output three times its input) gets
    q, k and v blocks, each with its own fans, as ``MultiheadAttention.in_proj_weight`` does. An
    unclaimed raw parameter whose name says its role (``cls_token``, ``pos_embed``, a layer scale
    ``gamma``) gets that role's default (:data:`initlab.core.layer_kinds.RAW_ROLES`).
    """
    handler = handler_for(module)
    targets = handler(module, slots) if handler else []
    targets = _split_fused(targets, leaf)
    claimed = {t.name for t in targets}
    for name, slot in slots.items():
        if name not in claimed:
            shape = slot.shape
            fans = fan_in_and_fan_out(shape) if len(shape) >= 2 else None
            role = raw_role(name, slot.read())
            if role is None:
                targets.append(Target(name, "other", fans=fans))
            else:
                scheme, why = RAW_ROLES[role]
                targets.append(Target(name, "other", fans=fans, default_scheme=scheme, keep=scheme is None, why=why))
    return targets


def _split_fused(targets: list[Target], leaf: str) -> list[Target]:
    weight = next((t for t in targets if t.name == "weight" and t.role == "weight" and t.fans and not t.rows), None)
    if weight is None or not leaf:
        return targets
    fan_in, fan_out = weight.fans
    if fused_blocks(leaf, fan_in, fan_out) != 3:
        return targets
    e = int(fan_out) // 3
    out = []
    for t in targets:
        if t is weight or (t.name == "bias" and t.role == "bias"):
            for i, part in enumerate("qkv"):
                out.append(replace(t, rows=(i * e, (i + 1) * e), block=part, dim=t.dim,
                                   fans=(fan_in, e) if t is weight else None,
                                   weight=None if t is weight else ("weight", part),
                                   why=f"fused q, k, v projection ({leaf}): three blocks"))
        else:
            out.append(t)
    return out


# --------------------------------------------------------------------------- handlers


def _weight_bias(slots: dict[str, Slot], fans: tuple[float, float] | None, **extra) -> list[Target]:
    out = []
    if "weight" in slots:
        out.append(Target("weight", "weight", fans=fans, star=True, **extra))
    if "bias" in slots:
        out.append(Target("bias", "bias", weight=("weight", "")))
    return out


@register_layer(nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _torch_layout(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    # (out, in, *kernel) or Bilinear's (out, in1, in2): torch's reading is the forward one
    return _weight_bias(slots, fan_in_and_fan_out(slots["weight"].shape) if "weight" in slots else None)


@register_layer(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    if "weight" not in slots:
        return _weight_bias(slots, None)
    in_ch, out_per_group, *kernel = slots["weight"].shape
    taps = math.prod(k / s for k, s in zip(kernel, module.stride))  # taps per output, on average
    fan_in = in_ch / module.groups * taps
    fan_out = out_per_group * math.prod(kernel)
    return _weight_bias(slots, (_tidy(fan_in), fan_out))


def _tidy(x: float) -> float:
    return int(x) if float(x).is_integer() else x


@register_layer(nn.Embedding, nn.EmbeddingBag)
def _embedding(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    if "weight" not in slots:
        return []
    pad = getattr(module, "padding_idx", None)
    return _weight_bias(slots, (1, slots["weight"].shape[1]), padding_idx=pad)


_NORMS = [_NormBase, nn.LayerNorm, nn.GroupNorm] + ([nn.RMSNorm] if hasattr(nn, "RMSNorm") else [])


@register_layer(*_NORMS)
def _norm(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    out = []
    if "weight" in slots:
        out.append(Target("weight", "weight", default=1.0))
    if "bias" in slots:
        out.append(Target("bias", "bias", default=0.0, weight=("weight", "")))
    return out


@register_layer(nn.PReLU)
def _prelu(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    return [Target("weight", "weight", default=float(module.init))] if "weight" in slots else []


_GATES = {4: ("i", "f", "g", "o"), 3: ("r", "z", "n"), 1: ("",)}  # torch's order: LSTM, GRU, RNN
_RNN_NAME = re.compile(r"(weight|bias)_(ih|hh|hr)(_l\d+)?(_reverse)?")


@register_layer(nn.RNNBase, nn.RNNCellBase)
def _recurrent(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    hidden = module.hidden_size
    weights, biases = [], []
    for name, slot in slots.items():
        m = _RNN_NAME.fullmatch(name)
        if not m:
            continue
        kind, which, layer, rev = m.groups()
        shape = slot.shape
        if which == "hr":  # LSTM projection (proj, hidden): an ordinary matrix
            weights.append(Target(name, "weight", fans=fan_in_and_fan_out(shape), star=True))
            continue
        gates = _GATES.get(shape[0] // hidden, ("",))  # unknown stacking: one block
        lstm = len(gates) == 4
        wname = f"weight_{which}{layer or ''}{rev or ''}"
        for g, gate in enumerate(gates):
            rows = (g * hidden, (g + 1) * hidden) if gate else None
            block = f"gate {gate}" if gate else ""
            if kind == "weight":
                fans = (shape[1], hidden if gate else shape[0])
                weights.append(Target(name, "weight", rows, block, fans=fans, star=True, recurrent=which == "hh"))
            else:
                biases.append(Target(name, "bias", rows, block, weight=(wname, block),
                                     forget=which if lstm and gate == "f" else None))
    return weights + biases


@register_layer(nn.MultiheadAttention)
def _attention(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    e = module.embed_dim
    out, refs = [], {}
    if "in_proj_weight" in slots:
        for i, part in enumerate("qkv"):
            out.append(Target("in_proj_weight", "weight", (i * e, (i + 1) * e), part, fans=(e, e), star=True))
            refs[part] = ("in_proj_weight", part)
    for part in "qkv":
        name = f"{part}_proj_weight"
        if name in slots:
            out.append(Target(name, "weight", fans=fan_in_and_fan_out(slots[name].shape), star=True))
            refs[part] = (name, "")
    if "in_proj_bias" in slots:
        for i, part in enumerate("qkv"):
            out.append(Target("in_proj_bias", "bias", (i * e, (i + 1) * e), part, weight=refs.get(part)))
    for part in "kv":
        if f"bias_{part}" in slots:  # an extra learned key / value appended to the sequence
            out.append(Target(f"bias_{part}", "bias", weight=refs.get(part)))
    return out


def _transposed_linear(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    # transformers' Conv1D: y = x W + b with W stored (in, out); its blocks are columns
    if "weight" not in slots:
        return _weight_bias(slots, None)
    fan_in, fan_out = slots["weight"].shape
    return _weight_bias(slots, (fan_in, fan_out), dim=1, why="transposed linear: weight stored (in, out)")


def _norm_like(module: nn.Module, slots: dict[str, Slot]) -> list[Target]:
    # an RMS/layer norm of another library, by its role (1-D scales of one length, "norm" or an epsilon)
    out = []
    for name in slots:
        scale = name in ("weight", "scale", "gamma", "g", "alpha")
        out.append(Target(name, "weight" if scale else "bias", default=1.0 if scale else 0.0,
                          weight=None if scale else next(((n, "") for n in slots if n in ("weight", "scale", "gamma")), None),
                          why=f"norm-like {type(module).__name__}: elementwise scale 1, shift 0"))
    return out


_RECOGNIZED: list[tuple[Callable[[nn.Module], bool], Handler]] = [
    (is_transposed_linear, _transposed_linear),
    (is_norm_like, _norm_like),
]

LAYER_TYPES: tuple[type, ...] = handled_types()


def is_lazy(module: nn.Module) -> bool:
    """True when ``module`` has parameters that a first forward pass has not materialized yet."""
    return any(torch.nn.parameter.is_lazy(p) for p in module.parameters(recurse=False))
