"""μP, the maximal-update parametrization, and its coordinate check.

Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
Transfer" (microsoft/mup). A width-``n`` network is parametrized relative to a *base width*
``n0`` (ratio ``r = n / n0``) so that every layer's activations move by Θ(1) per step at any width;
at ``r = 1`` μP is exactly the standard parametrization (SP) it was tuned in, and the learning rate
tuned at ``n0`` transfers to wider models. Each weight is classified by which of its dims grow with
width (torch layout ``(out, in)``):

======== =========================================== ============ =========== ===========
kind     what                                         init std     Adam lr     SGD lr
======== =========================================== ============ =========== ===========
input    fan_in finite, fan_out ∝ n (first Linear,    SP           η           η·r
         Embedding); also biases and norm vectors
         of width n
hidden   fan_in and fan_out ∝ n                       SP           η / r       η
output   fan_in ∝ n, fan_out finite (the readout)     SP₀ / r      η / r       η / r
fixed    no dim grows (the readout's bias)            SP           η           η
======== =========================================== ============ =========== ===========

SP₀ is SP's std at the base width (``gain/√fan_in0``), so the readout's std is SP's ``/√r``.
This is Table 3 of the paper written relative to the base width (mup's ``MuReadout`` output
multiplier ``1/r`` folded into the readout's init and learning rate, which for Adam and SGD gives
the same training trajectory). SP here is He normal (std ``gain/√fan_in``, gain √2) for every
Linear, N(0, 1) for an Embedding (torch's default), zero biases, norm layers at 1 and 0, one
global learning rate. ``readout_zero=True`` starts the readout at 0 (the paper's recommendation,
§D.2). Attention: μP scales the logits ``q·k`` by ``1/d_head`` instead of ``1/√d_head`` (written
``√d0/d`` so that the base width keeps SP's value); :func:`mup_parametrize` applies it by
replacing the ``forward`` of each zoo ``SelfAttention`` *instance* (the class is untouched;
:func:`restore_attention` undoes it). The zero-init of the query weights that mup also suggests is
not applied.

The coordinate check that shows it is :mod:`initlab.analysis.coordcheck`.
"""
from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from initlab.models.zoo import SelfAttention, Transformer
from initlab.schemes import initialize

KINDS = ("input", "hidden", "output", "fixed")
OPTIMIZERS = ("adam", "sgd")
PARAMETRIZATIONS = ("sp", "mup")
HE_GAIN = math.sqrt(2.0)
COORD_COLUMNS = ("parametrization", "width", "seed", "step", "layer", "l1")


@dataclass(frozen=True)
class ParamInfo:
    """One parameter under μP: its kind, fans (torch layout), width ratio, init and lr multiplier."""

    name: str
    kind: str  # input | hidden | output | fixed (see the module table)
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    ratio: float  # r = width / base width along the dim(s) that grow (1 for "fixed")
    init_std: float | None  # std of the normal draw; None: the layer's default (norm 1/0), 0: zeros
    lr_mult: float  # multiplies the global lr for this parameter


@dataclass
class MuPPlan:
    """What :func:`mup_parametrize` decided: per-parameter kinds, init stds and lr multipliers.

    ``rules`` is a rules mapping for :func:`initlab.initialize` (exact parameter names to
    ``normal(std=…)`` / ``zero``); :meth:`initialize` applies it; :meth:`param_groups` gives torch
    optimizer groups with the per-layer learning rates.
    """

    params: dict[str, ParamInfo]
    width: int
    base_width: int
    optimizer: str
    parametrization: str = "mup"
    readout_zero: bool = False
    attention_scale: float | None = None  # the q·k scale μP set on the attention modules, if any
    _model: nn.Module | None = field(default=None, repr=False)

    @property
    def rules(self) -> dict[str, str]:
        out = {}
        for p in self.params.values():
            if p.init_std is None or p.name.endswith("bias"):
                continue  # norm layers keep their default; biases follow their weight's scheme (zeros)
            out[p.name] = "zero" if p.init_std == 0 else f"normal(std={p.init_std!r})"
        return out

    def initialize(self, model: nn.Module | None = None, *, generator: torch.Generator | None = None) -> nn.Module:
        """Draw the plan's init into ``model`` (default: the model it was made for), in place."""
        model = self._model if model is None else model
        return initialize(model, self.rules, generator=generator)

    def param_groups(self, lr: float, model: nn.Module | None = None) -> list[dict[str, Any]]:
        """torch.optim parameter groups, one per distinct lr multiplier; each holds ``lr · mult``.

        Every parameter of the model is in exactly one group; groups also carry ``lr_mult`` and
        ``names`` (torch keeps extra keys). ``torch.optim.Adam(plan.param_groups(1e-3))``.
        """
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        model = self._model if model is None else model
        groups: dict[float, dict[str, Any]] = {}
        for name, p in model.named_parameters():
            if name not in self.params:
                raise ValueError(f"parameter {name!r} is not in this μP plan; make the plan for this model")
            mult = self.params[name].lr_mult
            g = groups.setdefault(mult, {"params": [], "lr": lr * mult, "lr_mult": mult, "names": []})
            g["params"].append(p)
            g["names"].append(name)
        return list(groups.values())

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([vars(p) for p in self.params.values()])


