"""Progress bars of a sweep (the bars of :mod:`initlab.experiments.progress`, over runs and model-epochs)."""
from __future__ import annotations

from rich.markup import escape
from rich.progress import Progress
from rich.text import Text

from initlab.experiments.sweeps.spec import describe, run_hash


class RichSweepReporter:
    """A sweep: runs finished (of the whole sweep) and model-epochs left, with an ETA."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.runs_task = self.epoch_task = None
        self.seen: dict[str, int] = {}

    def start(self, sweep, total_runs, finished_runs, model_epochs):
        self.runs_task = self.progress.add_task(escape(f"{sweep['name']}: runs"), total=total_runs,
                                                completed=finished_runs)
        self.epoch_task = self.progress.add_task("model-epochs", total=max(model_epochs, 1))

    def group_start(self, label, runs):
        self.progress.update(self.epoch_task, description=escape(f"{label}: {runs} run{'s' if runs > 1 else ''}"))

    def epoch_end(self, run, row):
        self.progress.advance(self.epoch_task)
        self.seen[run_hash(run)] = self.seen.get(run_hash(run), 0) + 1

    def run_end(self, run, status, reason=None):
        left = run["epochs"] - self.seen.pop(run_hash(run), 0)
        if left > 0:
            self.progress.advance(self.epoch_task, left)
        self.progress.advance(self.runs_task)
        if status in ("diverged", "failed"):
            self.progress.console.print(Text(f"{describe(run)} {status}: {reason or ''}", style="yellow"))

    def note(self, message):
        self.progress.console.print(Text(message, style="yellow"))
