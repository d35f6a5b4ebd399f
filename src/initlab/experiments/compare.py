"""Comparisons of init schemes done honestly: fresh model per run, paired seeds, held-out test set.

``compare`` trains one freshly built and initialized model per (init, seed), every init of a seed
on the same batch order, evaluates on the test split after every epoch, records divergence (where
and why, :data:`initlab.training.loop.DIVERGE_LOSS`) instead of crashing, and (with ``out``) writes results
to disk as they are known, every run with its status (:mod:`initlab.experiments.runbook`). Runs train
together in a batched engine (:mod:`initlab.training.mlp_engine`, :mod:`initlab.training.func_engine`),
one memory-sized group at a time, or one at a time (``engine="single"``); by default (``"auto"``)
whichever is measured fastest on the comparison's shapes (:func:`select_engine`). All give the same
numbers up to float32 summation order. An interrupted comparison (Ctrl-C, SIGTERM, ``kill -9``)
continues with ``resume=True``: finished runs are kept, the others rerun from their start.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import platform
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from initlab import store
from initlab.analysis.probe import probe_stats
from initlab.core.checks import is_integer
from initlab.core.display import html_of
from initlab.data import DATASETS, NORMALIZATIONS, Dataset, load_dataset, majority_rate
from initlab.experiments.progress import RichReporter, bars, show_progress
from initlab.experiments.runner import Job, Sink, run_jobs
from initlab.experiments.runbook import NA, STEP_COLUMNS, Run, RunBook, read_metrics, read_probe, read_steps
from initlab.models import (
    arch_text,
    check_activation,
    check_output,
    check_widths,
    input_shape_of,
    is_factory_spec,
    make_model,
    mlp,
    model_text,
    parse_hidden,
    parse_model,
    resolve_model,
)
from initlab.plots.compare import plot_compare, plot_probe
from initlab.schemes import SchemeSpec, initialize, needs_example, parse_scheme, parse_scheme_list
from initlab.training.loop import (
    INIT_STREAM,
    MAX_INT,
    PROBE_STREAM,
    TrainConfig,
    derive_seed,
    device_text,
    make_generator,
    resolve_device,
)
from initlab.training.choice import EngineChoice, choose, engine_candidates, intra_op_threads
from initlab.training.func_engine import EVAL_BYTES, vmap_problem
from initlab.training.memory import available_bytes, format_bytes, module_footprint
from initlab.training import mlp_engine
from initlab.training.mlp_engine import DEFAULT_MEMORY_BUDGET, MLPLayout, bytes_per_model, mlp_layout

SEED_INITS = ("zero", "random", "xavier", "he")  # the four schemes of the seed notebook
# batched: a group of runs as one computation (initlab.training.mlp_engine for initlab's MLPs, func_engine for
# other vmappable models); single: train_model per run; auto: whichever of those is measured fastest on the
# group's shapes (select_engine, initlab.training.choice)
ENGINES = ("batched", "single", "auto")
# auto measures only when the runs have at least this many optimizer steps in all (runs × epochs ×
# steps per epoch): measuring costs ~0.1-1 s per candidate (building, warm-up, three timed rounds),
# more than a few hundred steps of a small model take; below it auto trains with the batched
# engine, as "batched" does. (12 runs × 2 epochs of digits are 552 steps: measured.)
MEASURE_MIN_MODEL_STEPS = 500
# ... and only when the first engine's warm-up rate says the training takes at least this many seconds
# (the whole measurement takes ~1-3 s on a 2-core CPU; a shorter training cannot repay it)
MEASURE_MIN_SECONDS = 2.0
# the batched engines are timed on at most this many models (the group's size if smaller): the
# measurement holds one population per engine at once, and per-model rates change little beyond
# K ≈ 8-16 (docs/performance.md: 0.39 s/model-epoch at K = 8, 0.36 at 16, 0.30 at 64)
MEASURE_MAX_MODELS = 16
# the measurement stops once it has taken this fraction of the projected training time (its steps are
# thrown away): on a short comparison the first, batched engine trains; a long one is measured in full
MEASURE_BUDGET = 0.05
BUNDLED = ("digits",)  # datasets that ship with a dependency: --data-dir has no effect on them
# Fields of CompareSpec that change how a comparison is computed but not its results (the engines
# agree up to float32 summation order, tests/test_engine.py): a resumed comparison may change them.
RESUMABLE_CHANGES = ("device", "engine")


@dataclass(frozen=True)
class CompareSpec:
    """A comparison: which inits, on what data and network, trained how, over which seeds."""

    inits: tuple[str, ...] = SEED_INITS  # scheme strings, e.g. "he" or "normal(std=0.05)"; also SchemeSpec/dict
    dataset: str = "mnist"  # digits | mnist | fashion-mnist
    data_dir: str | None = None  # local IDX files; None = system dirs, cache, then download
    normalize: str = "seed"  # seed: (x-0.5)/0.5 | standardize: train mean/std | none
    hidden: tuple[int, ...] = (128,)  # hidden widths; (128,) is the seed's 784-128-10 network; or "128,128"
    activation: str = "relu"
    seeds: int = 1  # runs per init; run seeds are first_seed .. first_seed+seeds-1
    first_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"  # auto | cpu | cuda
    engine: str = "auto"  # auto: the engine measured fastest | batched: groups of runs as one computation | single
    probe: bool = True  # per-layer statistics (initlab.analysis.probe) at init and after every epoch, every run
    probe_size: int = 256  # examples in the fixed probe batch (same for all runs and epochs)
    # None: the MLP of hidden/activation. A zoo spec ("resnet(blocks=20,norm=none)"), the user's
    # "module:factory", or a callable; built fresh for every run (initlab.models.make_model).
    model: Any = None

    def __post_init__(self):
        # canonical forms first: one scheme string or a list of them, SchemeSpec/dict; "64,64" or ints
        own_init = False
        if self.model is not None:
            source = resolve_model(self.model)  # imports a factory / checks a zoo spec: errors now, not mid-run
            if isinstance(self.model, str) and not is_factory_spec(self.model):
                object.__setattr__(self, "model", str(parse_model(self.model)))
            own_init = callable(source)
        object.__setattr__(self, "inits", parse_scheme_list(self.inits, allow={"none"} if own_init else ()))
        hidden = parse_hidden(self.hidden) if isinstance(self.hidden, str) else check_widths(self.hidden)
        object.__setattr__(self, "hidden", hidden)
        if self.model is not None and (hidden != (128,) or self.activation != "relu"):
            raise ValueError("hidden widths and activation have no effect with a model; give them in the model spec, "
                             "e.g. 'mlp(depth=2,width=64,activation=tanh)', or drop the model")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset '{self.dataset}'; choose from: {', '.join(DATASETS)}")
        if self.data_dir is not None and self.dataset in BUNDLED:
            raise ValueError(f"--data-dir has no effect with dataset '{self.dataset}' (bundled); drop it or "
                             f"choose from: {', '.join(d for d in DATASETS if d not in BUNDLED)}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization '{self.normalize}'; choose from: {', '.join(NORMALIZATIONS)}")
        check_activation(self.activation)
        # numpy integers are integers (np.int64(2) from a grid), bools are not; stored as int
        if not is_integer(self.seeds) or not 0 < self.seeds <= MAX_INT:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        if not is_integer(self.first_seed) or not 0 <= self.first_seed <= MAX_INT - self.seeds:
            raise ValueError(f"first seed must be an integer from 0 to {MAX_INT} - seeds, got {self.first_seed!r}")
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        object.__setattr__(self, "device", device_text(self.device))  # torch.device("cpu") -> "cpu"
        resolve_device(self.device)
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine '{self.engine}'; choose from: {', '.join(ENGINES)}")
        if not is_integer(self.probe_size) or not 0 < self.probe_size <= MAX_INT:
            raise ValueError(f"probe size must be a positive integer, got {self.probe_size!r}")
        if not isinstance(self.probe, bool):
            raise ValueError(f"probe must be true or false, got {self.probe!r}")
        for name in ("seeds", "first_seed", "probe_size"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def schemes(self) -> dict[str, SchemeSpec]:
        """Each init label (as written: "he" and "kaiming_uniform" are different labels) → its parsed spec;
        "none" (the model's own init) is ``SchemeSpec("none")``. The labels were checked when the spec was
        made; this only reads them back (not cached: a spec stays picklable for Ray and worker processes)."""
        return {text: parse_scheme(text) for text in self.inits}

    @property
    def run_seeds(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = dataclasses.asdict(self.train)
        d["model"] = model_text(self.model)
        d["schemes"] = {text: scheme.to_dict() for text, scheme in self.schemes.items()}
        return d

    @property
    def arch(self) -> str:
        """The network in words for titles: ``resnet(blocks=20,norm=none)`` or ``128 relu MLP``."""
        if self.model is not None:
            return model_text(self.model)
        return f"{arch_text(self.hidden) or 'linear'} {self.activation} MLP"


def spec_differences(old: dict, new: dict) -> list[str]:
    """Names of the fields (``train.lr`` for nested ones) whose values differ between two spec dicts."""
    diff = []
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_CHANGES:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key == "train":
            diff += [f"train.{k}" for k in sorted(set(a) | set(b)) if _norm(a.get(k)) != _norm(b.get(k))]
        elif _norm(a) != _norm(b):
            diff.append(key)
    return diff


def _norm(v):
    """JSON round-trips turn tuples into lists; compare the JSON forms."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


class Reporter:
    """Receives progress events from :func:`run_compare`; the CLI's subclass draws progress bars."""

    def start(self, spec: CompareSpec, total_runs: int) -> None: ...
    def run_skipped(self, init: str, seed: int, status: str) -> None: ...  # finished in an earlier session
    def run_start(self, init: str, seed: int) -> None: ...
    def epoch_end(self, init: str, seed: int, row: dict) -> None: ...
    def run_end(self, init: str, seed: int, diverged: bool, reason: str | None = None) -> None: ...

    def note(self, message: str) -> None:
        """A one-line remark about how the comparison runs (e.g. why the batched engine is not used)."""
        warnings.warn(message, stacklevel=3)


class Deferred:
    """A frame not read yet: ``read(path)`` gives it (a :class:`CompareResult`'s rows in its folder)."""

    def __init__(self, read: Callable[[Path], Any], path: Path):
        self.read, self.path = read, path

    def __call__(self):
        return self.read(self.path)


class LazyFrame:
    """A :class:`CompareResult` field that may be given as a :class:`Deferred`: read when first asked,
    then kept like any attribute (a dataclass field with a descriptor; ``default`` as a field default)."""

    def __init__(self, default: Any = dataclasses.MISSING):
        self.default = default

    def __set_name__(self, owner, name):
        self.slot = f"_{name}_value"

    def __get__(self, obj, owner=None):
        if obj is None:
            if self.default is dataclasses.MISSING:
                raise AttributeError(self.slot)  # a dataclass field without default
            return self.default
        value = obj.__dict__[self.slot]
        if isinstance(value, Deferred):
            value = obj.__dict__[self.slot] = value()
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value


@dataclass
class CompareResult:
    """``metrics``: one row per run per epoch; ``steps``: per-step train loss; ``summary``: per init;
    ``runs``: one row per run with its status; ``complete``: False after an interruption.

    A comparison run with an output folder keeps its runs' rows there, not in memory (memory stays
    bounded for many seeds): ``steps`` and ``probe`` are read from the folder's CSVs when first asked
    (``metrics`` at once, for the summary), with the same columns, types and values as a comparison
    without a folder returns; without a folder every frame is in memory.
    """

    spec: CompareSpec
    metrics: pd.DataFrame = LazyFrame()
    steps: pd.DataFrame = LazyFrame()
    summary: pd.DataFrame
    out: Path | None = None
    seconds: float = 0.0
    probe: pd.DataFrame | None = LazyFrame(None)  # per run, epoch (0 = at init) and layer: probe_stats rows
    runs: pd.DataFrame | None = None
    chance: dict = field(default_factory=dict)  # majority-class rate, threshold, test size
    complete: bool = True
    engine: dict | None = None  # the engine that trained the runs and why (EngineChoice.to_dict)

    def __repr__(self) -> str:
        s = self.spec
        best = self.summary.sort_values("final_test_acc_mean", ascending=False).head(4)
        accs = ", ".join(f"{r.init} {r.final_test_acc_mean:.3f}" for r in best.itertuples())
        state = "" if self.complete else ", INTERRUPTED"
        return (f"<CompareResult: {len(s.inits)} inits × {s.seeds} seed{'s' if s.seeds > 1 else ''} on {s.dataset}, "
                f"{s.arch}, {s.train.epochs} epochs{state}; final test acc {accs}"
                f"{'' if self.out is None else f'; {self.out}'}>")

    def _repr_html_(self) -> str | None:
        return html_of(self)


def chance_level(y_test: torch.Tensor) -> dict:
    """What "no better than chance" means on this test set.

    ``rate``: accuracy of always answering the test set's most frequent class (the best constant
    classifier, e.g. what zero init learns). ``threshold``: rate + 3·√(rate(1−rate)/n), three
    binomial standard deviations above it; a final accuracy at or below it is not evidence of
    learning. On MNIST (rate 0.1135, n 10000) the threshold is 0.123; on digits (0.103, 360) 0.151.
    """
    n = int(y_test.shape[0])
    rate = majority_rate(y_test)
    return {"rate": rate, "threshold": rate + 3 * math.sqrt(rate * (1 - rate) / n), "test_size": n}


def example_batch(data: Dataset, size: int = 256) -> torch.Tensor:
    """Indices of ``size`` training examples drawn once from stream PROBE_STREAM of seed 0: the fixed batch
    every run is checked and probed on, and what data-dependent inits (``auto``) read."""
    g = make_generator(0, PROBE_STREAM)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:size].to(data.x_train.device)
    return idx


