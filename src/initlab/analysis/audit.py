"""``initlab.analysis.audit``: how would each candidate init treat *this* model, and which one to use.

For a model and an example batch, every candidate scheme (``auto``, ``he``, ``xavier``,
``pytorch_default`` and any given) initializes a fresh copy of the model (``copy.deepcopy``, the
caller's model is never touched) from the same seeded generator; one forward and one backward pass
(``initlab.analysis.probe``) measure, per layer, the output std (forward signal) and the weight-gradient
norm (backward signal), next to the mean-field prediction (:func:`predict_stds`) for the plain
chain of layers the theory covers (``initlab.core.theory``: q_l = σ_w²·E[φ(√q_{l-1} z)²] + σ_b²,
Poole et al. 2016).

Flags per scheme (thresholds are the targets of a depth-stable init; a trainable deep net keeps
both signals within these bounds over its whole depth):

* ``vanishing`` / ``exploding``: forward RMS ratio below 1/2 or above 2: the RMS of what the last
  weight layer (the classifier) receives over the RMS of what the second weight layer receives,
  i.e. the last hidden representation over the first (for an MLP at a fixed point this is the
  post-activation form of "last/first hidden pre-activation"; for a residual net it measures the
  residual stream, not a branch's scaled-down output);
* ``grad vanishing`` / ``grad exploding``: weight-gradient norm ratio, first weight layer over the
  last hidden one, below 1/10 or above 10 (Schoenholz et al. 2017: χ₁ ≠ 1 compounds per layer);
* ``dead``: a ReLU-family layer with more than half of its units never positive on the batch;
* ``saturated``: a tanh/sigmoid layer with more than half of its outputs saturated;
* ``symmetric``: a weight layer with fewer distinct units than units (zero/constant init);
* ``non-finite``: any output or gradient inf/NaN.

The recommendation is the candidate with the fewest flags, ties broken by the smallest
|log forward ratio| + |log gradient ratio|; its reason names the numbers.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

from initlab.analysis.jacobian import jacobian_spectrum
from initlab.analysis.probe import RELU_FAMILY, SATURATING, SYMMETRY_MODES, probe
from initlab.core import theory
from initlab.core.layer_kinds import is_transposed_linear, raw_role
from initlab.core.display import html_of
from initlab.graph import read_graph
from initlab.models import arch_text
from initlab.plots.compare import plt, save_figure
from initlab.schemes import initialize, needs_example, parse_scheme_list
from initlab.schemes.materialize import require_materialized
from initlab.training.memory import available_bytes, format_bytes

DEFAULT_CANDIDATES = ("auto", "he", "xavier", "pytorch_default")
OWN_INIT = "none"  # a candidate that keeps the model's weights as they are (its library's own init)
WEIGHT_KINDS = ("Linear", "NonDynamicallyQuantizableLinear", "Bilinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                "ConvTranspose3d", "Embedding", "EmbeddingBag", "RNN", "LSTM", "GRU")
FORWARD_BOUNDS = (0.5, 2.0)  # last/first hidden output RMS
GRAD_BOUNDS = (0.1, 10.0)  # first/last hidden weight-gradient norm
DEAD_LIMIT = SAT_LIMIT = 0.5


class _Logits(nn.Module):
    """Wrap a model so the probe sees one logits tensor: the model's output picked (tuple, dict), called
    with a dict example as keyword arguments; a language model's (batch, tokens, vocabulary) logits
    flattened to (batch·tokens, vocabulary) so cross-entropy is per token. Keeps the last logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.last: torch.Tensor | None = None

    def forward(self, example):
        out = pick_logits(self.model(**example) if isinstance(example, Mapping) else self.model(example))
        if is_token_input(example) and out.dim() == 3:
            out = out.flatten(0, 1)
        self.last = out.detach()
        return out


