"""Claims as experiments: the registry (``Claim``, ``ClaimResult``, ``register_claim``, ``run_claims``),
the thresholds verdicts use, and the measurements checks share.

Every :class:`Claim` quotes the seed verbatim and owns a check that runs in seconds (the bundled
8×8 digits set or Gaussian inputs, fixed ``torch.Generator`` seeds) and returns a
:class:`ClaimResult`: ``confirmed`` / ``refuted`` / ``depends`` (with the condition), one summary
sentence, the measured numbers and, where a picture helps, a PNG. Verdicts are computed from
the measurements against the thresholds defined below; nothing is hard-coded.

Registry in timm style: ``@register_claim(...)`` fills ``CLAIMS``; ``list_claims`` /
``get_claim`` look them up; ``run_claims`` runs some or all of them and writes ``claims.json``
and ``claims.md`` (atomically, after every claim) plus the plots into ``out``.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from initlab import store
from initlab.analysis.probe import probe
from initlab.core.display import html_of
from initlab.data import load_dataset
from initlab.experiments.options import check_threads
from initlab.models import mlp
from initlab.plots.compare import plt, save_figure
from initlab.schemes import initialize, split_top_level
from initlab.training.loop import INIT_STREAM, TrainConfig, make_generator, train_model

VERDICTS = ("confirmed", "refuted", "depends")
SEED_FILE = "weight-initialization-notebook.txt"

# ----------------------------------------------------------------------------- thresholds
# VANISHED: a backward signal that reaches the first layer 1000× weaker than it left the logits.
#   SGD changes a layer's weights in proportion to its gradient, so the first layer then learns
#   three orders of magnitude slower than the last: "vanished" for any epoch budget we can afford.
#   EXPLODED is the mirror image.
VANISHED, EXPLODED = 1e-3, 1e3
# PRESERVED: a variance or gradient ratio over a whole net within [1/4, 4]. At width n the
#   log-variance of a random net fluctuates by about sqrt(2L/n) over L layers (0.4 for L=20,
#   n=256), so a factor 4 (ln 4 = 1.39) is > 3σ from what a preserving init can show by chance,
#   while 2^-19 (Xavier + ReLU over 20 layers) is not remotely close.
PRESERVE_FACTOR = 4.0
# TRAINS: a net "trains" when its test accuracy covers at least half of the way from the
#   constant predictor (what a net that learned nothing scores) to the reference (He init on the
#   same architecture, the best-known init for ReLU): below that, most of the attainable gain is lost.
TRAIN_FRACTION = 0.5


def is_preserved(ratio: float, factor: float = PRESERVE_FACTOR) -> bool:
    return bool(np.isfinite(ratio) and 1 / factor <= ratio <= factor)


def has_trained(acc: float, chance: float, ref: float) -> bool:
    return bool(np.isfinite(acc) and acc >= chance + TRAIN_FRACTION * (ref - chance))


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim. ``evidence``: measured numbers (JSON-able); ``plot``: PNG path or None."""

    id: str
    verdict: str  # one of VERDICTS
    condition: str  # when the claim holds, for "depends" ("" otherwise)
    summary: str  # one sentence with the key numbers
    evidence: dict = field(default_factory=dict, hash=False)
    plot: str | None = None
    seconds: float = 0.0

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict '{self.verdict}'; choose from: {', '.join(VERDICTS)}")
        if self.verdict == "depends" and not self.condition:
            raise ValueError(f"claim '{self.id}': a 'depends' verdict needs its condition")


@dataclass(frozen=True)
class CheckContext:
    """What a check gets: ``quick`` shrinks the experiment (tests), ``out`` is where plots go (or None)."""

    quick: bool = False
    out: Path | None = None

    def plot_path(self, name: str) -> Path | None:
        return None if self.out is None else self.out / name


@dataclass(frozen=True)
class Claim:
    """One claim of the seed: ``quote`` is verbatim (whitespace normalized), ``check`` tests it."""

    id: str
    quote: str
    section: str  # where in the seed, e.g. "Part 2 §1 Zero Initialization"
    short: str  # the claim in a few words, for tables
    check: Callable[[CheckContext], ClaimResult] = field(repr=False, compare=False)

    def run(self, quick: bool = False, out: str | Path | None = None) -> ClaimResult:
        """Run the check and time it; the result's id is this claim's."""
        t0 = time.perf_counter()
        res = self.check(CheckContext(quick=quick, out=None if out is None else Path(out)))
        return ClaimResult(self.id, res.verdict, res.condition, res.summary, _jsonable(res.evidence),
                           res.plot, round(time.perf_counter() - t0, 2))


