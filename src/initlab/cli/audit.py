"""``initlab audit``: every candidate scheme's signal profile on one model, and a recommendation."""
from __future__ import annotations

import typer
from rich.markup import escape
from typer import Argument, Option

from initlab.analysis.audit_run import DEFAULT_CANDIDATES, run_audit
from initlab.analysis.coverage import model_coverage
from initlab.cli.common import Overwrite, Report, call, console, one_line, out_option, say, show, write_html_report
from initlab.report.tables import audit_summary, coverage_faults


def audit(
    model: str = Argument(..., help="A zoo model ('mlp(depth=50,width=256,activation=tanh)', 'resnet(blocks=20,norm="
                          "none)', see `initlab models`), a library model ('timm:resnet50', 'torchvision:mobilenet_v2',"
                          " 'hf:gpt2(n_layer=4)') or your own 'module:factory'."),
    inits: str = Option(DEFAULT_CANDIDATES, help="Candidate schemes, comma-separated."),
    dataset: str = Option("digits", help="Example batch from digits | mnist | fashion-mnist (ignored with "
                          "--input-shape)."),
    input_shape: str | None = Option(None, help="Example batch of N(0,1) inputs of this shape per example, e.g. "
                                     "'3,32,32'."),
    classes: int = Option(10, help="Output classes of a zoo model with --input-shape."),
    batch: int = Option(256, help="Examples in the example batch."),
    seed: int = Option(0, help="Seed of every candidate's init (the same draws for each)."),
    out: out_option("Output folder: audit.csv, summary.csv, plots.") = "runs/audit",
    overwrite: Overwrite = False, report_html: Report = False,
    jacobian: bool = Option(False, help="Also take each candidate's input-output Jacobian spectrum (slow on large "
                            "convnets)."),
    symmetry: str = Option("exact", help="Unit symmetry check: exact (bit-equal units, fast) | full (with tolerance and "
                           "max cosine: units² distances per layer) | none."),
    coverage: bool = Option(False, "--coverage", help="Instead: run the model's own init (reset_parameters, "
                            "init_weights) on fresh storage and list tensors it never writes, writes twice, unties or "
                            "draws otherwise than the eager build (exit status 1 when it finds any)."),
):
    """How would each init treat this model? Forward and backward signal per layer, flags and a recommendation."""
    options = dict(locals())
    if coverage:
        with console.status(escape(f"running the own init of {model}…")):
            result = model_coverage(model, dataset=dataset, input_shape=input_shape, classes=classes)
        if result.faults:
            show(coverage_faults(result))
        say(result.summary(), soft_wrap=True)
        raise typer.Exit(1 if result.faults else 0)
    with console.status(escape(f"auditing {model}…")) as status:
        def progress(done: int, total: int, scheme: str) -> None:
            if done < total:
                status.update(escape(f"auditing {model}: candidate {done + 1}/{total}, {scheme}…"))

        run = call(run_audit, options, progress=progress)
    show(audit_summary(run))
    say(f"recommended: {run.report.recommended}: {run.report.reason}")
    say(*(f"note: {note}" for note in run.report.notes), style="dim")
    say(f"wrote {one_line(str(run.out))}/: summary.csv audit.csv " + " ".join(p.name for p in run.files))
    write_html_report(report_html, run.out)