def first_tensor(example) -> torch.Tensor:
    """The example's first tensor: the tensor itself, or the first value of a dict of keyword inputs."""
    if isinstance(example, torch.Tensor):
        return example
    if isinstance(example, Mapping):
        t = next((v for v in example.values() if isinstance(v, torch.Tensor)), None)
        if t is not None:
            return t
    raise ValueError(f"audit calls the model with one tensor or a dict of keyword tensors (input_ids=...), "
                     f"got {type(example).__name__}")


def is_token_input(example) -> bool:
    """Integer inputs: token ids of a language model (its logits are per token)."""
    t = first_tensor(example)
    return not (t.is_floating_point() or t.is_complex())


def pick_logits(out):
    """The logits of a model output: the tensor itself, ``out["logits"]``, or the first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "logits" in out and isinstance(out["logits"], torch.Tensor):
            return out["logits"]
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise ValueError(f"cannot find logits in a model output of type {type(out).__name__}; "
                     "return a tensor, a tuple whose first tensor is the logits, or a dict with 'logits'")


@dataclass
class SchemeAudit:
    """What one candidate scheme does to the model: per-layer rows, ratios and flags."""

    scheme: str
    layers: pd.DataFrame  # probe rows of weight layers + predictions
    forward_ratio: float
    grad_ratio: float
    flags: list[str]
    error: str | None = None  # the scheme could not be applied (e.g. a layer it cannot handle)
    # input-output Jacobian at init (initlab.jacobian_spectrum, first two examples): mean squared
    # singular value (1 = isometry on average, Pennington et al. 2017) and the decades spanned by
    # the middle 90% of singular values (how far from dynamical isometry); NaN if it cannot be taken
    jac_mean_sq: float = math.nan
    jac_decades: float = math.nan
    logit_std: float = math.nan  # std of the initial logits over the batch (and tokens)
    loss: float = math.nan  # initial cross-entropy on random labels (ln C is chance)
    seconds: float = math.nan  # wall time of this candidate: init, probe and (opt-in) Jacobian

    @property
    def healthy(self) -> bool:
        return self.error is None and not self.flags


@dataclass
class AuditReport:
    """``audit``'s result: one :class:`SchemeAudit` per candidate, the recommendation and why."""

    model_name: str
    candidates: dict[str, SchemeAudit]
    recommended: str | None
    reason: str
    profile: pd.DataFrame = field(repr=False, default=None)  # all probe rows, with a ``scheme`` column
    notes: tuple[str, ...] = ()  # what in the model puts a flag out of reach of any scalar init, and why

    def __repr__(self) -> str:
        return (f"<AuditReport: {self.model_name} under {len(self.candidates)} schemes "
                f"({', '.join(self.candidates)}); recommended: {self.recommended}>")

    def _repr_html_(self) -> str | None:
        return html_of(self)

    def summary(self) -> pd.DataFrame:
        rows = []
        for name, a in self.candidates.items():
            rows.append({"scheme": name, "forward_ratio": a.forward_ratio, "grad_ratio": a.grad_ratio,
                         "logit_std": a.logit_std, "loss": a.loss,
                         "jac_mean_sq": a.jac_mean_sq, "jac_decades": a.jac_decades, "seconds": a.seconds,
                         "flags": ", ".join(a.flags) if a.error is None else f"error: {a.error}",
                         "recommended": name == self.recommended})
        return pd.DataFrame(rows)

    def assert_healthy(self, scheme: str | None = None) -> None:
        """Raise AssertionError listing the flags of ``scheme`` (default: the recommended one).

        For a user's CI: ``initlab.audit(model, batch).assert_healthy("auto")``.
        """
        name = scheme or self.recommended
        if name not in self.candidates:
            raise ValueError(f"scheme {name!r} was not audited; choose from: {', '.join(self.candidates)}")
        a = self.candidates[name]
        if not a.healthy:
            problems = a.error or "; ".join(a.flags)
            raise AssertionError(f"{self.model_name} under {name}: {problems} (forward ratio "
                                 f"{a.forward_ratio:.3g}, gradient ratio {a.grad_ratio:.3g})")


