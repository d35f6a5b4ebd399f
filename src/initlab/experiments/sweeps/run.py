"""Running a sweep into the run store: claim an engine group, train it batched, commit run by run.

``run_sweep(spec, store)`` records the sweep and its runs (:class:`~initlab.experiments.sweeps.runstore.RunStore`),
marks runs of dead workers ``interrupted``, then repeats: claim the next chunk of one engine group
(atomically: two workers never hold one run), build a fresh model per run exactly as ``compare``
does (``experiment.build_model``: init from ``make_generator(seed, INIT_STREAM)``), train the chunk
in one batched computation (``engine.train_population`` for initlab's MLPs, per-run lr and
momentum; ``func_engine.train_func_population`` for other vmappable models; ``train_model`` one by
one otherwise), and commit each finished run (all its epochs) in one transaction before reporting
it. A run's seed fixes its init and data order, so a rerun gives what the first attempt would have
(up to float32 summation order between chunkings).

Data: the training set is split (:func:`initlab.data.split_validation`, stratified, fixed by
``val_seed``) into the examples trained on and a validation set. The engines evaluate the
validation set after every epoch (their divergence rule reads it); the test set is evaluated by
the callback on each model, so no choice made from ``val_*`` ever looked at ``test_*``. With
``val_fraction = 0`` the engines evaluate the test set, as ``compare`` does, and ``val_*`` is empty.

Rerunning the same sweep resumes it: finished runs (``done``, ``diverged``) are skipped,
``queued``/``interrupted`` ones run, ``failed`` ones are retried up to ``MAX_ATTEMPTS`` claims.
Ctrl-C/SIGTERM (``KeyboardInterrupt``) hands this worker's running runs back as ``interrupted``
and re-raises with the partial :class:`SweepResult` attached as ``result``; ``kill -9`` leaves them
``running`` until the next run's :meth:`RunStore.recover` finds their worker dead.

Backends: ``local`` (default) trains each claimed group in this process. ``ray`` (extra
``initlab[ray]``) makes each claimed group one Ray task (``max_retries`` on worker loss): the
datasets go into Ray's object store once, the task trains the group exactly as ``local`` does and
returns each run's rows, and the driver (the only writer) commits them to the store as tasks finish.
``address`` joins an existing cluster; by default a local one is started (``ray.init``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from initlab.analysis.probe import probe_stats
from initlab.core.display import html_of
from initlab.data import load_dataset, split_validation
from initlab.experiments.compare import ProbeBatch, build_model, engine_note, prepare_data, select_engine
from initlab.experiments.progress import bars, show_progress
from initlab.experiments.runner import Job, Sink, run_jobs
from initlab.experiments.sweeps.plan import SweepPlan, compare_spec, make_plan
from initlab.experiments.sweeps.progress import RichSweepReporter
from initlab.experiments.sweeps.runstore import DEFAULT_STORE, MAX_ATTEMPTS, Claimed, RunStore, worker_id
from initlab.experiments.sweeps.spec import SweepSpec, describe, group_key
from initlab.schemes import parse_scheme
from initlab.training.loop import TrainConfig, evaluate, resolve_device


class SweepReporter:
    """Progress events of :func:`run_sweep`; the CLI's subclass draws a bar with an ETA."""

    def start(self, sweep: dict, total_runs: int, finished_runs: int, model_epochs: int) -> None: ...
    def group_start(self, label: str, runs: int) -> None: ...
    def epoch_end(self, run: dict, row: dict) -> None: ...  # one model finished one epoch
    def run_end(self, run: dict, status: str, reason: str | None = None) -> None: ...  # committed

    def note(self, message: str) -> None:
        warnings.warn(message, stacklevel=3)


@dataclass
class SweepResult:
    """``runs``: one row per run of the sweep (parameters as columns, status, final metrics);
    ``epochs``: one row per run per epoch; ``complete``: every run finished (done or diverged)."""

    sweep: dict
    runs: pd.DataFrame
    epochs: pd.DataFrame
    counts: dict
    store: Path
    seconds: float = 0.0
    trained: int = 0  # runs this call finished
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.counts.get("done", 0) + self.counts.get("diverged", 0) == len(self.runs)

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items() if n)
        return (f"<SweepResult: sweep {self.sweep.get('name')!r}, {len(self.runs)} runs ({counts}); "
                f"{self.trained} trained by this call; store {self.store}>")

    def _repr_html_(self) -> str | None:
        return html_of(self)


