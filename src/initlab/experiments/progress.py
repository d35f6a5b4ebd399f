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

    def hooks(self) -> dict:
        """``depth_sweep``'s keyword arguments that report to these bars: ``reporter`` and ``on_depth``."""
        return {"reporter": self, "on_depth": self.depth_done}



# ----------------------------------------------------------------------------- what an interrupt left


def interrupted_text(e: KeyboardInterrupt, out, *, terminated: bool = False) -> str:
    """What an interrupted comparison or depth sweep left, truthfully: the runs finished, cut and not
    started (from the partial ``result`` the runner attached to ``e``), where their statuses are, the
    finished depths, and how to continue. ``out``: the result folder (a Path) or None."""
    msg = "terminated" if terminated else "interrupted"
    result = getattr(e, "result", None)
    if result is not None and result.runs is not None:
        st = result.runs["status"]
        n, fin = len(st), int(st.isin(["done", "diverged"]).sum())
        cut = result.runs[st == "interrupted"]
        msg += (f": {fin} of {n} runs finished ({int((st == 'done').sum())} done, "
                f"{int((st == 'diverged').sum())} diverged)")
        if len(cut):
            lo, hi = int(cut["epochs_done"].min()), int(cut["epochs_done"].max())
            span = f"{lo}" if lo == hi else f"{lo}–{hi}"
            msg += f", {len(cut)} interrupted after {span} of {result.spec.train.epochs} epochs"
        queued = int((st == "queued").sum())
        if queued:
            msg += f", {queued} not started"
        if out is not None:
            msg += f"; statuses are in {out}/runs.csv and metrics.csv"
            if fin < n:
                msg += "; rerun the same command with --resume to finish the rest"
    elif out is not None and out.exists():
        msg += f" before any run finished; {out} holds only what was written so far"
    finished = getattr(e, "finished_depths", None)
    if finished is not None:
        msg += f"; finished depths: {', '.join(map(str, finished)) or 'none'}"
    return msg


def sweep_interrupted_text(e: KeyboardInterrupt, store, *, terminated: bool = False) -> str:
    """What an interrupted sweep left in the run ``store`` (every run's status is there; a rerun resumes)."""
    msg = "terminated" if terminated else "interrupted"
    result = getattr(e, "result", None)
    if result is not None:
        c = result.counts
        msg += (f": {c['done'] + c['diverged']} of {len(result.runs)} runs finished ({c['done']} done, "
                f"{c['diverged']} diverged), {c['interrupted']} interrupted, {c['queued']} not started; all in "
                f"{store}; rerun the same command to resume")
    return msg