def _ratios(layers: pd.DataFrame) -> tuple[float, float]:
    """Forward: RMS of the last weight layer's input / the first hidden representation's; gradient: the first
    weight layer's weight-gradient norm / the last hidden one's.

    Only weight layers with floating-point inputs count (an embedding reads token ids). The first hidden
    representation is the input of the first such layer that does not read the model's own input: the
    second layer of an MLP or a CNN, the first attention projection of a transformer (whose first weight
    layers are embeddings or a patch embedding); with fewer than three layers, the first layer's input."""
    layers = layers[layers["in_rms"].notna()]  # embeddings read token ids: no signal to compare
    if len(layers) < 2:
        return math.nan, math.nan
    hidden = layers.iloc[:-1] if len(layers) >= 3 else layers
    inner = layers[~layers["reads_input"]] if "reads_input" in layers else layers.iloc[1:]
    first = inner["in_rms"].iloc[0] if len(layers) >= 3 and len(inner) >= 2 else layers["in_rms"].iloc[0]
    return (_div(layers["in_rms"].iloc[-1], first),
            _div(hidden["weight_grad_norm"].iloc[0], hidden["weight_grad_norm"].iloc[-1]))


_PLAIN = ("Linear", "NonDynamicallyQuantizableLinear", "Conv1d", "Conv2d", "Conv3d")
_SAFE_THROUGH = {"Dropout", "Flatten", "Identity", "flatten", "view", "reshape", "dropout", "contiguous"}


def _plain_graph(model: nn.Module, example):
    """The model's graph if ``predict_stds`` can use it (a traced chain without residual streams), else None:
    read once per audit, since the structure is the same under every candidate."""
    if not isinstance(example, torch.Tensor):
        return None
    try:
        graph = read_graph(model, example)
    except Exception:  # noqa: BLE001 - predictions are optional
        return None
    return graph if graph.method == "fx" and not graph.residual_streams else None


def predict_stds(model: nn.Module, example: torch.Tensor, graph=None) -> dict[str, float]:
    """Mean-field std of each weight layer's output, for the plain chain at the model's start.

    Per layer, in execution order: q = fan_in·E[W²]·m + E[b²], m the second moment of its input
    (E[x²] of the example for the first; E[φ(√q_prev z)²] by quadrature after an elementwise φ,
    q_prev after none), with E[W²], E[b²] of the weights as drawn (Poole et al. 2016, eq. 3). The
    chain stops at the first layer the theory does not cover here (a norm, pooling, a residual
    branch, a concatenation, a layer type other than Linear/Conv): later layers get no prediction.
    """
    if graph is None:
        try:
            graph = read_graph(model, example)
        except ValueError:
            return {}
    if graph.method != "fx" or graph.residual_streams:
        return {}
    m = float(example.detach().double().pow(2).mean())
    out: dict[str, float] = {}
    for layer in graph.layers:
        module = model.get_submodule(layer.name) if layer.name else model  # graph may come from another copy
        w, b = getattr(module, "weight", None), getattr(module, "bias", None)
        if layer.kind not in _PLAIN or not isinstance(w, torch.Tensor) or layer.concat_group is not None:
            break
        fan_in = w[0].numel()
        q = fan_in * float(w.detach().double().pow(2).mean()) * m
        q += float(b.detach().double().pow(2).mean()) if isinstance(b, torch.Tensor) else 0.0
        out[layer.name] = math.sqrt(q)
        if not set(layer.through) <= _SAFE_THROUGH:
            break
        if layer.feeds == "activation" and layer.activation is not None:
            try:
                m = theory.variance_map(layer.activation, q, 1.0, 0.0) if q > 0 else 0.0
            except Exception:  # noqa: BLE001 - a φ the quadrature cannot evaluate: stop predicting
                break
        elif layer.feeds == "none" and not layer.is_output:
            m = q
        else:
            break
    return out