class _Data:
    """Datasets of a sweep, loaded and split once per (dataset, normalize, data_dir, split)."""

    def __init__(self, device, given=None):
        self.device, self.given, self.cache = device, given, {}

    def get(self, p: dict):
        key = (p["dataset"], p["normalize"], p["data_dir"], p["val_fraction"], p["val_seed"])
        if key not in self.cache:
            if self.given is not None and self.given.name == p["dataset"]:
                data = self.given
            else:
                data = load_dataset(p["dataset"], data_dir=p["data_dir"], normalize=p["normalize"])
            train, (x_val, y_val) = split_validation(data, p["val_fraction"], p["val_seed"])
            self.cache[key] = (train, x_val, y_val)
        return self.cache[key]


def _engine_data(base, x_val, y_val, cs):
    """The dataset the engines see (held-out = validation, or test without a split), shaped for the model."""
    if x_val.shape[0]:
        base = dataclasses.replace(base, x_test=x_val, y_test=y_val)
    return prepare_data(cs, base)


class _Group(Sink):
    """One claimed chunk: models built, trained, evaluated, committed run by run (a sink of
    :func:`initlab.experiments.runner.run_jobs`, the runner ``compare`` uses too).

    ``store`` None (a Ray task): finished runs are collected in ``self.records`` for the driver to
    commit (:func:`_commit_record`) instead of being written here.
    """

    def __init__(self, store: RunStore | None, worker: str, spec: SweepSpec, claimed: list[Claimed], data: _Data,
                 device, reporter: SweepReporter):
        self.store, self.worker, self.spec, self.claimed, self.reporter = store, worker, spec, claimed, reporter
        self.records: list[dict] = []
        p = claimed[0].params
        self.cs = compare_spec(p, spec, inits=dict.fromkeys(c.params["init"] for c in claimed))
        base, x_val, y_val = data.get(p)
        self.has_val = bool(x_val.shape[0])
        self.data = _engine_data(base, x_val, y_val, self.cs).to(device)
        shape = self.data.x_train.shape[1:]
        self.x_test = base.x_test.reshape(-1, *shape).to(device)
        self.y_test = base.y_test.to(device)
        self.pb = ProbeBatch(self.cs, self.data)
        self.device = device
        self.started = time.time()
        self.rows: dict[int, list[dict]] = {c.id: [] for c in claimed}
        self.probes: dict[int, list] = {c.id: [] for c in claimed}
        self.finished_runs = 0
        self.committed: set[int] = set()  # run ids written to the store by this group

    def _probe(self, c: Claimed, epoch: int, model) -> None:
        if self.spec.probe:
            frame = probe_stats(model, self.pb.x, self.pb.y)
            for rec in frame.to_dict(orient="records"):
                self.probes[c.id].append((epoch, rec.get("name", ""), rec))

    def _build(self, job: Job):
        return build_model(self.cs, self.data, job.scheme, job.seed, self.device)

    # the runner's events -------------------------------------------------------------------------

    def start(self, job: Job, model) -> None:
        self._probe(job.key, 0, model)

    def init_diverged(self, job: Job, reason: str) -> None:
        self.rows[job.key.id] = [{"epoch": 0, "diverged": True}]
        self.commit(job.key, "diverged", 0, None, reason, engine="init")

    def epoch(self, job: Job, engine_row: dict, get_module) -> None:
        """The store's epoch row from an engine row, evaluating test (and train) accuracy on the model."""
        c, p = job.key, job.key.params
        row = {"epoch": engine_row["epoch"], "train_loss": engine_row.get("train_loss"),
               "diverged": bool(engine_row.get("diverged"))}
        held = (engine_row.get("test_loss", math.nan), engine_row.get("test_acc", math.nan))
        if self.has_val:
            row["val_loss"], row["val_acc"] = held
        else:
            row["test_loss"], row["test_acc"] = held
        if not row["diverged"]:
            last = row["epoch"] == p["epochs"]
            want_train = p["train_eval"] == "every" or (p["train_eval"] == "final" and last)
            if self.has_val or want_train or (last and self.spec.probe):
                model = get_module()
                bs = job.config.eval_batch_size
                if self.has_val:
                    row["test_loss"], row["test_acc"] = evaluate(model, self.x_test, self.y_test, bs)
                if want_train:
                    _, row["train_acc"] = evaluate(model, self.data.x_train, self.data.y_train, bs)
                if last:
                    self._probe(c, row["epoch"], model)
        self.rows[c.id].append(row)
        self.reporter.epoch_end(p, row)

    def finished(self, job: Job, res, engine: str) -> None:
        self.commit(job.key, "diverged" if res.diverged else "done", res.diverged_epoch, res.diverged_step,
                    res.diverge_reason, engine=engine)

    # ---------------------------------------------------------------------------------------------

    def commit(self, c: Claimed, status, epoch=None, step=None, reason=None, engine="mlp") -> None:
        record = dict(run_id=c.id, status=status, rows=self.rows[c.id], engine=engine, started=self.started,
                      diverged_epoch=epoch, diverged_step=step, diverge_reason=reason, probes=self.probes[c.id])
        if self.store is None:  # a Ray task: the driver commits
            self.records.append(record)
            self.finished_runs += 1
            self.committed.add(c.id)
            return
        ok = _commit_record(self.store, self.worker, record)
        if ok:
            self.finished_runs += 1
            self.committed.add(c.id)
            self.reporter.run_end(c.params, status, reason)
        else:
            self.reporter.note(f"run {describe(c.params)} was taken over by another worker; its result here is dropped")

    def train(self) -> None:
        # engine "auto" times the engines on this chunk's shapes (initlab.training.choice); the choice
        # is recorded per run (the store's engine column)
        choice = select_engine(self.cs, self.data, self.pb, len(self.claimed), len(self.claimed), workers=True)
        note = engine_note(self.cs, choice)
        if note is not None:
            self.reporter.note(note)
        jobs = [Job(c, parse_scheme(c.params["init"]), c.params["seed"], TrainConfig.from_dict(c.params))
                for c in self.claimed]
        run_jobs(jobs, build=self._build, data=self.data, check_x=self.pb.x, engine=choice.engine, sink=self,
                 threads=choice.threads, workers=choice.workers)