CLAIMS: dict[str, Claim] = {}


def register_claim(id: str, *, quote: str, section: str, short: str):
    """Decorator: register ``check(ctx) -> ClaimResult`` as claim ``id`` (re-registering warns and replaces)."""

    def deco(fn: Callable[[CheckContext], ClaimResult]):
        if id in CLAIMS:
            warnings.warn(f"claim {id!r} is already registered; overwriting it", stacklevel=2)
        CLAIMS[id] = Claim(id, " ".join(quote.split()), section, short, fn)
        return fn

    return deco


def list_claims() -> list[str]:
    """Registered claim ids in seed order."""
    return list(CLAIMS)


def get_claim(id: str | Claim) -> Claim:
    """The claim registered as ``id``; unknown ids raise a one-line ValueError listing the valid ones."""
    if isinstance(id, Claim):
        return id
    if id not in CLAIMS:
        raise ValueError(f"unknown claim '{id}'; choose from: {', '.join(CLAIMS)}")
    return CLAIMS[id]


def resolve_claims(ids: Sequence[str | Claim] | None) -> list[Claim]:
    """The claims ``ids`` (all, in registry order, when None); an unknown id or one given twice is a ValueError."""
    if ids is None:
        return list(CLAIMS.values())
    claims = [get_claim(i) for i in ids]
    seen: set[str] = set()
    for c in claims:
        if c.id in seen:
            raise ValueError(f"claim '{c.id}' is given twice; give each claim once")
        seen.add(c.id)
    return claims


def claims_request(only: str | None, *, out: str | Path, overwrite: bool = False, threads: int = 1) -> list[str] | None:
    """``initlab claims``' options, checked before any claim runs: ``only`` the comma-separated claim ids (None:
    every claim), the thread count and the output folder. Returns the ids (None: all)."""
    ids = None if only is None else split_top_level(only, what="--only")
    resolve_claims(ids)
    check_threads(threads)
    store.check_out_dir(out, "claims", overwrite=overwrite)
    return ids


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else str(x)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    return obj


class ClaimResults(list):
    """``run_claims``'s answer: a list of :class:`ClaimResult` that knows its claims, whether it was
    ``quick`` and its folder (``out``, or None); in a notebook it renders as the claims report page."""

    def __init__(self, claims: Sequence[Claim], results: Sequence[ClaimResult], quick: bool, out: Path | None):
        super().__init__(results)
        self.claims, self.quick, self.out = list(claims), quick, out

    def __repr__(self) -> str:
        counts = {v: sum(r.verdict == v for r in self) for v in VERDICTS}
        tally = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        return f"<ClaimResults: {len(self)} claims ({tally}){' (quick)' if self.quick else ''}>"

    def _repr_html_(self) -> str | None:
        return html_of(self)


def run_claims(ids: Sequence[str] | None = None, *, out: str | Path | None = None, quick: bool = False,
               on_result: Callable[[Claim, ClaimResult], None] | None = None,
               overwrite: bool = False) -> ClaimResults:
    """Run the claims ``ids`` (all when None) in registry order; write claims.json/.md after each.

    Unknown or repeated ids raise before anything runs. ``out`` follows the output-folder contract
    (:func:`initlab.store.check_out_dir`); ``overwrite`` replaces an earlier claims result.
    """
    claims = resolve_claims(ids)
    out_dir = store.claim_out_dir(out, "claims", overwrite=overwrite) if out is not None else None
    results: list[ClaimResult] = []
    for claim in claims:
        res = claim.run(quick=quick, out=out_dir)
        results.append(res)
        if out_dir is not None:
            write_report(claims[: len(results)], results, out_dir, quick=quick)
        if on_result is not None:
            on_result(claim, res)
    return ClaimResults(claims, results, quick, out_dir)


