"""A population's parts trained side by side: one worker thread per part, one intra-op thread each.

On a small CPU, one process with torch's intra-op threads (OpenMP, MKL) splits every op of a
population step across the cores: the large batched matmuls scale, but each of the ~40 small ops
(the activation, its backward, softmax, the gather of the batch) ends at a barrier where a core waits
for the other, and on a machine shared with other processes it waits for a core the kernel has
given away (docs/performance.md: 7× slower with two threads than with one under a load of 4 on 2
cores). Splitting the K models into ``workers`` contiguous parts, each trained by its own thread
with one intra-op thread, keeps every core busy on whole steps instead: nothing waits for anything
until the end of an epoch. Whether that is faster depends on the shapes and the machine, so
:mod:`initlab.training.choice` measures it against the other engines (candidate ``mlp/2w``) and
it trains only where it was measured fastest.

Threads, not processes: torch releases the GIL inside every op, and on the CPU the time of a
step is in the ops (Python holds the GIL for a few µs per op); threads share the training data,
the models and the callbacks without copying or pickling anything. Intra-op thread counts are
per thread (OpenMP's ICV and MKL's local setting), so each worker sets its own
(``torch.set_num_threads``) and the caller's thread count is restored before any callback runs.

Same numbers: a model's computation does not depend on which other models share its population
(every op is per model, and bmm's batches are independent) nor on the thread count for these
shapes, so the parts give the results one population gives, bit for bit where the kernels are
(tests/test_workers.py checks it). Callbacks run on the calling thread, between epochs, in model
order, exactly as one population calls them: each part's per-step losses, then each model's
``on_epoch``, then ``after_epoch`` once per epoch.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import torch

from initlab.training.loop import RunResult

WORKER_THREADS = 1  # intra-op threads of each worker


def part_sizes(n: int, workers: int) -> list[int]:
    """Sizes of ``min(workers, n)`` contiguous parts of ``n`` models, as equal as can be (larger first)."""
    if n <= 0 or workers <= 0:
        raise ValueError(f"need at least one model and one worker, got {n} models and {workers} workers")
    parts = min(workers, n)
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class Workers:
    """``n`` persistent worker threads, each with ``threads`` intra-op threads: :meth:`run` calls one
    function on each, at the same time, and returns their results (thread i runs function i, so a
    part always steps on the same thread). Use as a context manager; leaving it stops the threads.
    The caller's intra-op thread count is restored after every :meth:`run`."""

    def __init__(self, n: int, threads: int = WORKER_THREADS):
        self.threads = int(threads)
        self._inbox = [queue.SimpleQueue() for _ in range(n)]
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._pool = [threading.Thread(target=self._serve, args=(i,), name=f"initlab-worker-{i}", daemon=True)
                      for i in range(n)]
        for t in self._pool:
            t.start()

    def _serve(self, i: int) -> None:
        torch.set_num_threads(self.threads)
        while True:
            fn = self._inbox[i].get()
            if fn is None:
                return
            try:
                self._outbox.put((i, True, fn()))
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                self._outbox.put((i, False, e))

    def run(self, fns: Sequence[Callable[[], object]], cancel: threading.Event | None = None) -> list:
        """``[fns[0](), fns[1](), ...]``, function i on worker i, all at once; the first exception
        (after setting ``cancel``, so the others can stop early) is raised once all have returned."""
        if len(fns) > len(self._pool):
            raise ValueError(f"{len(fns)} functions for {len(self._pool)} workers; give at most one per worker")
        before = torch.get_num_threads()
        out, error = [None] * len(fns), None
        try:
            for i, fn in enumerate(fns):
                self._inbox[i].put(fn)
            for _ in fns:
                i, ok, value = self._outbox.get()
                if ok:
                    out[i] = value
                elif error is None:
                    error = value
                    if cancel is not None:
                        cancel.set()
        except BaseException:  # an interrupt of the caller: the workers stop early, then it goes on
            if cancel is not None:
                cancel.set()
            self.close()
            raise
        finally:
            torch.set_num_threads(before)  # also the default of threads started later (torch keeps the last setting)
        if error is not None:
            raise error
        return out

    def close(self) -> None:
        """Stop the threads once they finish what they run."""
        for box in self._inbox:
            box.put(None)
        for t in self._pool:
            if t is not threading.current_thread():
                t.join()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _advance(run: Iterator) -> tuple[bool, object]:
    """One ``next(run)``: (False, the item) or (True, the generator's return value)."""
    try:
        return False, next(run)
    except StopIteration as stop:
        return True, stop.value


def train_side_by_side(populations: Sequence, data, *, on_epoch: Callable | None = None,
                       after_epoch: Callable[[int], None] | None = None, on_steps: Callable | None = None,
                       threads: int = WORKER_THREADS) -> list[RunResult]:
    """Train ``populations`` (parts of one population, in model order) at the same time, one worker
    thread each with ``threads`` intra-op threads; return the results of all their models in order.

    Each population is a :class:`~initlab.training.mlp_engine.BatchedPopulation`; the worker
    threads advance their :meth:`~initlab.training.mlp_engine.BatchedPopulation.epochs` one epoch at
    a time, and between epochs the calling thread (with its own thread count back) replays their
    reports: ``on_steps(k, losses, step0)`` for every model, ``on_epoch(k, row, get_module)`` for
    every model, ``after_epoch(epoch)``, where ``k`` indexes the models of all parts together. An
    exception in a worker (or an interrupt of the caller) stops the others before their next step
    and is raised here.
    """
    if not populations:
        raise ValueError("train_side_by_side needs at least one population")
    offsets = [0]
    for pop in populations[:-1]:
        offsets.append(offsets[-1] + pop.size)
    cancel = threading.Event()
    runs = [pop.epochs(data, cancel) for pop in populations]
    results: list[list[RunResult] | None] = [None] * len(runs)
    active = list(range(len(runs)))
    with Workers(len(runs), threads) as workers:
        while active:
            outcomes = workers.run([lambda run=runs[i]: _advance(run) for i in active], cancel)
            ends = []
            for i, (done, value) in zip(active, outcomes):
                if done:
                    results[i] = value
                else:
                    ends.append((i, value))
            active = [i for i, _ in ends]
            if not ends:
                break
            for i, end in ends:  # per-step losses of every model first, then the epoch rows
                end.replay(populations[i], offset=offsets[i], on_steps=on_steps)
            for i, end in ends:
                end.replay(populations[i], offset=offsets[i], on_epoch=on_epoch)
            if after_epoch is not None:
                after_epoch(ends[0][1].epoch)
    return [res for part in results for res in part]
