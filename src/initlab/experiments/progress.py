"""Progress bars for comparisons, depth sweeps and sweeps: the same bars in a terminal and in Jupyter.

The reporters receive the runners' events (the methods of :class:`initlab.experiments.compare.Reporter`
and :class:`initlab.experiments.sweeps.run.SweepReporter`, which they implement) and drive rich progress bars, which rich
renders as live text in a terminal and as a widget in a notebook (with ``ipywidgets``). The command
line uses them; ``compare``, ``depth_sweep`` and ``run_sweep`` show them by themselves in a notebook
(``progress=None``, the default) or when asked (``progress=True``).
"""
from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython shell with a kernel), where results render inline."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_progress(progress: bool | None) -> bool:
    """``progress`` as given, or, when None, whether this is a notebook (the API prints nothing elsewhere)."""
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be true, false or None (bars in notebooks only), got {progress!r}")
    return in_notebook() if progress is None else progress


def bars(console: Console | None = None) -> Progress:
    """The bars every command shows: description, bar, done/total, elapsed, remaining."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


class RichReporter:
    """A comparison: one bar over runs, one over all epochs of all runs (the batched engine runs them together)."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.total = self.epoch_task = None
        self.seen: dict[tuple, int] = {}

    def start(self, spec, total_runs):
        self.epochs = spec.train.epochs
        self.total = self.progress.add_task("runs", total=total_runs)
        self.epoch_task = self.progress.add_task("epochs", total=total_runs * self.epochs)

    def run_start(self, init, seed):
        self.seen[(init, seed)] = 0

    def run_skipped(self, init, seed, status):
        self.run_end(init, seed, False)

    def epoch_end(self, init, seed, row):
        self.seen[(init, seed)] = self.seen.get((init, seed), 0) + 1
        self.progress.advance(self.epoch_task)
        acc = row.get("test_acc", math.nan)
        self.progress.update(self.epoch_task,
                             description=escape(f"{init} seed {seed} epoch {row['epoch']}  acc {acc:.3f}"))

    def note(self, message):
        self.progress.console.print(Text(message, style="yellow"))

    def run_end(self, init, seed, diverged, reason=None):
        self.progress.advance(self.epoch_task, self.epochs - self.seen.get((init, seed), self.epochs))
        self.progress.advance(self.total)
        if diverged:
            self.progress.console.print(Text(f"{init} seed {seed} diverged: {reason or 'see metrics.csv'}",
                                             style="yellow"))


class DepthReporter(RichReporter):
    """A depth sweep: one bar for depths, one for the runs of the current depth, one for epochs."""

    def __init__(self, progress: Progress, depths):
        super().__init__(progress)
        self.depth_task = progress.add_task("depths", total=len(depths))
        self.depth = None

    def start(self, spec, total_runs):
        self.depth = len(spec.hidden)
        if self.total is None:
            super().start(spec, total_runs)
        else:
            self.progress.reset(self.total, total=total_runs)
        self.progress.update(self.total, description=f"depth {self.depth}: runs")

    def run_end(self, init, seed, diverged, reason=None):
        self.progress.advance(self.total)
        if diverged:
            self.progress.console.print(Text(f"depth {self.depth}: {init} seed {seed} diverged: {reason}",
                                             style="yellow"))

    def depth_done(self, depth, result) -> None:
        self.progress.advance(self.depth_task)

