"""One runner for every experiment: each run's fresh model is built, checked, trained by the chosen engine
in groups, and every event goes to a sink.

``compare`` (its sink writes the output folder through :class:`~initlab.experiments.runbook.RunBook`)
and ``run_sweep`` (its sink commits to the SQLite run store, or collects rows for a Ray driver) differ
only in where results go; what happens to a run is the same for both and lives here:

1. ``build(job)`` makes the run's fresh model (init drawn from the run's seed);
2. ``sink.start(job, model)`` (probe at epoch 0), then :func:`~initlab.training.loop.check_init` on the
   probe batch: a forward pass that overflows is ``sink.init_diverged(job, reason)`` and the run stops;
3. the group's live runs train as one computation (``mlp``: :func:`~initlab.training.mlp_engine.train_population`,
   ``func``: :func:`~initlab.training.func_engine.train_func_population`) or one by one (``single``:
   :func:`~initlab.training.loop.train_model`, groups of one), with the thread count the engine choice
   measured fastest (:func:`~initlab.training.choice.intra_op_threads`);
4. ``sink.epoch`` for every model's epoch, ``sink.after_epoch`` once all models of the group finished it,
   ``sink.steps`` with the epoch's per-step losses, ``sink.finished`` per run, ``sink.group_finished``.

Only one group's models exist at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from initlab.data import Dataset
from initlab.schemes import SchemeSpec
from initlab.training.choice import intra_op_threads
from initlab.training.func_engine import train_func_population
from initlab.training.loop import RunResult, TrainConfig, check_init, train_model
from initlab.training.mlp_engine import train_population

ENGINES = ("mlp", "func", "single")
_POPULATION = {"mlp": train_population, "func": train_func_population}


@dataclass(frozen=True)
class Job:
    """One run to train: the caller's handle for it (``key``), its scheme, seed and training config."""

    key: Any
    scheme: SchemeSpec
    seed: int
    config: TrainConfig


class Sink:
    """Where a runner's events go; every method is optional (the defaults do nothing)."""

    def start(self, job: Job, model: torch.nn.Module) -> None: ...  # a fresh model, before its init check
    def init_diverged(self, job: Job, reason: str) -> None: ...  # its forward pass overflowed: not trained
    def group_started(self, jobs: list[Job]) -> None: ...  # the group's models are built and checked
    def epoch(self, job: Job, row: dict, get_module: Callable[[], torch.nn.Module]) -> None: ...
    def after_epoch(self, epoch: int) -> None: ...  # every model of the group has finished ``epoch``
    def steps(self, job: Job, losses, step0: int) -> None: ...  # an epoch's per-step training losses
    def finished(self, job: Job, result: RunResult, engine: str) -> None: ...
    def group_finished(self) -> None: ...


def run_jobs(jobs: Sequence[Job], *, build: Callable[[Job], torch.nn.Module], data: Dataset, check_x: torch.Tensor,
             engine: str, sink: Sink, group_size: int | None = None, threads: int | None = None,
             workers: int = 1, shared_config: TrainConfig | None = None) -> None:
    """Train ``jobs`` (see the module docstring) with ``engine`` ("mlp", "func" or "single").

    Args:
        build: the fresh model of a job, on the device of ``data``.
        data: the dataset the engines train on and evaluate each epoch (held-out = its test set).
        check_x: the probe batch the init check runs on.
        group_size: most runs trained at once by a population engine (default: all of them).
        threads: intra-op threads to train with (None: leave torch's setting).
        workers: a population engine trains each group in this many parts side by side, worker threads
            of one intra-op thread each (:mod:`initlab.training.workers`; the same numbers).
        shared_config: the one config of every job, handed to the engines as one (compare); None hands
            them each job's own (a sweep's runs differ in lr and momentum).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from: {', '.join(ENGINES)}")
    jobs = list(jobs)
    size = 1 if engine == "single" else max(1, group_size or len(jobs))
    with intra_op_threads(threads):
        for start in range(0, len(jobs), size):
            live, models = [], []
            for job in jobs[start:start + size]:
                model = build(job)
                sink.start(job, model)
                reason = check_init(model, check_x)
                if reason is None:
                    live.append(job)
                    models.append(model)
                else:
                    sink.init_diverged(job, reason)
            sink.group_started(live)
            if not live:
                continue
            if engine == "single":
                _train_one(live[0], models.pop(), data, sink, shared_config)
            else:
                configs = shared_config if shared_config is not None else [j.config for j in live]
                results = _POPULATION[engine](
                    models, data, configs, [j.seed for j in live], max_models=len(models), workers=workers,
                    on_epoch=lambda k, row, get_module: sink.epoch(live[k], row, get_module),
                    after_epoch=sink.after_epoch,
                    on_steps=lambda k, losses, step0: sink.steps(live[k], losses, step0))
                del models
                for job, res in zip(live, results):
                    sink.finished(job, res, engine)
            sink.group_finished()


def _train_one(job: Job, model: torch.nn.Module, data: Dataset, sink: Sink, shared_config: TrainConfig | None) -> None:
    def on_epoch(row):
        sink.epoch(job, row, lambda: model)
        sink.after_epoch(row["epoch"])

    res = train_model(model, data, shared_config or job.config, seed=job.seed, on_epoch=on_epoch,
                      on_steps=lambda losses, step0: sink.steps(job, losses, step0))
    sink.finished(job, res, "single")