def is_weight_layer(m: nn.Module) -> bool:
    """A layer whose weight initialization is audited: the torch weight types (and their subclasses, e.g.
    timm's StdConv2d) and the layers of other libraries that ``initialize`` recognizes (transformers' Conv1D)."""
    return (type(m).__name__ in WEIGHT_KINDS or isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding))
            or is_transposed_linear(m))


@contextlib.contextmanager
def _input_rms(model: nn.Module, example=None):
    """Within the block, record the RMS of the first tensor each weight layer receives (first call), by name;
    ``seen["<raw>"]`` holds the names of the layers that receive the example itself (the model's input)."""
    seen: dict = {"<raw>": set()}
    raw = first_tensor(example).data_ptr() if example is not None else None

    def hook(name):
        def pre(module, args):
            t = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if name not in seen and t is not None and t.is_floating_point():
                seen[name] = float(t.detach().double().pow(2).mean().sqrt())
                if raw is not None and t.data_ptr() == raw:
                    seen["<raw>"].add(name)
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if is_weight_layer(m)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _div(a, b) -> float:
    """a / b as a float; NaN when undefined (0/0, inf/inf, NaN), ±inf for x/0."""
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


LOGIT_STD_LIMIT = 3.0  # initial logits beyond this std make softmax near one-hot at step 0
LOSS_FACTOR = 2.0  # an initial loss over LOSS_FACTOR·ln C: the model is confidently wrong before training


def _flags(frame: pd.DataFrame, layers: pd.DataFrame, f: float, g: float, logit_std: float = math.nan,
           loss: float = math.nan, classes: int = 0) -> list[str]:
    flags = []
    if len(layers[layers["in_rms"].notna()]) >= 2 if "in_rms" in layers else len(layers) >= 2:
        for what, r in (("forward", f), ("gradient", g)):
            if not math.isfinite(r):
                flags.append(f"no {what} ratio ({r})")  # a missing measurement is a finding, never a pass
    if math.isfinite(logit_std) and logit_std > LOGIT_STD_LIMIT:
        flags.append(f"huge logits (std {logit_std:.3g} > {LOGIT_STD_LIMIT:g})")
    if classes > 1 and math.isfinite(loss) and loss > LOSS_FACTOR * math.log(classes):
        flags.append(f"initial loss {loss:.3g} ≫ ln C = {math.log(classes):.3g}")
    if len(layers) and float(layers["out_std"].iloc[0]) == 0:
        flags.append("no signal (the first layer outputs zeros)")
    grads = frame[["grad_out_norm", "weight_grad_norm"]].to_numpy(dtype=float)
    if (frame["nonfinite_frac"].fillna(0) > 0).any() or np.isinf(grads).any():
        flags.append("non-finite")
    if math.isfinite(f):
        if f < FORWARD_BOUNDS[0]:
            flags.append(f"vanishing (forward ×{f:.2g})")
        elif f > FORWARD_BOUNDS[1]:
            flags.append(f"exploding (forward ×{f:.2g})")
    if math.isfinite(g):
        if g < GRAD_BOUNDS[0]:
            flags.append(f"grad vanishing (first/last ×{g:.2g})")
        elif g > GRAD_BOUNDS[1]:
            flags.append(f"grad exploding (first/last ×{g:.2g})")
    dead = frame[frame["kind"].isin(RELU_FAMILY) & (frame["dead_frac"] > DEAD_LIMIT)]
    if len(dead):
        flags.append(f"dead ({len(dead)} layer{'s' if len(dead) > 1 else ''} > {DEAD_LIMIT:.0%} dead units)")
    sat = frame[frame["kind"].isin(list(SATURATING)) & (frame["sat_frac"] > SAT_LIMIT)]
    if len(sat):
        flags.append(f"saturated ({len(sat)} layer{'s' if len(sat) > 1 else ''} > {SAT_LIMIT:.0%} saturated)")
    sym = layers[layers["distinct_units"].notna() & (layers["distinct_units"] < layers["units"])]
    if len(sym):
        flags.append(f"symmetric ({len(sym)} layer{'s' if len(sym) > 1 else ''} with duplicate units)")
    return flags


