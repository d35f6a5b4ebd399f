"""Results in Jupyter: each result object renders as its report page, from the same templates.

The page is :func:`initlab.report.render_report` of the result's folder, shown in a sandboxed
``<iframe srcdoc=…>`` so its stylesheet and script (hover, per-init toggles) work inside the notebook
without touching the notebook's own page. An audit, a claims run or a comparison made without a folder is first
written to a temporary one by the writer its command uses, so a notebook shows what ``--report``
writes (a comparison computed without ``out=`` too); a depth sweep without ``out=`` shows its text
summary (pass ``out=`` to see the page). A sweep has no report page yet: it renders its status counts and each
init's best learning rate as tables. Importing this module registers the renderers
(:mod:`initlab.core.display`); ``import initlab`` does.
"""
from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path

from initlab.analysis.audit import AuditReport
from initlab.analysis.audit_run import write_audit
from initlab.claims.registry import ClaimResults
from initlab.claims.registry import write_report as write_claims
from initlab.core.display import register_html
from initlab.experiments.compare import CompareResult, write_result
from initlab.experiments.depth import DepthSweepResult
from initlab.experiments.sweeps.run import SweepResult
from initlab.experiments.sweeps.select import best_lr
from initlab.report import REPORT_NAME, render_report
from initlab.store import claim_out_dir

FRAME_HEIGHT_PX = 760  # tall enough for the headline table and the first chart; the frame scrolls


def page_frame(page: str, height: int = FRAME_HEIGHT_PX) -> str:
    """A whole report page as one notebook cell output (escaped into ``srcdoc``; scripts run sandboxed)."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
            f'style="width:100%;height:{height}px;border:1px solid #ccc;border-radius:4px"></iframe>')


def folder_html(folder: str | Path) -> str:
    """The report page of a result folder, framed for a notebook."""
    folder = Path(folder)
    return page_frame(render_report(folder, folder / REPORT_NAME))


def _in_temporary_folder(kind: str, write) -> str:
    """Write a result with ``write(folder)`` into a throwaway folder, render its page, remove the folder."""
    tmp = Path(tempfile.mkdtemp(prefix="initlab-inline-"))
    try:
        folder = claim_out_dir(tmp / kind, kind)
        write(folder)
        return folder_html(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compare_html(result: CompareResult) -> str:
    if result.out is not None:
        return folder_html(result.out)
    return _in_temporary_folder("compare", lambda folder: write_result(result, folder))


def _depth_html(result: DepthSweepResult) -> str | None:
    return folder_html(result.out) if result.out is not None else None


def _audit_html(report: AuditReport) -> str:
    return _in_temporary_folder("audit", lambda folder: write_audit(report, folder, overwrite=True))


def _claims_html(results: ClaimResults) -> str:
    if results.out is not None:
        return folder_html(results.out)
    return _in_temporary_folder("claims", lambda folder: write_claims(results.claims, list(results), folder,
                                                                      quick=results.quick))


def _sweep_html(result: SweepResult) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in result.counts.items() if n)
    parts = [f"<p><strong>sweep {html.escape(str(result.sweep.get('name')))}</strong>: {len(result.runs)} runs "
             f"({html.escape(counts)}); {result.trained} trained by this call; store "
             f"<code>{html.escape(str(result.store))}</code></p>"]
    finished = result.runs[result.runs["status"].isin(["done", "diverged"])] if len(result.runs) else result.runs
    if len(finished) and "lr" in finished.columns:
        parts += ["<p>Each init at its own best learning rate (chosen on validation accuracy):</p>",
                  best_lr(finished).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)]
    return "\n".join(parts)


register_html(CompareResult, _compare_html)
register_html(DepthSweepResult, _depth_html)
register_html(AuditReport, _audit_html)
register_html(ClaimResults, _claims_html)
register_html(SweepResult, _sweep_html)
