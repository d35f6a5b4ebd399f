"""Comparisons of init schemes done honestly: fresh model per run, paired seeds, held-out test set.

``compare`` trains one freshly built and initialized model per (init, seed), every init of a seed
on the same batch order, evaluates on the test split after every epoch, records divergence instead
of crashing, and (with ``out``) writes results to disk as they are known. By default all runs train
together in the batched engine (:mod:`initlab.engine`), which gives the same numbers as training
them one at a time (``engine="single"``) up to float32 summation order, several times faster.
"""
from __future__ import annotations

import dataclasses
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from initlab import store
from initlab.data import DATASETS, NORMALIZATIONS, Dataset, load_dataset
from initlab.models import check_activation, check_widths, mlp
from initlab.schemes import SchemeSpec, check_scheme, initialize, parse_scheme
from initlab.train import INIT_STREAM, PROBE_STREAM, TrainConfig, make_generator, resolve_device, train_model

SEED_INITS = ("zero", "random", "xavier", "he")  # the four schemes of the seed notebook
ENGINES = ("batched", "single")  # batched: initlab.engine, all runs at once; single: train_model per run


@dataclass(frozen=True)
class CompareSpec:
    """A comparison: which inits, on what data and network, trained how, over which seeds."""

    inits: tuple[str, ...] = SEED_INITS  # scheme strings, e.g. "he" or "normal(std=0.05)"
    dataset: str = "mnist"  # digits | mnist | fashion-mnist
    data_dir: str | None = None  # local IDX files; None = system dirs, cache, then download
    normalize: str = "seed"  # seed: (x-0.5)/0.5 | standardize: train mean/std | none
    hidden: tuple[int, ...] = (128,)  # hidden widths; (128,) is the seed's 784-128-10 network
    activation: str = "relu"
    seeds: int = 1  # runs per init; run seeds are first_seed .. first_seed+seeds-1
    first_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"  # auto | cpu | cuda
    engine: str = "batched"  # batched: all runs as one computation | single: one train_model per run
    probe: bool = True  # per-layer statistics (initlab.probe) at init and after every epoch, every run
    probe_size: int = 256  # examples in the fixed probe batch (same for all runs and epochs)

    def __post_init__(self):
        if not self.inits:
            raise ValueError("no init schemes given; pass at least one, e.g. --inits he")
        for text in self.inits:
            check_scheme(text)  # raises a one-line ValueError for unknown names or bad params
        if len(set(self.inits)) != len(self.inits):
            raise ValueError(f"init schemes listed twice: {', '.join(self.inits)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset '{self.dataset}'; choose from: {', '.join(DATASETS)}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization '{self.normalize}'; choose from: {', '.join(NORMALIZATIONS)}")
        check_widths(self.hidden)
        check_activation(self.activation)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds <= 0:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        if not isinstance(self.first_seed, int) or self.first_seed < 0:
            raise ValueError(f"first seed must be a non-negative integer, got {self.first_seed!r}")
        resolve_device(self.device)
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine '{self.engine}'; choose from: {', '.join(ENGINES)}")
        if isinstance(self.probe_size, bool) or not isinstance(self.probe_size, int) or self.probe_size <= 0:
            raise ValueError(f"probe size must be a positive integer, got {self.probe_size!r}")

    @property
    def run_seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["schemes"] = {text: parse_scheme(text).to_dict() for text in self.inits}
        return d


class Reporter:
    """Receives progress events from :func:`run_compare`; the CLI's subclass draws progress bars."""

    def start(self, spec: CompareSpec, total_runs: int) -> None: ...
    def run_start(self, init: str, seed: int) -> None: ...
    def epoch_end(self, init: str, seed: int, row: dict) -> None: ...
    def run_end(self, init: str, seed: int, diverged: bool) -> None: ...


@dataclass
class CompareResult:
    """``metrics``: one row per run per epoch; ``steps``: per-step train loss; ``summary``: per init."""

    spec: CompareSpec
    metrics: pd.DataFrame
    steps: pd.DataFrame
    summary: pd.DataFrame
    out: Path | None = None
    seconds: float = 0.0
    probe: pd.DataFrame | None = None  # per run, epoch (0 = at init) and layer: initlab.probe.probe_stats