def _targets(model: nn.Module, example, generator: torch.Generator, name: str = "the model"):
    """Random class labels for a (B, C) output (per token for a language model); None (loss = output sum) otherwise.

    The output must be a floating-point tensor with one row per example (``(B, ...)``): a scalar,
    a batch of another size or integer outputs (``argmax``) carry no per-example gradient signal.
    """
    x = first_tensor(example)
    with torch.no_grad():
        out = _Logits(model)(example)
    batch = x.shape[0] if x.dim() else None
    if is_token_input(example) and out.dim() == 2 and x.dim() == 2 and out.shape[0] == x.numel():
        batch = x.numel()  # per-token logits
    if out.dim() == 0 or out.shape[0] != batch:
        raise ValueError(f"{name} returns an output of shape {tuple(out.shape)} for an input of shape "
                         f"{tuple(x.shape)}; audit needs one output row per example, (batch, classes)")
    if not (out.is_floating_point() or out.is_complex()):
        raise ValueError(f"{name} returns {out.dtype} outputs, which carry no gradient; return the logits "
                         "(floating point), not e.g. their argmax")
    if out.dim() == 2 and out.shape[1] > 1:
        return torch.randint(0, out.shape[1], (out.shape[0],), generator=generator)
    return None


def _probe_one(model: nn.Module, example, targets, symmetry: str):
    """One forward and backward pass: the probe's rows, each weight layer's input RMS, the logits."""
    wrapped = _Logits(model)
    with _input_rms(model, example) as rms:
        frame = probe(wrapped, example, targets, symmetry=symmetry)
    frame["name"] = frame["name"].str.replace(r"^model\.?", "", regex=True)
    return frame[frame["name"] != ""].reset_index(drop=True), rms, wrapped.last


def _jacobian(net: nn.Module, example, seed: int) -> tuple[float, float]:
    """(mean squared singular value, decades of the middle 90%) of the logits' Jacobian w.r.t. the input
    on the first two examples (exact for small input×output, randomized otherwise); NaNs if it fails."""
    if not isinstance(example, torch.Tensor) or not example.is_floating_point():
        return math.nan, math.nan  # token ids have no Jacobian
    try:
        spec = jacobian_spectrum(_Logits(net), example, max_examples=2, generator=torch.Generator().manual_seed(seed))
        return float(spec.mean_sq), float(spec.decades)
    except Exception:  # noqa: BLE001 - non-differentiable models: no spectrum
        return math.nan, math.nan


def _first_step_mode(net: nn.Module) -> None:
    """The mode of the first training step, without its noise: train mode (norms normalize with the batch's
    statistics, as they will when training starts; in eval mode a fresh BatchNorm is the identity), and
    every dropout-like module (``Dropout*``, ``DropPath``, ``StochasticDepth``) in eval mode."""
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) or "drop" in type(m).__name__.lower() \
                or type(m).__name__ == "StochasticDepth":
            m.eval()


def _logit_stats(logits: torch.Tensor | None, targets) -> tuple[float, float]:
    """(std of the logits, cross-entropy on ``targets``) of the probe's forward pass; NaNs where undefined."""
    if logits is None or not logits.is_floating_point() or logits.numel() < 2:
        return math.nan, math.nan
    std = float(logits.double().std())
    loss = float(nn.functional.cross_entropy(logits.double(), targets)) if targets is not None else math.nan
    return std, loss


