"""Shared pieces of the ``initlab`` commands: the consoles, one-line errors, option helpers, progress reporters."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from initlab.models import MAX_DEPTH, MAX_WIDTH, parse_hidden
from initlab.report import write_report
from initlab.schemes import split_top_level as split
from initlab.store import write_error
from initlab.training.loop import MAX_INT

# emoji=False: ':ok:' in a user's scheme name stays ':ok:'; markup is ours only (user text is escaped)
console = Console(emoji=False, highlight=False)
err_console = Console(stderr=True, emoji=False, highlight=False)

EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so the same clean stop as Ctrl-C runs."""


def on_sigterm(signum, frame):
    raise Terminated()


def one_line(message: str) -> str:
    """``message`` on one line with control characters shown escaped (``\\x1b``), never sent raw."""
    text = " ".join(str(message).split())
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def fail(message: str) -> None:
    """Print a one-line error (``message`` verbatim, never markup) and exit with status 2."""
    err_console.print(Text.assemble(("error: ", "bold red"), one_line(message)), soft_wrap=True)
    raise typer.Exit(2)


def split_top_level(text: str, what: str = "list") -> list[str]:
    """Comma-separated items, split outside parentheses; empty items are an error."""
    return split(text, what=what)


def resolve_hidden(hidden: Optional[str], depth: Optional[int], width: Optional[int]) -> tuple[int, ...]:
    if hidden is not None and (depth is not None or width is not None):
        raise ValueError("give either --hidden or --depth/--width, not both")
    if hidden is not None:
        return parse_hidden(hidden)
    if depth is None and width is None:
        return (128,)
    depth = 1 if depth is None else depth
    width = 128 if width is None else width
    if not 0 < depth <= MAX_DEPTH:
        raise ValueError(f"--depth must be a positive integer up to {MAX_DEPTH} (number of hidden layers), got {depth}")
    if not 0 < width <= MAX_WIDTH:
        raise ValueError(f"--width must be a positive integer up to {MAX_WIDTH}, got {width}")
    return (width,) * depth


def check_threads(threads: int) -> None:
    """Threads beyond the CPUs only slow torch down, and huge counts overflow or exhaust the OS."""
    import os

    cpus = os.cpu_count() or 1
    if not 0 < threads <= cpus:
        raise ValueError(f"--threads must be from 1 to {cpus} (this machine's CPUs), got {threads}")


def check_positive(**values: int) -> None:
    """One-line errors for integer options that must be positive (and fit int64)."""
    for name, v in values.items():
        if not 0 < v <= MAX_INT:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")


def interrupted(e: KeyboardInterrupt, out: Optional[Path]) -> None:
    """Say truthfully what an interrupted comparison left, then exit 130 (SIGINT) or 143 (SIGTERM)."""
    code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
    what = "terminated" if code == EXIT_SIGTERM else "interrupted"
    result = getattr(e, "result", None)
    msg = what
    if result is not None and result.runs is not None:
        st = result.runs["status"]
        n, fin = len(st), int(st.isin(["done", "diverged"]).sum())
        cut = result.runs[st == "interrupted"]
        msg += f": {fin} of {n} runs finished ({int((st == 'done').sum())} done, {int((st == 'diverged').sum())} diverged)"
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
    err_console.print(Text(msg), soft_wrap=True)
    raise typer.Exit(code)


def write_html_report(enabled: bool, out) -> None:
    """``--report``: write ``out/report.html`` after a command finished (one-line error, exit 2, if it cannot)."""
    if not enabled:
        return

    try:
        written = write_report(out)
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(str(write_error(e)))
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(written))
    console.print(Text(f"wrote {shown}"))


def fmt(x: float, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def status_cell(r) -> str:
    """``3 done`` / ``2 done, 1 diverged`` / ``1 done, 2 interrupted`` for one init's runs."""
    parts = [f"{n} {label}" for n, label in ((r.done, "done"), (r.diverged, "diverged"),
                                             (r.interrupted, "interrupted")) if n]
    return ", ".join(parts) or "—"


REPORT_HELP = "Also write report.html into --out: one self-contained page (see `initlab report`)."
MODEL_HELP = ("A zoo model, e.g. 'cnn', 'resnet(blocks=20,norm=none)' (see `initlab models`), or your own "
              "'module:factory' (called per run; gets in_shape/num_classes if it asks). Default: the MLP of "
              "--hidden/--activation.")
OUT_HELP = ("Must be new, empty, or an earlier initlab result folder (with --overwrite or --resume); "
            "initlab never writes over files it did not create.")

def sci(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"
