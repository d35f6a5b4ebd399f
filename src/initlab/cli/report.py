"""``initlab report``: one self-contained HTML page for a result folder."""
from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from initlab.cli.common import console, fail
from initlab.report import write_report


def report(
    path: str = typer.Argument(..., help="A result folder of compare, depth, probe, claims or audit."),
    out: Optional[str] = typer.Option(None, help="HTML file to write (default: PATH/report.html). An existing "
                                                 "file is replaced only if it is an initlab report."),
):
    """One self-contained HTML page for a result: question, reading, tables, interactive charts, raw-file links."""
    try:
        written = write_report(path, out)
    except ValueError as e:
        fail(str(e))
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(written))
    console.print(Text(f"wrote {shown} (self-contained: open it in any browser, no network needed)"))