def audit(model: nn.Module, example, schemes: Sequence[str] | None = None, *,
          targets: torch.Tensor | None = None, seed: int = 0, name: str | None = None,
          jacobian: bool = False, symmetry: str = "exact", progress=None) -> AuditReport:
    """Measure the model's forward and backward signal at init under each candidate scheme.

    Args:
        model: any ``nn.Module`` called with one tensor, or with a dict example as keyword arguments
            (``{"input_ids": ids, "decoder_input_ids": ids}``); its output may be a tensor, a tuple
            (first tensor = logits) or a dict (``"logits"``). It is deep-copied, never changed; each copy
            is measured as at the first training step (train mode: norms use the batch's statistics;
            dropout off).
        example: an input batch (e.g. 256 training examples, or N(0, 1) of the input shape; token ids
            for a language model, whose logits are then scored per token).
        schemes: candidates; default ``auto, he, xavier, pytorch_default`` plus nothing else; ``"none"``
            audits the model's weights as they are (e.g. the init its library gave it).
        targets: class labels for a cross-entropy loss; default random labels for a (B, C) output,
            else the loss is the output's sum.
        seed: seed of every candidate's init generator (the same draws for each).
        name: how the model is called in messages.
        jacobian: also take the input-output Jacobian spectrum of each candidate (seconds to minutes
            on a large convnet: opt-in).
        symmetry: "exact" (default: bit-equal units, which is what zero and constant inits give, in a
            sort), "full" (``neuron_symmetry``'s tolerance and max cosine: units² distances per layer)
            or "none".
        progress: called as ``progress(done, total, scheme)`` before each candidate and at the end.

    Returns:
        :class:`AuditReport`; ``report.summary()`` is one row per scheme (with each candidate's
        seconds), ``assert_healthy()`` raises on flags.
    """
    candidates = parse_scheme_list(list(schemes) if schemes is not None else list(DEFAULT_CANDIDATES),
                                   allow={OWN_INIT})
    name = name or type(model).__name__
    require_materialized(model, "audit")
    x = first_tensor(example)
    if symmetry not in SYMMETRY_MODES:
        raise ValueError(f"unknown symmetry mode {symmetry!r}; choose from: {', '.join(SYMMETRY_MODES)}")
    try:
        targets = targets if targets is not None else _targets(model, example, torch.Generator().manual_seed(seed), name)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model failing on the example is a user error
        raise ValueError(f"{name} fails on the example input of shape {tuple(x.shape)}: "
                         f"{type(e).__name__}: {e}") from None
    weight_names = {n for n, m in model.named_modules() if n and is_weight_layer(m)}
    graph = _plain_graph(model, example)
    results, frames = {}, []
    for i, scheme in enumerate(candidates):
        if progress is not None:
            progress(i, len(candidates), scheme)
        start = time.perf_counter()
        # the user's model runs under every scheme (auto calls it too): its failure under one scheme
        # (a forward that raises on some weights, a model deepcopy cannot copy) is that scheme's error
        try:
            net = copy.deepcopy(model)
            if scheme != OWN_INIT:
                kwargs = {"example": example} if needs_example(scheme) else {}
                initialize(net, scheme, generator=torch.Generator().manual_seed(seed), **kwargs)
        except (ValueError, TypeError) as e:
            results[scheme] = SchemeAudit(scheme, pd.DataFrame(), math.nan, math.nan, [], error=str(e))
            continue
        except Exception as e:  # noqa: BLE001 - see above
            results[scheme] = SchemeAudit(scheme, pd.DataFrame(), math.nan, math.nan, [],
                                          error=f"{name} fails under {scheme}: {type(e).__name__}: {e}")
            continue
        _first_step_mode(net)
        try:
            frame, rms, logits = _probe_one(net, example, targets, symmetry)
        except Exception as e:  # noqa: BLE001 - see above
            results[scheme] = SchemeAudit(scheme, pd.DataFrame(), math.nan, math.nan, [],
                                          error=f"{name} fails under {scheme}: {type(e).__name__}: {e}")
            continue
        try:
            pred = predict_stds(net, example, graph) if graph is not None else {}
        except Exception:  # noqa: BLE001 - predictions are optional: a model they cannot read gets none
            pred = {}
        base = frame["name"].str.replace(r"#\d+$", "", regex=True)
        layers = frame[base.isin(weight_names)].drop_duplicates("name").reset_index(drop=True)
        layers["in_rms"] = [rms.get(n, math.nan) for n in layers["name"]]
        layers["reads_input"] = [n in rms["<raw>"] for n in layers["name"]]
        layers["pred_std"] = [pred.get(n, math.nan) for n in layers["name"]]
        f, g = _ratios(layers)
        jac = _jacobian(net, example, seed) if jacobian else (math.nan, math.nan)
        logit_std, loss = _logit_stats(logits, targets)
        classes = logits.shape[-1] if targets is not None and logits is not None and logits.dim() == 2 else 0
        flags = _flags(frame, layers, f, g, logit_std, loss, classes)
        results[scheme] = SchemeAudit(scheme, layers, f, g, flags, None, *jac, logit_std=logit_std, loss=loss,
                                      seconds=time.perf_counter() - start)
        frames.append(frame.assign(scheme=scheme))
    if progress is not None:
        progress(len(candidates), len(candidates), "")
    recommended, reason = _recommend(results)
    profile = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return AuditReport(name, results, recommended, reason, profile, model_notes(model, results))