def _commit_record(store: RunStore, worker: str, record: dict) -> bool:
    r = dict(record)
    return store.finish(r.pop("run_id"), worker, **r)


class _Given:
    """A task's datasets: what the driver loaded, by the same key as :class:`_Data`."""

    def __init__(self, tables: dict):
        self.tables = tables

    def get(self, p: dict):
        return self.tables[(p["dataset"], p["normalize"], p["data_dir"], p["val_fraction"], p["val_seed"])]


def _train_remote(spec: SweepSpec, claimed: list[Claimed], tables: dict, device: str, worker: str,
                  threads: int) -> list[dict]:
    """Body of a Ray task: train one claimed group as ``local`` would; return the finished runs."""
    torch.set_num_threads(threads)
    group = _Group(None, worker, spec, claimed, _Given(tables), torch.device(device), SweepReporter())
    group.train()
    return group.records


BACKENDS = ("local", "ray")


def _ray(address: str | None):
    try:
        import ray
    except ImportError as e:
        raise ValueError(f"--backend ray needs the ray package ({e}); install it with: pip install 'initlab[ray]'") from None
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": os.cpu_count() or 1}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    return ray


def _run_ray(st: RunStore, sweep_id: int, worker: str, spec: SweepSpec, caps, data_cache: _Data, device,
             reporter: SweepReporter, max_attempts: int, address: str | None, errors: list[str]) -> int:
    """Claim every group, run each as a Ray task, commit results here as they come; returns runs finished."""
    ray = _ray(address)
    remote = ray.remote(max_retries=3)(_train_remote)
    refs: dict = {}  # dataset key -> object ref (each dataset put once)
    pending: dict = {}  # task ref -> claimed runs
    failed_here: set[int] = set()
    trained = 0
    while True:
        claimed = st.claim(sweep_id, worker, caps, max_attempts=max_attempts, exclude=failed_here)
        if not claimed:
            break
        p = claimed[0].params
        key = (p["dataset"], p["normalize"], p["data_dir"], p["val_fraction"], p["val_seed"])
        if key not in refs:
            refs[key] = ray.put({key: data_cache.get(p)})
        reporter.group_start(p["model"], len(claimed))
        pending[remote.remote(spec, claimed, refs[key], str(device), worker, torch.get_num_threads())] = claimed
        failed_here.update(c.id for c in claimed)  # claimed: never claim them twice in this call
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        claimed = pending.pop(done[0])
        try:
            records = ray.get(done[0])
        except Exception as e:  # noqa: BLE001 - one group's failure is recorded; the sweep goes on
            msg = _one_line(e)
            n = st.release(worker, "failed", msg, [c.id for c in claimed])
            errors.append(msg)
            reporter.note(f"{n} run(s) of {claimed[0].params['model']} failed: {msg}")
            for c in claimed:
                reporter.run_end(c.params, "failed", msg)
            continue
        by_id = {c.id: c for c in claimed}
        for record in records:
            c = by_id[record["run_id"]]
            for row in record["rows"]:
                reporter.epoch_end(c.params, row)
            if _commit_record(st, worker, record):
                trained += 1
                reporter.run_end(c.params, record["status"], record["diverge_reason"])
    return trained


