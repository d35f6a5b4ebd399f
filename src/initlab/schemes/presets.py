"""Family presets: the init a library gives its own models, as initlab rules, to compare against and start from.

* ``hf(initializer_range=None)``: Hugging Face transformers' ``PreTrainedModel._init_weights``
  conventions: every Linear / Conv / transformers ``Conv1D`` / Embedding weight N(0, r²) with r the
  config's ``initializer_range`` (0.02 without one), biases 0, norms 1 and 0, an embedding's padding row
  0; GPT-2 (``config.model_type == "gpt2"``) also scales its residual projections (``c_proj``) to
  N(0, (r/√(2·n_layer))²); T5 (``"t5"``) uses its own factor-based stds (wi, wo, q, k, v, o, the shared
  embedding, the relative attention bias), as ``T5PreTrainedModel._init_weights`` does.
* ``timm_vit(mode="default")``: timm's ``VisionTransformer.init_weights``: ``default`` draws Linear
  weights N(0, 0.02²) (timm's ``trunc_normal_``: cut at ±2 absolute), biases 0, the patch embedding
  as torch's default, ``cls_token``/``reg_token`` N(0, 1e-6²), ``pos_embed`` N(0, 0.02²); ``jax``:
  Xavier uniform Linear weights (the fused qkv as one matrix), MLP biases N(0, 1e-6²), LeCun normal
  convs, the head zero; ``jax_nlhb`` as jax with the head bias −log C; ``moco``: Xavier uniform with
  q, k, v as three matrices.
* ``megatron(std=0.02, scaled=True)``: Megatron-LM's ``init_method_normal`` / ``scaled_init_method_normal``:
  every weight N(0, std²), biases 0, norms 1 and 0, and with ``scaled`` each residual branch's output
  projection N(0, (std/√(2L))²) for L layers. The projections come from ``ResidualInfo`` or, for library
  transformers, their names (``RESIDUAL_PROJECTIONS``: GPT-2's ``attn.c_proj``/``mlp.c_proj``, Llama's
  ``o_proj``/``down_proj``, ViT's ``attn.proj``/``mlp.fc2``, T5's ``o``/``wo``, BERT's ``output.dense``),
  L from the config (``n_layer``, ``num_hidden_layers``, ``num_layers``) or half their count.
* ``torchvision_resnet(zero_init_residual=False)``: torchvision's ResNet: convs Kaiming normal with
  fan_out (gain √2), BatchNorm 1 and 0, the classifier torch's default; ``zero_init_residual=True``
  zeroes the last BN γ of every residual block (``bn3`` of a Bottleneck, ``bn2`` of a BasicBlock).

Model-level schemes like ``gpt2`` and ``fixup`` (:mod:`initlab.schemes.residual`): each turns the model
into an ordinary rules mapping, so ``initialize_with_report`` names the rule of every tensor and the
user's own keys override. tests/test_real_models.py checks each against the library's own init.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from initlab.core.layer_kinds import is_transposed_linear
from initlab.schemes.functions import kaiming_normal_, normal_
from initlab.schemes.registry import register_scheme
from initlab.schemes.residual import Rules, register_model_rules
from initlab.schemes.structure import residual_info

TIMM_VIT_MODES = ("default", "jax", "jax_nlhb", "moco")


def _config(model: nn.Module):
    return getattr(model, "config", None)


def _present(model: nn.Module, rules: dict[str, Any]) -> dict[str, Any]:
    """Type keys only for types the model has (a strict initialize refuses keys that match nothing)."""
    present = {c.__name__ for m in model.modules() for c in type(m).__mro__}
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    return {k: v for k, v in rules.items() if k == "*" or "." in k or "*" in k or k in present or k in names}


def _hf(model: nn.Module, *, initializer_range: float | None = None) -> Rules:
    cfg = _config(model)
    if initializer_range is None:
        initializer_range = getattr(cfg, "initializer_range", None) or 0.02
    r = _positive("hf", "initializer_range", initializer_range)
    kind = getattr(cfg, "model_type", "")
    if kind == "t5":
        return _t5(model, cfg)
    std = f"normal(std={r!r})"
    rules: dict[str, Any] = {"*": std, "Conv1D": std, "Embedding": std}
    notes = {"*": f"hf: N(0, {r:g}²) (config.initializer_range)"}
    if kind == "gpt2":
        n_layer = int(getattr(cfg, "n_layer"))
        proj = f"normal(std={r / math.sqrt(2 * n_layer)!r})"
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                rules[name] = proj
                notes[name] = f"hf gpt2: residual projection N(0, ({r:g}/√(2·{n_layer}))²)"
    return _present(model, rules), notes


def _t5(model: nn.Module, cfg) -> Rules:
    f = float(getattr(cfg, "initializer_factor", 1.0))
    d, ff, kv, heads = cfg.d_model, cfg.d_ff, cfg.d_kv, cfg.num_heads
    rules: dict[str, Any] = {"*": f"normal(std={f * d ** -0.5!r})", "Embedding": f"normal(std={f!r})",
                             "T5LayerNorm": f"constant(value={f!r})"}
    by_leaf = {"wi": d ** -0.5, "wi_0": d ** -0.5, "wi_1": d ** -0.5, "wo": ff ** -0.5, "q": (d * kv) ** -0.5,
               "k": d ** -0.5, "v": d ** -0.5, "o": (heads * kv) ** -0.5}
    for name, m in model.named_modules():
        leaf = name.rpartition(".")[2]
        if isinstance(m, nn.Linear) and leaf in by_leaf:
            rules[f"{name}.weight"] = f"normal(std={f * by_leaf[leaf]!r})"
        elif isinstance(m, nn.Embedding) and leaf == "relative_attention_bias":
            rules[f"{name}.weight"] = f"normal(std={f * d ** -0.5!r})"
    if isinstance(getattr(model, "shared", None), nn.Embedding):  # by name: it may be tied to lm_head
        rules["shared.weight"] = f"normal(std={f!r})"
    if isinstance(getattr(model, "lm_head", None), nn.Linear):
        rules["lm_head.weight"] = f"normal(std={f!r})"
    return _present(model, rules), {"*": f"hf t5: factor {f:g} stds of T5PreTrainedModel._init_weights"}


def _timm_vit(model: nn.Module, *, mode: str = "default") -> Rules:
    if mode not in TIMM_VIT_MODES:
        raise ValueError(f"unknown timm_vit mode {mode!r}; choose from: {', '.join(TIMM_VIT_MODES)}")
    names = {n for n, _ in model.named_parameters()}
    tokens = {k: "normal(std=1e-06)" for k in ("cls_token", "reg_token") if k in names}
    pos = {"pos_embed": "trunc_normal(std=0.02)"} if "pos_embed" in names else {}
    notes = {"*": f"timm_vit {mode}: VisionTransformer.init_weights"}
    if mode == "default":
        rules = {"*": "pytorch_default", "Linear": "trunc_normal(std=0.02)", **tokens, **pos}
        return _present(model, rules), notes
    if mode == "moco":
        return _present(model, {"*": "pytorch_default", "Linear": "xavier_uniform", **tokens, **pos}), notes
    rules = {"*": "pytorch_default", "Linear": "xavier_uniform", "Conv2d": "lecun_normal", **tokens, **pos}
    classes = int(getattr(model, "num_classes", 0) or 0)
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        if name.startswith("head"):
            rules[f"{name}.weight"] = "zero"
            if m.bias is not None:
                bias = -math.log(classes) if mode == "jax_nlhb" and classes > 0 else 0.0
                rules[f"{name}.bias"] = f"constant(value={bias!r})"
        else:
            if m.out_features == 3 * m.in_features and name.endswith("qkv"):  # timm draws the fused qkv as one
                bound = math.sqrt(6 / (m.in_features + m.out_features))
                rules[f"{name}.weight"] = f"uniform(a={bound!r})"
            if m.bias is not None and "mlp" in name:
                rules[f"{name}.bias"] = "normal(std=1e-06)"
    return _present(model, rules), notes


# leaf-name patterns of the residual branches' output projections in library transformers
RESIDUAL_PROJECTIONS = ("attn.c_proj", "mlp.c_proj", "self_attn.o_proj", "mlp.down_proj", "attn.proj", "mlp.fc2",
                        "SelfAttention.o", "EncDecAttention.o", "DenseReluDense.wo", "output.dense", "self_attn.out_proj", "mlp.dense_4h_to_h", "attention.dense")


def residual_projections(model: nn.Module) -> list[str]:
    """Qualified weight names of the residual branches' output projections: from ``ResidualInfo`` when the model
    has one, else by the names of ``RESIDUAL_PROJECTIONS`` (BERT's ``intermediate`` is never one)."""
    info = residual_info(model)
    if info is not None and info.branches:
        return [f"{layer}.weight" for layer in info.branch_final]
    out = []
    for name, m in model.named_modules():
        if (isinstance(m, nn.Linear) or is_transposed_linear(m)) and name.endswith(RESIDUAL_PROJECTIONS):
            out.append(f"{name}.weight")
    return out


def _megatron(model: nn.Module, *, std: float = 0.02, scaled: bool = True) -> Rules:
    std = _positive("megatron", "std", std)
    if not isinstance(scaled, bool):
        raise ValueError(f"megatron parameter scaled must be true or false, got {scaled!r}")
    rules: dict[str, Any] = {"*": f"normal(std={std!r})", "Embedding": f"normal(std={std!r})",
                             "Conv1D": f"normal(std={std!r})"}
    notes = {"*": f"megatron: init_method_normal N(0, {std:g}²)"}
    if scaled:
        finals = residual_projections(model)
        if not finals:
            raise ValueError(f"megatron(scaled=true) needs the residual projections: {type(model).__name__} has no "
                             "ResidualInfo and no layer named like one of initlab.schemes.presets.RESIDUAL_PROJECTIONS; "
                             "use megatron(scaled=false) or name them in a rules mapping")
        cfg = _config(model)
        layers = next((int(v) for k in ("n_layer", "num_hidden_layers", "num_layers")
                       if isinstance(v := getattr(cfg, k, None), int) and v > 0), max(1, len(finals) // 2))
        proj = f"normal(std={std / math.sqrt(2 * layers)!r})"
        for key in finals:
            rules[key], notes[key] = proj, f"megatron: scaled_init_method_normal, std {std:g}/√(2·{layers})"
    return _present(model, rules), notes


def _torchvision_resnet(model: nn.Module, *, zero_init_residual: bool = False) -> Rules:
    if not isinstance(zero_init_residual, bool):
        raise ValueError(f"torchvision_resnet parameter zero_init_residual must be true or false, got {zero_init_residual!r}")
    rules: dict[str, Any] = {"*": "pytorch_default", "Conv2d": "kaiming_normal(mode=fan_out)"}
    notes = {"*": "torchvision ResNet: convs Kaiming normal (fan_out), BN 1/0, classifier torch's default"}
    if zero_init_residual:
        last = {"Bottleneck": "bn3", "BasicBlock": "bn2"}
        for name, m in model.named_modules():
            bn = last.get(type(m).__name__)
            if bn is not None and isinstance(getattr(m, bn, None), nn.modules.batchnorm._NormBase):
                key = f"{name}.{bn}.weight" if name else f"{bn}.weight"
                rules[key], notes[key] = "zero", "torchvision: zero_init_residual, the block's last BN γ = 0"
        if len(rules) == 2:
            raise ValueError("torchvision_resnet(zero_init_residual=true) found no Bottleneck or BasicBlock in "
                             f"{type(model).__name__}")
    return _present(model, rules), notes


def _positive(scheme: str, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{scheme} parameter {name} must be a finite number > 0, got {v!r}")
    return float(v)


register_model_rules("hf", _hf)
register_model_rules("timm_vit", _timm_vit)
register_model_rules("torchvision_resnet", _torchvision_resnet)
register_model_rules("megatron", _megatron)


@register_scheme("hf", model_level=True)
def hf_(weight: Tensor, *, generator: torch.Generator | None = None, initializer_range: float | None = None) -> Tensor:
    """Hugging Face transformers' own init (``_init_weights``): N(0, initializer_range²), GPT-2's scaled projections.

    A model-level scheme (see the module docstring); called on one tensor it draws N(0, r²), r = 0.02 by default.
    """
    r = 0.02 if initializer_range is None else _positive("hf", "initializer_range", initializer_range)
    return normal_(weight, std=r, generator=generator)


@register_scheme("timm_vit", model_level=True)
def timm_vit_(weight: Tensor, *, generator: torch.Generator | None = None, mode: str = "default") -> Tensor:
    """timm's ViT init (``VisionTransformer.init_weights(mode)``): default, jax, jax_nlhb or moco.

    A model-level scheme (see the module docstring); called on one tensor it checks ``mode`` and draws N(0, 0.02²).
    """
    if mode not in TIMM_VIT_MODES:
        raise ValueError(f"unknown timm_vit mode {mode!r}; choose from: {', '.join(TIMM_VIT_MODES)}")
    return normal_(weight, std=0.02, generator=generator)


@register_scheme("megatron", model_level=True)
def megatron_(weight: Tensor, *, generator: torch.Generator | None = None, std: float = 0.02,
              scaled: bool = True) -> Tensor:
    """Megatron-LM's init: N(0, std²) weights, residual output projections N(0, (std/√(2L))²) with ``scaled``.

    A model-level scheme (see the module docstring); called on one tensor it draws N(0, std²).
    """
    return normal_(weight, std=_positive("megatron", "std", std), generator=generator)


@register_scheme("torchvision_resnet", model_level=True)
def torchvision_resnet_(weight: Tensor, *, generator: torch.Generator | None = None,
                        zero_init_residual: bool = False) -> Tensor:
    """torchvision's ResNet init: Kaiming normal (fan_out) convs, BN 1/0, optionally the last BN γ of each block 0.

    A model-level scheme (see the module docstring); called on one tensor it draws Kaiming normal.
    """
    return kaiming_normal_(weight, mode="fan_out", generator=generator)
