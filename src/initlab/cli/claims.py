"""``initlab claims``: the seed's and the papers' claims, each tested."""
from __future__ import annotations

import torch
from rich.markup import escape
from typer import Option

from initlab.claims import CLAIMS, run_claims
from initlab.claims.registry import claims_request
from initlab.cli.common import Overwrite, Report, Threads, console, out_option, say, show, stop, write_html_report
from initlab.report.tables import claim_list, claim_row, claim_verdicts


def claims(
    only: str | None = Option(None, help="Comma-separated claim ids to run (default: all). See --list."),
    out: out_option("Output folder: claims.json, claims.md, PNGs.") = "runs/claims",
    overwrite: Overwrite = False, report_html: Report = False,
    list_: bool = Option(False, "--list", help="List the claims and exit."),
    quick: bool = Option(False, help="Smaller experiments (seconds in all); verdicts may be less sharp."),
    threads: Threads = 1,
):
    """Test every claim of the seed notebook (Parts 1-2) with a small experiment: confirmed / refuted / depends."""
    if list_:
        return show(claim_list(CLAIMS.values()))
    ids = claims_request(only, out=out, overwrite=overwrite, threads=threads)
    torch.set_num_threads(threads)
    table, n = claim_verdicts(), len(ids) if ids is not None else len(CLAIMS)
    with console.status(f"checking {n} claims…") as status:
        def done(claim, res):
            status.update(escape(f"checked {claim.id}: {res.verdict} ({res.seconds:.1f} s)"))
            table.rows.append(claim_row(claim, res))

        try:
            results = run_claims(ids, out=out, quick=quick, on_result=done, overwrite=overwrite)
        except KeyboardInterrupt as e:
            stop(e, lambda e, out, terminated: f"{'terminated' if terminated else 'interrupted'}: {len(table.rows)} "
                 f"of {n} claims finished; they are in {out}/claims.json", out)
    show(table)
    say(f"{len(results)} claims in {sum(r.seconds for r in results):.1f} s; wrote {out}/: claims.json claims.md and plots")
    write_html_report(report_html, out)
