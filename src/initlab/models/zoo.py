"""The model zoo: a plain CNN, residual MLPs and ResNets, and a small pre-LN transformer.

Every zoo model is sized for a CPU on 28×28 (MNIST, Fashion-MNIST) and 8×8 (digits) images, takes
``in_shape`` (the per-example input shape it is built for, e.g. ``(1, 28, 28)``) and
``num_classes``, returns logits, and carries two attributes the rest of initlab reads:

* ``input_shape``: the per-example shape it wants (``(C, H, W)`` for images, ``(D,)`` for flat
  vectors); :meth:`initlab.data.Dataset.shaped` gives the data that layout.
* ``residual``: a :class:`ResidualInfo` (residual models only): the layers of every residual
  branch in forward order, so residual-aware schemes (Fixup, SkipInit, ZerO, GPT-2 scaling) find
  the branch-final layers and the branch count from the model itself, never by guessing names.

Residual blocks are *pre-activation* (He et al. 2016, "Identity Mappings in Deep Residual
Networks"): ``x + g · F(x)`` with nothing after the addition, so the residual stream is a plain sum
of the stem and the branch outputs. ``g`` (a learnable scalar, :class:`Scalar`) is present with
``gate=True`` (SkipInit, De & Smith 2020; ReZero, Bachlechner et al. 2020 initialise it to 0) and
``fixup=True`` adds Fixup's scalar biases before every branch layer and activation and its scalar
multiplier (Zhang, Dauphin & Ma 2019, §3). Both default to off, and their scalars start at the
values that leave the network unchanged (gate 1, biases 0): the scheme decides their init.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from initlab.models.mlp import ACTIVATIONS, check_activation
from initlab.schemes.layers import Target, register_layer
from initlab.schemes.structure import ResidualInfo  # noqa: F401  (re-exported: the zoo's models carry one)

NORMS = ("none", "batch", "layer")
POOLS = ("max", "avg")
# Largest sizes a zoo model accepts: far beyond what trains on a CPU, small enough that building
# the model cannot exhaust memory before the memory check runs (audit/compare estimate it first).
MAX_CHANNELS = 1 << 14
MAX_LAYERS = 10_000


class Scalar(nn.Module):
    """One learnable scalar: a residual gate (multiplies) or a Fixup bias (adds).

    ``init_value`` is the value the network is built with and the one ``initialize`` restores
    when no rule names it (1 for a gate, 0 for a bias), so a gated network equals the ungated one
    until a scheme such as SkipInit sets the gate to 0.
    """

    def __init__(self, init_value: float, op: str):
        super().__init__()
        if op not in ("mul", "add"):
            raise ValueError(f"Scalar op must be 'mul' or 'add', got {op!r}")
        self.init_value, self.op = float(init_value), op
        self.value = nn.Parameter(torch.full((), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value if self.op == "mul" else x + self.value

    def extra_repr(self) -> str:
        return f"op={self.op}, init_value={self.init_value:g}"


@register_layer(Scalar)
def _scalar_targets(module: Scalar, slots) -> list[Target]:
    return [Target("value", "other", default=module.init_value)] if "value" in slots else []


# ----------------------------------------------------------------------------- checks


def int_param(name: str, value, lo: int, hi: int) -> int:
    """``value`` if it is an int (never a bool) in [lo, hi]; a one-line ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _choice(name: str, value, choices: Sequence[str]) -> str:
    if value is None and "none" in choices:  # the spec syntax reads a bare none as None
        return "none"
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from: {', '.join(choices)}")
    return value


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_in_shape(in_shape, *, image: bool) -> tuple[int, ...]:
    """``in_shape`` as a tuple of positive ints: (C, H, W) for image models, any for flat ones."""
    if isinstance(in_shape, int) and not isinstance(in_shape, bool):
        in_shape = (in_shape,)
    try:
        shape = tuple(int(s) for s in in_shape)
    except (TypeError, ValueError):
        raise ValueError(f"in_shape must be a sequence of positive integers, got {in_shape!r}") from None
    if not shape or any(s <= 0 for s in shape) or any(isinstance(s, bool) for s in in_shape):
        raise ValueError(f"in_shape must be a sequence of positive integers, got {in_shape!r}")
    if image:
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise ValueError(f"this model takes images: in_shape must be (C, H, W) or (H, W), got {in_shape!r}")
    return shape


