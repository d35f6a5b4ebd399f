"""Which engine trains a group of runs fastest, measured on the group's own shapes.

The engines give the same numbers up to float32 summation order (tests/test_engine.py,
tests/test_func_engine.py), so choosing one is about time only, and no fixed rule gets the time
right: on a 2-core CPU the hand-written MLP engine runs the seed's MLP at 2–3× the single loop, the
``torch.func`` engine wins on small inputs, MLP-like models and transformers on some machines and
loses on others, and loses on convolutions (0.6–0.9×, docs/performance.md), where vmap turns K
convolutions into one grouped convolution that oneDNN runs no faster per FLOP than K small ones.
So each candidate takes a few optimizer steps on copies of the group's models and on real batches,
and the fastest per model-step wins.

Protocol (:func:`choose`): every candidate is built and warmed up (``warmup`` steps pay first-call
costs: vmap tracing, oneDNN primitive creation, the allocator's first pages), then timed in
``rounds`` rounds that alternate between the candidates, so load from other processes hits each of
them alike; a round lasts at least ``min_steps`` steps and ``min_seconds``. A candidate's rate is
its best round, in model-steps per second (steps × models per step / seconds). A candidate whose
last warm-up step was more than ``prune`` (3) times slower than the fastest one's is not timed
further: that step is its rate. When the work to do (``work`` model-steps) would take under
``min_work_seconds`` at the first candidate's warm-up rate, nothing else is measured. The highest rate
wins: a candidate measured slower is never chosen. A candidate that fails to build or to step (out
of memory, an op vmap cannot batch) is left out, with its reason.

:func:`engine_candidates` makes the candidates for the real engines: throwaway populations (the
engines copy the models' tensors, so the models given are not modified) stepping on fixed slices
of the training set, without any generator, so no run's random stream is touched. Each engine can
also be timed with another intra-op thread count (``threads``): on a CPU shared with other
processes, torch's OpenMP threads wait for each other at every small op, and one thread can be
several times faster than two (docs/performance.md); the winner's setting is
``EngineChoice.threads``, which the caller applies with :func:`intra_op_threads` while it trains.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from initlab.data import Dataset
from initlab.training.func_engine import FuncPopulation
from initlab.training.loop import TrainConfig, make_optimizer, train_step
from initlab.training.mlp_engine import Population
from initlab.training.workers import Workers, part_sizes

KINDS = ("mlp", "func", "single")  # the hand-written MLP engine, the torch.func engine, train_model per run
# a timed call of a split candidate (mlp/2w) gives each worker this many seconds of steps (at most
# SPLIT_MAX_STEPS), estimated from one step before the warm-up
SPLIT_CALL_SECONDS = 0.02
SPLIT_MAX_STEPS = 16


@dataclass(frozen=True)
class Candidate:
    """One engine to time: ``build()`` returns a function that takes one optimizer step of ``models`` models."""

    name: str  # the label rates are recorded under: "mlp", "func", "single", "mlp/1t" (one thread)
    build: Callable[[], Callable[[], None]]
    models: int = 1  # models one step advances (K for a population, 1 for the single loop)
    sync: Callable[[], None] | None = None  # waits for queued device work (CUDA) before the clock is read
    threads: int | None = None  # torch intra-op threads while it runs; None: as set
    engine: str = ""  # the engine it runs (default: name)
    workers: int = 1  # >1: the population in that many parts side by side (initlab.training.workers)

    @property
    def kind(self) -> str:
        return self.engine or self.name


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the duration (None: unchanged), restored afterwards."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def thread_label(engine: str, threads: int | None, workers: int = 1) -> str:
    """``mlp``, ``mlp/1t`` (one intra-op thread), ``mlp/2w`` (two worker threads of one intra-op thread)."""
    if workers > 1:
        return f"{engine}/{workers}w"
    return engine if threads is None else f"{engine}/{threads}t"


@dataclass(frozen=True)
class EngineChoice:
    """The engine that trains a group, and why: measured rates (model-steps/s), or why none were measured."""

    engine: str  # mlp | func | single
    reason: str = ""  # one line: "measured fastest", "forced: engine='single'", a fallback's cause
    rates: tuple[tuple[str, float], ...] = ()  # (candidate, model-steps per second), candidate order
    failed: tuple[tuple[str, str], ...] = ()  # candidates that could not run, with the first line of the error
    threads: int | None = None  # intra-op threads to train with (intra_op_threads); None: torch's setting
    # >1: train each group in that many parts side by side, one worker thread of one intra-op thread
    # each (train_population / train_func_population ``workers``)
    workers: int = 1

    @property
    def measured(self) -> bool:
        return bool(self.rates)

    @property
    def label(self) -> str:
        """The winner's label among the rates: ``mlp``, ``mlp/1t`` or ``mlp/2w``."""
        return thread_label(self.engine, self.threads, self.workers)

    def rate(self, name: str) -> float | None:
        return dict(self.rates).get(name)

    def best_rate(self, engine: str) -> float | None:
        """The best rate measured for ``engine`` with any thread setting."""
        rates = [r for name, r in self.rates if name.split("/")[0] == engine]
        return max(rates) if rates else None

    def rates_text(self) -> str:
        """``func 812, single 640 model-steps/s`` (fastest first), or "" when nothing was measured."""
        if not self.rates:
            return ""
        ordered = sorted(self.rates, key=lambda r: -r[1])
        return ", ".join(f"{name} {rate:.3g}" for name, rate in ordered) + " model-steps/s"

    def text(self) -> str:
        """The choice in one line, for plans and notes."""
        extra = "; ".join(t for t in (self.reason, self.rates_text()) if t)
        return f"{self.label} ({extra})" if extra else self.label

    def to_dict(self) -> dict:
        """What config.json records: engine, threads (None: torch's setting), reason, rates by candidate,
        failures, and ``workers`` when the groups train in parts side by side."""
        return {"engine": self.engine, "threads": self.threads, "reason": self.reason,
                "rates": {name: round(rate, 2) for name, rate in self.rates},
                "failed": dict(self.failed), **({"workers": self.workers} if self.workers > 1 else {})}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def choose(candidates: Sequence[Candidate], *, rounds: int = 3, warmup: int = 2, min_steps: int = 2,
           min_seconds: float = 0.05, prune: float = 3.0, work: float | None = None,
           min_work_seconds: float = 2.0, budget: float = 0.05,
           clock: Callable[[], float] = time.perf_counter) -> EngineChoice:
    """Time every candidate (module docstring) and return the fastest, with every rate measured.

    Args:
        candidates: the engines to compare, in order of preference: on an exact tie the earlier wins.
        rounds: alternating timed rounds; a candidate's rate is its best round.
        warmup: untimed steps per candidate after building it.
        min_steps, min_seconds: a round lasts at least this many steps and seconds.
        prune: a candidate whose last warm-up step ran more than ``prune`` times slower than the
            fastest one's is not timed in rounds (its rate is that step's): under load a
            two-thread candidate can be 100× slower, and timing it would cost more than training.
        work: model-steps the choice will train (runs × steps). When the first candidate's warm-up
            rate would do them in under ``min_work_seconds``, the others are not measured: the
            measurement would cost more than any engine could save. None: always measure all.
        budget: with ``work``, the measurement stops once it has taken this fraction of the training time
            the first candidate's warm-up rate projects (the steps it times are thrown away, so a longer
            measurement could cost more than the best engine saves); candidates not reached are listed
            as not measured, and the choice is among those measured (by warm-up rate if no round ran).
        clock: seconds as a float (tests pass a fake clock that fake steps advance).

    Raises:
        ValueError: no candidates, or none of them could take a step (the reasons, one line).
    """
    if not candidates:
        raise ValueError("no engine to choose from; give at least one candidate")
    steps: dict[str, Callable[[], None]] = {}
    failed: dict[str, str] = {}
    warm: dict[str, float] = {}  # rate of each candidate's last warm-up step (the first ones pay first-call costs)
    start, allowed = clock(), math.inf

    def spent() -> bool:
        return clock() - start > allowed

    for c in candidates:
        if steps and spent():
            failed[c.name] = f"not measured: the measurement budget ({budget:.0%} of the projected training) was spent"
            continue
        try:
            with intra_op_threads(c.threads):
                fn = c.build()
                for i in range(warmup):
                    if i == warmup - 1:
                        t0 = clock()
                    fn()
                    if c.sync is not None:
                        c.sync()
                if warmup:
                    elapsed = clock() - t0
                    warm[c.name] = models_per_call(c, fn) / elapsed if elapsed > 0 else math.inf
            steps[c.name] = fn
        except Exception as e:  # noqa: BLE001 - a candidate that cannot run is left out, with its reason
            failed[c.name] = _first_line(e)
        if work is not None and c.name in warm and len(steps) == 1:
            if work / warm[c.name] < min_work_seconds:
                return EngineChoice(c.kind, f"not measured further: ~{work / warm[c.name]:.2g} s of training at "
                                            f"{c.name}'s rate (under {min_work_seconds:g} s)",
                                    ((c.name, warm[c.name]),), tuple(failed.items()), c.threads, c.workers)
            allowed = budget * work / warm[c.name]
    best: dict[str, float] = {}
    fastest_warm = max((warm[name] for name in steps if name in warm), default=0.0)
    for name in list(steps):
        if name in warm and warm[name] * prune < fastest_warm:
            best[name] = warm[name]
            del steps[name]
    for _ in range(max(1, rounds)):
        for c in candidates:
            if c.name not in steps:
                continue
            if spent():  # out of budget: a candidate without a timed round keeps its warm-up rate
                best.setdefault(c.name, warm.get(c.name, 0.0))
                continue
            try:
                with intra_op_threads(c.threads):
                    rate = _round_rate(steps[c.name], c, min_steps, min_seconds, clock)
                best[c.name] = max(best.get(c.name, 0.0), rate)
            except Exception as e:  # noqa: BLE001 - as above
                failed[c.name] = _first_line(e)
                del steps[c.name]
                best.pop(c.name, None)
    if not best:
        raise ValueError("no engine could take a training step: "
                         + "; ".join(f"{name}: {why}" for name, why in failed.items()))
    order = [c.name for c in candidates if c.name in best]
    winner = max(order, key=lambda name: (best[name], -order.index(name)))
    chosen = next(c for c in candidates if c.name == winner)
    why = "measured fastest" if not spent() else f"measured fastest within the budget ({budget:.0%} of the projected training)"
    return EngineChoice(chosen.kind, why, tuple((name, best[name]) for name in order),
                        tuple(failed.items()), chosen.threads, chosen.workers)