def _result(store: RunStore, sweep: dict, t0: float, trained: int, errors: list[str]) -> SweepResult:
    runs = store.runs(sweep["id"])
    ids = list(runs["id"]) if len(runs) else []
    return SweepResult(sweep, runs, store.epochs(sweep["id"]) if ids else store.epochs(run_ids=[]),
                       store.counts(sweep["id"]), store.path, time.perf_counter() - t0, trained, errors)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_sweep(spec: SweepSpec, store: str | Path = DEFAULT_STORE, *, reporter: SweepReporter | None = None,
              plan: SweepPlan | None = None, data=None, max_group: int | None = None,
              max_attempts: int = MAX_ATTEMPTS, backend: str = "local", address: str | None = None, progress: bool | None = None) -> SweepResult:
    """Run (or resume) ``spec`` into the SQLite store at ``store``; returns the sweep's runs and epochs.

    Args:
        spec: the sweep (:class:`SweepSpec`, :func:`initlab.experiments.sweeps.load_spec`).
        store: the run store file (created if missing); several processes may run one sweep on it.
        reporter: progress events (:class:`SweepReporter`).
        plan: a :func:`make_plan` of ``spec`` already made (it measures the machine once).
        data: a loaded :class:`initlab.data.Dataset` to use for runs on that dataset (tests, notebooks).
        max_group: most models trained at once (default: the engine's memory budget).
        max_attempts: claims after which a failing run is left ``failed``.
        backend: ``local`` (this process) or ``ray`` (one Ray task per engine group; results
            committed here). Both give the same numbers.
        address: with ``ray``, the cluster to join (``ray://…`` or ``host:port``); default a local one.
        progress: show progress bars (default: in a Jupyter notebook only; never with a ``reporter``).

    Example: ``run_sweep(SweepSpec({"inits": ["xavier", "he"], "lr": [0.01, 0.1], "epochs": 2}), "runs/s.db")``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
    if backend == "ray":
        _ray(address)  # a missing package or an unreachable cluster fails before anything is recorded
    stack = contextlib.ExitStack()  # progress bars (notebooks by default) live as long as the sweep
    if reporter is None and show_progress(progress):
        reporter = RichSweepReporter(stack.enter_context(bars()))
    reporter = reporter or SweepReporter()
    with stack:
        t0 = time.perf_counter()
        plan = plan or make_plan(spec, max_group=max_group, gflops=math.nan)  # the time estimate is not needed here
        device = resolve_device(spec.device)
        st = RunStore(store)
        errors: list[str] = []
        trained = 0
        try:
            sweep_id = st.add_sweep(spec.name, spec.to_dict(), spec.hash, plan.runs, plan.hashes,
                                    [group_key(r) for r in plan.runs])
            sweep = st.find_sweep(spec.hash)
            st.recover()
            counts = st.counts(sweep_id)
            finished = counts["done"] + counts["diverged"]
            left = st.runs(sweep_id, status=("queued", "running", "interrupted", "failed"))
            reporter.start(sweep, len(plan.runs), finished, int(left["epochs"].sum()) if len(left) else 0)
            worker = worker_id()
            st.start_heartbeat(worker)
            data_cache = _Data(device, data)
            caps = plan.caps()
            failed_here: set[int] = set()
            if backend == "ray":
                trained += _run_ray(st, sweep_id, worker, spec, caps, data_cache, device, reporter, max_attempts,
                                    address, errors)
            while backend == "local":
                claimed = st.claim(sweep_id, worker, caps, max_attempts=max_attempts, exclude=failed_here)
                if not claimed:
                    break
                reporter.group_start(claimed[0].params["model"], len(claimed))
                group = None
                try:
                    group = _Group(st, worker, spec, claimed, data_cache, device, reporter)
                    group.train()
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - one group's failure is recorded; the sweep goes on
                    msg = _one_line(e)
                    n = st.release(worker, "failed", msg, [c.id for c in claimed])
                    failed_here.update(c.id for c in claimed)
                    errors.append(msg)
                    reporter.note(f"{n} run(s) of {claimed[0].params['model']} failed: {msg}")
                    done = group.committed if group is not None else set()
                    for c in claimed:
                        if c.id not in done:
                            reporter.run_end(c.params, "failed", msg)
                finally:
                    if group is not None:
                        trained += group.finished_runs
        except KeyboardInterrupt as e:
            st.release(worker_id(), "interrupted", "interrupted (Ctrl-C or SIGTERM)")
            st.stop_heartbeat()
            try:
                e.result = _result(st, st.find_sweep(spec.hash), t0, trained, errors)
            except Exception:  # noqa: BLE001 - the store is consistent; the summary is a courtesy
                e.result = None
            st.close()
            raise
        except BaseException:
            st.release(worker_id(), "failed", "the sweep process stopped with an error")
            st.close()
            raise
        st.stop_heartbeat()
        result = _result(st, sweep, t0, trained, errors)
        st.close()
        return result