class ProbeLog:
    """Per-layer statistics of every run at init and after every epoch, on one fixed probe batch.

    The batch is ``spec.probe_size`` training examples drawn once from stream PROBE_STREAM of seed 0,
    so every run and epoch is measured on the same inputs. Rows land in ``probe.csv`` as they come.
    """

    def __init__(self, spec: CompareSpec, data: Dataset, out_dir: Path | None):
        self.enabled, self.out_dir = spec.probe, out_dir
        self.order = {init: i for i, init in enumerate(spec.inits)}
        self.frames: dict[tuple[int, int, int], pd.DataFrame] = {}  # (seed, init position, epoch) -> rows
        if self.enabled:
            g = make_generator(0, PROBE_STREAM)
            idx = torch.randperm(data.x_train.shape[0], generator=g)[: spec.probe_size].to(data.x_train.device)
            self.x, self.y = data.x_train[idx], data.y_train[idx]

    def record(self, init: str, seed: int, epoch: int, model: torch.nn.Module) -> None:
        if not self.enabled:
            return
        from initlab.probe import probe_stats

        frame = probe_stats(model, self.x, self.y)
        frame.insert(0, "epoch", epoch)
        frame.insert(0, "seed", seed)
        frame.insert(0, "init", init)
        self.frames[(seed, self.order[init], epoch)] = frame

    def frame(self) -> pd.DataFrame | None:
        """All rows, ordered by seed, init (as listed) and epoch, whichever engine produced them."""
        return pd.concat([self.frames[k] for k in sorted(self.frames)], ignore_index=True) if self.frames else None

    def write(self) -> None:
        if self.out_dir is not None and self.frames:
            store.atomic_write_csv(self.out_dir / "probe.csv", self.frame())


METRIC_COLUMNS = ["init", "seed", "epoch", "train_loss", "test_loss", "test_acc", "diverged"]


def build_model(spec: CompareSpec, data: Dataset, scheme: SchemeSpec, seed: int, device) -> torch.nn.Module:
    """A fresh model for one run, initialized by ``scheme`` from stream INIT_STREAM of ``seed``."""
    model = mlp(data.in_features, spec.hidden, data.num_classes, spec.activation)
    initialize(model, scheme, generator=make_generator(seed, INIT_STREAM))  # CPU draws: device-independent
    return model.to(device)


def summarize(metrics: pd.DataFrame, inits: Sequence[str]) -> pd.DataFrame:
    """Per init: final test accuracy and loss (mean ± std over non-diverged seeds), speed, divergence.

    ``epochs_to_95``: the first epoch at which the init's seed-mean test accuracy reaches 95% of the
    best init's final seed-mean accuracy (NaN if it never does).
    """
    cols = ["init", "runs", "diverged", "final_test_acc_mean", "final_test_acc_std",
            "final_test_loss_mean", "final_test_loss_std", "epochs_to_95"]
    if metrics.empty:
        return pd.DataFrame(columns=cols)
    last = metrics.sort_values("epoch").groupby(["init", "seed"], sort=False).tail(1)
    curves = metrics[~metrics["diverged"]].groupby(["init", "epoch"])["test_acc"].mean()
    rows = []
    for init in inits:
        fin = last[last["init"] == init]
        if fin.empty:
            continue
        ok = fin[~fin["diverged"]]
        rows.append({
            "init": init,
            "runs": len(fin),
            "diverged": int(fin["diverged"].sum()),
            "final_test_acc_mean": ok["test_acc"].mean() if len(ok) else math.nan,
            "final_test_acc_std": ok["test_acc"].std(ddof=1) if len(ok) > 1 else (0.0 if len(ok) else math.nan),
            "final_test_loss_mean": ok["test_loss"].mean() if len(ok) else math.nan,
            "final_test_loss_std": ok["test_loss"].std(ddof=1) if len(ok) > 1 else (0.0 if len(ok) else math.nan),
        })
    summary = pd.DataFrame(rows, columns=cols[:-1])
    best = summary["final_test_acc_mean"].max()
    reach = []
    for init in summary["init"]:
        curve = curves.get(init) if init in curves.index.get_level_values(0) else None
        hit = math.nan
        if curve is not None and np.isfinite(best):
            above = curve[curve >= 0.95 * best]
            hit = float(above.index.min()) if len(above) else math.nan
        reach.append(hit)
    summary["epochs_to_95"] = reach
    return summary


def _run_row(init: str, seed: int, row: dict, diverged_step: int | None) -> dict:
    return {"init": init, "seed": seed, **row, "diverged_step": diverged_step if row["diverged"] else None}


def _step_frame(init: str, seed: int, step_losses: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"init": init, "seed": seed, "step": np.arange(len(step_losses)), "train_loss": step_losses})


def _train_single(spec, data, schemes, device, out_dir, reporter, plog):
    """One ``train_model`` per run, seed-major; each finished run is on disk before the next starts."""
    rows: list[dict] = []
    step_frames: list[pd.DataFrame] = []
    for seed in spec.run_seeds:  # seed-major: a partial comparison still has every init for early seeds
        for init in spec.inits:
            reporter.run_start(init, seed)
            model = build_model(spec, data, schemes[init], seed, device)
            plog.record(init, seed, 0, model)

            def on_epoch(row, init=init, seed=seed, model=model):
                if not row["diverged"]:
                    plog.record(init, seed, row["epoch"], model)
                reporter.epoch_end(init, seed, row)

            res = train_model(model, data, spec.train, seed=seed, on_epoch=on_epoch)
            rows += [_run_row(init, seed, row, res.diverged_step) for row in res.epochs]
            step_frames.append(_step_frame(init, seed, res.step_losses))
            if out_dir is not None:
                store.atomic_write_csv(out_dir / "metrics.csv", pd.DataFrame(rows))
                store.atomic_write_csv(out_dir / "steps.csv", pd.concat(step_frames, ignore_index=True))
                plog.write()
            reporter.run_end(init, seed, res.diverged)
    return rows, step_frames