def write_report(claims: Sequence[Claim], results: Sequence[ClaimResult], out_dir: Path, *, quick: bool) -> None:
    """``claims.json`` (quote, section, verdict, evidence per claim) and a readable ``claims.md``."""
    records = [{"id": c.id, "section": c.section, "quote": c.quote, "short": c.short, **asdict(r)}
               for c, r in zip(claims, results)]
    for rec in records:
        rec["plot"] = None if rec["plot"] is None else Path(rec["plot"]).name
    store.atomic_write_json(out_dir / "claims.json", {"quick": quick, "claims": records})
    lines = ["# The seed notebook's claims, tested", "",
             f"Generated by `initlab claims`{' --quick' if quick else ''}; every number below was measured.", "",
             "| id | claim | verdict | evidence |", "|---|---|---|---|"]
    for rec in records:
        v = rec["verdict"] + (f" ({rec['condition']})" if rec["condition"] else "")
        lines.append(f"| {rec['id']} | {rec['short']} | **{v}** | {rec['summary']} |")
    for rec in records:
        lines += ["", f"## {rec['id']}: {rec['verdict']}", "", f"*{rec['section']}*", "", f"> {rec['quote']}", "",
                  f"**Verdict: {rec['verdict']}**" + (f" — {rec['condition']}" if rec["condition"] else ""), "",
                  rec["summary"], "", "Evidence:", "", "```"]
        lines += [f"{k}: {v}" for k, v in rec["evidence"].items()]
        lines += ["```"]
        if rec["plot"]:
            lines += ["", f"![{rec['id']}]({rec['plot']})"]
        lines += ["", f"({rec['seconds']:.1f} s)"]
    store.atomic_write_text(out_dir / "claims.md", "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- shared measurements


@functools.lru_cache(maxsize=1)
def digits_data():
    return load_dataset("digits")


def constant_rate() -> float:
    """Test accuracy of always predicting the train set's majority class: a net that learned nothing."""
    d = digits_data()
    return float((d.y_test == torch.bincount(d.y_train).argmax()).double().mean())


def digits_mlp(hidden: Sequence[int], activation: str, scheme: str, seed: int = 0, in_features: int | None = None):
    d = digits_data()
    model = mlp(in_features or d.in_features, tuple(hidden), d.num_classes, activation)
    return initialize(model, scheme, generator=make_generator(seed, INIT_STREAM))


@functools.lru_cache(maxsize=64)
def fit_digits(hidden: tuple[int, ...], activation: str, scheme: str, epochs: int, lr: float, seed: int = 0):
    """Train a fresh digits MLP; returns (model, RunResult). Cached: several claims share runs."""
    model = digits_mlp(hidden, activation, scheme, seed)
    res = train_model(model, digits_data(), TrainConfig(epochs=epochs, lr=lr), seed=seed)
    return model, res


def final_acc(res) -> float:
    return float(res.epochs[-1]["test_acc"]) if not res.diverged else math.nan


@functools.lru_cache(maxsize=64)
def signal_profile(activation: str, scheme: str, depth: int, width: int, seed: int = 0, n: int = 256) -> pd.DataFrame:
    """Probe a random ``depth``-hidden-layer MLP on x ~ N(0, I_width), random labels: Linear rows only.

    Columns of ``initlab.analysis.probe.probe`` plus ``layer`` (1..depth+1); ``out_std`` of a Linear is the
    pre-activation std, ``grad_out_norm`` the backward signal dL/dh at that layer.
    """
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(n, width, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    model = digits_mlp((width,) * depth, activation, scheme, seed, in_features=width)
    frame = probe(model, x, y)
    lin = frame[frame["kind"] == "Linear"].reset_index(drop=True)
    lin.insert(0, "layer", np.arange(1, len(lin) + 1))
    return lin


def gradient_ratio(lin: pd.DataFrame) -> float:
    """Backward signal at the first layer over that at the logits: ||dL/dh_1|| / ||dL/dh_L||."""
    return float(lin["grad_out_norm"].iloc[0] / lin["grad_out_norm"].iloc[-1])


def save_plot(ctx: CheckContext, name: str, draw: Callable) -> str | None:
    path = ctx.plot_path(name)
    if path is None:
        return None

    fig = draw(plt)
    return str(save_figure(fig, path))


def _fmt(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)

