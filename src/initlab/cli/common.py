"""Shared pieces of the ``initlab`` commands: consoles, one-line errors, tables, the options several commands take."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer import Option

from initlab.experiments.progress import bars
from initlab.report import write_report
from initlab.report.tables import TextTable
from initlab.schemes import split_top_level  # noqa: F401  (the CLI's list syntax; tests import it from here)
from initlab.store import write_error

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


def handled(command):
    """``command`` with the library's user errors (ValueError, TypeError, a failed write) as one line, exit 2."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, TypeError, OSError) as e:  # ValueError includes DataError
            message = one_line(write_error(e) if isinstance(e, OSError) else e)
            err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
            raise typer.Exit(2) from None
    return run


def call(fn, options: dict, **more):
    """``fn`` with the command's ``options`` named as its parameters (a command's option names are the library's)."""
    names = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in options.items() if k in names}, **more)


def with_bars(start, describe, where):
    """``start(progress)`` under progress bars; an interrupt says what it left (``describe``) and exits 130/143."""
    try:
        with bars(console) as progress:
            return start(progress)
    except KeyboardInterrupt as e:
        stop(e, describe, where)


def stop(e: KeyboardInterrupt, describe, where) -> None:
    """Say what an interrupted command left (``describe(e, where, terminated=...)``), exit 130 or 143 (SIGTERM)."""
    term = isinstance(e, Terminated)
    err_console.print(Text(describe(e, where, terminated=term)), soft_wrap=True)
    raise typer.Exit(EXIT_SIGTERM if term else EXIT_SIGINT)


def say(*lines: str, style: str | None = None, soft_wrap: bool = False) -> None:
    """Print each line as plain text (never markup)."""
    for line in lines:
        console.print(Text(line, style=style), soft_wrap=soft_wrap)


def show(*tables: TextTable, **options) -> None:
    """Draw :class:`TextTable` s: their cells verbatim, text columns left, numbers right, long cells folded."""
    for t in tables:
        table = Table(title=None if t.title is None else escape(t.title),
                      caption=None if t.caption is None else escape(t.caption), **options)
        for c in t.columns:
            table.add_column(escape(c), justify="left" if c in t.left else "right", overflow="fold")
        for row in t.rows:
            table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))
        console.print(table)


def write_html_report(enabled: bool, out) -> None:
    """``--report``: write ``out/report.html`` after a command finished."""
    if enabled:
        say(f"wrote {one_line(write_report(out))}")


def out_option(what: str):
    """``--out``: ``what`` the folder receives, then the output-folder contract."""
    return Annotated[str, Option(help=f"{what} Must be new, empty, or an earlier initlab result folder (with "
                                      "--overwrite or --resume); initlab never writes over files it did not create.")]


# options several commands take, declared once (the default is the command's own)
Inits = Annotated[str, Option(help="Comma-separated schemes, e.g. 'he,normal(std=0.05)'. See `initlab schemes`.")]
Dataset = Annotated[str, Option(help="digits (bundled, offline) | mnist | fashion-mnist")]
DataDir = Annotated[Path | None, Option(help="Folder with the IDX files (skips lookup and download); not for digits.")]
Epochs = Annotated[int, Option(help="Training epochs per run.")]
Lr = Annotated[float, Option(help="Learning rate.")]
Optimizer = Annotated[str, Option(help="sgd | adam")]
Momentum = Annotated[float, Option(help="SGD momentum (sgd only).")]
BatchSize = Annotated[int, Option(help="Minibatch size.")]
Device = Annotated[str, Option(help="auto | cpu | cuda")]
Threads = Annotated[int, Option(help="torch CPU threads; small MLPs run fastest on 1.")]
DivergeLoss = Annotated[float, Option(help="A run diverges when its end-of-epoch test loss exceeds DIVERGE_LOSS × "
                                           "ln(classes) (or any loss/activation is NaN/inf); inf: no bound.")]
Overwrite = Annotated[bool, Option(help="Replace the earlier result in --out (its files only).")]
Report = Annotated[bool, Option("--report", help="Also write report.html into --out: one self-contained page (see "
                                                 "`initlab report`).")]
Store = Annotated[str | None, Option("--store", help="Also commit the finished runs to this SQLite run store (as "
                                                     "`initlab sweep` would name them; see `initlab runs`).")]
RunStore = Annotated[str, Option(help="SQLite run store (created if missing; several workers may share it).")]