def models_per_call(c: Candidate, step: Callable[[], None]) -> int:
    """Model-steps one call of ``step`` takes: its ``models_per_call`` attribute if it has one (a step
    function that takes several optimizer steps per call), else ``c.models``."""
    return getattr(step, "models_per_call", c.models)


def _round_rate(step: Callable[[], None], c: Candidate, min_steps: int, min_seconds: float,
                clock: Callable[[], float]) -> float:
    """Model-steps per second of one timed round."""
    n, t0 = 0, clock()
    while True:
        step()
        n += 1
        if n >= min_steps:
            if c.sync is not None:
                c.sync()
            elapsed = clock() - t0
            if elapsed >= min_seconds and elapsed > 0:
                return n * models_per_call(c, step) / elapsed


def engine_candidates(kinds: Sequence[str], models: Sequence[nn.Module], data: Dataset,
                      config: TrainConfig, threads: Sequence[int | None] = (None,),
                      workers: Sequence[int] = ()) -> list[Candidate]:
    """Candidates for the real engines, stepping copies of ``models`` on fixed batches of ``data``.

    ``mlp`` and ``func`` train all ``models`` as one population (the group's real size K), as
    :func:`~initlab.training.mlp_engine.train_population` and
    :func:`~initlab.training.func_engine.train_func_population` would, one batch per model;
    ``single`` steps a copy of the first model with :func:`~initlab.training.loop.train_step`, as
    :func:`~initlab.training.loop.train_model` does. Every step includes the gather of its batch
    from the training set; evaluation is not timed (one pass over the test set per epoch).

    Args:
        kinds: engine names from :data:`KINDS`, in order of preference.
        models: the group's models (or copies of one of them) on the data's device; not modified.
        data: the training data the group trains on, on the same device.
        config: the group's training config (batch size, optimizer).
        threads: intra-op thread settings to time each engine with (None: torch's setting);
            every engine × setting is one candidate, labelled :func:`thread_label`.
        workers: worker counts w > 1 to time each population engine with: the K models in w parts
            (:func:`~initlab.training.workers.part_sizes`), each stepped by its own worker thread
            with one intra-op thread, all parts at once (:class:`~initlab.training.workers.Workers`),
            as ``train_population(..., workers=w)`` trains them; labelled ``mlp/2w``. A timed step
            waits for every part, so it includes the hand-over to the workers, which training pays
            once per epoch: the measurement errs against the split.
    """
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown engine {bad[0]!r}; choose from: {', '.join(KINDS)}")
    if not models:
        raise ValueError("engine candidates need at least one model")
    bad_w = [w for w in workers if isinstance(w, bool) or not isinstance(w, int) or w < 2]
    if bad_w:
        raise ValueError(f"worker counts must be integers of at least 2, got {bad_w[0]!r}")
    device = data.x_train.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    x, y = data.x_train, data.y_train
    seeds = list(range(len(models)))  # unused by stepper (fixed batches); populations want one each
    populations = {"mlp": Population, "func": FuncPopulation}

    def single() -> Callable[[], None]:
        model = copy.deepcopy(models[0]).train()
        opt = make_optimizer(model.parameters(), config)
        idx = torch.arange(min(config.batch_size, x.shape[0]), device=device)
        return lambda: train_step(model, opt, x[idx], y[idx])

    builders = {"mlp": lambda: Population(models, config, seeds, device).stepper(x, y),
                "func": lambda: FuncPopulation(models, config, seeds, device).stepper(x, y),
                "single": single}
    # one population per engine, shared by its thread settings: memory is that of the engines, not
    # of engines × settings (the shared population's parameters move under both; it is thrown away)
    built: dict[str, Callable[[], None]] = {}

    def build(kind: str) -> Callable[[], Callable[[], None]]:
        def once() -> Callable[[], None]:
            if kind not in built:
                built[kind] = builders[kind]()
            return built[kind]
        return once

    def split(kind: str, w: int) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            steps, at = [], 0
            for n in part_sizes(len(models), w):
                part = models[at:at + n]
                steps.append(populations[kind](part, config, seeds[at:at + n], device).stepper(x, y))
                at += n
            # each call hands the workers enough steps to last ~SPLIT_CALL_SECONDS: training hands
            # them a whole epoch, and a hand-over per step (a thread wake-up, which waits for a free
            # core on a loaded machine) would time the scheduler rather than the engine
            with intra_op_threads(1):
                for fn in steps:
                    fn()  # first-call costs (vmap tracing, oneDNN primitives) outside the estimate
                t0 = time.perf_counter()
                steps[0]()
                one = time.perf_counter() - t0
            reps = max(1, min(SPLIT_MAX_STEPS, math.ceil(SPLIT_CALL_SECONDS / max(one, 1e-6))))
            runs = [lambda fn=fn: [fn() for _ in range(reps)] for fn in steps]
            pool = Workers(len(steps))

            def step() -> None:
                pool.run(runs)

            step.models_per_call = reps * len(models)
            weakref.finalize(step, pool.close)  # the worker threads end with the candidate
            return step
        return make

    out = [Candidate(thread_label(k, t), build(k), 1 if k == "single" else len(models), sync, t, k)
           for t in threads for k in kinds]
    out += [Candidate(thread_label(k, None, w), split(k, w), len(models), sync, None, k, w)
            for w in workers for k in kinds if k != "single" and min(w, len(models)) > 1]
    return out