# ----------------------------------------------------------------------------- classification


def model_width(model: nn.Module) -> int:
    """The width of a zoo MLP (its hidden Linear layers) or transformer (its residual stream)."""
    if isinstance(model, Transformer):
        return model.embed.out_features
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)] if isinstance(model, nn.Sequential) else []
    if len(linears) >= 2 and len(linears) == sum(1 for m in model.children() if isinstance(m, nn.Linear)):
        widths = {m.out_features for m in linears[:-1]}
        if len(widths) == 1:
            return widths.pop()
    raise ValueError(f"μP with a base width needs a zoo mlp (depth ≥ 1, one width) or transformer, got "
                     f"{type(model).__name__}; pass base= a model of the same architecture at the base width instead")


def _grow_dims(model: nn.Module, width: int) -> dict[str, tuple[bool, ...]]:
    """Which dims of each parameter grow with width, from the zoo architecture (never from sizes alone)."""
    out: dict[str, tuple[bool, ...]] = {}
    if isinstance(model, Transformer):
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[0]
            if name.startswith("head."):
                out[name] = (False, True) if p.dim() == 2 else (False,)
            elif leaf == "embed":
                out[name] = (True, False) if p.dim() == 2 else (True,)
            elif leaf == "wpe":
                out[name] = (False, True)  # (tokens, width): the width is the lookup's out side
            elif p.dim() == 2:  # c_attn, c_proj, c_fc: width × width (×3, ×4)
                out[name] = (True, True)
            else:  # biases of width-sized layers, LayerNorm vectors
                out[name] = (True,)
        return out
    linears = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    for name, p in model.named_parameters():
        layer = name.rsplit(".", 1)[0]
        i, last = linears.index(layer), len(linears) - 1
        grow_out, grow_in = i < last, i > 0
        out[name] = (grow_out, grow_in) if p.dim() == 2 else (grow_out,)
    return out


def _grow_dims_from(model: nn.Module, base: nn.Module) -> dict[str, tuple[bool, ...]]:
    base_shapes = {n: tuple(p.shape) for n, p in base.named_parameters()}
    extra = sorted(set(base_shapes) - {n for n, _ in model.named_parameters()})
    if extra:
        raise ValueError(f"base model has parameter {extra[0]!r} the model lacks; base must be the same "
                         "architecture at the base width")
    out = {}
    for name, p in model.named_parameters():
        if name not in base_shapes or len(base_shapes[name]) != p.dim():
            raise ValueError(f"base model has no parameter {name!r} of rank {p.dim()}; base must be the same "
                             "architecture at the base width")
        out[name] = tuple(a != b for a, b in zip(p.shape, base_shapes[name]))
    return out


