"""Models of other libraries by spec: ``timm:resnet18``, ``torchvision:mobilenet_v2``, ``hf:gpt2(n_layer=4)``.

Built from the library's own config with random weights (nothing is downloaded) for a dataset's
per-example shape and class count, and adapted to initlab's image datasets so that the honest
comparison runs on them too:

* **timm** (``timm.create_model(name, pretrained=False, num_classes=C, in_chans=c, **params)``): the
  image goes in as it is; models with a fixed input size (ViT, DeiT, Mixer: ``img_size``) are built
  for the data's size unless the spec says otherwise, and the image is resized to what they were
  built for (``Resized``).
* **torchvision** (``torchvision.models.<name>(weights=None, num_classes=C, **params)``): three input
  channels; a one-channel image is repeated (``Resized``).
* **Hugging Face transformers** (``hf:gpt2``, ``hf:bert``, ``hf:llama``, ``hf:t5``... with the config's
  fields as parameters): the ``...ForSequenceClassification`` model of that family; each image
  becomes a sequence of tokens, one per pixel, its intensity quantized to ``levels`` bins
  (``ImageTokens``), so a language model learns the same task as the convnets.

Parameters are checked by the library (an unknown one is its error, in one line). The libraries are
optional: a spec naming one that is not installed says how to install it.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from initlab.schemes.specs import parse_scheme

LIBRARIES = ("timm", "torchvision", "hf")
_PIP = {"timm": "timm", "torchvision": "torchvision", "hf": "transformers"}
# hf family -> (config class, sequence-classification class, size fields for a small default)
HF_FAMILIES = {
    "gpt2": ("GPT2Config", "GPT2ForSequenceClassification",
             dict(n_layer=2, n_embd=64, n_head=4, n_positions=1024)),
    "bert": ("BertConfig", "BertForSequenceClassification",
             dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=256,
                  max_position_embeddings=1024)),
    "llama": ("LlamaConfig", "LlamaForSequenceClassification",
              dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=256,
                   max_position_embeddings=1024)),
    "t5": ("T5Config", "T5ForSequenceClassification",
           dict(num_layers=2, d_model=64, d_ff=256, num_heads=4, d_kv=16)),
}
LEVELS = 16  # intensity bins of ImageTokens: the vocabulary of an image-as-text task


def is_external_spec(text) -> bool:
    """``"timm:..."``, ``"torchvision:..."`` or ``"hf:..."``."""
    return isinstance(text, str) and text.strip().partition(":")[0] in LIBRARIES and ":" in text


def _import(library: str):
    module = "transformers" if library == "hf" else library
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"--model {library}:... needs the package {_PIP[library]!r}: pip install {_PIP[library]}") from None


def parse_external(text: str) -> tuple[str, str, dict]:
    """``"timm:vit_tiny_patch16_224(img_size=32)"`` -> ("timm", "vit_tiny_patch16_224", {"img_size": 32})."""
    library, _, rest = text.strip().partition(":")
    if library not in LIBRARIES or not rest.strip():
        raise ValueError(f"a library model spec is LIBRARY:NAME with LIBRARY one of {', '.join(LIBRARIES)}, "
                         f"e.g. 'timm:resnet18' or 'hf:gpt2(n_layer=4)'; got {text!r}")
    try:
        spec = parse_scheme(rest.strip())
    except ValueError as e:
        raise ValueError(str(e).replace("init scheme", "model spec")) from None
    if library == "hf" and spec.name not in HF_FAMILIES:
        raise ValueError(f"unknown Hugging Face family {spec.name!r}; choose from: {', '.join(HF_FAMILIES)}")
    return library, spec.name, dict(spec.params)


class Resized(nn.Module):
    """Images resized (bilinear) to ``size`` and their channels repeated to ``channels`` before ``model``."""

    def __init__(self, model: nn.Module, in_shape: Sequence[int], channels: int, size: tuple[int, int] | None):
        super().__init__()
        self.model, self.channels, self.size = model, channels, size
        self.input_shape = tuple(int(s) for s in in_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = x.repeat(1, self.channels // x.shape[1], 1, 1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.model(x)


class ImageTokens(nn.Module):
    """An image as a token sequence for a language model: pixel intensities (standardized inputs, clipped to
    ±3) quantized to ``levels`` bins, one token per pixel, read row by row; returns the model's logits."""

    def __init__(self, model: nn.Module, in_shape: Sequence[int], levels: int = LEVELS):
        super().__init__()
        self.model, self.levels = model, levels
        self.input_shape = tuple(int(s) for s in in_shape)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        u = (x.flatten(1).clamp(-3, 3) + 3) / 6
        return (u * (self.levels - 1)).round().long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=self.tokens(x))
        return out.logits if hasattr(out, "logits") else out[0]


