"""What a module or a raw parameter is, for layers that other libraries define.

PyTorch's own layer types are known by class (``initlab.schemes.layers`` has a handler per type).
Models from Hugging Face transformers, timm and torchvision bring their own classes; initlab does not
import those libraries, so it recognises their layers by what they hold and how they are named:

* a **transposed linear** layer (transformers' ``Conv1D``, used by GPT-2, GPT, CTRL): ``y = x W + b``
  with ``W`` stored as (in_features, out_features) and ``nf`` = out_features;
* a **norm-like** module (``T5LayerNorm``, ``LlamaRMSNorm``, ``MistralRMSNorm``, timm's ``RmsNorm``...):
  every parameter 1-D and of one length, and either "norm" in the class name or an ``eps`` /
  ``variance_epsilon`` attribute (the role: it rescales normalized features elementwise);
* a **fused attention input projection** (GPT-2's ``c_attn``, timm's ``qkv``, ``query_key_value``,
  ``Wqkv``): an output three times its input under one of those names, so q, k and v are three blocks;
* the role of a **raw parameter** registered on a module (``cls_token``, ``pos_embed``,
  ``relative_position_bias_table``, a layer scale ``gamma``).

Pure functions of the module and names; nothing here imports the rest of initlab.
"""
from __future__ import annotations

import re

from torch import Tensor, nn

FUSED_QKV_NAMES = ("c_attn", "qkv", "query_key_value", "Wqkv", "qkv_proj", "to_qkv", "in_proj")

_NORM_NAME = re.compile(r"norm", re.IGNORECASE)
_TOKEN = re.compile(r"^(cls|dist|reg|mask|register|query|prompt)_tokens?$|^tokens$")
_POSITION = re.compile(r"^(absolute_)?pos(ition(al)?)?_(embed(ding)?s?|emb|bias)$")
_RELATIVE = re.compile(r"^relative_position_bias_table$|^rel_pos(_[hwd])?$|^relative_attention_bias$")
_SCALE = re.compile(r"^(gamma(_\d)?|ls\d?|layer_scale(_\d)?|layerscale|scale)$")

# role -> (what initlab does with it by default, the reason shown in the report)
RAW_ROLES = {
    "token": ("trunc_normal(std=0.02,a=-0.04,b=0.04)", "learned token: N(0, 0.02²) truncated at ±2σ (timm and BERT use std 0.02)"),
    "position": ("trunc_normal(std=0.02,a=-0.04,b=0.04)", "learned position embedding: N(0, 0.02²) truncated at ±2σ"),
    "relative position": ("trunc_normal(std=0.02,a=-0.04,b=0.04)", "relative position bias table: N(0, 0.02²) truncated at ±2σ"),
    "layer scale": (None, "layer scale: kept at the model's own value (a deliberate residual-branch scale)"),
}


def is_transposed_linear(m: nn.Module) -> bool:
    """transformers' ``Conv1D``: a 2-D ``weight`` of shape (in, out) with ``nf`` = out."""
    w = getattr(m, "weight", None)
    return (type(m).__name__ == "Conv1D" and isinstance(w, Tensor) and w.dim() == 2
            and getattr(m, "nf", None) == w.shape[1])


def is_norm_like(m: nn.Module) -> bool:
    """A module whose own parameters are all 1-D of one length and which is a norm by name or by its epsilon."""
    params = list(m.parameters(recurse=False))
    if not params or any(p.dim() != 1 for p in params) or len({p.shape[0] for p in params}) != 1:
        return False
    return bool(_NORM_NAME.search(type(m).__name__)) or hasattr(m, "variance_epsilon") or hasattr(m, "eps")


def fused_blocks(leaf_name: str, in_features: int, out_features: int) -> int:
    """Number of q/k/v blocks of a fused attention input projection (3), or 1 when it is not one."""
    return 3 if leaf_name in FUSED_QKV_NAMES and out_features == 3 * in_features else 1


def raw_role(name: str, tensor: Tensor) -> str | None:
    """The role of a raw parameter by its attribute name and shape (see ``RAW_ROLES``), or None."""
    if _TOKEN.match(name):
        return "token"
    if _POSITION.match(name) and tensor.dim() >= 2:
        return "position"
    if _RELATIVE.match(name):
        return "relative position"
    if _SCALE.match(name) and tensor.dim() == 1:
        return "layer scale"
    return None