LAYER_SCALE_SMALL = 1e-3  # a layer scale below this keeps its branch (and its gradient) ~off at init


def model_notes(model: nn.Module, results: Mapping[str, SchemeAudit]) -> tuple[str, ...]:
    """Why some flags are out of reach of any scalar init on this model (shown under the audit's table).

    * layer scales (timm LayerScale, ConvNeXt's ``gamma``) kept small by the model multiply each residual
      branch: the gradient reaching the branch's weights is that small too, under every init;
    * norm scales the model's own init set to zero (``zero_init_last``): those branches start at 0 and their
      last layers get no gradient (a gradient ratio of inf is then by design);
    * BatchNorm after the convs: a layer's weight gradient scales as 1/‖W‖ (the norm removes the weight's
      scale) and grows with the positions it sees, so a first/last gradient ratio far from 1 comes from the
      architecture (many positions at the stem, few at the last block), not from the init's scale.
    """
    notes = []
    scales = [(n, float(p.detach().abs().max())) for n, p in model.named_parameters()
              if p.dim() == 1 and raw_role(n.rpartition(".")[2], p) == "layer scale" and p.numel()]
    small = [n for n, v in scales if v < LAYER_SCALE_SMALL]
    if small:
        notes.append(f"{len(small)} layer scale(s) (e.g. {small[0]} = {dict(scales)[small[0]]:.1g}) are kept at the model's "
                     "own small value: each multiplies its residual branch, so the gradient reaching the branch's "
                     "weights is that small under every init (a large gradient ratio is by design)")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    zeros = [m for m in norms if isinstance(m.weight, torch.Tensor) and not m.weight.is_meta
             and bool((m.weight == 0).all())]
    if zeros:
        notes.append(f"the model's own init sets {len(zeros)} norm scale(s) to 0 (zero_init_last): those branches start "
                     "at 0 and their last layers get no gradient at init (a gradient ratio of inf under 'none' is by "
                     "design); other candidates reset them to 1")
    grad_flags = any(a.error is None and ("grad exploding" in " ".join(a.flags) or "grad vanishing" in " ".join(a.flags))
                     for a in results.values())
    if norms and grad_flags:
        notes.append("BatchNorm follows the convolutions: a layer's weight gradient scales as 1/‖W‖ and grows with the "
                     "positions it sees, so a first/last gradient ratio far from 1 comes from the architecture (many "
                     "positions at the stem, few at the last block), not from the scale an init draws")
    return tuple(notes)