def _timm(name: str, params: dict, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    timm = _import("timm")
    if name not in timm.list_models():
        raise ValueError(f"timm has no model {name!r}; see timm.list_models()")
    c, h, w = _image(in_shape)
    kwargs = dict(pretrained=False, num_classes=num_classes, in_chans=c)
    size = None
    fixed = any(k in name for k in ("vit", "deit", "mixer", "swin", "beit", "eva", "cait", "xcit", "levit"))
    if fixed and "img_size" not in params:
        patch = int(params.get("patch_size", _patch(name)))
        side = max(patch, math.ceil(max(h, w) / patch) * patch)
        kwargs["img_size"] = side
        size = (side, side) if (h, w) != (side, side) else None
    elif fixed:
        side = int(params["img_size"])
        size = (side, side) if (h, w) != (side, side) else None
    model = _call(timm.create_model, f"timm:{name}", name, **kwargs, **params)
    return Resized(model, (c, h, w), c, size) if size else model


def _patch(name: str) -> int:
    for p in (32, 16, 14, 8, 4):
        if f"patch{p}" in name or f"_s{p}" in name or f"_b{p}" in name or f"_l{p}" in name:
            return p
    return 16


def _torchvision(name: str, params: dict, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    tv = _import("torchvision")
    build = getattr(tv.models, name, None)
    if not callable(build) or name.startswith("_") or name not in tv.models.list_models():
        raise ValueError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
    c, h, w = _image(in_shape)
    model = _call(build, f"torchvision:{name}", weights=None, num_classes=num_classes, **params)
    size = (32, 32) if min(h, w) < 32 else None  # five stride-2 stages need at least 32 pixels
    return Resized(model, (c, h, w), 3, size)


def _hf(family: str, params: dict, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    tf = _import("hf")
    config_name, model_name, small = HF_FAMILIES[family]
    fields = {**small, "vocab_size": LEVELS, "num_labels": num_classes, **params}
    if family in ("gpt2", "llama"):
        fields.setdefault("pad_token_id", 0)
    try:
        config = getattr(tf, config_name)(**fields)
    except (TypeError, ValueError) as e:
        raise ValueError(f"hf:{family}: {str(e).splitlines()[0]}") from None
    model = _call(getattr(tf, model_name), f"hf:{family}", config)
    return ImageTokens(model, in_shape)


def _call(build: Callable[..., nn.Module], what: str, *args, **kwargs) -> nn.Module:
    try:
        return build(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the library's own refusal of a parameter, in one line
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{what} could not be built: {type(e).__name__}: {text}") from None


def _image(in_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"library image models take (C, H, W) images, got a per-example shape {shape}")
    return shape


def external_factory(text: str) -> Callable[..., nn.Module]:
    """The factory of a library model spec: ``factory(in_shape, num_classes)`` builds a fresh model."""
    library, name, params = parse_external(text)
    _import(library)  # say now, not per run, when the library is missing
    build = {"timm": _timm, "torchvision": _torchvision, "hf": _hf}[library]

    def factory(in_shape: Sequence[int], num_classes: int) -> nn.Module:
        return build(name, params, in_shape, num_classes)

    factory.__module__, factory.__qualname__ = library, str(text).strip().partition(":")[2]
    return factory


LM_HEADS = {"gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "llama": "LlamaForCausalLM",
            "t5": "T5ForConditionalGeneration"}


def library_lm(family: str, **fields) -> nn.Module:
    """A small Hugging Face language model of ``family`` (``HF_FAMILIES``) with its language-model head, from
    a config (random weights, nothing downloaded): the family's small sizes, a vocabulary of 1000, and
    ``fields`` over both; special token ids outside the vocabulary are set to 0."""
    tf = _import("hf")
    if family not in LM_HEADS:
        raise ValueError(f"unknown Hugging Face family {family!r}; choose from: {', '.join(LM_HEADS)}")
    config_name, _, small = HF_FAMILIES[family]
    config = getattr(tf, config_name)(**{**small, "vocab_size": 1000, **fields})
    for token in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if getattr(config, token, None) is not None and getattr(config, token) >= config.vocab_size:
            setattr(config, token, 0)
    return getattr(tf, LM_HEADS[family])(config)


def _lm(family: str, **fields) -> Callable[[int], nn.Module]:
    return lambda size=64: library_lm(family, **fields)


def _image_model(library: str, name: str, fixed: bool = False, **params) -> Callable[[int], nn.Module]:
    def build(size: int = 64) -> nn.Module:
        if fixed:
            params["img_size"] = size
        if library == "timm":
            return _import("timm").create_model(name, pretrained=False, num_classes=10, **params)
        return getattr(_import("torchvision").models, name)(weights=None, num_classes=10, **params)
    return build


# The real architectures initlab is checked on (tests/test_real_models.py, benchmarks/bench_real_models.py):
# name -> (builder(size), input kind). Small configs; no weights are downloaded. Image models take
# (B, 3, size, size) images (fixed-size ones are built for it), language models (B, 16) token ids from a
# vocabulary of 1000 (T5 also gets decoder ids).
REAL_SUITE: dict[str, tuple[Callable[[int], nn.Module], str]] = {
    "timm:resnet18": (_image_model("timm", "resnet18"), "image"),
    "timm:resnet50": (_image_model("timm", "resnet50"), "image"),
    "timm:vit_tiny": (_image_model("timm", "vit_tiny_patch16_224", fixed=True), "image"),
    "timm:deit_tiny": (_image_model("timm", "deit_tiny_distilled_patch16_224", fixed=True), "image"),
    "timm:convnext_atto": (_image_model("timm", "convnext_atto"), "image"),
    "timm:efficientnet_b0": (_image_model("timm", "efficientnet_b0"), "image"),
    "timm:mobilenetv3_small": (_image_model("timm", "mobilenetv3_small_100"), "image"),
    "timm:regnetx_002": (_image_model("timm", "regnetx_002"), "image"),
    "timm:mixer_s16": (_image_model("timm", "mixer_s16_224", fixed=True), "image"),
    "torchvision:resnet18": (_image_model("torchvision", "resnet18"), "image"),
    "torchvision:vgg11_bn": (_image_model("torchvision", "vgg11_bn"), "image"),
    "torchvision:densenet121": (_image_model("torchvision", "densenet121"), "image"),
    "torchvision:mobilenet_v2": (_image_model("torchvision", "mobilenet_v2"), "image"),
    "hf:gpt2": (_lm("gpt2"), "tokens"),
    "hf:bert": (_lm("bert"), "tokens"),
    "hf:llama": (_lm("llama"), "tokens"),
    "hf:t5": (_lm("t5"), "seq2seq"),
}


def suite_example(kind: str, batch: int = 4, generator: torch.Generator | None = None, size: int = 64):
    """An example batch for a ``REAL_SUITE`` entry of input ``kind``: images, token ids, or a seq2seq dict."""
    if kind == "image":
        return torch.randn(batch, 3, size, size, generator=generator)
    ids = torch.randint(0, 1000, (batch, 16), generator=generator)
    return {"input_ids": ids, "decoder_input_ids": ids} if kind == "seq2seq" else ids