def mup_parametrize(model: nn.Module, base: int | nn.Module, *, optimizer: str = "adam", readout_zero: bool = False,
                    parametrization: str = "mup", gain: float = HE_GAIN, embedding_std: float = 1.0,
                    attention: bool = True) -> MuPPlan:
    """The μP plan of ``model`` relative to a base width; patches zoo attention to 1/d (in place).

    Tensor Programs V, Table 3 (see the module docstring for the table). ``base`` is the base width
    (an int; for the zoo ``mlp`` and ``transformer``, whose growing dims are known by structure) or a
    model of the same architecture at the base width (any model: a dim grows where its size differs;
    a base of the model's own width makes every multiplier 1 but cannot tell kinds apart).
    ``parametrization="sp"`` gives the standard parametrization's plan (He init, every lr
    multiplier 1) with the same classification, for comparisons. Modifies ``model`` only by the
    attention patch (``attention=False`` skips it); call ``plan.initialize()`` to draw the init.

    >>> plan = mup_parametrize(make_model("mlp(depth=2,width=1024)", (784,), 10), 64)
    >>> plan.initialize(generator=g); opt = torch.optim.Adam(plan.param_groups(1e-2))
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from: {', '.join(OPTIMIZERS)}")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {parametrization!r}; choose from: {', '.join(PARAMETRIZATIONS)}")
    for what, v in (("gain", gain), ("embedding_std", embedding_std)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{what} must be a positive number, got {v!r}")
    if isinstance(base, nn.Module):
        grow = _grow_dims_from(model, base)
        sizes = [(p.shape[d], bp.shape[d]) for (n, p), (_, bp) in zip(model.named_parameters(), base.named_parameters())
                 for d in range(p.dim()) if grow[n][d]]
        ratios = {a / b for a, b in sizes}
        if len(ratios) > 1:
            raise ValueError(f"the growing dims of model and base differ by several ratios {sorted(ratios)}; "
                             "μP here needs one width ratio")
        ratio = ratios.pop() if ratios else 1.0
        width = max((a for a, _ in sizes), default=0)
        base_width = int(round(width / ratio)) if width else 0
    else:
        if isinstance(base, bool) or not isinstance(base, int) or base < 1:
            raise ValueError(f"base width must be a positive integer or a base model, got {base!r}")
        width = model_width(model)
        base_width, ratio = base, model_width(model) / base
        grow = _grow_dims(model, width)
    r = ratio if parametrization == "mup" else 1.0
    embeddings = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    norms = {f"{n}.{s}" for n, m in model.named_modules()
             if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)) for s in ("weight", "bias")}
    infos: dict[str, ParamInfo] = {}
    for name, p in model.named_parameters():
        g = grow[name]
        if p.dim() >= 2:
            g_out, g_in = g[0], g[1]
            if name in embeddings:  # (num_embeddings, dim): the lookup's out side is dim 1
                g_out, g_in = g[1], g[0]
            kind = "hidden" if g_out and g_in else "output" if g_in else "input" if g_out else "fixed"
            fan_in = math.prod(p.shape[1:])
            fan_out = p.shape[0] * math.prod(p.shape[2:])
        else:
            kind = "input" if any(g) else "fixed"
            fan_in, fan_out = 1, p.numel()
        if name in embeddings:
            fan_in, fan_out = 1, p.shape[1]  # a lookup: one-hot in, a row of width out
        if name in norms:
            std = None
        elif p.dim() < 2:
            std = 0.0
        elif name in embeddings:
            std = embedding_std
        else:
            std = gain / math.sqrt(fan_in)
            if kind == "output" and parametrization == "mup":
                std = 0.0 if readout_zero else std * math.sqrt(r) / r  # gain/√(base fan_in) / r
        if parametrization == "sp":
            mult = 1.0
        elif optimizer == "adam":
            mult = 1.0 / r if kind in ("hidden", "output") else 1.0
        else:  # sgd
            mult = {"input": r, "hidden": 1.0, "output": 1.0 / r, "fixed": 1.0}[kind]
        infos[name] = ParamInfo(name, kind, tuple(p.shape), int(fan_in), int(fan_out),
                                float(ratio if kind != "fixed" else 1.0), std, float(mult))
    plan = MuPPlan(infos, width, base_width, optimizer, parametrization, readout_zero, None, model)
    if attention and parametrization == "mup":
        plan.attention_scale = _patch_attention(model, r)
    return plan


# ----------------------------------------------------------------------------- attention


def _attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    # the zoo SelfAttention's computation with μP's logit scale (√d0/d instead of 1/√d)
    b, t, w = x.shape
    q, k, v = self.c_attn(x).split(w, dim=-1)
    q, k, v = (z.reshape(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))
    att = torch.softmax(q @ k.transpose(-2, -1) * self.mup_attn_scale, dim=-1)
    return self.c_proj((att @ v).transpose(1, 2).reshape(b, t, w))


def _patch_attention(model: nn.Module, r: float) -> float | None:
    scale = None
    for m in model.modules():
        if isinstance(m, SelfAttention):
            d = m.c_proj.in_features // m.heads
            scale = math.sqrt(d / r) / d  # √d0 / d with d0 = d / r: SP's 1/√d at the base width
            m.mup_attn_scale = scale
            m.forward = types.MethodType(_attention_forward, m)
    return scale


def restore_attention(model: nn.Module) -> None:
    """Undo :func:`mup_parametrize`'s attention patch: back to the class's 1/√d forward."""
    for m in model.modules():
        if "forward" in vars(m) and hasattr(m, "mup_attn_scale"):
            del m.forward
            del m.mup_attn_scale