def check_mlp_memory(sizes: Sequence[int], batch: int) -> int:
    """Refuse (one-line ValueError) auditing an MLP of layer ``sizes`` (in, hidden..., out) on
    ``batch`` examples when it would not fit in free CPU memory; return the estimate in bytes.

    Estimate (as :func:`initlab.analysis.diagnostics.check_profile_memory`, plus the caller's model next to
    each candidate's copy): parameters three times (model, copy, gradients; 4 bytes each), the
    example batch, and per hidden layer the batch's outputs kept for backward, their gradients and
    the float64 copies the statistics take (≈ 6 × 4 bytes per element, Linear and activation rows).
    """
    sizes = [int(n) for n in sizes]
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    need = 12 * params + 4 * batch * sizes[0] + 24 * batch * (2 * sum(sizes[1:-1]) + sizes[-1])
    free = available_bytes("cpu")
    if free is not None and need > free:
        raise ValueError(f"auditing a {arch_text(sizes)} MLP on {batch} examples needs ~{format_bytes(need)} but the "
                         f"CPU has {format_bytes(free)} free; use a smaller width, depth, --batch or input")
    return need


def _recommend(results: dict[str, SchemeAudit]) -> tuple[str | None, str]:
    ok = {k: a for k, a in results.items() if a.error is None}
    if not ok:
        return None, "no candidate could be applied to this model"

    def cost(a: SchemeAudit) -> tuple[int, float]:
        spread = sum(abs(math.log(r)) if r > 0 and math.isfinite(r) else math.inf for r in (a.forward_ratio, a.grad_ratio))
        return len(a.flags), spread

    best = min(ok, key=lambda k: cost(ok[k]))
    a = ok[best]
    nums = f"forward ratio {a.forward_ratio:.3g}, gradient ratio {a.grad_ratio:.3g}"
    others = [f"{k}: {', '.join(o.flags)}" for k, o in ok.items() if k != best and o.flags]
    if a.flags:
        return best, f"{best} has the fewest problems ({'; '.join(a.flags)}; {nums}); no candidate is healthy"
    return best, f"{best} keeps both signals bounded ({nums})" + ("; " + "; ".join(others) if others else "")


def plot_audit(report: AuditReport, out_dir: str | Path) -> list[Path]:
    """``audit_forward.png`` and ``audit_backward.png``: per weight layer, one line per scheme."""
    out_dir = Path(out_dir)
    paths = []
    for col, label, fname in (("out_std", "std of the layer's output", "audit_forward.png"),
                              ("weight_grad_norm", "‖dLoss/dW‖", "audit_backward.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, a in report.candidates.items():
            if a.error is not None or a.layers.empty:
                continue
            v = a.layers[col].to_numpy(dtype=float)
            v = np.where(np.isfinite(v) & (v > 0), v, np.nan)
            line = ax.plot(np.arange(1, len(v) + 1), v, "-", marker="o", ms=3, lw=2.2 if name == report.recommended else 1.2,
                           label=name + (" (recommended)" if name == report.recommended else ""))[0]
            if col == "out_std" and a.layers["pred_std"].notna().any():
                ax.plot(np.arange(1, len(v) + 1), a.layers["pred_std"].to_numpy(dtype=float), ":", color=line.get_color(), lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("weight layer (forward order)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        predicted = any(line.get_linestyle() == ":" for line in ax.get_lines())  # say only what is drawn
        ax.set_title(f"{report.model_name}: {label} at init" + ("\n(dotted: mean-field prediction)" if predicted else ""),
                     fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
        if ax.get_legend_handles_labels()[0]:  # no lines when every candidate failed
            ax.legend(fontsize=8)
        paths.append(save_figure(fig, out_dir / fname))
    return paths