def image_in_shape(data: Dataset) -> tuple[int, ...]:
    """The (C, H, W) a model is built for: one channel of the dataset's images."""
    return (1, *data.image_shape) if len(data.image_shape) == 2 else tuple(data.image_shape)


def new_model(spec: CompareSpec, data: Dataset, seed: int) -> torch.nn.Module:
    """The network of ``spec`` before any scheme, built under stream INIT_STREAM of ``seed``: the
    torch RNG is seeded from it (and restored after), so a model's own init ("none") is reproducible."""
    if spec.model is None:
        return mlp(data.in_features, spec.hidden, data.num_classes, spec.activation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, INIT_STREAM))
        return make_model(spec.model, image_in_shape(data), data.num_classes)


def prepare_data(spec: CompareSpec, data: Dataset) -> Dataset:
    """``data`` in the layout ``spec``'s model wants, after checking once, on throwaway instances, that
    the model runs on it and returns (batch, classes) logits, and that every init can initialize it
    (fixup needs residual branches, dirac convolutions, ...): one-line ValueError otherwise, before
    any run starts."""
    model = new_model(spec, data, spec.first_seed)
    if spec.model is None:
        shaped = data.shaped((data.in_features,))
    else:
        shaped = data.shaped(input_shape_of(model, data.image_shape))
        check_output(model, shaped.x_train[:8], data.num_classes, what=f"model {model_text(spec.model)}")
    for text, scheme in spec.schemes.items():
        if scheme.name == "none":
            continue
        extra = {"example": shaped.x_train[:16].cpu()} if _needs_example(scheme) else {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. auto's notes: the real runs will show them
                initialize(new_model(spec, data, spec.first_seed), scheme, generator=torch.Generator().manual_seed(0),
                           **extra)
        except ValueError as e:
            raise ValueError(f"init {text!r} cannot initialize {spec.arch}: {e}") from None
    return shaped


def _needs_example(scheme: SchemeSpec) -> bool:
    return needs_example(scheme)


def build_model(spec: CompareSpec, data: Dataset, scheme: SchemeSpec, seed: int, device) -> torch.nn.Module:
    """A fresh model for one run, initialized by ``scheme`` from stream INIT_STREAM of ``seed``.

    ``data`` is in the model's layout (:func:`prepare_data`). Scheme ``none`` keeps the model's own
    init (drawn under the run's seed, :func:`new_model`).
    """
    model = new_model(spec, data, seed)
    if scheme.name == "none":
        return model.to(device)
    extra = {}
    if _needs_example(scheme):  # data-dependent (auto, lsuv): reads the model on the fixed probe batch (CPU)
        extra["example"] = data.x_train[example_batch(data, spec.probe_size)].cpu()
    initialize(model, scheme, generator=make_generator(seed, INIT_STREAM), **extra)  # CPU draws: device-independent
    return model.to(device)


def summarize(metrics: pd.DataFrame, inits: Sequence[str], *, runs: pd.DataFrame | None = None,
              chance: float = math.nan) -> pd.DataFrame:
    """Per init: final test accuracy and loss (mean ± std over finished, non-diverged runs), speed, status.

    Only runs that trained every epoch count in the means (a diverged or interrupted run's last
    accuracy says nothing about the init's final accuracy). ``at_chance``: the init's mean final
    accuracy is at or below ``chance`` (:func:`chance_level`'s threshold). ``epochs_to_95``: the
    first epoch at which the init's seed-mean test accuracy reaches 95% of the best final
    seed-mean accuracy among inits that are not at chance; NaN for an init at chance, with no
    finished run, or that never gets there: no ranking credits a diverged run or a chance-level one.
    """
    cols = ["init", "runs", "done", "diverged", "interrupted", "final_test_acc_mean", "final_test_acc_std",
            "final_test_loss_mean", "final_test_loss_std", "at_chance", "epochs_to_95"]
    if metrics.empty and (runs is None or runs.empty):
        return pd.DataFrame(columns=cols)
    if runs is None:  # metrics only (older callers): a run is done when its last row did not diverge
        last = metrics.sort_values("epoch").groupby(["init", "seed"], sort=False).tail(1)
        runs = pd.DataFrame({"init": last["init"], "seed": last["seed"],
                             "status": np.where(last["diverged"].astype(bool), "diverged", "done")})
    done_keys = set(map(tuple, runs.loc[runs["status"] == "done", ["init", "seed"]].to_numpy().tolist()))
    finished = metrics[[(i, s) in done_keys for i, s in zip(metrics["init"], metrics["seed"])]] if len(metrics) else metrics
    last = finished.sort_values("epoch").groupby(["init", "seed"], sort=False).tail(1) if len(finished) else finished
    rows = []
    for init in inits:
        r = runs[runs["init"] == init]
        if r.empty:
            continue
        fin = last[last["init"] == init] if len(last) else last
        n = len(fin)
        acc = fin["test_acc"].mean() if n else math.nan
        rows.append({
            "init": init, "runs": len(r), "done": int((r["status"] == "done").sum()),
            "diverged": int((r["status"] == "diverged").sum()),
            "interrupted": int((~r["status"].isin(["done", "diverged"])).sum()),
            "final_test_acc_mean": acc,
            "final_test_acc_std": fin["test_acc"].std(ddof=1) if n > 1 else (0.0 if n else math.nan),
            "final_test_loss_mean": fin["test_loss"].mean() if n else math.nan,
            "final_test_loss_std": fin["test_loss"].std(ddof=1) if n > 1 else (0.0 if n else math.nan),
            "at_chance": bool(n and math.isfinite(chance) and acc <= chance),
        })
    summary = pd.DataFrame(rows, columns=cols[:-1])
    ranked = summary[(summary["done"] > 0) & ~summary["at_chance"].astype(bool)]
    best = ranked["final_test_acc_mean"].max() if len(ranked) else math.nan
    curves = finished.groupby(["init", "epoch"])["test_acc"].mean() if len(finished) else None
    reach = []
    for row in summary.itertuples():
        hit = math.nan
        if curves is not None and row.init in ranked["init"].values and np.isfinite(best):
            curve = curves.loc[row.init]
            above = curve[curve >= 0.95 * best]
            hit = float(above.index.min()) if len(above) else math.nan
        reach.append(hit)
    summary["epochs_to_95"] = reach
    return summary


# ---------------------------------------------------------------------- memory

STEP_ROW_BYTES = 64  # one per-step loss in memory and in the steps frame written to disk
EPOCH_ROW_BYTES = 600  # one metrics row (a dict) plus its share of the frames built from it
PROBE_ROW_BYTES = 400  # one probe_stats row of one layer
# what the book keeps of a finished run whose rows are in the result folder: its Run, its file positions,
# its runs.csv row (measured 1.3 KB with tracemalloc over 20000 runs)
RUN_BYTES = 2048
# at most this many models train at once (one chunk), whatever fits the engine's memory budget: beyond
# K ≈ 64 a chunk trains no faster per model (docs/performance.md: 0.30 s/model-epoch at K = 64; digits,
# 1600 runs: 19 s with chunks of 128, 33 s with one of 1580), so larger chunks only cost memory, and
# the peak stops growing with seeds from CHUNK_MAX_MODELS runs on
CHUNK_MAX_MODELS = 128


def model_footprint(spec: CompareSpec, data: Dataset) -> dict:
    """Parameters and activation values per example of ``spec``'s model, without allocating it
    (:func:`initlab.training.memory.module_footprint`)."""
    return module_footprint(lambda: new_model(spec, data, spec.first_seed),
                            lambda model: input_shape_of(model, data.image_shape))


def estimate_memory(spec: CompareSpec, data: Dataset) -> dict:
    """Bytes a comparison will hold at once: the data, one chunk of models in training, the results.

    The chunk (``group``) is ``engine.bytes_per_model`` (parameters, gradients, optimizer state and
    activations) times the chunk size: as many runs as fit the engine's memory budget
    (``engine.default_max_models``), at most :data:`CHUNK_MAX_MODELS`, 1 for ``single``; runs train
    one chunk after another, so it does not grow with seeds. ``results``: per-step losses, metrics
    rows and probe rows of every run, kept in memory to be returned without a result folder;
    ``results_on_disk``: with a folder, where finished runs' rows live in the folder only:
    ``per_run`` bytes per run (bookkeeping, plus its metrics rows and probe rows read back at the end
    for the summary and plots) and the rows of one chunk's runs in training. ``data``: the dataset
    as loaded (already allocated when the estimate is checked, so not in ``total``). ``total`` /
    ``total_on_disk``: chunk plus results, what is still to allocate. Other models (``spec.model``)
    are sized by :func:`model_footprint`: parameters × (2 + optimizer state), the training batch's
    activations twice (forward values and backward temporaries), an evaluation chunk's largest layer.
    """
    n_train = int(data.x_train.shape[0])
    # a batch larger than the training set is the whole set; evaluation chunks likewise
    train = dataclasses.replace(spec.train, batch_size=min(spec.train.batch_size, n_train),
                                eval_batch_size=min(spec.train.eval_batch_size, int(data.x_test.shape[0])))
    runs = len(spec.inits) * spec.seeds
    if spec.model is None:
        layout = MLPLayout((data.in_features, *spec.hidden, data.num_classes), spec.activation)
        per_model = bytes_per_model(layout, train, n_train)
        fits = mlp_engine.default_max_models(layout, train, n_train)  # the module's (tests fix a group size there)
        layers = 2 * len(spec.hidden) + 1
    else:
        fp = model_footprint(spec, data) or {"params": 0, "buffers": 0, "act": 0, "act_max": 0, "layers": 0}
        state = 2 + (2 if train.optimizer == "adam" else (1 if train.momentum > 0 else 0))
        # evaluation chunks shrink so the whole group's evaluation fits EVAL_BYTES (func_engine):
        # counted once per group, not per model
        per_model = 4 * (state * fp["params"] + fp["buffers"] + 2 * train.batch_size * fp["act"]) + 8 * n_train
        shared = min(12 * train.eval_batch_size * fp["act_max"], EVAL_BYTES)
        fits = max(1, (DEFAULT_MEMORY_BUDGET - shared) // per_model)
        layers = fp["layers"]  # probe rows per run-epoch: one per leaf module call
    group = 1 if spec.engine == "single" else min(runs, fits, CHUNK_MAX_MODELS)
    if spec.model is not None:
        per_model_single = per_model + shared  # one model alone still evaluates
    else:
        shared, per_model_single = 0, per_model
    steps_per_epoch = -(-n_train // spec.train.batch_size)
    epochs = spec.train.epochs
    probe_rows = (epochs + 1) * layers * PROBE_ROW_BYTES if spec.probe else 0
    training = epochs * (steps_per_epoch * STEP_ROW_BYTES + EPOCH_ROW_BYTES) + probe_rows  # one run's rows
    results = runs * training
    per_run = RUN_BYTES + epochs * EPOCH_ROW_BYTES + probe_rows
    # the chunk in training holds its rows; the plot of steps.csv holds a mean per init and step
    on_disk = runs * per_run + group * training + len(spec.inits) * epochs * steps_per_epoch * STEP_ROW_BYTES
    data_bytes = sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    chunk = group * per_model + shared
    return {"per_model": per_model_single, "group": chunk, "group_size": group, "results": results,
            "total": chunk + results, "results_on_disk": on_disk, "per_run": per_run,
            "total_on_disk": chunk + on_disk, "data": data_bytes}


def check_memory(spec: CompareSpec, data: Dataset, device: torch.device, *, on_disk: bool = False) -> dict:
    """Refuse (one-line ValueError, with the estimate) a comparison that cannot fit in free memory.

    ``on_disk``: the comparison writes a result folder (finished runs' rows leave memory)."""
    est = estimate_memory(spec, data)
    if on_disk and "results_on_disk" in est:
        est = {**est, "results": est["results_on_disk"], "total": est["total_on_disk"]}
    free = available_bytes(device)
    if free is None:
        return est
    net = spec.arch if spec.model is not None else arch_text([data.in_features, *spec.hidden, data.num_classes])
    if est["per_model"] > free:
        raise ValueError(f"one {net} model needs ~{format_bytes(est['per_model'])} to train (parameters, gradients, "
                         f"optimizer state, activations) but {device.type} has {format_bytes(free)} free; "
                         "use fewer or narrower layers")
    if est["total"] > free:
        runs = len(spec.inits) * spec.seeds
        raise ValueError(f"{runs} run{'s' if runs > 1 else ''} × {spec.train.epochs} epoch"
                         f"{'s' if spec.train.epochs > 1 else ''} need ~"
                         f"{format_bytes(est['total'])} (models training at once: {format_bytes(est['group'])}, "
                         f"results: {format_bytes(est['results'])}) but {device.type} has {format_bytes(free)} free; "
                         "use fewer seeds or epochs, a larger --batch-size, or --no-probe")
    return est


# ---------------------------------------------------------------------- training


class ProbeBatch:
    """The fixed batch every run is checked and probed on: ``spec.probe_size`` training examples
    drawn once from stream PROBE_STREAM of seed 0, the same for every run and epoch."""

    def __init__(self, spec: CompareSpec, data: Dataset):
        self.enabled = spec.probe
        idx = example_batch(data, spec.probe_size)
        self.x, self.y = data.x_train[idx], data.y_train[idx]
        # probe statistics are reductions whose float32 sums depend on the thread count: they are
        # taken with the threads the comparison started with, whatever count the engine choice
        # trains with (select_engine), so probe.csv does not depend on that choice
        self.threads = torch.get_num_threads()

    def record(self, run: Run, epoch: int, model: torch.nn.Module) -> None:
        if self.enabled:
            with intra_op_threads(self.threads):
                run.probe[epoch] = probe_stats(model, self.x, self.y)


class _FolderSink(Sink):
    """The runner's events (:mod:`initlab.experiments.runner`) into the comparison's :class:`RunBook`.

    metrics.csv/runs.csv are rewritten after every epoch, before the reporter hears of it, so an
    interrupt keeps every reported epoch; per-step losses are appended to steps.csv every epoch
    (kill -9 loses at most the epoch in progress); when a group ends steps.csv is rewritten whole in
    run order, with its probe rows.
    """

    def __init__(self, book: RunBook, pb: ProbeBatch, reporter: Reporter):
        self.book, self.pb, self.reporter = book, pb, reporter
        self.queue: list[tuple[Run, dict]] = []

    def start(self, job: Job, model: torch.nn.Module) -> None:
        run = job.key
        run.reset()
        run.status = "running"
        self.reporter.run_start(run.init, run.seed)
        self.pb.record(run, 0, model)

    def init_diverged(self, job: Job, reason: str) -> None:
        run = job.key
        run.diverge(0, None, reason)
        run.rows = [{"epoch": 0, "train_loss": math.nan, "diverged": True, "test_loss": math.nan, "test_acc": math.nan}]
        run.steps = np.zeros(0)
        self.reporter.run_end(run.init, run.seed, True, reason)

    def group_started(self, jobs: list[Job]) -> None:
        self.book.write(probe=True)

    def epoch(self, job: Job, row: dict, get_module) -> None:
        run = job.key
        if self.pb.enabled and not row["diverged"]:
            self.pb.record(run, row["epoch"], get_module())
        run.rows.append(row)
        self.queue.append((run, row))

    def after_epoch(self, epoch: int) -> None:
        self.book.write()
        for run, row in self.queue:
            self.reporter.epoch_end(run.init, run.seed, row)
        self.queue.clear()

    def steps(self, job: Job, losses, step0: int) -> None:
        self.book.append_steps(job.key, losses, step0)

    def finished(self, job: Job, res, engine: str) -> None:
        run = job.key
        run.steps = res.step_losses
        if res.diverged:
            run.diverge(res.diverged_epoch, res.diverged_step, res.diverge_reason)
        else:
            run.status = "done"
        self.reporter.run_end(run.init, run.seed, res.diverged, res.diverge_reason)

    def group_finished(self) -> None:
        self.book.write(steps=True, probe=True)  # steps.csv whole again, in run order


def choose_engine(spec: CompareSpec, data: Dataset, pb: ProbeBatch) -> tuple[str, str | None]:
    """Which batched engine can train ``spec``'s runs: ("mlp" | "func" | "single", why not batched or None).

    ``initlab.models.mlp`` networks (the default, or a zoo ``mlp``) take the hand-written MLP engine
    (:mod:`initlab.training.mlp_engine`); any other model the ``torch.func`` engine
    (:mod:`initlab.training.func_engine`) if it can be vmapped, otherwise the single loop, with the
    reason. ``engine="single"`` gives ("single", None). This is what ``engine="batched"`` trains
    with; ``"auto"`` measures it against the others (:func:`select_engine`).
    """
    if spec.engine == "single":
        return "single", None
    model = new_model(spec, data, spec.first_seed).to(data.x_train.device)
    try:
        mlp_layout(model)
        return "mlp", None
    except ValueError:
        pass
    why = vmap_problem(model, pb.x[:4], pb.y[:4])
    return ("func", None) if why is None else ("single", why)


def select_engine(spec: CompareSpec, data: Dataset, pb: ProbeBatch, group_size: int, runs: int, *,
                  workers: bool = False) -> EngineChoice:
    """The engine that trains ``runs`` runs of ``spec`` in groups of ``group_size``, and why.

    ``engine="single"`` or ``"batched"`` is forced (the batched engine :func:`choose_engine` names, or
    the single loop where none can train the model), with torch's thread setting. ``"auto"`` times
    every engine that can train the model (:mod:`initlab.training.choice`: the MLP engine, the
    ``torch.func`` engine, the single loop) for a few steps on the real shapes: throwaway models of
    ``spec`` (built under a forked torch RNG, so no global or per-run random stream moves), a group
    of ``min(group_size, runs, MEASURE_MAX_MODELS)`` of them, batches of ``data``'s training set. On a CPU with more
    than one intra-op thread each engine is also timed with one thread: on a shared machine
    small ops wait for descheduled OpenMP threads (measured 7× slower with 2 threads than with 1
    under a load of 4 on 2 cores, docs/performance.md). The fastest per model-step trains, with its
    thread setting (``EngineChoice.threads``, applied by the caller with ``intra_op_threads``); all
    engines and thread counts give the same numbers up to float32 summation order, so the choice
    changes the time, not the results beyond that. With fewer than
    :data:`MEASURE_MIN_MODEL_STEPS` optimizer steps in all, auto does not measure and takes the
    batched engine. ``workers``: the caller can train a group in parts side by side
    (``EngineChoice.workers``, :mod:`initlab.training.workers`); on such a CPU the batched engines
    are then also timed split across as many worker threads of one intra-op thread as torch has
    intra-op threads (``mlp/2w``).
    """
    kind, why = choose_engine(spec, data, pb)
    if spec.engine == "single":
        return EngineChoice("single", "forced: engine='single'")
    if why is not None:
        return EngineChoice("single", f"the batched engine cannot train {spec.arch} ({why})")
    if spec.engine == "batched":
        return EngineChoice(kind, "forced: engine='batched'")
    n_train = int(data.x_train.shape[0])
    total = runs * spec.train.epochs * -(-n_train // spec.train.batch_size)
    if runs == 0:
        return EngineChoice(kind, "not measured: no run left to train")
    if total < MEASURE_MIN_MODEL_STEPS:
        return EngineChoice(kind, f"not measured: {total} optimizer steps in all are too few to repay "
                                  f"a measurement (< {MEASURE_MIN_MODEL_STEPS})")
    kinds = ["mlp", "func", "single"] if kind == "mlp" else ["func", "single"]
    device = data.x_train.device
    threads = (None, 1) if device.type == "cpu" and torch.get_num_threads() > 1 else (None,)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = new_model(spec, data, spec.first_seed).to(device)
        k = max(1, min(group_size, runs, MEASURE_MAX_MODELS))
        models = [model] + [copy.deepcopy(model) for _ in range(k - 1)]
        split = (torch.get_num_threads(),) if workers and len(threads) > 1 and k > 1 else ()
        choice = choose(engine_candidates(kinds, models, data, spec.train, threads, split), work=total,
                        min_work_seconds=MEASURE_MIN_SECONDS, budget=MEASURE_BUDGET)
    conv = any(isinstance(m, CONVOLUTIONS) for m in model.modules())
    del models, model
    if choice.engine == "single":
        slower = " and ".join(k for k in kinds if k != "single" and choice.best_rate(k) is not None)
        if not slower:
            return dataclasses.replace(choice, reason="the batched engines failed in the trial steps: "
                                                      + "; ".join(f"{k}: {e}" for k, e in choice.failed))
        cause = (" (batching K convolutions gives one grouped convolution, no faster per FLOP on a CPU)"
                 if device.type == "cpu" and conv else "")
        return dataclasses.replace(choice, reason=f"the {slower} engine measured slower than the single loop{cause}")
    return choice


def engine_note(spec: CompareSpec, choice: EngineChoice) -> str | None:
    """The reporter's one line about the engine: a choice among engines measured against each other,
    with their rates, or why the runs train one at a time although ``spec`` did not ask for that;
    None otherwise (a forced engine, or a measurement stopped after the first engine)."""
    threads = "" if choice.threads is None else f" with {choice.threads} intra-op thread" + \
        ("s" if choice.threads > 1 else "")
    if choice.workers > 1:
        threads = f" split across {choice.workers} worker threads of 1 intra-op thread each"
    if choice.engine == "single" and spec.engine != "single":
        rates = f" ({choice.rates_text()})" if choice.measured else ""
        return f"{choice.reason}{rates}; training runs one at a time{threads}"
    if len(choice.rates) > 1:  # engines measured against each other (not a measurement stopped after one)
        return f"engine {choice.engine}{threads}: {choice.reason} on {spec.arch} ({choice.rates_text()})"
    return None


CONVOLUTIONS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def _config_record(spec: CompareSpec, data: Dataset, device, choice: EngineChoice) -> dict:
    return {**spec.to_dict(), "resolved_device": str(device), "torch": torch.__version__,
            "python": platform.python_version(), "train_size": int(data.x_train.shape[0]),
            "test_size": int(data.x_test.shape[0]), "engine_choice": choice.to_dict()}


def resumable(out: str | Path | None, resume: bool) -> bool:
    """``resume``, except for a folder claimed and then stopped before anything was written (a
    kill right after start): there is nothing to continue, so the comparison simply starts."""
    if out is None or not resume or not store.out_path(out).is_dir():
        return resume
    out = store.out_path(out)
    return bool((store.read_marker(out) or {}).get("files")) or store.read_marker(out) is None


def check_resume(out: str | Path, spec: CompareSpec) -> None:
    """Refuse to resume ``out`` with a different configuration, naming the differing fields."""
    import json

    try:
        old = json.loads((store.out_path(out) / "config.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"cannot resume '{out}': its config.json is missing or unreadable; "
                         "use --overwrite to start again") from None
    diff = spec_differences({k: v for k, v in old.items() if k in spec.to_dict()}, spec.to_dict())
    if diff:
        raise ValueError(f"cannot resume '{out}': its configuration differs in {', '.join(diff)}; "
                         "rerun with the same options, or use --overwrite or another --out")


def _result(spec, book, out_dir, t0, chance, complete, choice: EngineChoice) -> CompareResult:
    """The result of ``book``; with a folder (its files up to date) the rows are read from there:
    metrics.csv now (the summary needs it), steps.csv and probe.csv when asked."""
    runs = book.runs_frame()
    if out_dir is None:
        metrics, steps, probe = book.metrics(), book.steps_frame(), book.probe_frame()
    else:
        metrics = read_metrics(out_dir / "metrics.csv")
        steps, probe = Deferred(read_steps, out_dir / "steps.csv"), Deferred(read_probe, out_dir / "probe.csv")
    summary = summarize(metrics, spec.inits, runs=runs, chance=chance["threshold"])
    return CompareResult(spec, metrics, steps, summary, out_dir, time.perf_counter() - t0,
                         probe, runs, chance, complete, choice.to_dict())


def write_result(result: CompareResult, folder: Path) -> None:
    """Write a finished ``result`` that was computed without a folder into the claimed ``folder``, as
    ``run_compare`` would have (config.json, the CSVs, summary.json, plots): what a notebook renders."""
    store.atomic_write_json(folder / "config.json", {**result.spec.to_dict(),
                                                     "test_size": result.chance.get("test_size"),
                                                     **({"engine_choice": result.engine} if result.engine else {})})
    for name, frame in (("metrics.csv", result.metrics), ("runs.csv", result.runs), ("steps.csv", result.steps),
                        ("probe.csv", result.probe)):
        if frame is not None:
            store.atomic_write_csv(folder / name, frame)
    write_summary(dataclasses.replace(result, out=folder))


def write_summary(result: CompareResult) -> None:
    """summary.json and the plots of ``result`` into ``result.out``."""
    d = result.out
    spec = result.spec
    store.atomic_write_json(d / "summary.json", {
        "status": "complete" if result.complete else "interrupted",
        "seconds": round(result.seconds, 3),
        "chance": result.chance,
        "divergence": {"rule": "non-finite training loss or activation, or end-of-epoch test loss > "
                               "diverge_loss·ln(C)", "diverge_loss": spec.train.diverge_loss,
                       "loss_bound": spec.train.loss_bound(result.chance["classes"])},
        "per_init": result.summary.replace({np.nan: None}).to_dict(orient="records"),
        "runs": result.runs.astype(object).where(result.runs.notna(), None).to_dict(orient="records"),
    })
    if len(result.metrics):
        view = plot_view(result)
        plot_compare(view, d)
        plot_probe(view, d)


def plot_view(result: CompareResult):
    """What the plots read of ``result``: its frames, except that rows still in the folder are read
    for the plots alone (not kept in ``result``), steps.csv reduced as it streams by
    (:func:`steps_for_plot`): a comparison of many seeds never holds all its step losses."""
    steps, probe = result.__dict__.get("_steps_value"), result.__dict__.get("_probe_value")
    if not isinstance(steps, Deferred) and not isinstance(probe, Deferred):
        return result
    return types.SimpleNamespace(spec=result.spec, metrics=result.metrics,
                                 steps=steps_for_plot(steps.path) if isinstance(steps, Deferred) else steps,
                                 probe=probe() if isinstance(probe, Deferred) else probe)


PLOT_CHUNK_ROWS = 1 << 18  # steps.csv rows read at a time for the plot (~20 MB of pandas frame)


def steps_for_plot(path: Path) -> pd.DataFrame:
    """steps.csv reduced to what ``steps.png`` draws, read in chunks: per init and step the mean of the
    finite positive losses over seeds (one row, seed -1), and each run's first inf/NaN steps. Memory
    grows with inits × steps of one run, not with seeds."""
    sums, bad = None, []
    try:
        parts = pd.read_csv(path, chunksize=PLOT_CHUNK_ROWS, dtype={"init": str}, **NA)
        for part in parts:
            loss = part["train_loss"].to_numpy(dtype=float)
            ok = np.isfinite(loss) & (loss > 0)
            g = part[ok].groupby(["init", "step"], sort=False)["train_loss"].agg(["sum", "count"])
            sums = g if sums is None else sums.add(g, fill_value=0)
            if (~np.isfinite(loss)).any():
                bad.append(part[~np.isfinite(loss)].groupby(["init", "seed"], sort=False).head(1))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        pass
    frames = bad
    if sums is not None and len(sums):
        mean = (sums["sum"] / sums["count"]).rename("train_loss").reset_index()
        mean.insert(1, "seed", -1)
        frames = [mean[STEP_COLUMNS], *bad]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STEP_COLUMNS)


@dataclass(frozen=True)
class ComparePlan:
    """What :func:`run_compare` would do with a spec, found without training or writing anything."""

    runs: int  # inits × seeds
    steps_per_run: int  # optimizer steps of one run: epochs × steps per epoch
    group_size: int  # runs one batched chunk holds (memory-bound, at most CHUNK_MAX_MODELS); 1 for the single loop
    memory: dict  # estimate_memory's bytes as check_memory returns them: per_model, group, results, total, data
    engine: EngineChoice  # the engine and why (measured rates with engine "auto")
    on_disk: bool = True  # with a result folder (the CLI always writes one): finished runs' rows leave memory

    def lines(self) -> list[str]:
        """The plan in words, one line per item, for ``initlab compare --dry-run``."""
        at_once = 1 if self.engine.engine == "single" else min(self.group_size, self.runs)
        e = self.engine
        how = ("" if e.threads is None else f" with {e.threads} intra-op thread{'s' if e.threads > 1 else ''}")
        if e.workers > 1:
            how = f" split across {e.workers} worker threads of 1 intra-op thread each"
        engine = (f"engine: {e.engine}" + how
                  + f" — {e.reason}" + (f"; measured {e.rates_text()}" if e.measured else "")
                  + "".join(f"; {name} failed: {why}" for name, why in e.failed))
        m = self.memory
        chunk = m["group"] if at_once == self.group_size else m["per_model"]  # "auto" chose the single loop
        peak = m.get("data", 0) + chunk + m["results"]
        rows = (f"{format_bytes(m['per_run'])} per run, rows of finished runs in the folder"
                if self.on_disk and "per_run" in m else "every row kept in memory")
        memory = (f"memory: peak ~{format_bytes(peak)} besides Python and torch = data {format_bytes(m.get('data', 0))} + one chunk of "
                  f"{at_once} model{'s' if at_once > 1 else ''} training at once {format_bytes(chunk)} + "
                  f"results {format_bytes(m['results'])} ({rows})")
        return [f"runs: {self.runs} × {self.steps_per_run} optimizer steps; {at_once} trained at once", memory, engine]


def plan_compare(spec: CompareSpec, data: Dataset | None = None, *, on_disk: bool = True) -> ComparePlan:
    """The plan of ``spec``: runs, chunk size, memory (refused as :func:`check_memory` refuses it) and the
    engine, chosen as :func:`run_compare` chooses it (with ``engine="auto"``: measured on the real
    shapes, a few seconds at most). ``data``: the dataset as loaded (default: loaded here).
    ``on_disk``: the comparison will write a result folder (as the CLI's always does)."""
    device = resolve_device(spec.device)
    if data is None:
        data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
    est = check_memory(spec, data, device, on_disk=on_disk)
    shaped = prepare_data(spec, data).to(device)
    runs = len(spec.inits) * spec.seeds
    choice = select_engine(spec, shaped, ProbeBatch(spec, shaped), est["group_size"], runs, workers=True)
    steps = spec.train.epochs * -(-int(shaped.x_train.shape[0]) // spec.train.batch_size)
    return ComparePlan(runs, steps, est["group_size"], est, choice, on_disk)


def run_compare(spec: CompareSpec, *, out: str | Path | None = None, reporter: Reporter | None = None,
                data: Dataset | None = None, overwrite: bool = False, resume: bool = False) -> CompareResult:
    """Run the comparison described by ``spec``; see :func:`compare` for the keyword form.

    With ``out``, the folder follows the output-folder contract (:mod:`initlab.store`), and a finished
    run's epoch, step and probe rows live there only (the result reads them back when asked), so
    memory does not grow with seeds beyond a little bookkeeping per run; without ``out`` every row
    stays in memory, to be returned. Runs train in chunks (:func:`estimate_memory`). On
    Ctrl-C/SIGTERM (``KeyboardInterrupt``) the files are brought up to date (unfinished runs marked
    ``interrupted``, summary.json with status "interrupted") and the exception is re-raised with
    the partial :class:`CompareResult` as its ``result`` attribute.
    """
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    out = None if out is None else store.out_path(out)
    resume = resumable(out, resume)
    if out is not None:
        store.check_out_dir(out, "compare", overwrite=overwrite, resume=resume)
        if resume:
            check_resume(out, spec)
    if data is None:
        data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
    est = check_memory(spec, data, device, on_disk=out is not None)
    data = prepare_data(spec, data).to(device)
    out_dir = store.claim_out_dir(out, "compare", overwrite=overwrite, resume=resume) if out is not None else None
    chance = {**chance_level(data.y_test), "classes": data.num_classes}
    book = RunBook(spec.inits, spec.run_seeds, out_dir, chance["threshold"])
    try:
        if out_dir is not None and resume:
            book.load()
    except OSError as e:
        raise store.write_error(e) from None
    pb = ProbeBatch(spec, data)
    choice = select_engine(spec, data, pb, est["group_size"], len(book.pending()), workers=True)
    try:
        if out_dir is not None:
            store.atomic_write_json(out_dir / "config.json", _config_record(spec, data, device, choice))
            book.write(steps=True, probe=True)
    except OSError as e:
        raise store.write_error(e) from None
    schemes = spec.schemes
    reporter.start(spec, len(book.runs))
    for run in book:
        if run.finished:
            reporter.run_skipped(run.init, run.seed, run.status)
    note = engine_note(spec, choice)
    if note is not None:
        reporter.note(note)
    try:
        jobs = [Job(run, schemes[run.init], run.seed, spec.train) for run in book.pending()]
        run_jobs(jobs, build=lambda job: build_model(spec, data, job.scheme, job.seed, device), data=data,
                 check_x=pb.x, engine=choice.engine, sink=_FolderSink(book, pb, reporter),
                 group_size=est["group_size"], threads=choice.threads, workers=choice.workers,
                 shared_config=spec.train)
    except KeyboardInterrupt as e:
        book.interrupt()
        if out_dir is not None:
            book.write(steps=True, probe=True)
        result = _result(spec, book, out_dir, t0, chance, complete=False, choice=choice)
        if out_dir is not None:
            write_summary(result)
        e.result = result
        raise
    except OSError as e:
        raise store.write_error(e) from None
    result = _result(spec, book, out_dir, t0, chance, complete=True, choice=choice)
    if out_dir is not None:
        try:
            write_summary(result)
        except OSError as e:
            raise store.write_error(e) from None
    return result


def compare(
    inits: str | Sequence[str | SchemeSpec | dict] = SEED_INITS,
    dataset: str = "mnist",
    data_dir: str | None = None,
    epochs: int = 10,
    seeds: int = 1,
    hidden: str | Sequence[int] = (128,),
    activation: str = "relu",
    lr: float = 0.01,
    momentum: float = 0.0,
    optimizer: str = "sgd",
    batch_size: int = 64,
    device: str = "auto",
    out: str | Path | None = None,
    *,
    normalize: str = "seed",
    first_seed: int = 0,
    reporter: Reporter | None = None,
    engine: str = "auto",
    probe: bool = True,
    diverge_loss: float = TrainConfig.diverge_loss,
    overwrite: bool = False,
    resume: bool = False,
    model: Any = None,
    progress: bool | None = None,
) -> CompareResult:
    """Compare init schemes on one dataset and network; the defaults are the seed notebook's experiment.

    ``inits``: one scheme (``"he"``), a comma-separated string (``"he,normal(std=0.05)"``), or a
    sequence of strings, ``SchemeSpec``s or their dicts. ``hidden``: ``"64,64"`` or a sequence.
    ``engine="auto"`` trains with whichever engine is measured fastest on the comparison's shapes
    (:func:`select_engine`); ``"batched"`` trains groups of runs together (:mod:`initlab.training.mlp_engine`,
    :mod:`initlab.training.func_engine`); ``"single"`` trains them one after another with
    :func:`initlab.training.loop.train_model`. All give the same results up to float32 summation order. ``diverge_loss``: see :data:`initlab.training.loop.DIVERGE_LOSS`.
    ``overwrite``/``resume``: reuse an earlier result folder (:func:`initlab.store.check_out_dir`).
    With ``out`` the runs' rows are kept in the folder, not in memory (many seeds fit); without it
    they all stay in memory.
    ``model``: a zoo spec (``"resnet(blocks=20,norm=none)"``), ``"module:factory"`` or a callable
    returning an ``nn.Module`` (called per run, with ``in_shape``/``num_classes`` if it asks),
    instead of the MLP of ``hidden``/``activation``. ``progress``: show progress bars (default: in a
    Jupyter notebook only; never when a ``reporter`` is given).

    Example: ``initlab.compare(dataset="digits", epochs=5, seeds=3).summary``.
    """
    spec = CompareSpec(
        inits=inits, dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
        normalize=normalize, hidden=hidden, activation=activation, seeds=seeds, first_seed=first_seed,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, optimizer=optimizer,
                          diverge_loss=diverge_loss),
        device=device, engine=engine, probe=probe, model=model,
    )
    if reporter is None and show_progress(progress):
        with bars() as p:
            return run_compare(spec, out=out, reporter=RichReporter(p), overwrite=overwrite, resume=resume)
    return run_compare(spec, out=out, reporter=reporter, overwrite=overwrite, resume=resume)
