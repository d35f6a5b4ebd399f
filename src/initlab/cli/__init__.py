"""The ``initlab`` command: a thin typer layer over the Python API (one module per command).

Every user error becomes one line on stderr and exit status 2; user text is never markup. Ctrl-C and SIGTERM stop
cleanly, say what finished, and exit 130 (SIGINT) or 143 (SIGTERM); ``--resume`` continues."""
from __future__ import annotations

import os
import signal
import sys

import typer
from rich.text import Text

from initlab.version import __version__
from initlab.cli import audit, catalog, claims, compare, coordcheck, depth, probe, report, sweep
from initlab.cli.common import EXIT_SIGINT, EXIT_SIGTERM, Terminated, err_console, handled, on_sigterm, one_line
from initlab.training.memory import keep_freed_memory

# Help texts are Markdown, never rich markup: "pip install 'initlab[ray]'" keeps its brackets.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown", help="initlab: how should I initialize this network, and why?")


def _print_version(value: bool) -> None:
    if value:
        print(f"initlab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                          help="Print initlab's version and exit.")) -> None:
    """initlab: how should I initialize this network, and why?"""


for command in (compare.compare, probe.probe, catalog.schemes, catalog.models, depth.depth, audit.audit,
                claims.claims, coordcheck.coordcheck, report.report):
    app.command()(handled(command))
sweep.register(app)  # sweep, runs (list|show|export|best|heatmap), phase


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Usage errors (bad option value, unknown option) print one line, exit 2."""
    if os.environ.get("INITLAB_MALLOC", "").lower() != "system":
        keep_freed_memory()  # training re-allocates the same tensors every step: keep the pages
    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave signals to the host
        previous = None
    try:
        rv = app(args=argv, prog_name="initlab", standalone_mode=False)
    except KeyboardInterrupt as e:  # a command without its own clean-up (probe, schemes): nothing half-written
        term = isinstance(e, Terminated)
        err_console.print(Text("terminated" if term else "interrupted"))
        sys.exit(EXIT_SIGTERM if term else EXIT_SIGINT)
    except Exception as e:  # the CLI framework's usage errors carry a message and an exit code
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if not e.format_message().strip():  # bare `initlab`: help was printed, nothing went wrong
            sys.exit(0)
        name = getattr(getattr(e, "ctx", None), "command_path", "initlab")
        err_console.print(Text.assemble(("error: ", "bold red"), one_line(e.format_message()),
                                        f" (see '{name} --help')"), soft_wrap=True)
        sys.exit(e.exit_code)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(rv if isinstance(rv, int) else 0)