def _act(name: str) -> nn.Module:
    return ACTIVATIONS[check_activation(name)][0]()


def _norm2d(kind: str, channels: int) -> nn.Module:
    # "layer" on feature maps: GroupNorm with one group = LayerNorm over (C, H, W) per example
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(1, channels)


def _norm1d(kind: str, width: int) -> nn.Module:
    return nn.BatchNorm1d(width) if kind == "batch" else nn.LayerNorm(width)


# ----------------------------------------------------------------------------- cnn


class CNN(nn.Sequential):
    """A plain convolutional stack: ``depth`` × (conv k×k → [BatchNorm] → activation), a 2× pooling
    after each of the first ``pools`` of them, global average pooling and a Linear head.

    Layers are named ``conv1, [bn1,] act1, [pool1,] conv2, ...`` then ``gap, flatten, head``.
    Convolutions keep the spatial size (padding k//2) and map ``in_channels → channels →
    channels``; no residual connections (the network Xiao et al. 2018 study at depth).
    """

    def __init__(self, in_shape=(1, 28, 28), num_classes: int = 10, *, depth: int = 4, channels: int = 16,
                 kernel: int = 3, activation: str = "relu", norm: str = "none", pool: str = "max",
                 pools: int = 2, bias: bool = True):
        in_shape = check_in_shape(in_shape, image=True)
        depth = int_param("depth", depth, 1, MAX_LAYERS)
        channels = int_param("channels", channels, 1, MAX_CHANNELS)
        kernel = int_param("kernel", kernel, 1, 31)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (padding k//2 keeps the size), got {kernel}")
        num_classes = int_param("num_classes", num_classes, 1, 1 << 20)
        check_activation(activation)
        norm = _choice("norm", norm, ("none", "batch"))
        _choice("pool", pool, POOLS)
        max_pools = int(math.log2(min(in_shape[1:])))
        pools = int_param("pools", pools, 0, max_pools)
        _bool("bias", bias)
        # pool early (after conv1, conv2, ...): later layers run at the reduced size, which is what
        # keeps a deep stack affordable on a CPU (28×28 → 7×7 after two)
        after = set(range(1, min(pools, depth) + 1))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, p = in_shape[0], 0
        for i in range(1, depth + 1):
            layers[f"conv{i}"] = nn.Conv2d(c_in, channels, kernel, padding=kernel // 2, bias=bias)
            if norm == "batch":
                layers[f"bn{i}"] = nn.BatchNorm2d(channels)
            layers[f"act{i}"] = _act(activation)
            if i in after:
                p += 1
                layers[f"pool{p}"] = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
            c_in = channels
        layers["gap"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["head"] = nn.Linear(channels, num_classes)
        super().__init__(layers)
        self.input_shape = in_shape


# ----------------------------------------------------------------------------- residual


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``x + gate · F(x)``.

    ``F`` is m × ([norm] → activation → [fixup bias] → layer → [fixup bias]) with ``layer`` a
    Linear (``resmlp``) or a k×k convolution keeping the size (``resnet``); the branch's weight
    layers are ``layers.0 … layers.{m-1}``, the last one branch-final.
    """

    def __init__(self, make_layer, make_norm, width: int, m: int, activation: str, norm: str,
                 gate: bool, fixup: bool):
        super().__init__()
        self.norms = nn.ModuleList([make_norm(norm, width) for _ in range(m)]) if norm != "none" else None
        self.acts = nn.ModuleList([_act(activation) for _ in range(m)])
        self.layers = nn.ModuleList([make_layer() for _ in range(m)])
        self.bias_in = nn.ModuleList([Scalar(0.0, "add") for _ in range(m)]) if fixup else None
        self.bias_out = nn.ModuleList([Scalar(0.0, "add") for _ in range(m)]) if fixup else None
        self.gate = Scalar(1.0, "mul") if (gate or fixup) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for j, layer in enumerate(self.layers):
            if self.norms is not None:
                h = self.norms[j](h)
            h = self.acts[j](h)
            if self.bias_in is not None:
                h = self.bias_in[j](h)
            h = layer(h)
            if self.bias_out is not None:
                h = self.bias_out[j](h)
        if self.gate is not None:
            h = self.gate(h)
        return x + h


def _residual_info(model: nn.Module, blocks: nn.ModuleList, prefix: str, classifier: str) -> ResidualInfo:
    branches, gates, biases = [], [], []
    for i, block in enumerate(blocks):
        base = f"{prefix}.{i}"
        branches.append(tuple(f"{base}.layers.{j}" for j in range(len(block.layers))))
        gates.append(f"{base}.gate" if block.gate is not None else None)
        if block.bias_in is not None:
            biases.append(tuple(f"{base}.{side}.{j}" for j in range(len(block.layers)) for side in ("bias_in", "bias_out")))
        else:
            biases.append(())
    return ResidualInfo(tuple(branches), tuple(gates), tuple(biases), classifier)


class _Residual(nn.Module):
    """stem → blocks → [final norm] → activation → pool → head, shared by ResMLP and ResNet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        if self.norm is not None:
            h = self.norm(h)
        h = self.act(h)
        return self.head(self.pool(h))


class ResMLP(_Residual):
    """Residual MLP on flat inputs: Linear stem ``D → width``, ``blocks`` pre-activation blocks of
    ``m`` width×width Linear layers, final [norm] → activation → Linear head.

    ``norm``: none | batch (BatchNorm1d) | layer (LayerNorm).
    """

    def __init__(self, in_shape=(784,), num_classes: int = 10, *, blocks: int = 4, width: int = 128, m: int = 2,
                 activation: str = "relu", norm: str = "none", gate: bool = False, fixup: bool = False):
        super().__init__()
        in_shape = check_in_shape(in_shape, image=False)
        blocks = int_param("blocks", blocks, 1, MAX_LAYERS)
        width = int_param("width", width, 1, 1 << 20)
        m = int_param("m", m, 1, 64)
        num_classes = int_param("num_classes", num_classes, 1, 1 << 20)
        check_activation(activation)
        norm = _choice("norm", norm, NORMS)
        _bool("gate", gate), _bool("fixup", fixup)
        d = math.prod(in_shape)
        self.input_shape = (d,)
        self.stem = nn.Linear(d, width)
        self.blocks = nn.ModuleList([
            ResidualBlock(lambda: nn.Linear(width, width), _norm1d, width, m, activation, norm, gate, fixup)
            for _ in range(blocks)])
        self.norm = _norm1d(norm, width) if norm != "none" else None
        self.act = _act(activation)
        self.pool = nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self.residual = _residual_info(self, self.blocks, "blocks", "head")


class ResNet(_Residual):
    """Residual convolutional network: a k×k conv stem ``C → width`` (stride 2 on inputs of at
    least 16×16, so 28×28 runs at 14×14), ``blocks`` pre-activation blocks of ``m`` width→width k×k
    convolutions at one resolution (identity shortcuts only: every block is exactly x + F(x)),
    final [norm] → activation → global average pool → Linear head.

    ``norm``: none | batch (BatchNorm2d) | layer (GroupNorm with one group: LayerNorm over C, H, W).
    """

    def __init__(self, in_shape=(1, 28, 28), num_classes: int = 10, *, blocks: int = 4, width: int = 16,
                 m: int = 2, kernel: int = 3, activation: str = "relu", norm: str = "batch", gate: bool = False,
                 fixup: bool = False):
        super().__init__()
        in_shape = check_in_shape(in_shape, image=True)
        blocks = int_param("blocks", blocks, 1, MAX_LAYERS)
        width = int_param("width", width, 1, MAX_CHANNELS)
        m = int_param("m", m, 1, 64)
        kernel = int_param("kernel", kernel, 1, 31)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (padding k//2 keeps the size), got {kernel}")
        num_classes = int_param("num_classes", num_classes, 1, 1 << 20)
        check_activation(activation)
        norm = _choice("norm", norm, NORMS)
        _bool("gate", gate), _bool("fixup", fixup)
        self.input_shape = in_shape
        stride = 2 if min(in_shape[1:]) >= 16 else 1
        self.stem = nn.Conv2d(in_shape[0], width, kernel, stride=stride, padding=kernel // 2)
        conv = lambda: nn.Conv2d(width, width, kernel, padding=kernel // 2)  # noqa: E731
        self.blocks = nn.ModuleList([ResidualBlock(conv, _norm2d, width, m, activation, norm, gate, fixup)
                                     for _ in range(blocks)])
        self.norm = _norm2d(norm, width) if norm != "none" else None
        self.act = _act(activation)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)
        self.residual = _residual_info(self, self.blocks, "blocks", "head")


# ----------------------------------------------------------------------------- transformer


class SelfAttention(nn.Module):
    """Multi-head self-attention with GPT-2's names: ``c_attn`` (width → 3·width: q, k, v) and
    ``c_proj`` (width → width, the residual projection). softmax(q kᵀ / √d_head) v, no mask."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.c_attn(x).split(w, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(w // self.heads), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(b, t, w))


class MLPBlock(nn.Module):
    """GPT-2's feed-forward: ``c_fc`` (width → 4·width) → activation → ``c_proj`` (4·width → width)."""

    def __init__(self, width: int, activation: str):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.act = _act(activation)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` (GPT-2, nanoGPT)."""

    def __init__(self, width: int, heads: int, activation: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLPBlock(width, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A small pre-LN transformer encoder classifier over image rows or patches (a tiny ViT).

    Tokens: the image's rows (``patch=0``: H tokens of C·W values) or non-overlapping p×p patches
    (H/p · W/p tokens of C·p² values), embedded by the Linear ``embed`` plus a learned position
    embedding ``wpe`` (an ``nn.Embedding``); ``depth`` pre-LN blocks (``blocks.i.attn.c_attn``,
    ``blocks.i.attn.c_proj``, ``blocks.i.mlp.c_fc``, ``blocks.i.mlp.c_proj``: GPT-2's names, so
    ``c_proj`` marks the 2·depth residual projections), final LayerNorm ``ln_f``, mean over
    tokens, Linear ``head``.
    """

    def __init__(self, in_shape=(1, 28, 28), num_classes: int = 10, *, depth: int = 2, width: int = 32,
                 heads: int = 4, patch: int = 0, activation: str = "gelu"):
        super().__init__()
        in_shape = check_in_shape(in_shape, image=True)
        c, h, w = in_shape
        depth = int_param("depth", depth, 1, MAX_LAYERS)
        width = int_param("width", width, 1, 1 << 16)
        heads = int_param("heads", heads, 1, width)
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        patch = int_param("patch", patch, 0, min(h, w))
        if patch and (h % patch or w % patch):
            raise ValueError(f"patch ({patch}) must divide the image size {h}×{w}; or patch=0 for rows")
        num_classes = int_param("num_classes", num_classes, 1, 1 << 20)
        check_activation(activation)
        self.input_shape, self.patch = in_shape, patch
        tokens, token_dim = (h, c * w) if patch == 0 else ((h // patch) * (w // patch), c * patch * patch)
        self.embed = nn.Linear(token_dim, width)
        self.wpe = nn.Embedding(tokens, width)
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, activation) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.register_buffer("positions", torch.arange(tokens), persistent=False)
        branches = []
        for i in range(depth):
            branches += [(f"blocks.{i}.attn.c_attn", f"blocks.{i}.attn.c_proj"),
                         (f"blocks.{i}.mlp.c_fc", f"blocks.{i}.mlp.c_proj")]
        self.residual = ResidualInfo(tuple(branches), (None,) * len(branches), ((),) * len(branches), "head",
                                     kind="transformer")

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.patch == 0:
            return x.permute(0, 2, 1, 3).reshape(b, h, c * w)
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.tokens(x)) + self.wpe(self.positions)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h).mean(dim=1))
