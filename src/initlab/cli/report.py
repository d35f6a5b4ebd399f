"""``initlab report``: one self-contained HTML page for a result folder."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from initlab.cli.common import one_line, say
from initlab.report import write_report


def report(
    path: Annotated[str, typer.Argument(help="A result folder of compare, depth, probe, claims or audit.")],
    out: Annotated[Optional[str], typer.Option(help="HTML file to write (default: PATH/report.html). An existing "
                                                    "file is replaced only if it is an initlab report.")] = None,
):
    """One self-contained HTML page for a result: question, reading, tables, interactive charts, raw-file links."""
    say(f"wrote {one_line(write_report(path, out))} (self-contained: open it in any browser, no network needed)")
