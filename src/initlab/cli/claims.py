"""``initlab claims``: the seed's and the papers' claims, each tested."""
from __future__ import annotations

from typing import Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab.claims import CLAIMS, resolve_claims, run_claims
from initlab.cli.common import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    OUT_HELP,
    REPORT_HELP,
    Terminated,
    check_threads,
    console,
    err_console,
    fail,
    split_top_level,
    write_html_report,
)
from initlab.store import check_out_dir

VERDICT_STYLE = {"confirmed": "green", "refuted": "red", "depends": "yellow"}


def claims(
    only: Optional[str] = typer.Option(None, help="Comma-separated claim ids to run (default: all). See --list."),
    out: str = typer.Option("runs/claims", help="Output folder: claims.json, claims.md, PNGs. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier claims result in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
    list_: bool = typer.Option(False, "--list", help="List the claims and exit."),
    quick: bool = typer.Option(False, help="Smaller experiments (seconds in all); verdicts may be less sharp."),
    threads: int = typer.Option(1, help="torch CPU threads; small MLPs run fastest on 1."),
):
    """Test every claim of the seed notebook (Parts 1-2) with a small experiment: confirmed / refuted / depends."""
    if list_:
        table = Table(title="claims of the seed notebook")
        table.add_column("id")
        table.add_column("section")
        table.add_column("claim")
        for c in CLAIMS.values():
            table.add_row(c.id, c.section, c.short)
        console.print(table)
        return
    try:
        ids = None if only is None else split_top_level(only, "--only")
        resolve_claims(ids)
        check_threads(threads)
        check_out_dir(out, "claims", overwrite=overwrite)
    except ValueError as e:
        fail(str(e))
    torch.set_num_threads(threads)
    table = Table(title="the seed notebook's claims, tested")
    table.add_column("id", no_wrap=True)
    table.add_column("claim")
    table.add_column("verdict")
    table.add_column("evidence")
    n = len(ids) if ids is not None else len(CLAIMS)
    with console.status(f"checking {n} claims…") as status:
        def done(claim, res):
            status.update(escape(f"checked {claim.id}: {res.verdict} ({res.seconds:.1f} s)"))
            verdict = f"[{VERDICT_STYLE[res.verdict]}]{res.verdict}[/]" + (f" ({res.condition})" if res.condition else "")
            table.add_row(claim.id, escape(claim.short), verdict, escape(res.summary))

        try:
            results = run_claims(ids, out=out, quick=quick, on_result=done, overwrite=overwrite)
        except KeyboardInterrupt as e:
            code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
            err_console.print(Text(f"{'terminated' if code == EXIT_SIGTERM else 'interrupted'}: "
                                   f"{len(table.rows)} of {n} claims finished; they are in {out}/claims.json"))
            raise typer.Exit(code)
        except ValueError as e:
            fail(str(e))
    console.print(table)
    total = sum(r.seconds for r in results)
    console.print(Text(f"{len(results)} claims in {total:.1f} s; wrote {out}/: claims.json claims.md and plots"))
    write_html_report(report_html, out)