def _train_batched(spec, data, schemes, device, out_dir, reporter, plog):
    """All runs in :func:`initlab.engine.train_population`; metrics.csv is rewritten after every epoch.

    Rows reach disk before the reporter hears of them, so an interrupt keeps every reported epoch.
    ``diverged_step`` of a diverged row and ``steps.csv`` are known once training ends.
    """
    from initlab.engine import train_population

    runs = [(init, seed) for seed in spec.run_seeds for init in spec.inits]  # same order as single
    models = [build_model(spec, data, schemes[init], seed, device) for init, seed in runs]
    for (init, seed), model in zip(runs, models):
        plog.record(init, seed, 0, model)
    done: dict[int, list[dict]] = {k: [] for k in range(len(runs))}
    pending: list[tuple[int, dict]] = []

    def ordered_rows(steps_at: dict[int, int | None]) -> list[dict]:
        return [_run_row(*runs[k], row, steps_at.get(k)) for k in range(len(runs)) for row in done[k]]

    def on_epoch(k, row, get_module):
        if plog.enabled and not row["diverged"]:
            plog.record(*runs[k], row["epoch"], get_module())
        done[k].append(row)
        pending.append((k, row))

    def after_epoch(epoch):
        if out_dir is not None:
            store.atomic_write_csv(out_dir / "metrics.csv", pd.DataFrame(ordered_rows({})))
            plog.write()
        for k, row in pending:
            reporter.epoch_end(*runs[k], row)
            if row["diverged"] or row["epoch"] == spec.train.epochs:
                reporter.run_end(*runs[k], row["diverged"])
        pending.clear()

    for init, seed in runs:
        reporter.run_start(init, seed)
    results = train_population(models, data, spec.train, [seed for _, seed in runs],
                               on_epoch=on_epoch, after_epoch=after_epoch)
    rows = ordered_rows({k: res.diverged_step for k, res in enumerate(results)})
    step_frames = [_step_frame(*runs[k], res.step_losses) for k, res in enumerate(results)]
    if out_dir is not None:
        store.atomic_write_csv(out_dir / "metrics.csv", pd.DataFrame(rows))
        store.atomic_write_csv(out_dir / "steps.csv", pd.concat(step_frames, ignore_index=True))
    return rows, step_frames


def run_compare(spec: CompareSpec, *, out: str | Path | None = None, reporter: Reporter | None = None,
                data: Dataset | None = None) -> CompareResult:
    """Run the comparison described by ``spec``; see :func:`compare` for the keyword form."""
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    out_dir = store.prepare_out_dir(out) if out is not None else None
    if data is None:
        data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
    data = data.to(device)
    if out_dir is not None:
        store.atomic_write_json(out_dir / "config.json", {
            **spec.to_dict(), "resolved_device": str(device),
            "torch": torch.__version__, "python": platform.python_version(),
            "train_size": int(data.x_train.shape[0]), "test_size": int(data.x_test.shape[0]),
        })
    schemes = {text: parse_scheme(text) for text in spec.inits}
    reporter.start(spec, len(spec.inits) * spec.seeds)
    train_runs = _train_batched if spec.engine == "batched" else _train_single
    plog = ProbeLog(spec, data, out_dir)
    rows, step_frames = train_runs(spec, data, schemes, device, out_dir, reporter, plog)
    metrics = pd.DataFrame(rows)
    steps = pd.concat(step_frames, ignore_index=True)
    summary = summarize(metrics, spec.inits)
    result = CompareResult(spec, metrics, steps, summary, out_dir, time.perf_counter() - t0, plog.frame())
    if out_dir is not None:
        from initlab.plots import plot_compare, plot_probe

        store.atomic_write_json(out_dir / "summary.json", {
            "seconds": round(result.seconds, 3),
            "per_init": summary.replace({np.nan: None}).to_dict(orient="records"),
        })
        plot_compare(result, out_dir)
        plot_probe(result, out_dir)
    return result


def compare(
    inits: Sequence[str] = SEED_INITS,
    dataset: str = "mnist",
    data_dir: str | None = None,
    epochs: int = 10,
    seeds: int = 1,
    hidden: Sequence[int] = (128,),
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
    engine: str = "batched",
    probe: bool = True,
) -> CompareResult:
    """Compare init schemes on one dataset and network; the defaults are the seed notebook's experiment.

    ``engine="batched"`` trains all runs together (:mod:`initlab.engine`); ``"single"`` trains
    them one after another with :func:`initlab.train.train_model`. Both give the same results up to
    float32 summation order.

    Example: ``initlab.compare(dataset="digits", epochs=5, seeds=3).summary``.
    """
    spec = CompareSpec(
        inits=tuple(inits), dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
        normalize=normalize, hidden=tuple(hidden), activation=activation, seeds=seeds, first_seed=first_seed,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, optimizer=optimizer),
        device=device, engine=engine, probe=probe,
    )
    return run_compare(spec, out=out, reporter=reporter)
